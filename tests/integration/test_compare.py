"""`forge compare` and voiceforge.compare: the three prototype styles on the same utterance, for real.

Batch runs in process; the phone style calls a sidecar started for the run with the Twilio-protocol
call simulator; speech-to-speech talks to Forge's offline Realtime server (also started for the run)
through the official openai SDK. One utterance each keeps the test to about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge.compare import Utterance, compare, load_utterances, table
from voiceforge.audio.codecs import wrap_wav
from voiceforge.config import get_settings
from voiceforge.engine import Engine

pytestmark = pytest.mark.integration


async def test_one_utterance_through_all_three_styles(speak, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    engine = Engine()
    engine.ensure_mock_data()
    pcm, rate = speak("How many customers are there?")
    progress: list[tuple[str, int, int]] = []
    runs = await compare(engine, [Utterance("q", pcm, rate, "How many customers are there?")],
                         "customer_service", progress=lambda *p: progress.append(p))
    rows = {row["style"]: row for row in table(runs)}
    assert set(rows) == {"batch", "phone", "speech-to-speech"}
    for style, row in rows.items():
        assert row["error"] is None, (style, row)
        assert row["turns"] == 1 and row["v2v_p50_ms"] > 0, (style, row)
        assert row["wer"] <= 0.2, (style, row)
        turn = next(r for r in runs if r.style == style).turns[0]
        assert "40" in turn["reply"], (style, turn)
    # Local providers cost nothing, and so does a call simulated on loopback (Twilio never carried it).
    assert rows["batch"]["cost_per_conversation_usd"] == 0
    assert rows["speech-to-speech"]["cost_per_conversation_usd"] == 0
    assert rows["phone"]["cost_per_conversation_usd"] == 0 and rows["phone"]["failed"] == 0
    assert rows["phone"]["stages_ms"]["endpointing"] > 0  # measured from the last voiced frame
    assert {p[0] for p in progress} == {"batch", "phone", "speech-to-speech"}


def test_forge_compare_on_a_folder_of_recordings(speak, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    pcm, rate = speak("Hello, who am I talking to?")
    (folder / "hello.wav").write_bytes(wrap_wav(pcm, rate))
    (folder / "hello.txt").write_text("Hello, who am I talking to?")
    (folder / "notes.md").write_text("not audio")
    assert [u.reference for u in load_utterances(folder)] == ["Hello, who am I talking to?"]
    env = {"FORGE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "forge", "compare", "--utterances", str(folder),
                          "--styles", "batch", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["style"] == "batch" and row["turns"] == 1 and row["wer"] <= 0.2
    assert row["utterances"][0]["heard"].lower().startswith("hello")



def test_forge_compare_refuses_a_missing_folder_and_an_unknown_style(tmp_path, capsys, monkeypatch):
    from forge.cli import main

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    assert main(["compare", "--utterances", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["compare", "--styles", "fax"]) == 2
    assert "unknown style 'fax'" in capsys.readouterr().err
