"""The REST surface of a general voice-agent backend: conversations, STT, TTS, personas, /ws."""

from __future__ import annotations

import base64
import json
import logging

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import BaseModel, Field

from server.dependencies import get_engine
from voiceforge.agent.persona import PersonaError, list_personas
from voiceforge.audio.codecs import AudioFormatError, unwrap_wav, wrap_wav
from voiceforge.audio.framing import FrameBuffer, frame_bytes
from voiceforge.audio.vad import TurnEvent, UtteranceSegmenter
from voiceforge.engine import Engine
from voiceforge.providers import ProviderError

router = APIRouter(tags=["voice agent"])
log = logging.getLogger("forge.sidecar.voice")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


class ConversationStart(BaseModel):
    """Start a conversation under a persona."""

    persona: str | None = None
    channel: str = "api"


class ConversationProcess(BaseModel):
    """One text turn in a conversation."""

    conversation_id: int
    text: str = Field(min_length=1, max_length=4000)
    persona: str | None = None


class SpeechRequest(BaseModel):
    """Text to speak."""

    text: str = Field(min_length=1, max_length=4000)


def _persona_or_404(engine: Engine, persona: str | None):  # noqa: ANN202
    try:
        return engine.persona(persona)
    except PersonaError as exc:
        raise HTTPException(404, str(exc)) from None


async def _read_wav(upload: UploadFile) -> tuple[bytes, int]:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"audio larger than {MAX_UPLOAD_BYTES} bytes")
    try:
        return unwrap_wav(data)
    except AudioFormatError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/personas")
def personas(engine: Engine = Depends(get_engine)) -> list[dict]:
    """Every persona: id, name, description, greeting, tools."""
    out = []
    for pid in list_personas():
        p = engine.persona(pid)
        out.append({"id": p.id, "name": p.name, "description": p.description, "greeting": p.greeting, "tools": p.tools})
    return out


@router.get("/personas/{persona_id}")
def persona(persona_id: str, engine: Engine = Depends(get_engine)) -> dict:
    """One persona in full, including its system prompt and voices."""
    p = _persona_or_404(engine, persona_id)
    return {"id": p.id, "name": p.name, "description": p.description, "greeting": p.greeting,
            "system_prompt": p.system_prompt, "tools": p.tools, "voice": p.voice,
            "phone_max_sentences": p.phone_max_sentences}


@router.post("/conversation/start")
def conversation_start(body: ConversationStart, engine: Engine = Depends(get_engine)) -> dict:
    """Create a stored conversation; returns its id and the persona's greeting."""
    p = _persona_or_404(engine, body.persona)
    session = engine.session(p.id, channel=body.channel)
    return {"conversation_id": session.ensure_conversation(), "persona": p.id, "greeting": p.greeting}


@router.post("/conversation/process")
async def conversation_process(body: ConversationProcess, engine: Engine = Depends(get_engine)) -> dict:
    """One text turn; the conversation's memory is rebuilt from its stored turns."""
    session = _resume(engine, body.conversation_id, body.persona)
    result = await session.text_turn(body.text)
    return result.to_json()


def _resume(engine: Engine, conversation_id: int, persona: str | None):  # noqa: ANN202
    from voiceforge.store.models import Conversation

    with engine.db.sessions() as s:
        conv = s.get(Conversation, conversation_id)
        if conv is None:
            raise HTTPException(404, f"no conversation {conversation_id}")
        history = [(t.user_text, t.assistant_text) for t in conv.turns]
        persona_id = persona or conv.persona
    session = engine.session(_persona_or_404(engine, persona_id).id, channel="api", conversation_id=conversation_id)
    for user, assistant in history:
        session.agent.memory.add_user(user)
        session.agent.memory.add_assistant(assistant)
    return session


@router.post("/voice/speech-to-text")
async def speech_to_text(file: UploadFile = File(...), engine: Engine = Depends(get_engine)) -> dict:
    """Transcribe a WAV upload: {"text", "audio_ms", "elapsed_ms"}. 422 on bad audio."""
    pcm, rate = await _read_wav(file)
    try:
        t = await engine.stt.transcribe(pcm, rate)
    except ProviderError as exc:
        raise HTTPException(502, str(exc)) from None
    return {"text": t.text, "audio_ms": round(t.audio_ms), "elapsed_ms": round(t.elapsed_ms, 1)}


@router.post("/voice/text-to-speech", response_class=Response,
             responses={200: {"content": {"audio/wav": {}}}})
async def text_to_speech(body: SpeechRequest, engine: Engine = Depends(get_engine)) -> Response:
    """Speak text; returns a WAV file (PCM16 mono at the TTS provider's rate)."""
    try:
        pcm, rate = await engine.synthesize(body.text)
    except ProviderError as exc:
        raise HTTPException(502, str(exc)) from None
    return Response(wrap_wav(pcm, rate), media_type="audio/wav")


@router.post("/voice-agent/process")
async def voice_agent_process(
    file: UploadFile = File(...),
    persona: str | None = Form(None),
    conversation_id: int | None = Form(None),
    engine: Engine = Depends(get_engine),
) -> dict:
    """One spoken turn: WAV in → transcript, reply, tool calls, timings and the reply WAV (base64)."""
    pcm, rate = await _read_wav(file)
    session = (_resume(engine, conversation_id, persona) if conversation_id
               else engine.session(_persona_or_404(engine, persona).id, channel="api"))
    result = await session.voice_turn(pcm, rate)
    out = result.to_json()
    wav = result.reply_wav()
    out["audio_wav_base64"] = base64.b64encode(wav).decode() if wav else None
    return out


@router.websocket("/ws")
async def browser_stream(ws: WebSocket, persona: str | None = None) -> None:
    """A browser streaming PCM16 16 kHz mono with JSON control messages.

    In: ``{"type": "audio_chunk", "data": base64 PCM16}`` and ``{"type": "text_input", "text": ...}``.
    Out: ``transcription``, ``conversation_response`` (reply, tool calls, timings) and
    ``audio_response`` (base64 WAV). Utterances are cut by VAD (speech end after 600 ms).
    """
    engine: Engine = ws.app.state.engine
    await ws.accept()
    try:
        session = engine.session(engine.persona(persona).id, channel="browser")
    except PersonaError as exc:
        await ws.close(code=1008, reason=str(exc)[:120])
        return
    frames = FrameBuffer(frame_bytes(16000, 20))
    segmenter = UtteranceSegmenter(16000, 20)
    try:
        while True:
            message = json.loads(await ws.receive_text())
            kind = message.get("type")
            if kind == "text_input":
                await _answer(ws, session, await session.text_turn(str(message.get("text", "")), speak=True))
            elif kind == "audio_chunk":
                for frame in frames.push(base64.b64decode(message.get("data", ""), validate=True)):
                    event = segmenter.push(frame)
                    if event and event[0] is TurnEvent.SPEECH_END and event[1]:
                        result = await session.voice_turn(event[1], 16000)
                        await ws.send_json({"type": "transcription", "text": result.user_text})
                        await _answer(ws, session, result)
            else:
                await ws.send_json({"type": "error", "message": f"unknown message type {kind!r}"})
    except WebSocketDisconnect:
        return
    except (json.JSONDecodeError, ValueError) as exc:
        log.warning("closing /ws: bad message (%s)", type(exc).__name__)
        await ws.close(code=1003, reason="bad message")


async def _answer(ws: WebSocket, session, result) -> None:  # noqa: ANN001
    await ws.send_json({"type": "conversation_response", **result.to_json()})
    wav = result.reply_wav()
    if wav:
        await ws.send_json({"type": "audio_response", "format": "wav", "data": base64.b64encode(wav).decode()})
