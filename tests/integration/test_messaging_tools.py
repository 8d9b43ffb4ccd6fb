"""send_sms through the twilio SDK (local transport) and notify_telegram against a local Bot API."""

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from tests.integration.test_twilio_http import RecordingTransport
from tests.support.servers import serve
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.brain import OfflineBrain
from voiceforge.store.models import SmsMessage
from voiceforge.telephony.rest import TwilioService

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def telegram():
    """A local server speaking the Telegram Bot API's sendMessage; records each request."""
    app = FastAPI()
    app.state.requests = []

    @app.post("/bot{token}/sendMessage")
    async def send(token: str, request: Request):  # noqa: ANN202
        body = await request.json()
        app.state.requests.append({"token": token, "json": body})
        if body["chat_id"] != "4242":
            return JSONResponse({"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, 400)
        return {"ok": True, "result": {"message_id": len(app.state.requests), "chat": {"id": 4242}, "text": body["text"]}}

    with serve(app) as url:
        yield app, url


def engine_for(tmp_path, **settings):
    s = load_settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", **settings)
    engine = Engine(s, llm=OfflineBrain())
    engine.ensure_mock_data()
    return engine


async def test_agent_sends_an_sms_through_twilio(tmp_path):
    # A filler is due at once, and a typed turn still gets none: it fills silence on a line only.
    engine = engine_for(tmp_path, twilio_account_sid="AC" + "0" * 32, twilio_auth_token="t",
                        twilio_phone_number="+15005550006", forge_sms_allowlist="+14155550100",
                        forge_filler_after_ms=0)
    transport = RecordingTransport()
    engine.services["twilio"] = TwilioService(engine.settings, http_client=transport)
    pipeline = engine.pipeline("customer_service")
    asked = await pipeline.text_turn("Please text +1 415 555 0100 saying your appointment is confirmed.")
    assert asked.reply == ('Just to confirm, shall I send you a text: to +14155550100, saying "Your appointment is '
                           'confirmed."?') and not asked.tool_calls and not transport.requests  # nothing sent yet
    result = await pipeline.text_turn("Yes, send it.")
    call = result.tool_calls[0]
    assert call["name"] == "send_sms" and call["error"] is None
    assert call["arguments"] == {"to": "+14155550100", "body": "Your appointment is confirmed."}
    assert transport.requests[-1]["data"] == {"To": "+14155550100", "From": "+15005550006",
                                              "Body": "Your appointment is confirmed."}
    assert result.reply == "I've sent the text to +1••••••0100."  # all but country code and last four
    with engine.db.read_session() as s:
        row = s.scalars(select(SmsMessage)).one()
        assert row.message_sid == "SM" + "2" * 32 and row.conversation_id == result.conversation_id


async def test_sms_without_twilio_names_the_missing_settings(tmp_path):
    engine = engine_for(tmp_path)
    result = await engine.pipeline().run_tool("send_sms", {"to": "+14155550100", "body": "hi"})
    assert "TWILIO_ACCOUNT_SID" in result.error


async def test_notify_telegram(tmp_path, telegram):
    app, url = telegram
    engine = engine_for(tmp_path, telegram_bot_token="123:abc", telegram_chat_id="4242", telegram_api_base=url)
    result = await engine.pipeline("friendly_guide").text_turn(
        "Notify the team on Telegram that customer 3 wants a callback.")
    call = result.tool_calls[0]
    assert call["name"] == "notify_telegram" and call["error"] is None, call
    assert app.state.requests[-1] == {"token": "123:abc",
                                      "json": {"chat_id": "4242", "text": "Customer 3 wants a callback."}}
    assert result.reply == "I've notified the team on Telegram."
    wrong = engine_for(tmp_path, telegram_bot_token="123:abc", telegram_chat_id="1", telegram_api_base=url)
    failed = await wrong.pipeline().run_tool("notify_telegram", {"text": "x"})
    assert failed.error == "Telegram refused the message: Bad Request: chat not found"
    unset = engine_for(tmp_path)
    missing = await unset.pipeline().run_tool("notify_telegram", {"text": "x"})
    assert missing.error == "Telegram is not configured: set TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID"
