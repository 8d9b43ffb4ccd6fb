"""The sidecar's own API: API info, health, outbound calls, SMS, call and SMS history, metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field, field_validator

from server.admission import refusal
from server.auth import protected_router
from server.cluster import ControlError, control
from server.dependencies import get_engine, persona_or_404
from server.ratelimit import limit
from server.schemas import PersonaId, Text
from voiceforge import __version__
from voiceforge.config import ConfigError
from voiceforge.engine import Engine
from voiceforge.store import calls as call_store
from voiceforge.store import conversations
from voiceforge.telephony.numbers import normalize_e164
from voiceforge.telephony.rest import TelephonyError

public = APIRouter(tags=["api"])
router = protected_router(tags=["api"])
CALL_SID = Path(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9]+$")


class CallRequest(BaseModel):
    """Place an outbound call to an E.164 number under a persona."""

    to: Text = Field(max_length=32)
    persona: PersonaId | None = None
    realtime: bool = False

    @field_validator("to")
    @classmethod
    def _e164(cls, value: str) -> str:
        return normalize_e164(value)


class SmsRequest(BaseModel):
    """Send an SMS to an E.164 number."""

    to: Text = Field(max_length=32)
    body: Text = Field(min_length=1, max_length=1600)

    @field_validator("to")
    @classmethod
    def _e164(cls, value: str) -> str:
        return normalize_e164(value)


@public.get("/")
def info(request: Request) -> dict:
    """What this server is and where to start (the seed backend's API info)."""
    roles = request.app.state.roles
    sockets = (["/ws", "/twilio/stream"] if "sidecar" in roles else []) + \
        (["/v1/realtime", "/openai/realtime"] if "realtime" in roles else [])
    return {"name": "Forge sidecar", "version": __version__, "roles": list(roles), "docs": "/docs",
            "health": "/health", "ready": "/ready",
            "auth": "Authorization: Bearer <FORGE_API_KEY> on every route but Twilio's, /, /health, /ready and /docs",
            "websockets": sockets}


@public.get("/health")
def health(request: Request) -> dict:
    """Liveness plus what is configured: providers, database, Twilio, live calls, models loaded."""
    engine: Engine = request.app.state.engine
    settings = engine.settings
    warm = getattr(request.app.state, "warm", None)
    return {"status": "ok", "providers": engine.describe(), "twilio_configured": settings.twilio_configured,
            "public_base_url": settings.public_base_url, "live_calls": len(request.app.state.telephony.calls),
            "models_ready": bool(warm and warm.done())}


@public.get("/ready", responses={503: {"description": "warming up or draining"}})
def ready(request: Request, response: Response) -> dict:
    """Readiness: 200 once the speech models are loaded and the greetings synthesized, 503 before
    that and while the sidecar drains. ``/health`` stays liveness (200 while the process serves).
    """
    warm = getattr(request.app.state, "warm", None)
    if (why := refusal(request.app.state)) is not None:  # draining, or overloaded: send calls elsewhere
        response.status_code = 503
        return {"ready": False, "reason": why}
    if warm is None or not warm.done():
        response.status_code = 503
        return {"ready": False, "reason": "warming up"}
    return {"ready": True, "warm_up_ms": round(warm.result()) if not warm.cancelled() else None}


@router.get("/api/metrics")
def metrics(request: Request) -> dict:
    """Event-loop lag percentiles (ms) and live conversations of this process."""
    return {"loop_lag": request.app.state.lag.summary(), "live": request.app.state.connections.status()}


@router.post("/api/call", dependencies=[Depends(limit("calls", lambda s: s.forge_rate_calls_per_min))])
async def place_call(body: CallRequest, request: Request, engine: Engine = Depends(get_engine)) -> dict:
    """Place an outbound call through Twilio; 503 names what is missing when not configured."""
    state = request.app.state.telephony
    persona = persona_or_404(engine, body.persona).id
    try:
        twilio = state.twilio
        voice_url = state.public_url(f"/twilio/voice?persona={persona}" + ("&realtime=true" if body.realtime else ""))
        status_url = state.public_url("/twilio/status")
    except ConfigError as exc:
        raise HTTPException(503, str(exc)) from None
    try:
        sid, status = await twilio.place_call(body.to, voice_url, status_url)
    except TelephonyError as exc:
        raise HTTPException(502, str(exc)) from None
    await asyncio.to_thread(call_store.record_call, engine.db, sid, "outbound", twilio.from_number, body.to,
                            persona, status, engine.settings.instance, True)  # Twilio placed it: billed
    return {"call_sid": sid, "status": status}


@router.post("/api/sms", dependencies=[Depends(limit("SMS", lambda s: s.forge_rate_sms_per_min))])
async def send_sms(body: SmsRequest, request: Request, engine: Engine = Depends(get_engine)) -> dict:
    """Send an SMS through Twilio and store it."""
    state = request.app.state.telephony
    try:
        twilio = state.twilio
    except ConfigError as exc:
        raise HTTPException(503, str(exc)) from None
    try:
        sid, status = await twilio.send_sms(body.to, body.body)
    except TelephonyError as exc:
        raise HTTPException(502, str(exc)) from None
    await asyncio.to_thread(call_store.record_sms, engine.db, "outbound", twilio.from_number, body.to, body.body,
                            sid, status, None, True)  # Twilio's API accepted it: billed
    return {"message_sid": sid, "status": status}


@router.get("/api/calls")
def calls(limit: int = 50, engine: Engine = Depends(get_engine)) -> list[dict]:
    """Recent calls with their status history, newest first."""
    return call_store.list_calls(engine.db, min(max(limit, 1), 500))


@router.get("/api/calls/{call_sid}")
def call(call_sid: str = CALL_SID, engine: Engine = Depends(get_engine)) -> dict:
    """One call: status history and its conversation's turns."""
    found = call_store.get_call(engine.db, call_sid)
    if found is None:
        raise HTTPException(404, f"no call {call_sid}")
    return found


class SayRequest(BaseModel):
    """What the agent says now on a live call."""

    text: Text = Field(min_length=1, max_length=500)


async def _call_control(request: Request, action: str, call_sid: str, text: str = "") -> dict:
    try:
        return await control(request.app.state, action, call_sid, text)
    except ControlError as exc:
        raise HTTPException(exc.status, str(exc)) from exc


@router.post("/api/calls/{call_sid}/hangup")
async def call_hangup(request: Request, call_sid: str = CALL_SID, engine: Engine = Depends(get_engine)) -> dict:
    """Hang up a call now, on whichever sidecar holds its media stream (over Redis when another does).

    A call with no live stream anywhere (still ringing) is ended over Twilio's REST API when it
    is stored and not finished. 404: no such open call; 503: its sidecar or Twilio did not answer.
    """
    try:
        return await control(request.app.state, "hangup", call_sid)
    except ControlError as exc:
        found = await asyncio.to_thread(call_store.get_call, engine.db, call_sid) if exc.status == 404 else None
        if found is None or found["status"] in call_store.FINAL_STATUSES:
            raise HTTPException(exc.status, str(exc)) from exc
    try:
        await request.app.state.telephony.twilio.hangup(call_sid)
    except (ConfigError, TelephonyError) as exc:
        raise HTTPException(503, str(exc)) from exc
    return {"done": "hangup", "call_sid": call_sid, "instance": None}


@router.post("/api/calls/{call_sid}/say")
async def call_say(body: SayRequest, request: Request, call_sid: str = CALL_SID) -> dict:
    """Make the agent on a live call say ``text`` now (not stored as a turn), wherever the call is held."""
    return await _call_control(request, "say", call_sid, body.text)


@router.post("/api/calls/{call_sid}/end")
async def call_end(request: Request, call_sid: str = CALL_SID) -> dict:
    """End a live call gracefully: the agent says the persona's wrap-up, then hangs up."""
    return await _call_control(request, "end", call_sid)


@router.get("/api/conversations")
def conversation_list(limit: int = 100, engine: Engine = Depends(get_engine)) -> list[dict]:
    """Recent conversations on every channel, newest first: id, channel, persona, title, turns."""
    return conversations.list_conversations(engine.db, min(max(limit, 1), 500))


@router.get("/api/conversations/{conversation_id}")
def conversation(conversation_id: int = Path(ge=1, le=2**31 - 1), engine: Engine = Depends(get_engine)) -> dict:
    """One conversation with its turns (texts, tool calls, timings, interruptions)."""
    found = conversations.get_conversation(engine.db, conversation_id)
    if found is None:
        raise HTTPException(404, f"no conversation {conversation_id}")
    return found


@router.delete("/api/conversations/{conversation_id}", status_code=204)
async def conversation_delete(conversation_id: int = Path(ge=1, le=2**31 - 1),
                              engine: Engine = Depends(get_engine)) -> None:
    """Delete a conversation with its turns and recordings (its calls and SMS stay, unlinked)."""
    deleted = await asyncio.to_thread(conversations.delete_conversation, engine.db, conversation_id,
                                      engine.settings.forge_data_dir)
    if not deleted:
        raise HTTPException(404, f"no conversation {conversation_id}")


@router.get("/api/sms")
def sms(limit: int = 100, engine: Engine = Depends(get_engine)) -> list[dict]:
    """Recent SMS messages, newest first."""
    return call_store.list_sms(engine.db, min(max(limit, 1), 500))
