"""The shared model tier: Forge's embedded STT, TTS and offline brain behind an OpenAI-compatible API.

``forge serve-models`` serves this router (the app factory's "models" role), so several sidecars
can use one or more model hosts through ``OPENAI_STT_BASE_URL`` / ``OPENAI_TTS_BASE_URL`` /
``OPENAI_LLM_BASE_URL`` (``http://host:port/v1``) and the host's ``FORGE_API_KEY`` as
``OPENAI_API_KEY``. The wire follows OpenAI's API reference
(https://platform.openai.com/docs/api-reference):

- ``POST /v1/audio/transcriptions``: multipart ``file`` (any format Forge reads), ``prompt``;
  ``response_format`` json (default), text or verbose_json; the model name is not checked.
- ``POST /v1/audio/speech``: JSON ``input``, ``voice`` (one the TTS does not know means its own),
  ``response_format`` wav (default) or pcm (16-bit mono at 24 kHz, as OpenAI's).
- ``POST /v1/chat/completions``: ``messages`` and ``tools``; ``stream`` true answers with
  server-sent ``chat.completion.chunk`` events then ``[DONE]``. The brain keeps no state: each
  request's messages are the whole conversation, so its dialogue state (a pending request, the
  caller it identified, the list it read out) is rebuilt from them. A tool the host knows by name
  (a built-in, or an agent's own) is routed by its declaration; any other by its schema and
  description.
- ``GET /v1/models``.

Errors come back in OpenAI's shape, ``{"error": {"message", "type"}}``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from server.auth import protected_router
from server.routers.voice import read_upload
from voiceforge.audio.codecs import wrap_wav
from voiceforge.audio.resample import resample
from voiceforge.providers import ProviderError
from voiceforge.providers.base import ToolCall

router = protected_router(tags=["models (OpenAI-compatible)"])
OPENAI_PCM_RATE = 24000
"""OpenAI's ``pcm`` speech format: 16-bit mono at 24 kHz (its API reference, audio/createSpeech)."""
MAX_MESSAGES = 400
MAX_TOOLS = 128
KNOWN_TOOLS_S = 30.0
"""How long the host keeps its list of the tools it knows by name (built-ins and agents' own), s."""


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": None, "param": None}}, status_code=status)


@router.get("/v1/models")
def models(request: Request) -> dict:
    """The models this host serves (their names are labels: any name reaches the same model)."""
    labels = request.app.state.engine.provider_labels()
    created = int(time.time())
    return {"object": "list", "data": [{"id": f"forge-{kind}", "object": "model", "created": created,
                                        "owned_by": labels.get(kind, kind)} for kind in ("stt", "llm", "tts")]}


@router.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(request: Request, file: UploadFile = File(...), model: str = Form("whisper-1", max_length=200),
                         prompt: str | None = Form(None, max_length=4000), language: str | None = Form(None, max_length=16),
                         response_format: str = Form("json", max_length=20)) -> Response | dict:
    """Transcribe an upload with the host's STT: ``{"text"}`` (or plain text, or verbose_json)."""
    engine = request.app.state.engine
    if response_format not in ("json", "text", "verbose_json"):
        return _error(400, f"response_format {response_format!r} is not served here: json, text or verbose_json")
    pcm, rate = await read_upload(engine, file, None)
    words = [w.strip(" .") for w in (prompt or "").replace("Vocabulary:", "").split(",") if w.strip(" .")]
    try:
        result = await engine.stt.transcribe(pcm, rate, words[:50])
    except ProviderError as exc:
        return _error(502, str(exc), "server_error")
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format == "verbose_json":
        return {"task": "transcribe", "language": result.language or language or "en",
                "duration": round(len(pcm) / 2 / rate, 3), "text": result.text}
    return {"text": result.text}


class SpeechRequest(BaseModel):
    """OpenAI's speech request (the fields Forge reads)."""

    model: str = Field("tts-1", max_length=200)
    input: str = Field(..., min_length=1, max_length=4096)
    voice: str | dict = "alloy"
    response_format: Literal["wav", "pcm", "mp3", "opus", "aac", "flac"] = "wav"
    speed: float | None = Field(None, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=4096)


@router.post("/v1/audio/speech", response_class=Response,
             responses={200: {"content": {"audio/wav": {}, "audio/pcm": {}}}})
async def speech(body: SpeechRequest, request: Request) -> Response:
    """Speak ``input`` with the host's TTS: a WAV at its own rate, or raw PCM16 at 24 kHz (``pcm``)."""
    engine = request.app.state.engine
    if body.response_format not in ("wav", "pcm"):
        return _error(400, f"response_format {body.response_format!r} is not served here: wav or pcm")
    known = engine.tts.capabilities.voices
    voice = body.voice if isinstance(body.voice, str) and (not known or body.voice in known) else None
    try:
        pcm, rate = await engine.synthesize(body.input, voice)
    except (ProviderError, ValueError) as exc:
        return _error(502, str(exc), "server_error")
    if body.response_format == "pcm":
        return Response(resample(pcm, rate, OPENAI_PCM_RATE), media_type="audio/pcm")
    return Response(wrap_wav(pcm, rate), media_type="audio/wav")


class ChatRequest(BaseModel):
    """OpenAI's chat-completions request (the fields Forge reads; others are accepted and ignored)."""

    model: str = Field("forge-brain", max_length=200)
    messages: list[dict[str, Any]] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    model_config = {"extra": "allow"}


def _tools(request: Request, declared: list[dict[str, Any]] | None) -> list[Any]:
    """The request's tools as Forge tools: a name the host knows keeps its declaration, others come from the schema."""
    from voiceforge.tools.declared import tool_from_schema

    state = request.app.state
    engine = state.engine
    known, built = getattr(state, "known_tools", None) or ({}, 0.0)
    if time.monotonic() - built > KNOWN_TOOLS_S:  # agents change: their tools are read again now and then
        from voiceforge.agent.persona import PersonaError, list_personas

        known = {name: engine.registry.get(name) for name in engine.registry.names()}
        for agent in list_personas(data_dir=engine.settings.forge_data_dir):
            try:
                known.update({t.name: t for t in engine.persona(agent).own_tools if t.name not in known})
            except PersonaError:
                continue
        state.known_tools = (known, time.monotonic())
    out = []
    for entry in declared or []:
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise HTTPException(400, "each tool is {\"type\": \"function\", \"function\": {\"name\", ...}}")
        name = function["name"][:64]
        tool = known.get(name)
        if tool is None:
            tool = tool_from_schema(name, str(function.get("description") or "")[:1000],
                                    function.get("parameters") or {}, None, kind="client")
        out.append(tool)
    return out


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages whose ``content`` is a list of parts (OpenAI's multi-part form) as their text alone."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            text = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
            m = {**m, "content": text}
        out.append(m)
    return out


def _message(items: list[Any]) -> dict[str, Any]:
    text = "".join(i for i in items if isinstance(i, str))
    calls = [i.to_message() for i in items if isinstance(i, ToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request) -> Response | dict:
    """One assistant turn from the host's LLM (the offline brain by default), whole or streamed."""
    engine = request.app.state.engine
    tools = _tools(request, body.tools)
    reply_id = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    try:
        items = [i for i in [item async for item in engine.llm.stream(_plain(body.messages), tools)]
                 if isinstance(i, str | ToolCall)]
    except ProviderError as exc:
        return _error(502, str(exc), "server_error")
    message = _message(items)
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not body.stream:
        return {"id": reply_id, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, with_usage: bool = False) -> str:
        payload: dict[str, Any] = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                                   "model": body.model,
                                   "choices": [] if with_usage else [{"index": 0, "delta": delta,
                                                                       "finish_reason": finish_reason}]}
        if with_usage:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n"

    def events():  # noqa: ANN202
        yield chunk({"role": "assistant", "content": ""})
        if message["content"]:
            yield chunk({"content": message["content"]})
        for index, call in enumerate(message.get("tool_calls", [])):
            yield chunk({"tool_calls": [{"index": index, **call}]})
        yield chunk({}, finish)
        if (body.stream_options or {}).get("include_usage"):
            yield chunk({}, with_usage=True)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
