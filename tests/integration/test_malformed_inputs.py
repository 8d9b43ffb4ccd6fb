"""Malformed input from the internet gets a typed 4xx or a close with a reason, never a traceback.

Every socket and route here is the real sidecar's, driven through Starlette's test client; a
Realtime client's malformed events are answered with OpenAI's ``error`` event and the session
goes on.
"""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.main import create_app
from voiceforge.config import load_settings
from voiceforge.telephony.security import sign

pytestmark = pytest.mark.integration

KEY = "malformed-input-test-key"
TOKEN = "malformed-input-twilio-token"
BASE = "https://forge.example.test"
AUTH = {"Authorization": f"Bearer {KEY}"}
HUGE = "9" * 5000
"""An integer Python's json refuses to convert (over 4,300 digits): a ValueError, not a JSONDecodeError."""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("malformed")
    app = create_app(load_settings(twilio_auth_token=TOKEN, public_base_url=BASE, forge_api_key=KEY,
                                   forge_data_dir=folder, database_url=f"sqlite:///{folder / 'm.db'}"),
                     roles=("sidecar", "realtime"))
    with TestClient(app, headers=AUTH) as c:
        yield c


def closed_with(ws) -> tuple[int, str]:  # noqa: ANN001
    """The code and reason the server closed the socket with (messages before the close are skipped)."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return message.get("code", 1000), message.get("reason", "")


def test_a_huge_integer_on_the_media_stream_closes_it_with_a_reason(client):
    signed = {"x-twilio-signature": sign(TOKEN, "wss://forge.example.test/twilio/stream", {})}
    with client.websocket_connect("/twilio/stream", headers=signed) as ws:
        ws.send_text('{"event": "connected", "sequenceNumber": ' + HUGE + "}")
        assert closed_with(ws) == (1008, "invalid JSON")


def test_the_browser_socket_closes_with_a_reason_on_a_huge_integer_or_a_lone_surrogate(client):
    with client.websocket_connect("/ws") as ws:
        ws.send_text('{"type": "start", "sample_rate": ' + HUGE + "}")
        assert closed_with(ws) == (1003, "bad message: not JSON")
    with client.websocket_connect("/ws") as ws:
        ws.send_text('{"type": "text_input", "text": "caf\\udce9"}')  # the escape, as an attacker sends it
        code, reason = closed_with(ws)
        assert code == 1008 and "surrogate" in reason


def test_nulls_in_a_patch_are_422_or_a_default_never_500(client):
    child = client.post("/api/children", json={"name": "Asha", "consent": True}).json()
    assert client.patch(f"/api/children/{child['child_id']}", json={"name": None}).status_code == 422
    assert client.patch(f"/api/children/{child['child_id']}", json={"dob": None}).status_code == 200
    device = client.post("/api/devices", json={"name": "bedroom"}).json()
    changed = client.patch(f"/api/devices/{device['device_id']}", json={"volume": 30})
    assert changed.status_code == 200 and changed.json()["settings"]["volume"] == 30
    reset = client.patch(f"/api/devices/{device['device_id']}", json={"volume": None})
    assert reset.status_code == 200 and reset.json()["settings"]["volume"] == 70  # back to the default


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
CLIENT_EVENTS = ["session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
                 "conversation.item.create", "conversation.item.truncate", "response.create", "response.cancel",
                 "teleport", None]
FIELDS = ["session", "audio", "item", "item_id", "content_index", "audio_end_ms", "response", "event_id"]
client_events = st.builds(lambda kind, fields: {"type": kind, **fields}, st.sampled_from(CLIENT_EVENTS),
                          st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3))
REPORTED = [
    {"type": "session.update", "session": "x"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": "abc", "audio_end_ms": 0},
    {"type": "input_audio_buffer.append", "audio": 12},
    {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": "high"}}}}},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": "hello"}},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "caf\udce9"}]}},
]
"""Events that ended a session with a traceback (the first three were reported as such)."""


def realtime_session(client):  # noqa: ANN001, ANN201
    ws = client.websocket_connect("/v1/realtime?model=forge-offline").__enter__()
    assert json.loads(ws.receive_text())["type"] == "session.created"
    return ws


def still_open(ws) -> list[dict]:  # noqa: ANN001
    """Send a good session.update and read up to its session.updated; returns the events before it."""
    ws.send_text(json.dumps({"type": "session.update", "session": {"instructions": "still here"}}))
    before = []
    while True:
        event = json.loads(ws.receive_text())  # a session that ended raises WebSocketDisconnect here
        if event["type"] == "session.updated" and event["session"]["instructions"] == "still here":
            return before
        before.append(event)
        assert len(before) < 5000, "no session.updated"


def test_the_reported_malformed_realtime_events_get_an_error_event_and_the_session_goes_on(client):
    ws = realtime_session(client)
    try:
        for event in REPORTED:
            ws.send_text(json.dumps(event))
            answer = json.loads(ws.receive_text())
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error", (event, answer)
            assert answer["error"]["message"], answer
        ws.send_text('{"type": "response.cancel", "event_id": ' + HUGE + "}")
        assert json.loads(ws.receive_text())["error"]["code"] == "invalid_json"
        still_open(ws)
    finally:
        ws.__exit__(None, None, None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
@given(st.lists(client_events, min_size=1, max_size=6))
def test_no_sequence_of_client_events_ends_a_realtime_session(client, events):
    ws = realtime_session(client)
    try:
        for event in events:
            if event["type"] == "input_audio_buffer.append" and isinstance(event.get("audio"), str):
                event["audio"] = base64.b64encode(event["audio"].encode()[:64]).decode()  # audio a client might send
            ws.send_text(json.dumps(event))
        ws.send_text(json.dumps({"type": "response.cancel"}))
        assert not any(e["type"] == "error" and e["error"]["type"] != "invalid_request_error" for e in still_open(ws))
    finally:
        ws.__exit__(None, None, None)
