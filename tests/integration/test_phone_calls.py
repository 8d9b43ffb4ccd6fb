"""Simulated Twilio calls against a real sidecar on loopback, with the offline providers."""

import asyncio
import contextlib
import functools
import json
import logging
import time

import pytest
import websockets
from sqlalchemy import select

from server.main import create_app
from tests.conftest import wer
from tests.support.servers import serve
from voiceforge.audio.codecs import ulaw_to_pcm16
from voiceforge.config import load_settings
from voiceforge.providers.local import WhisperSTT
from voiceforge.store.models import Appointment, Customer
from voiceforge.telephony.security import sign
from voiceforge.telephony.simulator import simulate_call

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]
TOKEN = "sim-token-0123456789"
KEY = "phone-test-api-key"
sim = functools.partial(simulate_call, api_key=KEY)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    """A sidecar on a free port; yields (base URL, app)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("sidecar")
    settings = load_settings(public_base_url=base, twilio_auth_token=TOKEN, forge_data_dir=folder,
                             database_url=f"sqlite:///{folder / 'forge.db'}", forge_api_key=KEY)
    app = create_app(settings)
    with serve(app, port=port):
        app.state.engine.warm_up()
        yield base, app


def customer(app, cid):
    with app.state.engine.db.read_session() as s:
        return s.get(Customer, cid)


async def test_three_turn_call_round_trips_through_speech(sidecar, speak):
    base, app = sidecar
    requests = ["How many customers are there?", "Look up customer number three.", "Thanks, goodbye."]
    result = await sim(base, TOKEN, [speak(r) for r in requests])
    turns = result["turns"]
    assert result["greeting_ms"] > 1000  # the persona's greeting played first
    assert [t["tool_calls"][0]["name"] for t in turns] == ["run_sql", "lookup_customer", "end_call"]
    assert turns[0]["reply"] == "The answer is 40."
    assert customer(app, 3).name in turns[1]["reply"]
    judge = WhisperSTT(app.state.engine.settings.forge_cache_dir, window_s=30)
    for request, turn, ulaw in zip(requests, turns, result["_audio"], strict=True):
        assert wer(request, turn["transcript"]) <= 0.2, turn
        assert not turn["interrupted"] and turn["latency_ms"] and turn["latency_ms"] < 6000
        heard = (await judge.transcribe(ulaw_to_pcm16(ulaw), 8000)).text
        assert wer(turn["reply"], heard) <= 0.25, (turn["reply"], heard)
        assert {"stt_final", "llm_first_token", "tts_first_audio", "first_frame_sent",
                "playback_confirmed"} <= set(turn["timings_ms"])
    assert result["clears"] == 0 and result["marks_echoed"] >= 4


async def test_barge_in_clears_and_stores_only_what_played(sidecar, speak):
    base, app = sidecar
    with app.state.engine.db.read_session() as s:
        busy = s.scalars(select(Appointment.customer_id).where(Appointment.status == "scheduled")).first()
    first = f"What appointments does customer number {busy} have?"
    result = await sim(base, TOKEN, [speak(first), speak("Wait, stop please.")], barge_in_ms=3600)
    interrupted, barge = result["turns"]
    assert result["clears"] >= 1
    # Speech over the agent interrupts once it has lasted FORGE_MIN_INTERRUPTION_MS (300 ms; a
    # cough never does); the clear follows within 300 ms of that moment.
    min_interruption = app.state.engine.settings.forge_min_interruption_ms
    assert barge["barge_in_clear_ms"] is not None, barge
    assert min_interruption <= barge["barge_in_clear_ms"] <= min_interruption + 300, barge
    assert barge["media_after_clear"] == 0
    assert interrupted["interrupted"] is True
    assert interrupted["tool_calls"] and interrupted["tool_calls"][0]["result"], interrupted
    full = interrupted["tool_calls"][0]["result"]["summary"]
    played = interrupted["reply"]
    assert played and full.startswith(played) and len(played) < len(full), (played, full)
    assert played.endswith("appointments.") or played.endswith("appointment.")


BAD_MESSAGES = {
    "invalid JSON": "{not json",
    "bad base64": json.dumps({"event": "media", "media": {"payload": "%%%not-base64%%%"}}),
    "media before start": json.dumps({"event": "media", "media": {"payload": "//8="}}),
    "binary frame": b"\x00\x01\x02",
    "oversized": json.dumps({"event": "media", "media": {"payload": "A" * 70_000}}),
}


async def bad_stream(base: str, message) -> tuple[int, str]:  # noqa: ANN001
    url = base.replace("http://", "ws://") + "/twilio/stream"
    async with websockets.connect(url, additional_headers={"X-Twilio-Signature": sign(TOKEN, url, {})},
                                  max_size=1 << 20) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
        await ws.send(message)
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason
    return 0, ""


async def test_bad_input_closes_only_that_stream(sidecar, speak, caplog):
    base, _ = sidecar
    caplog.set_level(logging.WARNING, logger="forge.sidecar.twilio")
    good = asyncio.create_task(sim(base, TOKEN, [speak("How many customers are there?")]))
    await asyncio.sleep(1.0)
    for name, message in BAD_MESSAGES.items():
        code, reason = await bad_stream(base, message)
        assert code == 1008, (name, code, reason)
        assert reason, name
    result = await good
    assert result["turns"][0]["reply"] == "The answer is 40."
    logged = " ".join(r.getMessage() for r in caplog.records)
    for reason in ("invalid JSON", "not base64", "media before start", "binary frame", "exceeds"):
        assert reason in logged, reason


async def test_ten_concurrent_calls_keep_their_own_conversations(sidecar, speak):
    base, app = sidecar
    ids = list(range(11, 21))
    results = await asyncio.gather(*[
        sim(base, TOKEN, [speak(f"Look up customer number {i}.")], timeout_s=180) for i in ids
    ])
    assert len({r["call_sid"] for r in results}) == 10
    for cid, result in zip(ids, results, strict=True):
        turn = result["turns"][0]
        assert turn["tool_calls"], (cid, turn, result["greeting_ms"], result["marks_echoed"])
        assert turn["tool_calls"][0]["arguments"] == {"customer_id": cid}, turn
        assert customer(app, cid).name in turn["reply"]


async def test_dtmf_digits_are_stored_on_the_call(sidecar):
    import httpx

    base, _ = sidecar
    form = {"CallSid": "CA" + "7" * 32, "From": "+14155550100", "To": "+15005550006", "Direction": "inbound"}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        twiml = await http.post(base + "/twilio/voice", data=form,
                                headers={"X-Twilio-Signature": sign(TOKEN, base + "/twilio/voice", form)})
        token = twiml.text.split('name="token" value="')[1].split('"')[0]
        url = base.replace("http://", "ws://") + "/twilio/stream"
        async with websockets.connect(url, additional_headers={"X-Twilio-Signature": sign(TOKEN, url, {})}) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send(json.dumps({"event": "start", "start": {"streamSid": "MZ7", "callSid": form["CallSid"],
                                                                  "customParameters": {"token": token}}}))
            for digit in "42#":
                await ws.send(json.dumps({"event": "dtmf", "streamSid": "MZ7", "dtmf": {"digit": digit}}))
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ7"}))
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        deadline = time.monotonic() + 10  # the socket closes before the call's end is written
        while not (call := (await http.get(base + f"/api/calls/{form['CallSid']}")).json())["ended_at"]:
            assert time.monotonic() < deadline, call
            await asyncio.sleep(0.1)
    assert call["dtmf"] == "42#" and call["stream_sid"] == "MZ7" and call["ended_at"]


async def _drain(ws) -> None:  # noqa: ANN001
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def _open_stream(http, base: str, call_sid: str):  # noqa: ANN001, ANN202
    form = {"CallSid": call_sid, "From": "+14155550100", "To": "+15005550006", "Direction": "inbound"}
    twiml = await http.post(base + "/twilio/voice", data=form,
                            headers={"X-Twilio-Signature": sign(TOKEN, base + "/twilio/voice", form)})
    token = twiml.text.split('name="token" value="')[1].split('"')[0]
    url = base.replace("http://", "ws://") + "/twilio/stream"
    ws = await websockets.connect(url, additional_headers={"X-Twilio-Signature": sign(TOKEN, url, {})})
    await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
    await ws.send(json.dumps({"event": "start", "start": {"streamSid": "MZ" + call_sid[2:], "callSid": call_sid,
                                                          "customParameters": {"token": token}}}))
    return ws


async def test_unknown_events_are_ignored_and_only_the_inbound_track_is_heard(sidecar, speak):
    import base64

    import httpx

    from voiceforge.audio.codecs import pcm16_to_ulaw
    from voiceforge.audio.resample import resample

    base, _ = sidecar
    pcm, rate = speak("How many customers are there?")
    ulaw = pcm16_to_ulaw(resample(pcm, rate, 8000)) + b"\xff" * 8000
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        for track, sid in (("outbound", "CA" + "8" * 32), ("inbound", "CA" + "9" * 32)):
            ws = await _open_stream(http, base, sid)
            drain = asyncio.create_task(_drain(ws))  # read the greeting, as Twilio would
            await ws.send(json.dumps({"event": "teleport", "teleport": {"to": "mars"}}))  # a newer event: skipped
            for i in range(0, len(ulaw), 160):
                await ws.send(json.dumps({"event": "media", "streamSid": "MZ", "media": {
                    "track": track, "payload": base64.b64encode(ulaw[i : i + 160]).decode()}}))
                await asyncio.sleep(0.02)
            await asyncio.sleep(2.5)  # time to transcribe and answer, if it were going to
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ"}))  # marks were never echoed:
            await ws.close()                                                  # the turn is stored at stop
            drain.cancel()
            for _ in range(20):
                call = (await http.get(f"{base}/api/calls/{sid}")).json()
                if call["turns"] or call["status"] == "completed":
                    break
                await asyncio.sleep(0.25)
            texts = [t["user_text"] for t in call["turns"]]
            if track == "outbound":
                assert texts == [], texts  # the agent's own audio is not the caller talking
            else:
                assert len(texts) == 1 and wer("How many customers are there?", texts[0]) <= 0.2, texts
