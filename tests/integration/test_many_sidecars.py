"""Several sidecars, one database and one Redis: a call's webhook and its media stream on different
instances (a load balancer's choice), with the caller written from Twilio's documentation."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import httpx
import pytest
from twilio.request_validator import RequestValidator

from server.main import create_app
from tests.support.servers import free_port, serve
from tests.support.twilio_caller import TwilioCaller
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings

pytestmark = [pytest.mark.integration]
TOKEN = "many-sidecars-twilio-token"


def _pair(folder, redis_url: str | None):  # noqa: ANN202
    """Two sidecar apps behind one public URL (the load balancer's), on one database."""
    public = f"http://127.0.0.1:{free_port()}"
    common = {"public_base_url": public, "twilio_auth_token": TOKEN, "forge_api_key": "many-key",
              "database_url": f"sqlite:///{folder / 'forge.db'}", "redis_url": redis_url}
    return [create_app(load_settings(forge_data_dir=folder / name, forge_instance=name, **common))
            for name in ("first", "second")]


async def test_a_stream_reaching_another_sidecar_finds_its_call_through_redis(tmp_path, redis_url, speak):
    first, second = _pair(tmp_path, redis_url)
    pcm, rate = speak("How many customers are there?")
    with serve(first) as base_a, serve(second) as base_b:
        public = first.state.settings.public_base_url  # the load balancer's, which Twilio signs
        caller = TwilioCaller(public, TOKEN)

        async def webhook_to(base: str, call_sid: str) -> ET.Element:
            url_signed = public + "/twilio/voice"
            form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15551230001",
                    "To": "+15005550006", "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
            sig = RequestValidator(TOKEN).compute_signature(url_signed, form)
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.post(base + "/twilio/voice", data=form, headers={"X-Twilio-Signature": sig})
            reply.raise_for_status()
            return ET.fromstring(reply.text)

        await caller.dial(webhook_via=base_a, stream_via=base_b)  # the webhook on one, the stream on the other
        assert await caller.heard_after(0, 20) > 1.0  # the greeting: the second sidecar took the call
        assert [c["kind"] for c in second.state.connections.status()] == ["phone"]
        assert first.state.connections.status() == []
        asked = time.perf_counter()
        await caller.send_audio(resample(pcm, rate, 8000) + bytes(16000))
        assert await caller.heard_after(asked, 30) > 0.5
        replay = await webhook_to(base_b, caller.call_sid)  # a replayed webhook, on the other instance
        assert replay.find("./Hangup") is not None and replay.find("./Connect") is None
        await caller.hang_up()
    from voiceforge.store.models import Turn

    with first.state.engine.db.read_session() as s:
        replies = [t.assistant_text for t in s.query(Turn)]
    assert any("40" in r for r in replies), replies


async def test_without_redis_the_other_sidecar_refuses_the_stream(tmp_path):
    first, second = _pair(tmp_path, None)
    with serve(first) as base_a, serve(second) as base_b:
        caller = TwilioCaller(first.state.settings.public_base_url, TOKEN)
        await caller.dial(webhook_via=base_a, stream_via=base_b)
        await asyncio.sleep(1.5)
        assert caller.closed_by_server and not caller.heard.media  # "missing, spent or expired stream token"


async def test_every_instance_lists_every_call_and_controls_it_where_it_is_held(tmp_path, redis_url):
    first, second = _pair(tmp_path, redis_url)
    with serve(first) as base_a, serve(second) as base_b:
        caller = TwilioCaller(first.state.settings.public_base_url, TOKEN)
        await caller.dial(webhook_via=base_a, stream_via=base_a)  # the first holds the call
        assert await caller.heard_after(0, 20) > 1.0
        headers = {"Authorization": "Bearer many-key"}
        async with httpx.AsyncClient(base_url=base_b, headers=headers, timeout=15) as second_api:
            status = (await second_api.get("/ws/status")).json()
            assert status["active"] == 0  # nothing on the second itself …
            listed = [c for c in status["everywhere"] if c["call_sid"] == caller.call_sid]
            assert [c["instance"] for c in listed] == ["first"]  # … but it sees the first's call
            assert sorted(i["instance"] for i in status["instances"]) == ["first", "second"]

            spoke = time.perf_counter()  # "say" asked of the second, spoken by the first
            reply = await second_api.post(f"/api/calls/{caller.call_sid}/say", json={"text": "One moment please."})
            assert reply.status_code == 200 and reply.json()["instance"] == "first", reply.text
            assert await caller.heard_after(spoke, 15) > 0.5

            reply = await second_api.post(f"/api/calls/{caller.call_sid}/hangup")
            assert reply.status_code == 200 and reply.json()["instance"] == "first", reply.text
            for _ in range(50):
                if caller.closed_by_server:
                    break
                await asyncio.sleep(0.1)
            assert caller.closed_by_server  # the first closed the media stream
            assert (await second_api.post("/ws/disconnect/0123456789abcdef")).status_code == 404
            assert (await second_api.post(f"/api/calls/{caller.call_sid}/say", json={"text": "hi"})).status_code == 404
            for _ in range(50):
                call = (await second_api.get(f"/api/calls/{caller.call_sid}")).json()
                if call["status"] == "completed":
                    break
                await asyncio.sleep(0.1)
            assert call["status"] == "completed" and call["ended_at"], call
            assert (await second_api.get("/ws/status")).json()["everywhere"] == []
