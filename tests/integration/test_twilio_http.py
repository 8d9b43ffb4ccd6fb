"""Twilio webhooks, signatures, TwiML, and REST calls/SMS through the twilio SDK.

The SDK's HTTP client is replaced by a local transport that records each REST request and
answers it as Twilio's API would, so the exact request our code builds is asserted.
"""

import json
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from twilio.http import HttpClient
from twilio.http.response import Response

from server.main import create_app
from voiceforge.config import load_settings
from voiceforge.store import conversations
from voiceforge.telephony.security import StreamTokens, sign, valid_signature

pytestmark = pytest.mark.integration

TOKEN = "test-auth-token-0123456789abcdef"
BASE = "https://forge.example.test"
KEY = "twilio-test-api-key"


class RecordingTransport(HttpClient):
    """Records REST requests and answers like Twilio's API (201 with a resource JSON)."""

    def __init__(self) -> None:
        import logging

        super().__init__(logging.getLogger("twilio.test"), is_async=False)
        self.requests = []

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):  # noqa: ANN001, ANN201
        self.requests.append({"method": method, "uri": uri, "data": data, "auth": auth, "headers": headers})
        if uri.endswith("/Calls.json"):
            return Response(201, json.dumps({"sid": "CA" + "1" * 32, "status": "queued", "to": data["To"],
                                             "from": data["From"]}))
        if uri.endswith("/Messages.json"):
            return Response(201, json.dumps({"sid": "SM" + "2" * 32, "status": "queued", "body": data["Body"]}))
        if "/Calls/" in uri:
            return Response(200, json.dumps({"sid": uri.rsplit("/", 1)[-1][:-5], "status": "completed"}))
        return Response(404, json.dumps({"code": 20404, "message": "not found", "status": 404}))


@pytest.fixture
def client(tmp_path):
    settings = load_settings(
        twilio_account_sid="AC" + "0" * 32, twilio_auth_token=TOKEN, twilio_phone_number="+15005550006",
        public_base_url=BASE, database_url=f"sqlite:///{tmp_path / 'f.db'}", forge_api_key=KEY,
    )
    app = create_app(settings)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        c.app.state.telephony.http_client = transport = RecordingTransport()
        c.transport = transport
        yield c


def post_signed(client, path, form, url=None, token=TOKEN):  # noqa: ANN001
    signature = sign(token, url or BASE + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def test_documented_signature_vector():
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
              "Caller": "+14158675309"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert valid_signature("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not valid_signature("12345", url, {**params, "Digits": "1235"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_voice_webhook_answers_connect_stream_twiml(client):
    form = {"CallSid": "CAabc", "From": "+14155550100", "To": "+15005550006", "CallStatus": "ringing",
            "Direction": "inbound"}
    r = post_signed(client, "/twilio/voice?persona=calm_concierge", form)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    stream = ET.fromstring(r.text).find("./Connect/Stream")
    assert stream.attrib["url"] == "wss://forge.example.test/twilio/stream"  # no query string
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert params["persona"] == "calm_concierge" and len(params["token"]) >= 30
    assert client.app.state.telephony.tokens.consume(params["token"], "CAabc")


@pytest.mark.parametrize("tamper", ["url", "token", "param", "missing"])
def test_bad_signatures_get_403(client, tamper):
    form = {"CallSid": "CAabc", "From": "+14155550100"}
    if tamper == "url":
        r = post_signed(client, "/twilio/voice", form, url="https://evil.example/twilio/voice")
    elif tamper == "token":
        r = post_signed(client, "/twilio/voice", form, token="wrong-token")
    elif tamper == "param":
        sig = sign(TOKEN, BASE + "/twilio/voice", form)
        r = client.post("/twilio/voice", data={**form, "From": "+14155550199"}, headers={"X-Twilio-Signature": sig})
    else:
        r = client.post("/twilio/voice", data=form)
    assert r.status_code == 403


def test_host_header_is_not_trusted(client):
    form = {"CallSid": "CAabc"}
    sig = sign(TOKEN, "http://testserver/twilio/voice", form)  # what a Host-derived URL would be
    assert client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": sig}).status_code == 403


def test_stream_tokens_are_single_use_bound_and_short_lived():
    tokens = StreamTokens(ttl_s=0.05)
    t = tokens.issue("CA1")
    assert not tokens.consume(t, "CA2")  # wrong call: spent anyway
    assert not tokens.consume(t, "CA1")
    t = tokens.issue("CA1")
    assert tokens.consume(t, "CA1") and not tokens.consume(t, "CA1")
    import time

    t = tokens.issue("CA1")
    time.sleep(0.06)
    assert not tokens.consume(t, "CA1")


def test_outbound_call_request_through_the_sdk(client):
    r = client.post("/api/call", json={"to": "+1 (415) 555-0100", "persona": "friendly_guide"})
    assert r.status_code == 200, r.text
    assert r.json() == {"call_sid": "CA" + "1" * 32, "status": "queued"}
    req = client.transport.requests[-1]
    assert req["method"] == "POST"
    assert req["uri"] == f"https://api.twilio.com/2010-04-01/Accounts/{'AC' + '0' * 32}/Calls.json"
    assert req["auth"] == ("AC" + "0" * 32, TOKEN)
    assert req["data"]["To"] == "+14155550100" and req["data"]["From"] == "+15005550006"
    assert req["data"]["Url"] == BASE + "/twilio/voice?persona=friendly_guide"
    assert req["data"]["Method"] == "POST"
    assert req["data"]["StatusCallback"] == BASE + "/twilio/status"
    assert req["data"]["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    calls = client.get("/api/calls").json()
    assert calls[0]["call_sid"] == "CA" + "1" * 32 and calls[0]["to"] == "+14155550100"


def test_a_call_still_ringing_is_hung_up_through_the_rest_api(client):
    """No sidecar holds a stream for it yet: the hang-up goes to Twilio (the SDK's call update)."""
    sid = client.post("/api/call", json={"to": "+14155550100"}).json()["call_sid"]
    r = client.post(f"/api/calls/{sid}/hangup")
    assert r.status_code == 200 and r.json() == {"done": "hangup", "call_sid": sid, "instance": None}, r.text
    req = client.transport.requests[-1]
    assert req["method"] == "POST" and req["uri"].endswith(f"/Calls/{sid}.json")
    assert req["data"]["Status"] == "completed"
    post_signed(client, "/twilio/status", {"CallSid": sid, "CallStatus": "completed", "SequenceNumber": "4"})
    sent = len(client.transport.requests)
    assert client.post(f"/api/calls/{sid}/hangup").status_code == 404  # finished: nothing to hang up
    assert client.post("/api/calls/CA0123/hangup").status_code == 404  # unknown
    assert len(client.transport.requests) == sent


def test_status_callbacks_are_idempotent(client):
    client.post("/api/call", json={"to": "+14155550100"})
    sid = "CA" + "1" * 32
    for status, seq in [("ringing", "1"), ("ringing", "1"), ("in-progress", "2"), ("completed", "3"), ("ringing", "1")]:
        r = post_signed(client, "/twilio/status", {"CallSid": sid, "CallStatus": status, "SequenceNumber": seq})
        assert r.status_code == 204
    call = client.get(f"/api/calls/{sid}").json()
    assert call["status"] == "completed" and call["ended_at"]
    assert [h["status"] for h in call["history"]] == ["queued", "ringing", "in-progress", "completed"]


def test_sms_send_and_inbound_reply(client):
    r = client.post("/api/sms", json={"to": "+14155550100", "body": "Your appointment is confirmed."})
    assert r.status_code == 200 and r.json()["message_sid"] == "SM" + "2" * 32
    sent = client.transport.requests[-1]
    assert sent["uri"].endswith("/Messages.json")
    assert sent["data"] == {"To": "+14155550100", "From": "+15005550006", "Body": "Your appointment is confirmed."}
    inbound = {"MessageSid": "SM" + "9" * 32, "From": "+15550000003", "To": "+15005550006",
               "Body": "How many customers are there?"}  # a customer's number: run_sql answers it
    r = post_signed(client, "/twilio/sms", inbound)
    assert r.status_code == 200
    assert ET.fromstring(r.text).find("Message").text == "The answer is 40."
    rows = client.get("/api/sms").json()
    assert [(m["direction"], m["body"]) for m in rows[:2]] == [
        ("outbound", "The answer is 40."), ("inbound", "How many customers are there?")]


def test_a_replayed_sms_webhook_is_answered_once(client):
    inbound = {"MessageSid": "SM" + "7" * 32, "From": "+15550000007", "To": "+15005550006",
               "Body": "How many customers are there?"}
    replies = [post_signed(client, "/twilio/sms", inbound) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert ET.fromstring(replies[0].text).find("Message").text == "The answer is 40."
    assert [ET.fromstring(r.text).find("Message") for r in replies[1:]] == [None, None]  # acknowledged, silent
    thread = [m for m in client.get("/api/sms").json() if "+15550000007" in (m["from"], m["to"])]
    assert [m["direction"] for m in thread] == ["outbound", "inbound"]  # one answer, one stored message each
    (turn,) = conversations.turns_of(client.app.state.engine.db, thread[0]["conversation_id"])
    assert turn["user_text"] == "How many customers are there?"


def test_one_sender_past_its_texts_a_minute_is_stored_not_answered(client):
    limit = client.app.state.engine.settings.forge_rate_sms_in_per_sender_per_min

    def text(sender: str, n: int):  # noqa: ANN202
        return post_signed(client, "/twilio/sms", {"MessageSid": f"SM{n:032d}", "From": sender, "To": "+15005550006",
                                                   "Body": "Hello there"})

    replies = [text("+15550000004", n) for n in range(limit + 2)]
    assert all(r.status_code == 200 for r in replies)
    answered = [ET.fromstring(r.text).find("Message") is not None for r in replies]
    assert answered == [True] * limit + [False, False]
    assert ET.fromstring(text("+15550000005", 999).text).find("Message") is not None  # another sender is answered
    inbound = [m for m in client.get("/api/sms?limit=100").json()
               if m["direction"] == "inbound" and m["from"] == "+15550000004"]
    assert len(inbound) == limit + 2  # every text is kept


def test_phone_numbers_are_validated(client):
    assert client.post("/api/call", json={"to": "555-0100"}).status_code == 422
    assert client.post("/api/sms", json={"to": "+1", "body": "x"}).status_code == 422


def test_unconfigured_twilio_names_what_is_missing(tmp_path):
    app = create_app(load_settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", forge_api_key=KEY))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        r = c.post("/api/call", json={"to": "+14155550100"})
        assert r.status_code == 503 and "TWILIO_ACCOUNT_SID" in r.json()["detail"]
        assert c.get("/health").json()["twilio_configured"] is False


def test_websocket_upgrade_needs_the_signature(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/twilio/stream") as ws:
            ws.receive_text()
    url = "wss://forge.example.test/twilio/stream"
    with client.websocket_connect("/twilio/stream", headers={"x-twilio-signature": sign(TOKEN, url, {})}) as ws:
        ws.send_text(json.dumps({"event": "connected", "protocol": "Call"}))
        ws.send_text(json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                                             "customParameters": {"token": "forged"}}}))
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1008


def test_urlencoded_query_is_part_of_the_signed_url(client):
    form = {"CallSid": "CAq"}
    path = "/twilio/voice?" + urllib.parse.urlencode({"persona": "energetic_host"})
    assert post_signed(client, path, form).status_code == 200
