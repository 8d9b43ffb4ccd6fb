"""Draining on SIGTERM and load-aware admission, on a real `forge serve` and real Whisper load.

The caller is written from Twilio's documentation (tests/support/twilio_caller.py); the refused
call's TwiML is parsed as Twilio would.
"""

from __future__ import annotations

import asyncio
import signal
import time
import xml.etree.ElementTree as ET

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.support.twilio_caller import TwilioCaller
from voiceforge.audio.resample import resample

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]


async def _webhook(base: str, token: str, call_sid: str) -> ET.Element:
    url = base + "/twilio/voice"
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15551230002", "To": "+15005550006",
            "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
    signature = RequestValidator(token).compute_signature(url, form)
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
    reply.raise_for_status()
    return ET.fromstring(reply.text)


async def test_sigterm_drains_a_live_call_refuses_new_ones_and_exits(tmp_path, speak):
    from forge.processes import local_sidecar
    from voiceforge.config import load_settings

    settings = load_settings(forge_data_dir=tmp_path / "data")
    pcm, rate = speak("How many customers are there?")
    question = resample(pcm, rate, 8000) + bytes(16000)  # and 1 s of silence: the end of the turn
    async with local_sidecar(settings=settings, FORGE_DRAIN_S="60", FORGE_MAX_LOAD="0") as sidecar:
        base, token, key = sidecar
        caller = TwilioCaller(base, token)
        await caller.dial()
        await caller.heard_after(0, 15)  # the greeting
        sidecar.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(timeout=5) as http:
            ready = await http.get(base + "/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "draining"
        refused = await _webhook(base, token, "CA" + "f" * 32)
        assert refused.find("./Connect") is None and refused.find("./Hangup") is not None
        assert refused.findtext("./Say").startswith("Sorry, we can't take your call right now")

        asked = time.perf_counter()
        await caller.send_audio(question)  # the call in progress goes on
        assert await caller.heard_after(asked, 30) > 0.5
        assert sidecar.process.returncode is None  # still serving it
        await caller.hang_up()
        code = await asyncio.wait_for(sidecar.process.wait(), 30)  # the last call ended: the process exits
        assert code == 0

    from voiceforge.store.db import get_database
    from voiceforge.store.models import Call, Turn

    db = get_database(settings.database_url_resolved)
    with db.read_session() as s:
        statuses = {c.call_sid: c.status for c in s.query(Call)}
        replies = [t.assistant_text for t in s.query(Turn)]
    assert statuses["CA" + "f" * 32] == "busy"
    assert any("40" in (r or "") for r in replies)  # the drained call's answer was stored


async def test_a_call_still_live_at_the_drain_limit_hears_the_wrap_up(tmp_path):
    from forge.processes import local_sidecar
    from voiceforge.audio.codecs import ulaw_to_pcm16
    from voiceforge.config import load_settings
    from voiceforge.providers.local import WhisperSTT

    settings = load_settings(forge_data_dir=tmp_path / "data")
    async with local_sidecar(settings=settings, FORGE_DRAIN_S="2", FORGE_MAX_LOAD="0",
                             FORGE_DRAIN_REDIRECT_URL="https://fallback.example.com/twilio/voice") as sidecar:
        base, token, _key = sidecar
        caller = TwilioCaller(base, token)
        await caller.dial()
        await caller.heard_after(0, 15)
        signalled = time.perf_counter()
        sidecar.process.send_signal(signal.SIGTERM)
        redirected = await _webhook(base, token, "CA" + "e" * 32)
        assert redirected.findtext("./Redirect") == "https://fallback.example.com/twilio/voice"
        await caller.heard_after(signalled + 1.5, 30)
        code = await asyncio.wait_for(sidecar.process.wait(), 30)
    assert code == 0 and caller.closed_by_server
    wrap_up = b"".join(a for t, a in caller.heard.media if t > signalled + 1.5)
    heard = (await WhisperSTT(settings.forge_cache_dir).transcribe(ulaw_to_pcm16(wrap_up), 8000)).text.lower()
    assert "time limit" in heard and "goodbye" in heard, heard  # the persona's wrap-up, then the hang-up


async def test_a_loaded_sidecar_refuses_new_sessions_until_the_load_passes(tmp_path, speak):
    """Real load: four utterances queued for the one Whisper thread fill FORGE_STT_QUEUE_FULL=2."""
    from server.main import create_app
    from tests.support.servers import serve
    from voiceforge import telemetry
    from voiceforge.config import load_settings
    from voiceforge.engine import Engine

    settings = load_settings(forge_data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'f.db'}",
                             forge_api_key="load-test-key", forge_stt_queue_full=2, forge_max_load=0.7)
    engine = Engine(settings)
    app = create_app(settings, engine=engine)
    pcm, rate = speak("I would like to hear about every order I have placed with you this year, please.")
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/ready", timeout=120)).status_code in (200, 503)
            work = asyncio.gather(*(engine.stt.transcribe(pcm, rate) for _ in range(4)))
            while telemetry.stt_queue_depth() < 3:  # noqa: ASYNC110 - the Whisper thread's queue, filling
                await asyncio.sleep(0.01)
            busy = await http.get("/ready")
            ws_url = base.replace("http", "ws") + "/ws"
            async with websockets.connect(ws_url, additional_headers={"Authorization": "Bearer load-test-key",
                                                                       "Origin": "http://127.0.0.1:8501"}) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            await work
            deadline = time.monotonic() + 20  # the CPU share is a 5 s mean: it passes a few seconds later
            while (calm := await http.get("/ready")).status_code != 200 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
    assert busy.status_code == 503 and busy.json()["reason"].startswith("overloaded (load 1.00 of 0.70)")
    assert closed.value.rcvd.code == 1013 and "try again later" in closed.value.rcvd.reason
    assert calm.status_code == 200, calm.json()
