"""A spoken round trip: Piper speaks customer requests, `forge talk` answers each with a tool.

`forge talk` runs in-process through the CLI entry point (models load once); one more run
goes through the installed console script in a subprocess.
"""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from forge import cli
from tests.conftest import wer
from voiceforge.audio.codecs import wrap_wav
from voiceforge.config import get_settings
from voiceforge.providers.dialogue import CONFIRM_PREFIX
from voiceforge.store.db import get_database
from voiceforge.store.models import Appointment, Customer, Order, Turn

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    assert cli.main(["db", "reset"]) == 0
    return tmp_path


def talk(wav: Path, capsys, out: Path | None = None) -> dict:
    args = ["talk", str(wav), "--json"] + (["-o", str(out)] if out else [])
    assert cli.main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ten_spoken_requests_call_the_right_tools(data_dir, speak, capsys):
    db = get_database(get_settings().database_url_resolved)
    with db.read_session() as s:
        laura = s.get(Customer, 1).name
        orders_of_2 = s.scalar(select(func.count(Order.id)).where(Order.customer_id == 2))
        shipped = s.scalar(select(func.count(Order.id)).where(Order.status == "shipped"))
        customers = s.scalar(select(func.count(Customer.id)))
        appts = s.scalars(select(Appointment).order_by(Appointment.id)).all()
        cancel_id, move_id = appts[0].id, appts[1].id
        appts_of_5 = len([a for a in appts if a.customer_id == 5])
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%A")
    cases = [
        ("Can you look up customer number three?", "lookup_customer", lambda r: r["customer_id"] == 3),
        (f"Please look up {laura}.", "lookup_customer", lambda r: r["customer_id"] == 1),
        ("What is the order history for customer number two?", "get_order_history",
         lambda r: r["customer_id"] == 2 and len(r["orders"]) == min(5, orders_of_2)),
        ("Where is my order? I am customer number four.", "get_order_history", lambda r: r["customer_id"] == 4),
        ("What appointments does customer five have?", "list_appointments",
         lambda r: len(r["appointments"]) == appts_of_5),
        # A booking changes only after a yes: one spoken turn hears the confirmation, naming what was understood.
        ("Please schedule a cleaning for customer six tomorrow at 8 am.", None,
         lambda reply: "cleaning" in reply and f"{tomorrow}," in reply and "8 AM" in reply),
        (f"Please cancel appointment number {cancel_id}.", None, lambda reply: f"appointment {cancel_id}" in reply),
        (f"Reschedule appointment number {move_id} to Friday at 1 pm.", None,
         lambda reply: f"appointment {move_id}" in reply and "Friday" in reply and "1 PM" in reply),
        ("How many customers are there?", "run_sql", lambda r: r["rows"] == [[customers]]),
        ("How many orders are shipped?", "run_sql", lambda r: r["rows"] == [[shipped]]),
        ("Thanks, that's all. Goodbye!", "end_call", lambda r: r["ended"] is True),
    ]
    errors = []
    for i, (request, tool, check) in enumerate(cases):
        pcm, rate = speak(request)
        wav = data_dir / f"request-{i}.wav"
        wav.write_bytes(wrap_wav(pcm, rate))
        turn = talk(wav, capsys, out=data_dir / f"reply-{i}.wav")
        errors.append(wer(request, turn["transcript"]))
        print(f"round trip {i}: {request!r} -> {turn['transcript']!r} WER={errors[-1]:.2f} {turn['timings_ms']}")
        if tool is None:
            assert turn["reply"].startswith(CONFIRM_PREFIX) and check(turn["reply"]), (request, turn["reply"])
            assert not turn["tool_calls"], turn["tool_calls"]
        else:
            called = [c for c in turn["tool_calls"] if c["name"] == tool]
            assert called, (request, turn["transcript"], turn["tool_calls"])
            assert called[-1]["error"] is None and check(called[-1]["result"]), (request, called[-1])
        assert turn["reply"] and Path(turn["audio_path"]).stat().st_size > 10_000
        for stage in ("stt_final", "llm_first_token", "first_sentence", "tts_first_audio"):
            assert turn["timings_ms"][stage] > 0, stage
    assert sum(errors) / len(errors) <= 0.1, errors
    with db.read_session() as s:
        assert s.scalar(select(func.count(Turn.id))) == len(cases)
        assert s.get(Appointment, cancel_id).status != "cancelled"  # nothing changed without a yes


def test_console_script_talk_end_to_end(data_dir, speak):
    pcm, rate = speak("How many customers are there?")
    wav = data_dir / "q.wav"
    wav.write_bytes(wrap_wav(pcm, rate))
    forge = Path(sys.executable).with_name("forge")
    out = subprocess.run([str(forge), "talk", str(wav), "-o", str(data_dir / "r.wav"), "--json"],
                         capture_output=True, text=True, timeout=180, check=True)
    turn = json.loads(out.stdout.strip().splitlines()[-1])
    assert turn["tool_calls"][0]["name"] == "run_sql" and turn["reply"] == "The answer is 40."
    assert (data_dir / "r.wav").read_bytes()[:4] == b"RIFF"


@pytest.mark.parametrize("content, message", [
    (b"", "the audio is empty"),
    (b"\xff\xfb\x90\x00" + b"\x00" * 400, "the MP3 file could not be decoded"),  # MP3 is read now: a damaged one
    (b"\x00\x01\x02\x03" * 100, "unrecognised audio"),
    ("truncated", "truncated WAV"),
])
def test_bad_audio_is_rejected_and_nothing_is_stored(data_dir, speak, capsys, content, message):
    if content == "truncated":
        pcm, rate = speak("Where is my order?")
        full = wrap_wav(pcm, rate)
        content = full[: len(full) // 2]
    bad = data_dir / "bad.wav"
    bad.write_bytes(content)
    assert cli.main(["talk", str(bad), "--json"]) == 2
    assert message in capsys.readouterr().err
    db = get_database(get_settings().database_url_resolved)
    with db.read_session() as s:
        assert s.scalar(select(func.count(Turn.id))) == 0


def test_prompts_chain_text_turns(data_dir, capsys):
    assert cli.main(["--prompts", "Hello|Where is my order?|I am customer 2|bye", "--json"]) == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(turns) == 4
    assert turns[1]["reply"].endswith("?") and not turns[1]["tool_calls"]
    assert turns[2]["tool_calls"][0]["name"] == "get_order_history"
    assert turns[2]["tool_calls"][0]["arguments"] == {"customer_id": 2}
    assert turns[3]["ended"] is True and len({t["conversation_id"] for t in turns}) == 1
