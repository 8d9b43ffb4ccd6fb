"""Push-to-talk devices: management (API key) and the device's own routes (its token).

Management: register (the token is shown once), list, change settings, revoke; children's
profiles with consent, their memory, and deletion. Device routes (``Authorization: Bearer
<device token>``): heartbeat, settings, context (ETag / If-None-Match → 304), and a press over
``/device/ws`` or ``/device/turn``, as written in firmware/PROTOCOL.md. A revoked token is 401
at once; a second concurrent press on one device is 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, model_validator
from starlette.websockets import WebSocketDisconnect, WebSocketState

from server.auth import protected_router
from server.dependencies import get_engine, persona_or_404
from server.perimeter import CheckedRoute, checked_before_body
from server.schemas import Id, PersonaId, Text
from server.transports import close
from server.transports.device import (
    DEVICE_RATES,
    PRESS_DEADLINE_S,
    DeviceHttpTurn,
    DeviceProtocolError,
    DeviceSocket,
    read_http_press,
)
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.records import TurnRecord
from voiceforge.store import children as child_store
from voiceforge.store import devices as store
from voiceforge.transport import AudioIn, TalkEnd, TalkStart
from voiceforge.turn import TurnPipeline

admin = protected_router(tags=["devices"])
device_routes = APIRouter(prefix="/device", tags=["device"], route_class=CheckedRoute)
log = logging.getLogger("forge.sidecar.device")
DEVICE_ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


# --- management (API key) --------------------------------------------------------------------------
class ChildIn(BaseModel):
    """A child's profile. Storage of anything about the child needs ``consent``."""

    name: Text = Field(min_length=1, max_length=80)
    dob: dt.date | None = None
    parents: Text = Field(default="", max_length=500)
    preferred_language: str = Field(default="en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: str = Field(default="UTC", max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")
    consent: bool = False


class ChildPatch(BaseModel):
    """Fields of a profile to change; ``dob`` may be cleared with null, the others may not."""

    name: Text | None = Field(default=None, min_length=1, max_length=80)
    dob: dt.date | None = None
    parents: Text | None = Field(default=None, max_length=500)
    preferred_language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")
    consent: bool | None = None

    @model_validator(mode="after")
    def _no_null_but_dob(self) -> ChildPatch:
        nulled = sorted(f for f in self.model_fields_set if f != "dob" and getattr(self, f) is None)
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null")
        return self


class DeviceIn(BaseModel):
    """Register a device: a name, the persona it speaks as, and optionally its child."""

    name: Text = Field(min_length=1, max_length=80)
    persona: PersonaId = "hanuman_storyteller"
    child_id: Id | None = None
    device_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class DevicePatch(BaseModel):
    """Settings the device pulls (null puts one back to its default), and its persona or child (null: none)."""

    voice: str | None = Field(default=None, max_length=40)
    volume: int | None = Field(default=None, ge=0, le=100)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    vad_threshold: float | None = Field(default=None, ge=0.3, le=0.95)
    pre_roll_ms: int | None = Field(default=None, ge=0, le=1000)
    post_roll_ms: int | None = Field(default=None, ge=300, le=2000)
    persona: PersonaId | None = None
    child_id: Id | None = None


def _or_404(found: Any, what: str) -> Any:
    if found is None:
        raise HTTPException(404, f"no {what}")
    return found


@admin.post("/api/children", status_code=201)
async def create_child(body: ChildIn, engine: Engine = Depends(get_engine)) -> dict:
    """Store a child's profile (consent recorded with its time when given)."""
    return await asyncio.to_thread(child_store.create_child, engine.db, **body.model_dump())


@admin.get("/api/children")
def children(engine: Engine = Depends(get_engine)) -> list[dict]:
    """Every child's profile."""
    return child_store.list_children(engine.db)


@admin.get("/api/children/{child_id}")
def child(child_id: int = Path(ge=1, le=2**31 - 1), engine: Engine = Depends(get_engine)) -> dict:
    """A child's profile with interests, Chalisa and story progress, and recent interactions."""
    profile = _or_404(child_store.get_child(engine.db, child_id), f"child {child_id}")
    return {**profile, "interests": child_store.interests(engine.db, child_id),
            "verses": child_store.verse_progress(engine.db, child_id), "stories": child_store.story_progress(engine.db, child_id),
            "interactions": child_store.interactions(engine.db, child_id)}


@admin.patch("/api/children/{child_id}")
async def update_child(body: ChildPatch, child_id: int = Path(ge=1, le=2**31 - 1),
                       engine: Engine = Depends(get_engine)) -> dict:
    """Change a profile; withdrawing consent stops storage from now on (deletion is DELETE)."""
    fields = body.model_dump(exclude_unset=True)
    try:
        return await asyncio.to_thread(child_store.update_child, engine.db, child_id, **fields)
    except store.DeviceError as exc:
        raise HTTPException(404, str(exc)) from None


@admin.delete("/api/children/{child_id}")
async def forget_child(child_id: int = Path(ge=1, le=2**31 - 1), engine: Engine = Depends(get_engine)) -> dict:
    """Right to deletion: every row about the child and every recording, gone."""
    _or_404(await asyncio.to_thread(child_store.get_child, engine.db, child_id), f"child {child_id}")
    recordings = engine.settings.forge_data_dir / "recordings"
    removed = await asyncio.to_thread(child_store.forget_child, engine.db, child_id, recordings)
    return {"deleted": child_id, **removed}


@admin.post("/api/devices", status_code=201)
async def register_device(body: DeviceIn, engine: Engine = Depends(get_engine)) -> dict:
    """Register a device. The response holds its token: the only time it is shown."""
    persona_or_404(engine, body.persona)
    try:
        device, token = await asyncio.to_thread(store.register_device, engine.db, body.name, body.persona,
                                                body.child_id, body.device_id)
    except store.DeviceError as exc:
        raise HTTPException(409 if "already" in str(exc) else 404, str(exc)) from None
    return {**device, "token": token}


@admin.get("/api/devices")
def devices(engine: Engine = Depends(get_engine)) -> list[dict]:
    """Every device with its last-seen time, status and settings (never a token)."""
    return store.list_devices(engine.db)


@admin.get("/api/devices/{device_id}")
def device(device_id: str = DEVICE_ID, engine: Engine = Depends(get_engine)) -> dict:
    """One device."""
    return _or_404(store.get_device(engine.db, device_id), f"device {device_id!r}")


@admin.patch("/api/devices/{device_id}")
async def update_device(body: DevicePatch, device_id: str = DEVICE_ID, engine: Engine = Depends(get_engine)) -> dict:
    """Change a device's settings (it sees the new version at its next heartbeat), persona or child."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("persona"):
        persona_or_404(engine, changes["persona"])
    try:
        return await asyncio.to_thread(store.update_settings, engine.db, device_id, **changes)
    except store.DeviceError as exc:
        raise HTTPException(404 if "no " in str(exc) else 422, str(exc)) from None


@admin.post("/api/devices/{device_id}/revoke")
async def revoke_device(device_id: str = DEVICE_ID, engine: Engine = Depends(get_engine)) -> dict:
    """Revoke a device's token now; its next request is 401."""
    try:
        return await asyncio.to_thread(store.revoke_device, engine.db, device_id)
    except store.DeviceError as exc:
        raise HTTPException(404, str(exc)) from None


# --- the device's own routes (its token) ---------------------------------------------------------
def _token(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@checked_before_body()
async def require_device(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the device a request's token belongs to (checked before the body too).

    Raises:
        HTTPException: 401 for a missing, unknown or revoked token.
    """
    found = await asyncio.to_thread(store.authenticate, request.app.state.engine.db,
                                    _token(request.headers.get("authorization")))
    if found is None:
        raise HTTPException(401, "missing, unknown or revoked device token", headers={"WWW-Authenticate": "Bearer"})
    return found


class Heartbeat(BaseModel):
    """What a device reports when it wakes: firmware version, battery %, Wi-Fi RSSI (dBm)."""

    firmware: str = Field(default="", max_length=32)
    battery: int | None = Field(default=None, ge=0, le=100)
    rssi: int | None = Field(default=None, ge=-120, le=0)


@device_routes.post("/heartbeat")
async def heartbeat(body: Heartbeat, request: Request, device: dict = Depends(require_device)) -> dict:
    """Record that the device is alive; tells it whether its settings or context went stale."""
    engine: Engine = request.app.state.engine
    status = {k: v for k, v in (("battery", body.battery), ("rssi", body.rssi)) if v is not None}
    await asyncio.to_thread(store.heartbeat, engine.db, device["device_id"], body.firmware, status)
    _, etag = await asyncio.to_thread(child_store.context, engine.db, device["child_id"])
    return {"server_time": dt.datetime.now(dt.UTC).isoformat(), "settings_version": device["settings_version"],
            "context_etag": etag}


@device_routes.get("/settings")
def settings(device: dict = Depends(require_device)) -> dict:
    """What the device should use: persona, voice, volume, language, VAD threshold, pre/post-roll."""
    return {"persona": device["persona"], "settings_version": device["settings_version"], **device["settings"]}


@device_routes.get("/context")
async def context(request: Request, device: dict = Depends(require_device)) -> Response:
    """The child's profile, interests and progress, with an ETag; If-None-Match → 304."""
    body, etag = await asyncio.to_thread(child_store.context, request.app.state.engine.db, device["child_id"])
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(body, headers={"ETag": etag, "Cache-Control": "no-cache"})


async def device_pipeline(engine: Engine, device: dict[str, Any]) -> TurnPipeline:
    """The device's conversation, continued: its summary and last turns, its child, consent."""
    child_id = device["child_id"]
    persist = child_id is None or await asyncio.to_thread(child_store.consented, engine.db, child_id)
    pipeline = None
    if device["conversation_id"] and persist:
        with contextlib.suppress(LookupError):
            pipeline = await asyncio.to_thread(engine.resume, device["conversation_id"], device["persona"], "device")
    if pipeline is None:
        pipeline = engine.pipeline(device["persona"], channel="device", persist=persist)
    pipeline.for_child(child_id, persist)
    pipeline.configure(voice=device["settings"].get("voice") or "")
    if persist and pipeline.conversation_id is None:
        conversation_id = await pipeline.ensure_conversation(title=f"Device {device['name'] or device['device_id']}")
        await asyncio.to_thread(store.attach_conversation, engine.db, device["device_id"], conversation_id, child_id)
    return pipeline


def _claim(request_or_ws: Request | WebSocket, device_id: str) -> bool:
    busy: set[str] = request_or_ws.app.state.busy_devices
    if device_id in busy:
        return False
    busy.add(device_id)
    return True


def interaction_logger(engine: Engine, device: dict[str, Any]):  # noqa: ANN201
    """The hook that logs each answered press for the device's child (the store checks consent)."""
    child_id = device["child_id"]
    if child_id is None:
        return None

    async def log_press(record: TurnRecord) -> None:
        if not record.user_text:
            return
        calls = record.tool_calls
        topic = next((c["arguments"].get("topic", "") for c in calls if c["name"] == "tell_a_story"),
                     "chalisa" if any("chalisa" in c["name"] for c in calls) else "chat")
        timings = record.timings_ms
        await asyncio.to_thread(child_store.log_interaction, engine.db, child_id, device["device_id"],
                                dt.datetime.now(dt.UTC), timings.get("turn_done", 0) / 1000, topic)

    return log_press


@device_routes.post("/turn")
async def http_turn(request: Request, rate: int = 16000, device: dict = Depends(require_device)) -> Response:
    """One press over chunked HTTP (body and response framing: firmware/PROTOCOL.md)."""
    engine: Engine = request.app.state.engine
    if rate not in DEVICE_RATES:
        raise HTTPException(415, f"rate must be one of {DEVICE_RATES} Hz")
    if not _claim(request, device["device_id"]):
        raise HTTPException(409, "this device already has a press in progress")
    released = False
    try:
        max_bytes = int(engine.settings.forge_max_turn_s * rate) * 2
        try:
            press = await read_http_press(request.stream(), max_bytes,
                                          engine.settings.forge_max_turn_s + PRESS_DEADLINE_S)
        except DeviceProtocolError as exc:
            raise HTTPException(exc.code, str(exc)) from None
        transport = DeviceHttpTurn(rate, interaction_logger(engine, device))
        pipeline = await device_pipeline(engine, device)
        loop = ConversationLoop(pipeline, transport, greet=False, push_to_talk=True, limits=False,
                                name=device["device_id"])
        await loop.start()
        await loop.handle(TalkStart())
        transport.released.append(press.turn)
        await loop.handle(AudioIn(press.audio(), rate))
        await loop.handle(TalkEnd())

        async def body():  # noqa: ANN202
            try:
                deadline = time.monotonic() + engine.settings.forge_max_turn_s + 120
                while time.monotonic() < deadline:
                    try:
                        frame = await asyncio.wait_for(transport.out.get(), deadline - time.monotonic())
                    except TimeoutError:
                        break
                    if frame is None:
                        break
                    yield frame
            finally:
                await loop.stop()
                request.app.state.busy_devices.discard(device["device_id"])

        released = True
        return StreamingResponse(body(), media_type="application/x-forge-frames",
                                 headers={"X-Forge-Rate": str(rate), "X-Forge-Turn": str(press.turn)})
    finally:
        if not released:
            request.app.state.busy_devices.discard(device["device_id"])


@device_routes.websocket("/ws")
async def device_socket(ws: WebSocket) -> None:
    """A device's press-and-reply socket (protocol: firmware/PROTOCOL.md).

    The token is checked before accept (401), and one device holds one socket (409).
    """
    engine: Engine = ws.app.state.engine
    device = await asyncio.to_thread(store.authenticate, engine.db, _token(ws.headers.get("authorization")))
    if device is None:
        await _deny(ws, 401, "missing, unknown or revoked device token")
        return
    if not _claim(ws, device["device_id"]):
        await _deny(ws, 409, "this device already has a socket open")
        return
    try:
        await ws.accept()
        message = await ws.receive()
        try:
            hello = json.loads(message.get("text") or "") if message["type"] == "websocket.receive" else None
        except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer over 4,300 digits
            hello = None
        rate = hello.get("rate") if isinstance(hello, dict) else None
        if not isinstance(hello, dict) or hello.get("type") != "hello" or rate not in DEVICE_RATES:
            await ws.send_json({"type": "error", "code": 415, "message": f"say hello with a rate of {DEVICE_RATES} Hz"})
            await ws.close(code=1003, reason="unsupported rate")
            return
        await asyncio.to_thread(store.heartbeat, engine.db, device["device_id"], str(hello.get("firmware", ""))[:32])
        transport = DeviceSocket(ws, rate, int(engine.settings.forge_max_turn_s * rate) * 2,
                                 interaction_logger(engine, device))
        pipeline = await device_pipeline(engine, device)
        loop = ConversationLoop(pipeline, transport, greet=False, push_to_talk=True, name=device["device_id"])
        connection = ws.app.state.connections.add("device", pipeline.persona.id, lambda: ws.close(code=1000), loop)
        _, etag = await asyncio.to_thread(child_store.context, engine.db, device["child_id"])
        await transport.send_json({"type": "ready", "device_id": device["device_id"], "rate": rate,
                                   "settings_version": device["settings_version"], "context_etag": etag})
        try:
            await loop.run(transport.events())
        finally:
            ws.app.state.connections.remove(connection.id)
    except DeviceProtocolError as exc:
        log.warning("closing device %s: %s", device["device_id"], exc)
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.close(code=1003, reason=str(exc)[:120])
    except (WebSocketDisconnect, RuntimeError, ValueError):
        pass
    finally:
        ws.app.state.busy_devices.discard(device["device_id"])
        await close(ws)


async def _deny(ws: WebSocket, status: int, message: str) -> None:
    """Refuse a websocket before accept with an HTTP status (close 1008 where the server cannot)."""
    try:
        await ws.send_denial_response(JSONResponse({"detail": message}, status_code=status))
    except RuntimeError:
        await ws.close(code=1008, reason=message[:120])
