"""An SMS conversation: one inbound text answered by the agent, both stored on the sender's thread.

Used by the sidecar's Twilio SMS webhook (which replies with TwiML ``<Message>``) and by the app's
offline SMS simulator, so a text is answered the same way with or without Twilio.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from voiceforge.store import calls as call_store
from voiceforge.store.business import customer_by_phone

if TYPE_CHECKING:
    from voiceforge.engine import Engine

MAX_SMS_BODY = 1600
"""Characters of an SMS body Forge keeps (Twilio's limit for a concatenated message)."""


async def answer_sms(engine: Engine, sender: str, to: str, body: str, message_sid: str | None = None,
                     persona_id: str | None = None, billed: bool = False) -> str | None:
    """Store ``body`` from ``sender``, answer it in the sender's SMS thread, store and return the reply.

    A message whose ``message_sid`` was stored before (Twilio delivered the webhook again) is
    not answered again: None is returned and nothing runs. A sender whose number is no
    customer's gets no run_sql unless the persona sets ``sql_for_unknown_texters``.

    Args:
        engine: Forge's engine.
        sender: the texter's E.164 number (cut to 20 characters).
        to: Forge's number it texted (cut to 20 characters).
        body: the message (cut to 1,600 characters).
        message_sid: Twilio's MessageSid of the inbound text (None when simulated).
        billed: Twilio bills the reply (the webhook came from this account; False when simulated).
        persona_id: the persona (default ``FORGE_PERSONA``).

    Raises:
        PersonaError: no such persona.
    """
    sender, to, body = sender[:20], to[:20], body[:MAX_SMS_BODY]
    persona = engine.persona(persona_id)
    conversation_id = await asyncio.to_thread(call_store.sms_conversation, engine.db, sender, persona.id)
    stored = await asyncio.to_thread(call_store.record_inbound_sms, engine.db, sender, to, body, message_sid,
                                     conversation_id)
    if stored is None:
        return None
    # send_sms from this thread may text the sender back
    pipeline = await asyncio.to_thread(engine.resume, conversation_id, persona.id, "sms", sender)
    known = await asyncio.to_thread(customer_by_phone, engine.business_db, sender)
    if known is None and not persona.sql_for_unknown_texters:
        pipeline.withhold("run_sql")  # a stranger's text does not query the records
    result = await pipeline.text_turn(body or "(empty message)")
    await asyncio.to_thread(call_store.record_sms, engine.db, "outbound", to, sender, result.reply, None, "replied",
                            conversation_id, billed)
    return result.reply
