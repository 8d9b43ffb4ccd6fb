"""Twilio webhooks and the bidirectional media stream.

Routes live under ``/twilio`` and, for the seed "General Voice Agent Backend", under
``/webhooks/twilio`` (``incoming`` answers a call, ``status``, ``stream``). Every request is
checked by ``X-Twilio-Signature`` against PUBLIC_BASE_URL + the path it came in on; the stream
is bound to its call by a one-time token.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from server.admission import BUSY_SENTENCE, refusal
from server.dependencies import get_engine
from server.perimeter import CheckedRoute, checked_before_body
from server.transports import close
from server.transports.twilio import TwilioMediaStream, receive_start
from voiceforge import telemetry
from voiceforge.agent.persona import PersonaError
from voiceforge.config import ConfigError
from voiceforge.conversation import ConversationLoop
from voiceforge.cost import twilio_bills
from voiceforge.engine import Engine
from voiceforge.store import calls as call_store
from voiceforge.store.db import retry_transient
from voiceforge.telephony import media, twiml
from voiceforge.telephony.numbers import mask_number
from voiceforge.telephony.security import valid_signature
from voiceforge.telephony.sms import MAX_SMS_BODY, answer_sms

log = logging.getLogger("forge.sidecar.twilio")
MAX_FORM_FIELD = 4096
MAX_WEBHOOK_BYTES = 64 * 1024
"""A webhook's form body: Twilio's fields and an SMS of up to 1,600 characters fit many times over."""
router = APIRouter(prefix="/twilio", tags=["twilio"], route_class=CheckedRoute, max_body_size=MAX_WEBHOOK_BYTES)
webhooks = APIRouter(prefix="/webhooks/twilio", tags=["twilio"], route_class=CheckedRoute,
                     max_body_size=MAX_WEBHOOK_BYTES)


async def signature_present(request: Request) -> None:
    """Before the body: a webhook without ``X-Twilio-Signature`` is refused (403) unread."""
    if not request.headers.get("x-twilio-signature"):
        raise HTTPException(403, "missing Twilio signature")


@checked_before_body(signature_present, authenticates=False)
async def signed_form(request: Request) -> dict[str, str]:
    """The webhook's form fields, after checking X-Twilio-Signature (403 otherwise).

    The URL checked is PUBLIC_BASE_URL + path (+ query), never the Host header.
    """
    state = request.app.state.telephony
    try:
        raw = await request.form(max_files=0, max_fields=100)
    except Exception:  # noqa: BLE001 - a malformed body is the sender's error
        raise HTTPException(400, "the webhook body is not a form") from None
    form = {k: str(v)[:MAX_FORM_FIELD] for k, v in raw.items()}
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


def _call_sid(form: dict[str, str]) -> str:
    sid = form.get("CallSid", "")
    if not sid or len(sid) > 64:
        raise HTTPException(400, "the webhook has no CallSid")
    return sid


async def voice(request: Request, persona: str | None = None, realtime: bool = False,
                form: dict = Depends(signed_form), engine: Engine = Depends(get_engine)) -> Response:
    """Answer a call with TwiML that connects it to the media stream.

    A replayed webhook for a call that already has a stream token mints no new one: it is
    answered with ``<Hangup/>``.
    """
    state = request.app.state.telephony
    call_sid = _call_sid(form)
    try:
        chosen = engine.persona(persona)
        persona_id = chosen.id
    except PersonaError:
        raise HTTPException(404, f"no persona {persona!r}") from None
    if await state.token_issued(call_sid):
        log.warning("call %s: voice webhook replayed; no new stream token", call_sid)
        return _xml(twiml.hangup())
    if (why := refusal(request.app.state)) is not None:  # draining or overloaded: the call goes elsewhere
        if engine.settings.forge_refuse_with_503:  # a load balancer in front passes it to another sidecar
            log.warning("call %s refused with 503 (%s): stored by the sidecar that takes it", call_sid, why)
            return Response(f"this sidecar takes no new call: {why}", status_code=503, headers={"Retry-After": "1"},
                             media_type="text/plain")
        redirect = engine.settings.forge_drain_redirect_url
        log.warning("call %s refused: %s%s", call_sid, why, f"; redirected to {redirect}" if redirect else "")
        await asyncio.to_thread(call_store.add_status, engine.db, call_sid, "busy", None,
                                direction="inbound" if form.get("Direction", "inbound") == "inbound" else "outbound",
                                persona=persona_id, owner=engine.settings.instance)
        return _xml(twiml.redirect(redirect) if redirect else twiml.say_and_hang_up(BUSY_SENTENCE))
    inbound = form.get("Direction", "inbound") == "inbound"
    person = form.get("From", "") if inbound else form.get("To", "")
    await asyncio.to_thread(
        call_store.add_status, engine.db, call_sid, form.get("CallStatus", "in-progress"), None,
        direction="inbound" if inbound else "outbound", from_number=form.get("From", "")[:20],
        to_number=form.get("To", "")[:20], persona=persona_id, owner=engine.settings.instance,
        billed=twilio_bills(form.get("AccountSid"), engine.settings.twilio_account_sid))
    over_realtime = realtime or chosen.realtime or engine.settings.forge_realtime_phone
    token = await state.issue_token(call_sid, {"persona": persona_id, "caller": person,
                                               "realtime": "1" if over_realtime else ""})
    log.info("call %s from %s answered with persona %s", call_sid, mask_number(form.get("From")), persona_id)
    stream_path = request.url.path.rsplit("/", 1)[0] + "/stream"
    return _xml(twiml.connect_stream(state.stream_url(stream_path), {"persona": persona_id, "token": token}))


async def status(form: dict = Depends(signed_form), engine: Engine = Depends(get_engine)) -> Response:
    """Record a call status change; repeated callbacks are ignored (idempotent)."""
    call_sid = _call_sid(form)
    sequence = form.get("SequenceNumber", "")
    await asyncio.to_thread(call_store.add_status, engine.db, call_sid, form.get("CallStatus", "unknown")[:20],
                            int(sequence) if sequence.isdigit() and len(sequence) < 10 else None)
    return Response(status_code=204)


async def sms(request: Request, form: dict = Depends(signed_form), engine: Engine = Depends(get_engine)) -> Response:
    """Store an inbound SMS and reply through the agent with TwiML <Message>.

    A MessageSid seen before (Twilio retries a webhook it thinks failed) is acknowledged with an
    empty ``<Response/>``: the agent does not run and nothing is sent again. A sender past
    ``FORGE_RATE_SMS_IN_PER_SENDER_PER_MIN`` has the text stored and acknowledged, not answered:
    one number cannot keep the agent (and its SQL) busy for everyone else.
    """
    sender = form.get("From", "")[:20]
    limit = engine.settings.forge_rate_sms_in_per_sender_per_min
    if await request.app.state.rate_limiter.hit(f"sms-in:{sender}", limit) is not None:
        log.warning("SMS from %s not answered: over %d texts a minute", mask_number(sender), limit)
        await asyncio.to_thread(call_store.record_inbound_sms, engine.db, sender, form.get("To", "")[:20],
                                form.get("Body", "")[:MAX_SMS_BODY], form.get("MessageSid") or None, None)
        return _xml(twiml.empty())
    reply = await answer_sms(engine, form.get("From", ""), form.get("To", ""), form.get("Body", ""),
                             form.get("MessageSid") or None,
                             billed=twilio_bills(form.get("AccountSid"), engine.settings.twilio_account_sid))
    if reply is None:
        log.info("SMS %s delivered again; acknowledged, not answered again", str(form.get("MessageSid"))[:40])
        return _xml(twiml.empty())
    return _xml(twiml.message(reply))


async def stream(ws: WebSocket) -> None:
    """The bidirectional media stream: signature checked before accept, token at `start`."""
    state = ws.app.state.telephony
    engine: Engine = ws.app.state.engine
    try:
        url = state.stream_url(ws.url.path)
    except ConfigError:
        url = ""
    if not url or not valid_signature(state.settings.twilio_auth_token or "", url, {},
                                      ws.headers.get("x-twilio-signature")):
        log.warning("rejected media stream upgrade: bad Twilio signature")
        await ws.close(code=1008)
        return
    if ws.app.state.draining and state.settings.forge_refuse_with_503:
        # Its webhook was admitted elsewhere: the load balancer in front retries the upgrade on a sidecar
        # that is not draining (an overloaded one still takes it, or the admitted call would be lost).
        log.warning("media stream upgrade refused with 503: draining")
        await ws.send_denial_response(Response("draining", status_code=503, headers={"Retry-After": "1"}))
        return
    await ws.accept()
    loop: ConversationLoop | None = None
    stream_sid = "?"
    connection = None
    linking: asyncio.Task | None = None
    try:
        start = await receive_start(ws)
        if start is None:
            return
        grant = await state.consume_token(start.custom_parameters.get("token", ""), start.call_sid)
        if grant is None:
            raise media.MediaStreamError("missing, spent or expired stream token")
        stream_sid, call_sid = start.stream_sid, start.call_sid

        async def on_hang_up() -> None:
            state.hang_up_later(call_sid)

        transport = TwilioMediaStream(ws, stream_sid, on_hang_up)
        if grant.get("realtime"):
            await _bridge_to_realtime(ws, engine, transport, grant, call_sid, stream_sid)
            return
        pipeline = engine.pipeline(grant.get("persona"), channel="phone", caller=grant.get("caller") or None)

        async def on_dtmf(digit: str) -> None:
            await retry_transient(lambda: asyncio.to_thread(call_store.add_dtmf, engine.db, call_sid, digit),
                                  f"storing a digit of call {call_sid}")

        loop = ConversationLoop(pipeline, transport, name=call_sid, on_dtmf=on_dtmf)
        state.calls[call_sid] = loop
        connection = ws.app.state.connections.add("phone", pipeline.persona.id, transport.hang_up, loop, call_sid)

        async def link() -> None:
            conversation_id = await retry_transient(lambda: pipeline.ensure_conversation(),
                                                    f"starting the conversation of call {call_sid}")
            await retry_transient(lambda: asyncio.to_thread(call_store.attach_stream, engine.db, call_sid, stream_sid,
                                                            conversation_id, engine.settings.instance),
                                  f"linking call {call_sid} to its stream")

        linking = asyncio.create_task(link())
        await loop.run(transport.events())
    except media.MediaStreamError as exc:
        log.warning("closing media stream %s: %s", stream_sid, exc)
        telemetry.count_error("media_stream")
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.close(code=1008, reason=str(exc)[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if connection is not None:
            ws.app.state.connections.remove(connection.id)
        await close(ws)
        if linking is not None:
            await asyncio.wait({linking})  # the call row must exist before it is marked ended
        if loop is not None:
            state.calls.pop(loop.name, None)
            await retry_transient(lambda: asyncio.to_thread(call_store.end_stream, engine.db, loop.name),
                                  f"ending call {loop.name}")


async def _bridge_to_realtime(ws: WebSocket, engine: Engine, transport: TwilioMediaStream, grant: dict,
                              call_sid: str, stream_sid: str) -> None:
    """Run the call over a Realtime session (speech-to-speech) instead of the cascade."""
    from realtime.bridge import RealtimePhoneBridge

    bridge = RealtimePhoneBridge(engine, transport, grant.get("persona"), grant.get("caller") or None, call_sid)
    connection = ws.app.state.connections.add("phone", bridge.persona_id, transport.hang_up, call_sid=call_sid)
    try:
        conversation_id = await retry_transient(lambda: bridge.ensure_conversation(),
                                                f"starting the conversation of call {call_sid}")
        await retry_transient(lambda: asyncio.to_thread(call_store.attach_stream, engine.db, call_sid, stream_sid,
                                                        conversation_id, engine.settings.instance),
                              f"linking call {call_sid} to its stream")
        await bridge.run(transport.events())
    finally:
        ws.app.state.connections.remove(connection.id)
        await retry_transient(lambda: asyncio.to_thread(call_store.end_stream, engine.db, call_sid),
                              f"ending call {call_sid}")


for _router, _incoming in ((router, "/voice"), (webhooks, "/incoming")):
    _router.post(_incoming, summary="Answer a call (TwiML)")(voice)
    _router.post("/status", status_code=204, summary="Call status callback")(status)
    _router.post("/sms", summary="Inbound SMS (TwiML reply)")(sms)
    _router.websocket("/stream")(stream)
