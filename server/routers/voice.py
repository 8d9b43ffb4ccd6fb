"""The REST surface of a general voice-agent backend, and the browser websocket ``/ws``.

Uploads are WAV (16-bit PCM, 1 or 2 channels, 8000–48000 Hz) or MP3, OGG/Opus, WebM, M4A or
FLAC (decoded by ffmpeg), at most ``FORGE_MAX_TURN_S`` seconds: 415 for another format (or no
ffmpeg, named), 413 for too long, 422 for a damaged file; nothing is stored for a refused
upload. The field is ``file`` (or ``audio_file``, the seed backend's name).
"""

from __future__ import annotations

import asyncio
import base64
import logging

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from server.admission import TRY_AGAIN_LATER, refusal
from server.auth import authorize_websocket, protected_router
from server.dependencies import get_engine, persona_or_404
from server.schemas import Id, PersonaId, Text
from server.transports import close
from server.transports.browser import BrowserProtocolError, BrowserSocket
from voiceforge.agent.persona import PersonaError, list_personas
from voiceforge.audio.codecs import (
    AudioFormatError,
    AudioTooLongError,
    UnsupportedAudioError,
    wrap_wav,
)
from voiceforge.audio.decode import decode_audio
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.providers import ProviderError
from voiceforge.turn import TurnPipeline

router = protected_router(tags=["voice agent"])
websockets = APIRouter(tags=["voice agent"])
log = logging.getLogger("forge.sidecar.voice")


class ConversationStart(BaseModel):
    """Start a conversation under a persona."""

    persona: PersonaId | None = None
    channel: str = Field(default="api", pattern=r"^[a-z]{1,20}$")


class ConversationProcess(BaseModel):
    """One text turn in a conversation."""

    conversation_id: Id
    text: Text = Field(min_length=1, max_length=4000)
    persona: PersonaId | None = None


class SpeechRequest(BaseModel):
    """Text to speak, optionally in a named voice of the TTS provider."""

    text: Text = Field(min_length=1, max_length=4000)
    voice: str | None = Field(default=None, max_length=40)


async def read_upload(engine: Engine, file: UploadFile | None, audio_file: UploadFile | None) -> tuple[bytes, int]:
    """The uploaded audio as (PCM16 mono, Hz), checked before anything else happens.

    The body itself is already capped in size and time by ``server.perimeter.Perimeter``; decoding runs off the
    event loop (ffmpeg is a subprocess).

    Raises:
        HTTPException: 422 no file or a damaged file, 415 a format Forge does not read (or no
            ffmpeg), 413 longer than ``FORGE_MAX_TURN_S``.
    """
    upload = file or audio_file
    if upload is None:
        raise HTTPException(422, "send the audio as the form field 'file' (or 'audio_file')")
    data = await upload.read()
    try:
        return await asyncio.to_thread(decode_audio, data, engine.settings.forge_max_turn_s, True)
    except UnsupportedAudioError as exc:
        raise HTTPException(415, str(exc)) from None
    except AudioTooLongError as exc:
        raise HTTPException(413, str(exc)) from None
    except AudioFormatError as exc:
        raise HTTPException(422, str(exc)) from None


async def resume_or_404(engine: Engine, conversation_id: int, persona: str | None, channel: str = "api") -> TurnPipeline:
    """A pipeline continuing a stored conversation (404 when there is none)."""
    try:
        return await asyncio.to_thread(engine.resume, conversation_id, persona, channel)
    except LookupError:
        raise HTTPException(404, f"no conversation {conversation_id}") from None
    except PersonaError:
        raise HTTPException(404, f"no persona {persona!r}") from None


@router.get("/personas")
def personas(engine: Engine = Depends(get_engine)) -> list[dict]:
    """Every agent (shipped and made in the app): id, name, description, greeting, tools (an agent that does
    not load is listed with its ``error``)."""
    out = []
    for pid in list_personas(data_dir=engine.settings.forge_data_dir):
        try:
            p = engine.persona(pid)
        except PersonaError as exc:
            out.append({"id": pid, "error": str(exc)})
            continue
        out.append({"id": p.id, "name": p.name, "description": p.description, "greeting": p.greeting, "tools": p.tools})
    return out


@router.get("/personas/{persona_id}")
def persona(persona_id: str, engine: Engine = Depends(get_engine)) -> dict:
    """One persona in full, including its system prompt and voices."""
    p = persona_or_404(engine, persona_id)
    return {"id": p.id, "name": p.name, "description": p.description, "greeting": p.greeting,
            "system_prompt": p.system_prompt, "tools": p.tools, "voice": p.voice,
            "phone_max_sentences": p.phone_max_sentences}


async def conversation_start(body: ConversationStart, engine: Engine = Depends(get_engine)) -> dict:
    """Create a stored conversation; returns its id and the persona's greeting."""
    p = persona_or_404(engine, body.persona)
    pipeline = engine.pipeline(p.id, channel=body.channel)
    return {"conversation_id": await pipeline.ensure_conversation(), "persona": p.id, "greeting": p.greeting}


async def conversation_process(body: ConversationProcess, engine: Engine = Depends(get_engine)) -> dict:
    """One text turn; the conversation's memory is rebuilt from its stored turns."""
    pipeline = await resume_or_404(engine, body.conversation_id, body.persona)
    return (await pipeline.text_turn(body.text)).to_json()


async def speech_to_text(file: UploadFile | None = File(None), audio_file: UploadFile | None = File(None),
                         engine: Engine = Depends(get_engine)) -> dict:
    """Transcribe an audio upload: {"text", "audio_ms", "elapsed_ms"}."""
    pcm, rate = await read_upload(engine, file, audio_file)
    try:
        t = await engine.stt.transcribe(pcm, rate)
    except ProviderError as exc:
        raise HTTPException(502, str(exc)) from None
    return {"text": t.text, "audio_ms": round(t.audio_ms), "elapsed_ms": round(t.elapsed_ms, 1)}


async def text_to_speech(body: SpeechRequest, engine: Engine = Depends(get_engine)) -> Response:
    """Speak text; returns a WAV file (PCM16 mono at the TTS provider's rate)."""
    try:
        pcm, rate = await engine.synthesize(body.text, body.voice)
    except ProviderError as exc:
        raise HTTPException(502, str(exc)) from None
    return Response(wrap_wav(pcm, rate), media_type="audio/wav")


@router.post("/voice-agent/process")
async def voice_agent_process(
    file: UploadFile | None = File(None),
    audio_file: UploadFile | None = File(None),
    persona: PersonaId | None = Form(None),
    conversation_id: Id | None = Form(None),
    engine: Engine = Depends(get_engine),
) -> dict:
    """One spoken turn: audio in → transcript, reply, tool calls, timings and the reply WAV (base64)."""
    pcm, rate = await read_upload(engine, file, audio_file)
    if conversation_id:
        pipeline = await resume_or_404(engine, conversation_id, persona)
    else:
        pipeline = engine.pipeline(persona_or_404(engine, persona).id, channel="api")
    result = await pipeline.voice_turn(pcm, rate)
    out = result.to_json()
    wav = result.reply_wav()
    out["audio_wav_base64"] = base64.b64encode(wav).decode() if wav else None
    return out


router.post("/conversation/start")(conversation_start)
router.post("/conversation/process")(conversation_process)
router.post("/voice/speech-to-text")(speech_to_text)
router.post("/voice/text-to-speech", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}}})(text_to_speech)


@websockets.websocket("/ws")
async def browser_stream(ws: WebSocket, persona: str | None = None) -> None:
    """A browser conversation over the shared loop (protocol: ``server/transports/browser.py``).

    The API key (header, or subprotocol ``bearer.<key>``) and the Origin are checked before
    the socket is accepted.
    """
    allowed, subprotocol = await authorize_websocket(ws)
    if not allowed:
        return
    await ws.accept(subprotocol=subprotocol)
    if (why := refusal(ws.app.state)) is not None:  # draining or overloaded: another instance takes it
        await close(ws, TRY_AGAIN_LATER, f"try again later: {why}")
        return
    engine: Engine = ws.app.state.engine
    connections = ws.app.state.connections
    transport = BrowserSocket(ws, batch_output_rate=engine.tts.sample_rate)
    connection = None
    try:
        await transport.handshake()
        try:
            pipeline = engine.pipeline(transport.persona or persona, channel="browser")
        except PersonaError as exc:
            await ws.close(code=1008, reason=str(exc)[:120])
            return

        async def disconnect() -> None:
            await close(ws, 1000, "disconnected by the server")

        loop = ConversationLoop(pipeline, transport, greet=transport.live, limits=transport.live)
        connection = connections.add("browser", pipeline.persona.id, disconnect, loop)
        loop.name = f"ws-{connection.id}"
        if transport.live:
            await transport.send_json({"type": "ready", "connection_id": connection.id,
                                       "input_rate": transport.input_rate, "output_rate": transport.output_rate,
                                       "persona": pipeline.persona.id})
        await loop.run(transport.events())
    except BrowserProtocolError as exc:
        log.warning("closing /ws: %s", exc)
        if ws.application_state is WebSocketState.CONNECTED:
            await ws.close(code=exc.code, reason=str(exc)[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if connection is not None:
            connections.remove(connection.id)
        await close(ws)
