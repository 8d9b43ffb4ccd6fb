"""The phone path when things around it fail: a hung Twilio, a hung LLM, a locked database.

Each runs a real sidecar on loopback and a simulated Twilio call against it, with the offline
STT and TTS; only the failing dependency is replaced (a listener that never answers, an LLM
that never streams, a second SQLite connection holding the write lock).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time

import httpx
import pytest

from server.main import create_app
from tests.conftest import wer
from tests.support.fakes import ScriptedLLM
from tests.support.servers import free_port, serve
from voiceforge.audio.codecs import ulaw_to_pcm16
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.local import WhisperSTT
from voiceforge.telephony.simulator import simulate_call
from voiceforge.turn import APOLOGIES

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]
TOKEN = "resilience-token"
KEY = "resilience-key"


@pytest.fixture
def black_hole():
    """A TCP listener that accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def sidecar_settings(folder, port, **extra):  # noqa: ANN001, ANN201
    return load_settings(public_base_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN, forge_api_key=KEY,
                         forge_data_dir=folder, database_url=f"sqlite:///{folder / 'r.db'}", **extra)


async def test_a_hung_twilio_ends_the_call_within_15_s(tmp_path, black_hole, speak):
    port = free_port()
    settings = sidecar_settings(tmp_path, port, twilio_account_sid="AC" + "0" * 32, twilio_phone_number="+15005550006",
                                twilio_api_base=black_hole, twilio_read_timeout_s=8)
    app = create_app(settings)
    with serve(app, port=port) as base:
        app.state.engine.warm_up()
        started = time.perf_counter()
        result = await simulate_call(base, TOKEN, [speak("Thanks, goodbye.")], api_key=KEY, timeout_s=60)
        ended = time.perf_counter()
        turn = result["turns"][0]
        assert turn["tool_calls"][0]["name"] == "end_call"
        # the stream closed after the goodbye played, without waiting for Twilio's REST API
        assert ended - started < 15 + len(speak("Thanks, goodbye.")[0]) / 2 / 22050 + 6
        assert result["status"] == "completed"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
            t0 = time.perf_counter()
            r = await http.post(base + "/api/sms", json={"to": "+14155550100", "body": "hi"}, timeout=30)
            assert r.status_code == 502 and "could not be reached" in r.json()["detail"]
            assert time.perf_counter() - t0 < 12  # the read timeout, not forever


async def test_a_hung_llm_gives_the_caller_the_apology_within_5_s(tmp_path, speak):
    """The default 4 s first-token budget runs from when the LLM is asked (after STT)."""
    port = free_port()
    settings = sidecar_settings(tmp_path, port)
    assert settings.forge_llm_first_token_ms == 4000
    engine = Engine(settings, llm=ScriptedLLM(hang=True))
    app = create_app(settings, engine=engine)
    with serve(app, port=port) as base:
        engine.warm_up()
        result = await simulate_call(base, TOKEN, [speak("How many customers are there?")], api_key=KEY)
    turn = result["turns"][0]
    timings = turn["timings_ms"]
    assert timings["first_frame_sent"] - timings["stt_final"] < 5000, timings
    assert turn["reply"] == APOLOGIES["llm"] and "no first token within 4.0 s" in turn["error"]
    heard = (await WhisperSTT(settings.forge_cache_dir, window_s=30).transcribe(ulaw_to_pcm16(result["_audio"][0]), 8000)).text
    assert wer(APOLOGIES["llm"], heard) <= 0.3, heard


@pytest.fixture
def hung_llm():
    """An OpenAI-compatible address that accepts connections, reads each request, and never answers; counts them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # held open, never answered

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", accepted
    listener.close()
    for conn in accepted:
        conn.close()


async def test_a_hung_llm_fails_over_once_with_an_apology_and_the_follow_up_skips_it(tmp_path, hung_llm, speak):
    url, connections = hung_llm
    port = free_port()
    settings = sidecar_settings(tmp_path, port, openai_base_url=url, stt_provider="whisper", tts_provider="piper")
    app = create_app(settings)
    said = "Please look up customer number three."
    with serve(app, port=port) as base:
        app.state.engine.warm_up()
        result = await simulate_call(base, TOKEN, [speak(said)], api_key=KEY)
    turn = result["turns"][0]
    timings = turn["timings_ms"]
    assert timings["first_frame_sent"] - timings["stt_final"] < 5000, timings  # the caller hears something
    assert turn["reply"].startswith(APOLOGIES["wait"]) and turn["tool_calls"], turn  # then the brain's answer
    assert len(connections) == 1  # the follow-up after the tool did not wait on the hung server again
    assert "LLM" in turn["error"] and "no first token within 4.0 s" in turn["error"], turn["error"]  # turns.error says what failed
    heard = (await WhisperSTT(settings.forge_cache_dir, window_s=30).transcribe(ulaw_to_pcm16(result["_audio"][0]), 8000)).text
    assert wer(APOLOGIES["wait"], " ".join(heard.split()[:4])) <= 0.25, heard


async def test_a_locked_database_holds_up_no_audio(tmp_path, speak):
    port = free_port()
    settings = sidecar_settings(tmp_path, port)
    app = create_app(settings)
    with serve(app, port=port) as base:
        app.state.engine.warm_up()
        locked = threading.Event()

        def hold_lock() -> None:
            conn = sqlite3.connect(tmp_path / "r.db", timeout=30)
            conn.execute("BEGIN IMMEDIATE")  # the write lock: every writer waits
            locked.set()
            time.sleep(5)
            conn.rollback()
            conn.close()

        async def lock_during_greeting() -> None:
            while not app.state.telephony.calls:  # noqa: ASYNC110 - polls another thread's state
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            app.state.lag.reset()
            threading.Thread(target=hold_lock, daemon=True).start()

        locker = asyncio.create_task(lock_during_greeting())
        result = await simulate_call(base, TOKEN, [speak("How many customers are there?")], api_key=KEY)
        await locker
        lag = app.state.lag.summary()
    assert locked.is_set()
    assert lag["samples"] > 200 and lag["p99_ms"] < 50, lag
    assert result["greeting_ms"] > 1500  # the greeting kept streaming while the lock was held
    turn = result["turns"][0]
    assert turn["reply"] == "The answer is 40.", turn  # answered and stored once the lock was gone


async def test_a_long_reply_on_a_recorded_call_is_cut_at_the_cap_and_both_tracks_are_kept(tmp_path, speak):
    """The seed's 300-character rule as a hard cap after the LLM (here 60 characters: the offline
    brain's 35-character first sentence is spoken, its 79-character second is not); with
    recordings on, the call leaves the caller's and the agent's tracks, and deleting the
    conversation removes them. One call checks both, to keep the suite short."""
    from voiceforge.audio.codecs import unwrap_wav

    port = free_port()
    settings = sidecar_settings(tmp_path, port, forge_phone_reply_max_chars=60, enable_recordings=True)
    app = create_app(settings)
    with serve(app, port=port) as base:
        app.state.engine.warm_up()
        result = await simulate_call(base, TOKEN, [speak("Tell me a joke about the weather.")], api_key=KEY)
        turn = result["turns"][0]
        assert turn["reply"] == "Sorry, I can't help with that here.", turn  # cut at the sentence boundary
        assert turn["agent_audio_ms"] < 3500  # the whole answer is about 7 s of speech
        conversation_id = turn_conversation(app, result["call_sid"])
        # The next turn's context holds what the caller heard, not the whole answer.
        pipeline = app.state.engine.resume(conversation_id)
        assert pipeline.messages("")[-1]["content"] == turn["reply"]

        folder = tmp_path / "recordings" / str(conversation_id)
        names = {p.name for p in folder.glob("*.wav")}
        assert {"call-caller.wav", "call-agent.wav", "call-mixed.wav", "000-user.wav", "000-reply.wav"} <= names
        judge = WhisperSTT(settings.forge_cache_dir, window_s=30)
        caller, rate = unwrap_wav((folder / "call-caller.wav").read_bytes())
        agent, _ = unwrap_wav((folder / "call-agent.wav").read_bytes())
        mixed, _ = unwrap_wav((folder / "call-mixed.wav").read_bytes())
        assert len(caller) == len(agent) == len(mixed) and len(caller) / 2 / rate > 4  # greeting, question, answer
        assert wer("Tell me a joke about the weather.", (await judge.transcribe(caller, rate)).text) <= 0.2
        assert wer("Sorry, I can't help with that here.", (await judge.transcribe(agent, rate)).text.split("?")[-1]) <= 0.25
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert (await http.delete(f"{base}/api/conversations/{conversation_id}")).status_code == 204
            assert (await http.get(f"{base}/api/conversations/{conversation_id}")).status_code == 404
            assert (await http.delete(f"{base}/api/conversations/{conversation_id}")).status_code == 404
    assert not folder.exists()


def turn_conversation(app, call_sid: str) -> int:  # noqa: ANN001
    from voiceforge.store.calls import get_call

    return get_call(app.state.engine.db, call_sid)["conversation_id"]


async def test_a_phone_reply_is_also_capped_in_seconds(tmp_path):
    engine = Engine(load_settings(forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                  forge_phone_reply_max_s=2))
    engine.ensure_mock_data()
    result = await engine.pipeline("customer_service", channel="phone").text_turn(
        "What can you do?", speak=True)
    # Spoken as "I can check your orders," + "book or change appointments, or look up your
    # account." + "What would you like?": it stops after the piece that passed 2 s.
    assert result.usage.tts_audio_s >= 2 and len(result.sentences) == 2, result.sentences
    assert "What would you like" not in result.reply
    chat = await engine.pipeline("customer_service", channel="chat").text_turn("What can you do?")
    assert len(chat.sentences) == 2 and "What would you like" in chat.reply  # other channels are not capped
