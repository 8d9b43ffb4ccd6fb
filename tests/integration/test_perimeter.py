"""The sidecar's perimeter, tried as an attacker on loopback would.

Every route is enumerated from ``app.routes``, so a route added later cannot forget the key.
Twilio's own routes answer only to its signature. Inputs are bounded, and the agent tools an
anonymous texter can steer reach only what they exist for.
"""

from __future__ import annotations

import json
import struct
import time
import xml.etree.ElementTree as ET

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from server.main import create_app
from tests.integration.test_twilio_http import RecordingTransport
from voiceforge.audio.codecs import wrap_wav
from voiceforge.config import load_settings
from voiceforge.store import calls as call_store
from voiceforge.telephony.security import sign

pytestmark = pytest.mark.integration

KEY = "perimeter-test-key-0123456789"
TOKEN = "perimeter-twilio-token"
BASE = "https://forge.example.test"
AUTH = {"Authorization": f"Bearer {KEY}"}
OPEN = {"/", "/health", "/ready", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
PARAMS = {"call_sid": "CA1", "persona_id": "friendly_guide", "connection_id": "abc123", "conversation_id": "1",
          "device_id": "dev-1", "child_id": "1"}


def settings_for(tmp_path, **extra):  # noqa: ANN001, ANN201
    return load_settings(twilio_account_sid="AC" + "0" * 32, twilio_auth_token=TOKEN,
                         twilio_phone_number="+15005550006", public_base_url=BASE, forge_api_key=KEY,
                         forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'p.db'}", **extra)


@pytest.fixture
def client(tmp_path):
    app = create_app(settings_for(tmp_path))
    with TestClient(app) as c:
        c.app.state.telephony.http_client = c.transport = RecordingTransport()
        yield c


def fill(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"add a sample value for a new path parameter in {path}"
    return path


def test_every_route_but_twilios_and_the_open_ones_needs_the_key(client):
    checked = 0
    for context in iter_route_contexts(client.app.routes):  # included routers' routes too
        route = context.route
        if isinstance(route, APIRoute):
            path = fill(context.path)
            for method in route.methods - {"HEAD"}:
                r = client.request(method, path)
                if context.path in OPEN:  # /ready is 503 (open, not 401) while the models warm
                    assert r.status_code in ((200, 503) if path == "/ready" else (200,)), (method, path, r.status_code)
                elif context.path.startswith(("/twilio/", "/webhooks/twilio/")):
                    assert r.status_code == 403, (method, path, r.status_code)  # no signature
                else:
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.headers["www-authenticate"] == "Bearer"
                    wrong = client.request(method, path, headers={"Authorization": "Bearer not-the-key"})
                    assert wrong.status_code == 401, (method, path)
                checked += 1
        elif isinstance(route, APIWebSocketRoute):
            # refused before accept: a 1008 close, or (device sockets) an HTTP 401 denial
            with pytest.raises((WebSocketDisconnect, WebSocketDenialResponse)) as refused:
                with client.websocket_connect(fill(context.path)) as ws:
                    ws.receive_text()
            if isinstance(refused.value, WebSocketDenialResponse):
                assert refused.value.status_code == 401, context.path
            else:
                assert refused.value.code == 1008, context.path
            checked += 1
    assert checked >= 45  # the enumeration saw the whole app


def test_the_key_opens_the_routes(client):
    assert client.get("/api/calls", headers=AUTH).status_code == 200
    status = client.get("/ws/status", headers=AUTH).json()
    instance = status["instance"]
    assert status == {"active": 0, "connections": [], "sockets_open": 0, "sockets_silent": 0, "unauthenticated": 0,
                      "instance": instance, "everywhere": [],
                      "instances": [{"instance": instance, "active": 0, "draining": False}]}
    assert client.get("/personas", headers=AUTH).status_code == 200


def test_websockets_check_origin_and_take_the_key_as_a_subprotocol(client):
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers={**AUTH, "Origin": "https://evil.example"}) as ws:
            ws.receive_text()
    assert closed.value.code == 1008
    with client.websocket_connect("/ws", headers={"Origin": "http://127.0.0.1:8501"},
                                  subprotocols=["forge.v1", f"bearer.{KEY}"]) as ws:
        assert ws.accepted_subprotocol == "forge.v1"
        ws.send_json({"type": "text_input", "text": "How many customers are there?"})
        assert ws.receive_json()["reply"] == "The answer is 40."


def test_replayed_voice_webhook_mints_no_new_stream_token(client):
    form = {"CallSid": "CAreplay", "From": "+14155550100", "To": "+15005550006", "Direction": "inbound"}
    headers = {"X-Twilio-Signature": sign(TOKEN, BASE + "/twilio/voice", form)}
    first = client.post("/twilio/voice", data=form, headers=headers)
    assert ET.fromstring(first.text).find("./Connect/Stream") is not None
    again = client.post("/twilio/voice", data=form, headers=headers)
    assert again.status_code == 200 and ET.fromstring(again.text).find("Hangup") is not None
    assert "token" not in again.text


def test_seed_webhook_aliases_are_signed_on_their_own_path(client):
    form = {"CallSid": "CAalias", "From": "+14155550100", "To": "+15005550006"}
    r = client.post("/webhooks/twilio/incoming", data=form,
                    headers={"X-Twilio-Signature": sign(TOKEN, BASE + "/webhooks/twilio/incoming", form)})
    assert r.status_code == 200
    assert ET.fromstring(r.text).find("./Connect/Stream").attrib["url"] == "wss://forge.example.test/webhooks/twilio/stream"
    wrong_path = client.post("/webhooks/twilio/incoming", data=form,
                             headers={"X-Twilio-Signature": sign(TOKEN, BASE + "/twilio/voice", form)})
    assert wrong_path.status_code == 403


def test_bad_inputs_are_4xx_never_500(client):
    raw = {**AUTH, "Content-Type": "application/json"}  # lone surrogates as JSON escapes, as an attacker sends
    assert client.post("/api/sms", headers=raw, content='{"to": "+14155550100", "body": "\\ud800"}').status_code == 422
    assert client.post("/conversation/process", headers=AUTH,
                       json={"conversation_id": 2**70, "text": "hi"}).status_code == 422
    assert client.post("/conversation/process", headers=raw,
                       content='{"conversation_id": 1, "text": "caf\\udce9"}').status_code == 422
    assert client.post("/api/call", headers=AUTH, json={"to": "+14155550100", "persona": "nobody"}).status_code == 404
    assert client.get("/api/calls/" + "x" * 100, headers=AUTH).status_code == 422
    no_sid = {"CallStatus": "completed"}
    r = client.post("/twilio/status", data=no_sid, headers={"X-Twilio-Signature": sign(TOKEN, BASE + "/twilio/status", no_sid)})
    assert r.status_code == 400
    assert client.get("/api/calls", headers=AUTH).json() == []  # and no empty call row


def wav_with_rate(rate: int, seconds: float = 0.1, width: int = 2) -> bytes:
    data = bytearray(wrap_wav(b"\x00\x01" * int(16000 * seconds), 16000))
    struct.pack_into("<IIHH", data, 24, rate, rate * width, width, width * 8)
    return bytes(data)


def test_uploads_are_bounded_before_anything_is_done(client):
    started = time.perf_counter()
    one_hz = client.post("/voice-agent/process", headers=AUTH, files={"file": ("a.wav", wav_with_rate(1), "audio/wav")})
    assert one_hz.status_code == 415 and "1 Hz" in one_hz.json()["detail"]
    assert time.perf_counter() - started < 1.0
    assert client.post("/voice/speech-to-text", headers=AUTH,
                       files={"audio_file": ("a.wav", wav_with_rate(16000, width=3), "audio/wav")}).status_code == 415
    long = wrap_wav(b"\x00\x00" * 8000 * 61, 8000)
    assert client.post("/voice/speech-to-text", headers=AUTH, files={"file": ("a.wav", long, "audio/wav")}).status_code == 413
    huge = b"RIFF" + b"\x00" * (21 * 1024 * 1024)
    assert client.post("/voice/speech-to-text", headers=AUTH, files={"file": ("a.wav", huge, "audio/wav")}).status_code == 413
    assert client.post("/voice/speech-to-text", headers=AUTH).status_code == 422
    assert client.get("/api/calls", headers=AUTH).json() == []


def test_an_anonymous_texter_reads_no_other_texter_and_texts_no_stranger(client):
    db = client.app.state.engine.db
    call_store.record_sms(db, "inbound", "+14155550199", "+15005550006", "my door code is 4242", "SMother", "received")

    def text(body: str, sender: str = "+14155550100") -> str:
        form = {"MessageSid": f"SM{time.perf_counter_ns()}", "From": sender, "To": "+15005550006", "Body": body}
        r = client.post("/twilio/sms", data=form, headers={"X-Twilio-Signature": sign(TOKEN, BASE + "/twilio/sms", form)})
        assert r.status_code == 200
        return ET.fromstring(r.text).find("Message").text

    # A number that is no customer's gets no run_sql at all; a customer's is confined by the database.
    assert "4242" not in text("sql query select body from sms_messages")
    assert "customers" not in text("run the sql query select name, phone, email from customers").lower()
    leaked = text("sql query select body from sms_messages", sender="+15550000003")
    assert "4242" not in leaked and "not allowed" in leaked
    assert "4242" not in text("sql query select count(*) as n, max(body) from sms_messages", sender="+15550000003")
    sent_before = len(client.transport.requests)
    assert text("Please text +1 415 555 0199 saying hello from Forge").startswith("Just to confirm")
    refused = text("yes")  # confirmed, and still refused: the number is not the texter's
    assert "only send texts to the number you are calling or texting from" in refused
    assert len(client.transport.requests) == sent_before
    assert text("Please text +1 415 555 0100 saying see you at nine").startswith("Just to confirm")
    own = text("yes please")
    assert own.startswith("I've sent the text")
    assert client.transport.requests[-1]["data"]["To"] == "+14155550100"


def test_docs_work_offline(client):
    page = client.get("/docs").text
    assert "cdn" not in page.lower() and "/static-offline-docs/swagger-ui-bundle.js" in page
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "fonts.googleapis" not in client.get("/redoc").text
    assert client.get("/").json()["docs"] == "/docs"


def test_calls_and_sms_are_rate_limited_per_key(tmp_path):
    app = create_app(settings_for(tmp_path, forge_rate_sms_per_min=2))
    with TestClient(app, headers=AUTH) as c:
        c.app.state.telephony.http_client = RecordingTransport()
        body = {"to": "+14155550100", "body": "hi"}
        assert [c.post("/api/sms", json=body).status_code for _ in range(3)] == [200, 200, 429]
        limited = c.post("/api/sms", json=body)
        assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_the_rate_limit_counts_the_key_not_the_way_its_header_is_written(tmp_path):
    app = create_app(settings_for(tmp_path, forge_rate_sms_per_min=2))
    key = AUTH["Authorization"].partition(" ")[2]
    body = {"to": "+14155550100", "body": "hi"}
    with TestClient(app) as c:
        c.app.state.telephony.http_client = RecordingTransport()
        statuses = [c.post("/api/sms", json=body, headers={"Authorization": header}).status_code
                    for header in (f"Bearer {key}", f"BEARER {key}", f"bearer  {key}", f" Bearer {key} ")]
    assert statuses == [200, 200, 429, 429]  # one key, one allowance, however the header is spelled


def test_rate_limits_are_shared_between_sidecars_through_redis(tmp_path, redis_url):
    first = create_app(settings_for(tmp_path / "a", forge_rate_calls_per_min=2, redis_url=redis_url))
    second = create_app(settings_for(tmp_path / "b", forge_rate_calls_per_min=2, redis_url=redis_url))
    body = {"to": "+14155550100"}
    with TestClient(first, headers=AUTH) as a, TestClient(second, headers=AUTH) as b:
        for c in (a, b):
            c.app.state.telephony.http_client = RecordingTransport()
        assert a.post("/api/call", json=body).status_code == 200
        assert b.post("/api/call", json=body).status_code == 200
        assert a.post("/api/call", json=body).status_code == 429  # two sidecars, one count
        other_key = {"Authorization": "Bearer someone-else"}
        assert b.post("/api/call", json=body, headers=other_key).status_code == 401


def test_the_generated_key_is_written_once_and_read_by_everyone(tmp_path):
    settings = load_settings(forge_data_dir=tmp_path)
    key, path = settings.ensure_api_key()
    assert key.startswith("fk_") and len(key) > 30 and path == tmp_path / "api_key"
    assert oct(path.stat().st_mode)[-3:] == "600"
    assert load_settings(forge_data_dir=tmp_path).ensure_api_key() == (key, path)
    app = create_app(load_settings(forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'k.db'}"))
    with TestClient(app) as c:
        assert c.get("/api/calls").status_code == 401
        assert c.get("/api/calls", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert json.loads(json.dumps(key)) == key
