"""Twilio webhooks and the bidirectional media stream."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from server.dependencies import get_engine
from voiceforge.config import ConfigError
from voiceforge.engine import Engine
from voiceforge.store import calls as call_store
from voiceforge.telephony import media, twiml
from voiceforge.telephony.numbers import mask_number
from voiceforge.telephony.security import valid_signature

router = APIRouter(prefix="/twilio", tags=["twilio"])
log = logging.getLogger("forge.sidecar.twilio")


async def signed_form(request: Request) -> dict[str, str]:
    """The webhook's form fields, after checking X-Twilio-Signature (403 otherwise).

    The URL checked is PUBLIC_BASE_URL + path (+ query), never the Host header.
    """
    state = request.app.state.telephony
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        url = state.public_url(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    except ConfigError:
        raise HTTPException(403, "webhook signatures cannot be checked: PUBLIC_BASE_URL is not set") from None
    token = state.settings.twilio_auth_token or ""
    if not valid_signature(token, url, form, request.headers.get("x-twilio-signature")):
        log.warning("rejected %s: bad Twilio signature", request.url.path)
        raise HTTPException(403, "invalid Twilio signature")
    return form


def _xml(body: str) -> Response:
    return Response(body, media_type="application/xml")


@router.post("/voice")
async def voice(request: Request, persona: str | None = None, form: dict = Depends(signed_form),
                engine: Engine = Depends(get_engine)) -> Response:
    """Answer a call with TwiML that connects it to the media stream."""
    state = request.app.state.telephony
    call_sid = form.get("CallSid", "")
    persona_id = engine.persona(persona).id
    direction = "inbound" if form.get("Direction", "inbound") == "inbound" else "outbound"
    call_store.add_status(engine.db, call_sid, form.get("CallStatus", "in-progress"), None,
                          direction=direction, from_number=form.get("From", ""), to_number=form.get("To", ""),
                          persona=persona_id)
    token = state.tokens.issue(call_sid)
    log.info("call %s from %s answered with persona %s", call_sid, mask_number(form.get("From")), persona_id)
    return _xml(twiml.connect_stream(state.stream_url(), {"persona": persona_id, "token": token}))


@router.post("/status", status_code=204)
async def status(form: dict = Depends(signed_form), engine: Engine = Depends(get_engine)) -> Response:
    """Record a call status change; repeated callbacks are ignored (idempotent)."""
    sequence = form.get("SequenceNumber")
    call_store.add_status(engine.db, form.get("CallSid", ""), form.get("CallStatus", "unknown"),
                          int(sequence) if sequence and sequence.isdigit() else None)
    return Response(status_code=204)


@router.post("/sms")
async def sms(form: dict = Depends(signed_form), engine: Engine = Depends(get_engine)) -> Response:
    """Store an inbound SMS and reply through the agent with TwiML <Message>."""
    sender, body = form.get("From", ""), form.get("Body", "")
    persona = engine.persona(None)
    conversation_id = call_store.sms_conversation(engine.db, sender, persona.id)
    call_store.record_sms(engine.db, "inbound", sender, form.get("To", ""), body, form.get("MessageSid"),
                          "received", conversation_id)
    session = engine.session(persona.id, channel="sms", conversation_id=conversation_id)
    result = await session.text_turn(body or "(empty message)")
    call_store.record_sms(engine.db, "outbound", form.get("To", ""), sender, result.reply, None, "replied",
                          conversation_id)
    return _xml(twiml.message(result.reply))


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    """The bidirectional media stream: signature checked before accept, token at `start`."""
    state = ws.app.state.telephony
    engine: Engine = ws.app.state.engine
    try:
        url = state.stream_url()
    except ConfigError:
        url = ""
    if not url or not valid_signature(state.settings.twilio_auth_token or "", url, {},
                                      ws.headers.get("x-twilio-signature")):
        log.warning("rejected media stream upgrade: bad Twilio signature")
        await ws.close(code=1008)
        return
    await ws.accept()
    call = None
    stream_sid = "?"

    async def send(text: str) -> None:
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.send_text(text)

    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") if message.get("text") is not None else message.get("bytes", b"")
            event = media.parse(raw)
            if event is None:
                raise media.MediaStreamError("unknown event")
            if isinstance(event, media.Connected):
                continue
            if isinstance(event, media.Start):
                if call is not None:
                    raise media.MediaStreamError("second start on one stream")
                token = event.custom_parameters.get("token", "")
                if not state.tokens.consume(token, event.call_sid):
                    raise media.MediaStreamError("missing, spent or expired stream token")
                from voiceforge.session import PhoneCall

                stream_sid = event.stream_sid

                async def hangup(sid: str = event.call_sid) -> None:
                    try:
                        await state.twilio.hangup(sid)
                    except Exception as exc:  # noqa: BLE001 - local simulator calls have no REST side
                        log.info("hang-up of %s through REST skipped: %s", sid, exc)
                    await ws.close(code=1000)

                call = PhoneCall(engine, event.custom_parameters.get("persona"), event.call_sid, stream_sid,
                                 send, hangup=hangup)
                state.calls[event.call_sid] = call
                call_store.attach_stream(engine.db, event.call_sid, stream_sid, call.conversation_id)
                await call.start()
            elif call is None:
                raise media.MediaStreamError(f"{type(event).__name__.lower()} before start")
            elif isinstance(event, media.Media):
                await call.on_media(event.payload)
            elif isinstance(event, media.Mark):
                await call.on_mark(event.name)
            elif isinstance(event, media.Dtmf):
                await call.on_dtmf(event.digit)
            elif isinstance(event, media.Stop):
                break
    except media.MediaStreamError as exc:
        log.warning("closing media stream %s: %s", stream_sid, exc)
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.close(code=1008, reason=str(exc)[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if call is not None:
            await call.stop()
            state.calls.pop(call.call_sid, None)
            call_store.end_stream(engine.db, call.call_sid)
