"""Messaging tools: send_sms (Twilio) and notify_telegram (Telegram Bot API sendMessage)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import requests

from voiceforge.config import ConfigError
from voiceforge.telephony.numbers import mask_number, normalize_e164
from voiceforge.tools.declaration import load_declarations
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry


def _twilio(ctx: ToolContext):  # noqa: ANN202 - TwilioService
    """The Twilio service from ``ctx.services`` (an instance or a zero-argument factory)."""
    service = ctx.services.get("twilio")
    if callable(service):
        service = service()
    if service is None:
        from voiceforge.telephony.rest import TwilioService

        service = ctx.services["twilio"] = TwilioService(ctx.settings)
    return service


async def send_sms(ctx: ToolContext, to: str, body: str) -> dict[str, Any]:
    """Send a text message (SMS) to the caller's own phone number (or a number the operator allows).

    Args:
        to: the phone number in E.164 form, like +14155550100.
        body: the message text, at most 1600 characters.
    """
    from voiceforge.store.calls import record_sms
    from voiceforge.telephony.rest import TelephonyError

    try:
        to = normalize_e164(to)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    if not body.strip() or len(body) > 1600:
        raise ToolError("the message must have 1 to 1600 characters")
    try:
        service = _twilio(ctx)
        allowed = ctx.settings.sms_allowlist | ({ctx.caller} if ctx.caller else set())
    except ConfigError as exc:
        raise ToolError(f"SMS is not configured ({exc})") from None
    # Whoever talks to the agent steers it, so it may text only the person it is talking to
    # (their phone or SMS number) or the operator's FORGE_SMS_ALLOWLIST, never any number asked.
    if to not in allowed:
        raise ToolError("I can only send texts to the number you are calling or texting from")
    try:
        sid, status = await service.send_sms(to, body)
    except TelephonyError as exc:
        raise ToolError(str(exc)) from None
    await asyncio.to_thread(record_sms, ctx.db, "outbound", service.from_number, to, body, sid, status,
                            ctx.conversation_id, True)  # Twilio's API accepted it: billed
    return {"message_sid": sid, "status": status, "summary": f"I've sent the text to {mask_number(to)}."}


def notify_telegram(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Send a notification to the team's Telegram chat (for example, a callback request).

    Args:
        text: the notification text, at most 4096 characters.
    """
    settings = ctx.settings
    missing = [n for n, v in (("TELEGRAM_BOT_TOKEN", settings.telegram_bot_token),
                              ("TELEGRAM_CHAT_ID", settings.telegram_chat_id)) if not v]
    if missing:
        raise ToolError("Telegram is not configured: set " + ", ".join(missing))
    if not text.strip() or len(text) > 4096:
        raise ToolError("the notification must have 1 to 4096 characters")
    # Telegram Bot API: POST /bot<token>/sendMessage {"chat_id", "text"} → {"ok", "result"}.
    url = f"{settings.telegram_api_base.rstrip('/')}/bot{settings.telegram_bot_token}/sendMessage"
    try:
        response = requests.post(url, json={"chat_id": settings.telegram_chat_id, "text": text}, timeout=10)
        payload = response.json()
    except (requests.RequestException, ValueError):
        raise ToolError("Telegram could not be reached") from None
    if not payload.get("ok"):
        raise ToolError(f"Telegram refused the message: {payload.get('description', response.status_code)}")
    return {"message_id": payload["result"]["message_id"], "summary": "I've notified the team on Telegram."}


def register(registry: ToolRegistry) -> None:
    """Add send_sms and notify_telegram to ``registry`` (their phrasings and slots: messaging.toml)."""
    declarations = load_declarations(Path(__file__).with_suffix(".toml"))
    registry.add(send_sms, declarations["send_sms"])
    registry.add(notify_telegram, declarations["notify_telegram"])
