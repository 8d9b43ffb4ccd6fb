"""Turn-taking on the phone, heard by a caller written from Twilio's docs (tests/support/twilio_caller.py).

A freshly started ``forge serve`` answers ``/ready`` only once its models are warm and its
greetings synthesized, and then greets within 300 ms of the stream's start; a silent caller is
reprompted and let go; a keypad key reaches a tool. What the caller heard is transcribed with
Whisper, so the test checks words, not our own bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from server.main import create_app
from tests.conftest import wer
from tests.support.servers import free_port, serve
from tests.support.twilio_caller import TwilioCaller
from voiceforge.audio.codecs import ulaw_to_pcm16
from voiceforge.config import load_settings
from voiceforge.providers.local import WhisperSTT

pytestmark = pytest.mark.integration
TOKEN = "turn-taking-token"
KEY = "turn-taking-key"


def whisper() -> WhisperSTT:
    return WhisperSTT(load_settings().forge_cache_dir)


async def transcript(media: list[tuple[float, bytes]]) -> str:
    pcm = ulaw_to_pcm16(b"".join(audio for _, audio in media))
    return (await whisper().transcribe(pcm, 8000)).text


@contextlib.contextmanager
def sidecar_process(folder, port, **env):  # noqa: ANN001, ANN003, ANN201
    """``forge serve`` on ``port`` (a new process, cold); yields the Popen."""
    env = {**os.environ, "FORGE_DATA_DIR": str(folder), "FORGE_API_KEY": KEY, "TWILIO_AUTH_TOKEN": TOKEN,
           "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
    proc = subprocess.Popen([sys.executable, "-m", "forge", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.wallclock
async def test_a_fresh_sidecar_is_ready_only_when_warm_and_greets_within_300_ms(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    seen: list[tuple[int, int]] = []  # (/health status, /ready status) while starting
    with sidecar_process(tmp_path, port) as proc:
        async with httpx.AsyncClient(timeout=2) as http:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, "the sidecar exited while starting"
                assert time.monotonic() < deadline, "the sidecar never got ready"
                with contextlib.suppress(httpx.HTTPError):
                    health, ready = (await http.get(base + "/health")), (await http.get(base + "/ready"))
                    seen.append((health.status_code, ready.status_code))
                    if ready.status_code == 200:
                        break
                await asyncio.sleep(0.05)
        caller = TwilioCaller(base, TOKEN, persona="customer_service")
        await caller.dial()
        while not caller.heard.media and time.perf_counter() - caller.started_at < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        first_audio_ms = (caller.heard.media[0][0] - caller.started_at) * 1000
        await asyncio.sleep(4.5)  # the whole greeting
        await caller.hang_up()
    # /health is liveness (200 from the first answer), /ready waited for the warm-up
    assert (200, 503) in seen, seen
    assert first_audio_ms <= 300, f"greeting began {first_audio_ms:.0f} ms after the stream started"
    heard = await transcript(caller.heard.media)
    assert wer("Hi there, this is Ava. How can I help you today?", heard) <= 0.25, heard


@pytest.fixture
def sidecar(tmp_path):
    """A sidecar on loopback in this process with a short idle timeout (1.5 s, one reprompt)."""
    port = free_port()
    settings = load_settings(public_base_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN,
                             forge_api_key=KEY, forge_data_dir=tmp_path, forge_idle_s=1.5, forge_idle_reprompts=1)
    app = create_app(settings)
    with serve(app, port) as base:
        deadline = time.monotonic() + 120
        while httpx.get(base + "/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield app, base


async def test_a_silent_caller_hears_the_reprompt_then_the_goodbye_and_the_call_ends(sidecar):
    app, base = sidecar
    caller = TwilioCaller(base, TOKEN, persona="customer_service")
    await caller.dial()
    await caller.send_audio(b"\x00\x00" * 8000 * 12)  # 12 s of line silence: greeting, 1.5 s, reprompt, 1.5 s, goodbye
    assert caller.closed_by_server, "the sidecar did not end the call"
    persona = app.state.engine.persona("customer_service")
    heard = (await transcript(caller.heard.media)).lower()
    assert "are you still there" in heard, heard
    assert wer(persona.idle_goodbye, heard[heard.rindex("there") + 5:]) <= 0.3, heard
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as api:
        calls = (await api.get("/api/calls")).json()
    assert calls and calls[0]["call_sid"] == caller.call_sid


async def test_a_keypad_key_reaches_a_tool(sidecar):
    app, base = sidecar
    caller = TwilioCaller(base, TOKEN, persona="customer_service")
    await caller.dial()
    await caller.send_audio(b"\x00\x00" * 8000 * 1)
    await caller.press("9")  # the persona's keypad: 9 = "That's all, goodbye."
    deadline = time.monotonic() + 30
    while not caller.closed_by_server:
        assert time.monotonic() < deadline, "the keypad goodbye did not end the call"
        await caller.send_audio(b"\x00\x00" * 160)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as api:
        call = (await api.get(f"/api/calls/{caller.call_sid}")).json()
    assert call["dtmf"] == "9", call
    (turn,) = call["turns"]
    assert [t["name"] for t in turn["tool_calls"]] == ["end_call"], turn


def phone(speak, text: str) -> bytes:
    """Piper speech for ``text`` at 8 kHz (the phone line's rate)."""
    import numpy as np
    import soxr

    pcm, rate = speak(text)
    return soxr.resample(np.frombuffer(pcm, "<i2"), rate, 8000).astype("<i2").tobytes()


def cough(ms: int = 150) -> bytes:
    """A cough-like burst: loud noise with a fast attack and decay, at 8 kHz."""
    import numpy as np

    n = 8000 * ms // 1000
    envelope = np.minimum(1, np.arange(n) / (n / 10)) * np.exp(-np.arange(n) / (n / 3))
    noise = np.random.default_rng(7).normal(0, 9000, n) * envelope
    return np.clip(noise, -32768, 32767).astype("<i2").tobytes()


def click() -> bytes:
    """A click: a few samples of a sharp, decaying pulse, at 8 kHz."""
    import numpy as np

    pulse = np.array([20000, -18000, 12000, -8000, 4000, -2000], dtype="<i2").tobytes()
    return b"\x00\x00" * 40 + pulse + b"\x00\x00" * 40


async def answered(base: str, caller: TwilioCaller) -> dict:
    """The call from the API once every stored turn is answered (line silence sent meanwhile)."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as api:
        deadline = time.monotonic() + 40
        while True:
            call = (await api.get(f"/api/calls/{caller.call_sid}")).json()
            if call.get("turns") and all(t["answered"] for t in call["turns"]):
                return call
            assert time.monotonic() < deadline, call
            await caller.send_audio(b"\x00\x00" * 1600)


async def _over_a_long_answer(base: str, speak, sound: bytes) -> tuple[TwilioCaller, dict]:  # noqa: ANN001
    caller = TwilioCaller(base, TOKEN, persona="customer_service")
    await caller.dial()
    await caller.send_audio(b"\x00\x00" * 8000 * 4)  # the greeting
    await caller.send_audio(phone(speak, "Tell me a joke about the weather."))
    asked = len(caller.heard.media)
    while len(caller.heard.media) < asked + 60:  # 1.2 s of the answer heard
        await caller.send_audio(b"\x00\x00" * 160)
    await caller.send_audio(sound)
    call = await answered(base, caller)
    await caller.hang_up()
    return caller, call


async def test_a_cough_a_click_and_an_uh_huh_do_not_interrupt_the_agent(sidecar, speak):
    _, base = sidecar
    for sound in (cough(), click()):
        caller, call = await _over_a_long_answer(base, speak, sound)
        (turn,) = call["turns"]
        assert not turn["interrupted"] and not caller.heard.clears, turn

    caller, call = await _over_a_long_answer(base, speak, phone(speak, "Uh-huh."))
    (turn,) = call["turns"]  # the backchannel is no turn of its own
    assert not turn["interrupted"], turn
    heard = await transcript(caller.heard.media)
    last = turn["assistant_text"].split(". ")[-1]
    tail = " ".join(heard.split()[-len(last.split()):])  # as many words as the last sentence has
    assert wer(last, tail) <= 0.35, (last, heard)  # the answer played to its end


async def test_words_over_the_agent_interrupt_it(sidecar, speak):
    _, base = sidecar
    caller, call = await _over_a_long_answer(base, speak, phone(speak, "Wait, how many customers are there?"))
    first, second = call["turns"]
    assert first["interrupted"] and caller.heard.clears, first
    assert "customers" in second["user_text"].lower(), second
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as api:
        listed = {c["id"]: c for c in (await api.get("/api/conversations")).json()}
    assert "joke" in listed[call["conversation_id"]]["title"].lower()  # the call log shows what was said first


async def test_a_pause_mid_sentence_is_waited_for_and_the_turn_answered_once(sidecar, speak):
    _, base = sidecar
    caller = TwilioCaller(base, TOKEN, persona="customer_service")
    await caller.dial()
    await caller.send_audio(b"\x00\x00" * 8000 * 4)  # the greeting
    greeted = len(caller.heard.media)
    await caller.send_audio(phone(speak, "I would like to book an appointment for"))
    paused_at = time.perf_counter()
    await caller.send_audio(b"\x00\x00" * 7200)  # a 900 ms pause mid-sentence
    await caller.send_audio(phone(speak, "next Monday at ten in the morning."))
    resumed_at = time.perf_counter()
    spoke_in_the_pause = [at for at, _ in caller.heard.media[greeted:] if paused_at < at < resumed_at]
    call = await answered(base, caller)
    await caller.hang_up()
    assert not spoke_in_the_pause, f"the agent spoke {len(spoke_in_the_pause) * 20} ms into the caller's pause"
    (turn,) = call["turns"]
    assert wer("I would like to book an appointment for next Monday at ten in the morning.",
               turn["user_text"]) <= 0.2, turn
    assert turn["timings_ms"].get("end_of_turn_p") is not None, turn["timings_ms"]
    assert turn["reply_audio_path"] and turn["user_audio_path"] is None, turn  # the reply kept for replay, by default
    assert await asyncio.to_thread(os.path.getsize, turn["reply_audio_path"]) > 8000
