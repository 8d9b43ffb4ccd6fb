"""Push-to-talk devices end to end: registration, the device protocol on loopback, errors, consent.

The device side is `voiceforge/devices/simulator.py`, which speaks exactly the firmware's
protocol (firmware/PROTOCOL.md); the speech is Piper's, the agent the offline one.
"""

from __future__ import annotations

import asyncio
import json
import struct

import httpx
import pytest
import websockets

from server.main import create_app
from tests.conftest import wer
from tests.support.servers import free_port, serve
from voiceforge.config import load_settings
from voiceforge.devices.simulator import simulate_device, simulate_http_press
from voiceforge.providers.local import WhisperSTT
from voiceforge.store import conversations

pytestmark = pytest.mark.integration
KEY = "device-test-key"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("devices")
    app = create_app(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'd.db'}",
                                   forge_api_key=KEY, enable_recordings=True))
    with serve(app, port=free_port()) as base:
        app.state.engine.warm_up()
        yield base, app


def admin(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


async def register(base: str, persona: str = "friendly_guide", child_id: int | None = None) -> tuple[str, str]:
    async with admin(base) as http:
        r = await http.post("/api/devices", json={"name": "bedroom", "persona": persona, "child_id": child_id})
        assert r.status_code == 201, r.text
        return r.json()["device_id"], r.json()["token"]


async def test_registration_heartbeat_settings_and_a_fresh_context(sidecar):
    base, _ = sidecar
    async with admin(base) as http:
        child = (await http.post("/api/children", json={"name": "Arjun", "dob": "2019-04-02", "consent": True})).json()
    device_id, token = await register(base, child_id=child["child_id"])
    assert token.startswith("dt_")
    async with admin(base) as http:
        listed = (await http.get(f"/api/devices/{device_id}")).json()
        assert "token" not in listed and listed["token_hint"] == token[:7] + "…" and listed["last_seen_at"] is None
    device = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=device) as http:
        beat = (await http.post("/device/heartbeat", json={"firmware": "0.1.0", "battery": 80, "rssi": -60})).json()
        assert beat["settings_version"] == 1
        first = await http.get("/device/context")
        etag = first.headers["etag"]
        assert first.json()["child"]["name"] == "Arjun" and beat["context_etag"] == etag
        assert (await http.get("/device/context", headers={"If-None-Match": etag})).status_code == 304
        assert (await http.get("/device/settings")).json()["volume"] == 70
    async with admin(base) as http:
        assert (await http.patch(f"/api/devices/{device_id}", json={"volume": 35})).json()["settings_version"] == 2
        await http.patch(f"/api/children/{child['child_id']}", json={"preferred_language": "hi"})
        seen = (await http.get(f"/api/devices/{device_id}")).json()
        assert seen["last_seen_at"] and seen["firmware"] == "0.1.0" and seen["status"] == {"battery": 80, "rssi": -60}
    async with httpx.AsyncClient(base_url=base, headers=device) as http:
        assert (await http.get("/device/settings")).json()["volume"] == 35
        stale = await http.get("/device/context", headers={"If-None-Match": etag})
        assert stale.status_code == 200 and stale.headers["etag"] != etag


async def test_spoken_presses_are_answered_and_continue_one_conversation(sidecar, speak):
    base, app = sidecar
    device_id, token = await register(base)
    result = await simulate_device(base, token, [speak("How many customers are there?")], resend_every=3)
    (turn,) = result["turns"]
    assert wer("How many customers are there?", turn["transcript"]) <= 0.2  # re-sent chunks not heard twice
    assert turn["reply"] == "The answer is 40." and turn["tool_calls"] == ["run_sql"]
    assert turn["latency_ms"] is not None and turn["latency_ms"] < 6000, turn
    heard = (await WhisperSTT(app.state.engine.settings.forge_cache_dir, window_s=30).transcribe(result["_audio"][0], 16000)).text
    assert wer(turn["reply"], heard) <= 0.25, heard
    again = await simulate_device(base, token, [speak("Look up customer number three.")])  # a new connection
    assert again["turns"][0]["tool_calls"] == ["lookup_customer"]
    async with admin(base) as http:
        conversation_id = (await http.get(f"/api/devices/{device_id}")).json()["conversation_id"]
    texts = [t["user_text"] for t in conversations.turns_of(app.state.engine.db, conversation_id)]
    assert len(texts) == 2 and wer("Look up customer number three.", texts[1]) <= 0.2


async def test_a_press_over_chunked_http_at_44_1_khz(sidecar, speak):
    base, _ = sidecar
    _, token = await register(base)
    pcm, rate = speak("How many customers are there?")
    result = await simulate_http_press(base, token, pcm, rate, rate=44100)
    assert result["status"] == 200 and result["reply"] == "The answer is 40.", result
    assert result["latency_ms"] < 6000 and result["reply_audio_ms"] > 800


async def test_bad_token_revoked_device_too_long_wrong_rate_and_a_second_press(sidecar, speak):
    base, _ = sidecar
    device_id, token = await register(base)
    url = base.replace("http://", "ws://") + "/device/ws"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/device/heartbeat", json={}, headers={"Authorization": "Bearer dt_nope"})).status_code == 401
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer dt_nope"}):
            pass
    assert refused.value.response.status_code == 401

    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(json.dumps({"type": "hello", "rate": 22050}))
        assert json.loads(await ws.recv())["code"] == 415
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=auth) as http:
        assert (await http.post("/device/turn", params={"rate": 8000}, content=b"")).status_code == 415
        odd = struct.pack("<IIH", 1, 0, 3) + b"\x00\x01\x02"
        assert (await http.post("/device/turn", content=odd)).status_code == 415

    async with websockets.connect(url, additional_headers=auth, max_size=1 << 20) as ws:
        await ws.send(json.dumps({"type": "hello", "rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "ready"
        # the device holds its socket: another press elsewhere is 409, over either carrier
        async with httpx.AsyncClient(base_url=base, headers=auth) as http:
            assert (await http.post("/device/turn", content=b"")).status_code == 409
        with pytest.raises(websockets.InvalidStatus) as busy:
            async with websockets.connect(url, additional_headers=auth):
                pass
        assert busy.value.response.status_code == 409
        # 61 s of audio in one press (the limit is 60 s): refused, nothing stored, the socket lives on
        await ws.send(json.dumps({"type": "press", "turn": 1}))
        chunk = b"\x00\x10" * 640
        for seq in range(61 * 25):
            await ws.send(struct.pack("<II", 1, seq) + chunk)
        await ws.send(json.dumps({"type": "release", "turn": 1}))
        error = {}
        while error.get("type") != "error":
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == 413 and error["turn"] == 1
    async with admin(base) as http:
        conversation_id = (await http.get(f"/api/devices/{device_id}")).json()["conversation_id"]
        assert conversations.turns_of(sidecar[1].state.engine.db, conversation_id) == []  # the refused press left nothing
        await http.post(f"/api/devices/{device_id}/revoke")
    async with httpx.AsyncClient(base_url=base, headers=auth) as http:
        assert (await http.get("/device/settings")).status_code == 401  # revoked at once
    pcm, rate = speak("Hello.")
    assert (await simulate_http_press(base, token, pcm, rate))["status"] == 401


async def test_a_long_press_in_small_chunks_and_presses_of_nothing(sidecar, speak):
    base, _ = sidecar
    _, token = await register(base)
    auth = {"Authorization": f"Bearer {token}"}
    said = "Please look up customer number three, and then tell me how many orders they have placed."
    pcm, rate = speak(said)
    result = await simulate_http_press(base, token, pcm, rate, chunk_ms=40)  # about 4 s of press
    assert result["status"] == 200 and wer(said, result["transcript"]) <= 0.2 and result["reply"], result

    async def one_body(*chunks: bytes):  # noqa: ANN202 - the whole press at once, as HTTP may hand it over
        yield b"".join(chunks)

    loud = (b"\x00\x10\x00\xf0" * 320)[:1290]  # 1,290-byte chunks: ~40 ms each, about 4 s in all
    body = [struct.pack("<IIH", 5, seq, len(loud)) + loud for seq in range(100)]
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as http:
        r = await http.post("/device/turn", content=one_body(*body))
        assert r.status_code == 200  # once 400: "a chunk's header promises more than a chunk may hold"
        empty = [struct.pack("<IIH", 6, seq, 0) for seq in range(50)]
        r = await http.post("/device/turn", content=one_body(*empty))
        assert r.status_code == 400 and "no audio" in r.json()["detail"]  # not a 200 left open for 180 s

        async def trickle():  # noqa: ANN202 - empty chunks, one every half second, for 13 s
            for seq in range(26):  # (httpx reads the answer only once it has sent the whole body)
                yield struct.pack("<IIH", 7, seq, 0)
                await asyncio.sleep(0.5)

        app = sidecar[1]
        saved = app.state.engine.settings.forge_max_turn_s
        app.state.engine.settings.forge_max_turn_s = 1.0  # the body's deadline: the longest press plus 10 s
        try:
            started = asyncio.get_running_loop().time()
            r = await http.post("/device/turn", content=trickle())
        finally:
            app.state.engine.settings.forge_max_turn_s = saved
        assert r.status_code == 408 and asyncio.get_running_loop().time() - started < 20
    url = base.replace("http://", "ws://") + "/device/ws"
    async with websockets.connect(url, additional_headers=auth, max_size=1 << 20) as ws:
        await ws.send(json.dumps({"type": "hello", "rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "press", "turn": 8}))
        for seq in range(20_000):  # empty frames: ignored, and their number bounded
            await ws.send(struct.pack("<II", 8, seq))
        await ws.send(json.dumps({"type": "release", "turn": 8}))
        error = {}
        while error.get("type") != "error":
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == 413 and error["turn"] == 8
        await ws.send(json.dumps({"type": "press", "turn": 9}))
        await ws.send(json.dumps({"type": "release", "turn": 9}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == 400 and "no audio" in error["message"]


async def test_consent_gates_storage_and_deletion_leaves_nothing(sidecar, speak):
    base, app = sidecar
    db = app.state.engine.db
    async with admin(base) as http:
        child = (await http.post("/api/children", json={"name": "Meera", "consent": False})).json()
    device_id, token = await register(base, persona="hanuman_storyteller", child_id=child["child_id"])
    await simulate_device(base, token, [speak("Hello, who are you?")])
    async with admin(base) as http:
        assert (await http.get(f"/api/devices/{device_id}")).json()["conversation_id"] is None
        profile = (await http.get(f"/api/children/{child['child_id']}")).json()
        assert profile["interactions"] == []
        await http.patch(f"/api/children/{child['child_id']}", json={"consent": True})
    done = await simulate_device(base, token, [speak("Hello, who are you?")])
    assert done["turns"][0]["transcript"]
    async with admin(base) as http:
        device = (await http.get(f"/api/devices/{device_id}")).json()
        conversation_id = device["conversation_id"]
        assert len(conversations.turns_of(db, conversation_id)) == 1
        assert len((await http.get(f"/api/children/{child['child_id']}")).json()["interactions"]) == 1
        recordings = app.state.engine.settings.forge_data_dir / "recordings" / str(conversation_id)
        assert any(recordings.iterdir())  # ENABLE_RECORDINGS kept the press and the reply
        removed = (await http.delete(f"/api/children/{child['child_id']}")).json()
        assert removed["conversations"] == 1 and removed["recording_folders"] == 1
        assert (await http.get(f"/api/children/{child['child_id']}")).status_code == 404
        assert (await http.get(f"/api/devices/{device_id}")).json()["child_id"] is None
    assert not recordings.exists()
    assert conversations.get_conversation(db, conversation_id) is None
    from sqlalchemy import text

    with db.engine.connect() as conn:
        for table in ("child_profiles", "interests", "chalisa_progress", "story_progress", "interactions"):
            rows = conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE "
                                     + ("id" if table == "child_profiles" else "child_id") + " = :c"),
                                {"c": child["child_id"]}).scalar()
            assert rows == 0, table
        assert conn.execute(text("SELECT COUNT(*) FROM turns WHERE conversation_id = :c"),
                            {"c": conversation_id}).scalar() == 0


async def test_the_devices_page_press_runs_the_simulator_over_the_wire(speak):
    from forge.inprocess import run_local_device_press
    from voiceforge.config import get_settings
    from voiceforge.store import children
    from voiceforge.store import devices as store
    from voiceforge.store.db import get_database

    db = get_database(get_settings().database_url_resolved)
    kid = children.create_child(db, "Asha", consent=True)["child_id"]
    events: list[dict] = []
    result = await run_local_device_press([speak("Hello, who are you?")], "hanuman_storyteller", kid, events.append)
    (turn,) = result["turns"]
    assert "I'm Hanuman" in turn["reply"] and turn["latency_ms"] is not None, turn
    assert len(children.interactions(db, kid)) == 1  # remembered for the child
    assert [e["event"] for e in events] == ["sidecar", "pressed", "released", "answered", "done"]  # the page's stages
    assert abs(events[3]["latency_ms"] - turn["latency_ms"]) < 50
    await run_local_device_press([speak("What is your name?")], "hanuman_storyteller", None)
    simulators = [d for d in store.list_devices(db) if d["device_id"] == store.SIMULATOR_DEVICE]
    assert len(simulators) == 1 and simulators[0]["revoked"]  # one reusable device, not one per press
    assert len(store.list_devices(db)) == len({d["device_id"] for d in store.list_devices(db)})
    assert store.delete_device(db, store.SIMULATOR_DEVICE) and store.get_device(db, store.SIMULATOR_DEVICE) is None
