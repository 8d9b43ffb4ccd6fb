"""``forge realtime-server``: an OpenAI-Realtime-compatible websocket server on the offline cascade.

It answers ``/v1/realtime?model=...`` (and Azure's ``/openai/realtime?api-version=...&deployment=...``)
in the Realtime API's GA events, and behind them runs the shared conversation loop: server VAD
(``turn_detection`` honoured: threshold, silence, prefix padding; ``null`` for push-to-talk with
``input_audio_buffer.commit``), Whisper, the offline brain with the built-in tools, Piper. Audio
is ``audio/pcm`` at 24 kHz or ``audio/pcmu`` (μ-law 8 kHz) both ways. Speech over a reply cancels
it (``input_audio_buffer.speech_started``, then ``response.done`` with status ``cancelled``), and
``conversation.item.truncate`` is acknowledged. A tool the client declares in ``session.update``
is not run here: its call is surfaced as ``response.function_call_arguments.done`` and the
answer continues when the client sends the ``function_call_output`` and ``response.create``.

So the official ``openai`` SDK, pointed at it with ``websocket_base_url``, holds a spoken
conversation with no keys: it is how Forge tests every Realtime feature, and the offline backend
of the speech-to-speech prototype. Event shapes follow the SDK's own types
(``openai.types.realtime``). Clients authenticate with Forge's API key as the bearer token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from server.auth import key_matches
from server.transports import close, send
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voiceforge.config import Settings, get_settings
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.tools.registry import ToolError
from voiceforge.transport import AudioIn, InboundEvent, TalkEnd, TalkStart, TextIn, Transport

log = logging.getLogger("forge.realtime.server")
PCM_RATE = 24000
"""``audio/pcm`` in the Realtime API is 24 kHz PCM16 mono (OpenAI Realtime docs)."""
MAX_MESSAGE = 1 << 20


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class RealtimeServerTransport(Transport):
    """One Realtime client, as the conversation loop's transport.

    Audio goes out as ``response.output_audio.delta`` in 20 ms frames, paced in real time (a
    Realtime client plays what it gets); playback is not confirmed by the client, so each
    sentence counts as heard once sent, and a barge-in keeps only what went out before it.
    """

    frame_ms = 20
    paced = True
    confirms_playback = False

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.format = "audio/pcm"
        self.output_rate = PCM_RATE
        self.loop: ConversationLoop | None = None
        self._event_ids = itertools.count(1)
        self.response: dict[str, Any] | None = None
        self.user_item: str | None = None
        self.last_item: str | None = None
        self.audio_in_ms = 0.0
        self.pending_text: list[str] = []
        self.calls: dict[str, asyncio.Future] = {}
        self.resume = asyncio.Event()
        self.talking = False
        self.session: dict[str, Any] = {
            "type": "realtime", "object": "realtime.session", "id": _id("sess"), "model": "forge-offline",
            "output_modalities": ["audio"], "instructions": "", "tools": [], "tool_choice": "auto",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": PCM_RATE},
                                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                                   "silence_duration_ms": 500, "create_response": True,
                                                   "interrupt_response": True},
                                "transcription": {"model": "whisper-base"}},
                      "output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": "joe"}},
        }

    async def emit(self, payload: dict[str, Any]) -> None:
        """Send one server event with a fresh ``event_id``."""
        await send(self.ws, json.dumps({"event_id": f"event_{next(self._event_ids)}", **payload}))

    async def error(self, message: str, code: str, event_id: str | None = None) -> None:
        """An ``error`` event (the session stays open)."""
        await self.emit({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                    "message": message, "event_id": event_id}})

    # --- responses ------------------------------------------------------------------------------
    async def _open_response(self) -> dict[str, Any]:
        if self.response is None:
            self.response = {"id": _id("resp"), "item": _id("item"), "transcript": "", "audio": False}
            r = self.response
            await self.emit({"type": "response.created", "response": self._response_body("in_progress", [])})
            item = {"id": r["item"], "type": "message", "role": "assistant", "status": "in_progress",
                    "object": "realtime.item", "content": []}
            await self.emit({"type": "response.output_item.added", "response_id": r["id"], "output_index": 0,
                             "item": item})
            await self.emit({"type": "conversation.item.added", "previous_item_id": self.last_item, "item": item})
            self.last_item = r["item"]
            await self.emit({"type": "response.content_part.added", "response_id": r["id"], "item_id": r["item"],
                             "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        return self.response

    def _response_body(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        r = self.response or {"id": _id("resp")}
        return {"id": r["id"], "object": "realtime.response", "status": status, "output": output,
                "conversation_id": "conv_forge", "output_modalities": ["audio"],
                "audio": {"output": {"format": {"type": self.format}, "voice": self.session["audio"]["output"]["voice"]}},
                "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}}

    async def _close_response(self, status: str) -> None:
        r, self.response = self.response, None
        if r is None:
            return
        self.response = r  # _response_body reads it
        ids = {"response_id": r["id"], "item_id": r["item"], "output_index": 0, "content_index": 0}
        await self.emit({"type": "response.output_audio_transcript.done", **ids, "transcript": r["transcript"].strip()})
        await self.emit({"type": "response.output_audio.done", **ids})
        await self.emit({"type": "response.content_part.done", **ids,
                         "part": {"type": "audio", "transcript": r["transcript"].strip()}})
        item = {"id": r["item"], "type": "message", "role": "assistant", "object": "realtime.item",
                "status": "completed" if status == "completed" else "incomplete",
                "content": [{"type": "output_audio", "transcript": r["transcript"].strip()}]}
        await self.emit({"type": "response.output_item.done", "response_id": r["id"], "output_index": 0, "item": item})
        await self.emit({"type": "conversation.item.done", "item": item})
        body = self._response_body(status, [item])
        self.response = None
        await self.emit({"type": "response.done", "response": body})

    # --- the transport port -----------------------------------------------------------------------
    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """One 20 ms frame as ``response.output_audio.delta`` (PCM16 24 kHz or μ-law 8 kHz)."""
        r = await self._open_response()
        payload = pcm16_to_ulaw(pcm16) if self.format == "audio/pcmu" else pcm16
        await self.emit({"type": "response.output_audio.delta", "response_id": r["id"], "item_id": r["item"],
                         "output_index": 0, "content_index": 0, "delta": base64.b64encode(payload).decode()})

    async def clear(self) -> None:
        """Barge-in: the response in progress is cancelled."""
        await self._close_response("cancelled")

    async def mark(self, name: str) -> None:
        """Nothing: a Realtime client reports what it played with ``conversation.item.truncate``."""

    async def hang_up(self) -> None:
        """Nothing: as with OpenAI's service, the client ends the session (end_call is its tool call)."""

    async def notify(self, event: dict[str, Any]) -> None:
        """The loop's events as Realtime server events."""
        kind = event["type"]
        if kind == "speech_started":
            self.user_item = _id("item")
            await self.emit({"type": "input_audio_buffer.speech_started", "item_id": self.user_item,
                             "audio_start_ms": int(self.audio_in_ms)})
        elif kind == "speech_stopped":
            item = self.user_item or _id("item")
            self.user_item = item
            await self.emit({"type": "input_audio_buffer.speech_stopped", "item_id": item,
                             "audio_end_ms": int(self.audio_in_ms)})
            await self._committed(item)
        elif kind == "transcript" and self.user_item:
            item, self.user_item = self.user_item, None
            await self.emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                             "content_index": 0, "transcript": event["text"],
                             "usage": {"type": "duration", "seconds": 0}})
        elif kind == "sentence":
            r = await self._open_response()
            text = event["text"] + " "
            r["transcript"] += text
            await self.emit({"type": "response.output_audio_transcript.delta", "response_id": r["id"],
                             "item_id": r["item"], "output_index": 0, "content_index": 0, "delta": text})
        elif kind == "turn":
            await self._close_response("cancelled" if event.get("interrupted") else "completed")

    async def _committed(self, item: str) -> None:
        await self.emit({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self.last_item})
        user = {"id": item, "type": "message", "role": "user", "object": "realtime.item", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        await self.emit({"type": "conversation.item.added", "previous_item_id": self.last_item, "item": user})
        self.last_item = item

    # --- client tools -----------------------------------------------------------------------------
    async def call_client_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Hand a declared tool's call to the client; wait for its output and ``response.create``.

        Raises:
            TimeoutError: no output within 60 s.
        """
        r = await self._open_response()
        call_id = _id("call")
        item = {"id": _id("item"), "type": "function_call", "object": "realtime.item", "status": "completed",
                "name": name, "call_id": call_id, "arguments": json.dumps(arguments)}
        await self.emit({"type": "response.output_item.added", "response_id": r["id"], "output_index": 1, "item": item})
        await self.emit({"type": "response.function_call_arguments.done", "response_id": r["id"], "item_id": item["id"],
                         "output_index": 1, "call_id": call_id, "name": name, "arguments": item["arguments"]})
        await self.emit({"type": "response.output_item.done", "response_id": r["id"], "output_index": 1, "item": item})
        body = self._response_body("completed", [item])
        self.response = None
        await self.emit({"type": "response.done", "response": body})
        future = asyncio.get_running_loop().create_future()
        self.calls[call_id] = future
        self.resume.clear()
        try:
            output = await asyncio.wait_for(future, 60)
            await asyncio.wait_for(self.resume.wait(), 60)
        finally:
            self.calls.pop(call_id, None)
        try:
            parsed = json.loads(output)
        except (TypeError, ValueError):
            return output
        # Forge's own clients answer as its tool messages do: {"result": ...} or {"error": "..."}.
        if isinstance(parsed, dict) and set(parsed) == {"error"}:
            raise ToolError(str(parsed["error"]))
        if isinstance(parsed, dict) and set(parsed) == {"result"}:
            return parsed["result"]
        return parsed

    # --- inbound ----------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[InboundEvent]:
        """Client events, turned into loop events (control events are handled here)."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None or len(text) > MAX_MESSAGE:
                await self.error("client events are JSON text frames of at most 1 MiB", "invalid_event")
                continue
            try:
                event = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                await self.error("the event is not JSON", "invalid_json")
                continue
            if not isinstance(event, dict):
                await self.error("the event is not a JSON object", "invalid_event")
                continue
            async for inbound in self._handle(event):
                yield inbound

    async def _handle(self, event: dict[str, Any]) -> AsyncIterator[InboundEvent]:  # noqa: C901 - one branch per event
        kind, event_id = event.get("type"), event.get("event_id")
        if kind == "session.update":
            self._configure(event.get("session") or {})
            await self.emit({"type": "session.updated", "session": self.session})
        elif kind == "input_audio_buffer.append":
            try:
                raw = base64.b64decode(event.get("audio") or "", validate=True)
            except (binascii.Error, ValueError):
                await self.error("audio is not base64", "invalid_audio", event_id)
                return
            if self.session["audio"]["input"]["format"]["type"] == "audio/pcmu":
                pcm, rate = ulaw_to_pcm16(raw), 8000
            else:
                if len(raw) % 2:
                    await self.error("audio/pcm needs whole 16-bit samples", "invalid_audio", event_id)
                    return
                pcm, rate = raw, PCM_RATE
            self.audio_in_ms += len(pcm) / 2 / rate * 1000
            if self.loop is not None and self.loop.push_to_talk and not self.talking:
                self.talking = True
                self.user_item = _id("item")
                yield TalkStart()
            yield AudioIn(pcm, rate)
        elif kind == "input_audio_buffer.commit":
            if self.talking:
                self.talking = False
                await self._committed(self.user_item or _id("item"))
                yield TalkEnd()
            else:
                await self.error("the input audio buffer is empty", "input_audio_buffer_commit_empty", event_id)
        elif kind == "input_audio_buffer.clear":
            if self.loop is not None and self.talking:
                self.loop._held = bytearray()
            await self.emit({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            item = event.get("item") or {}
            if item.get("type") == "function_call_output":
                future = self.calls.get(item.get("call_id"))
                if future is None or future.done():
                    await self.error(f"no pending call {item.get('call_id')!r}", "invalid_call_id", event_id)
                    return
                future.set_result(item.get("output"))
            elif item.get("type") == "message" and item.get("role") in ("user", "assistant", "system"):
                texts = " ".join(c.get("text") or c.get("transcript") or "" for c in item.get("content") or []
                                 if c.get("type") in ("input_text", "output_text", "text", "output_audio")).strip()
                if item["role"] == "user":
                    self.pending_text.append(texts)  # answered by the next response.create
                elif self.loop is not None and texts:
                    memory = self.loop.pipeline.memory  # history the client replays (a rolled-over session)
                    if self.pending_text:
                        memory.add_user(" ".join(self.pending_text))
                        self.pending_text = []
                    if item["role"] == "assistant":
                        memory.add_assistant(texts)
                    else:
                        memory.summary_lines.append(texts)
            item_id = item.get("id") or _id("item")
            await self.emit({"type": "conversation.item.added", "previous_item_id": self.last_item,
                             "item": {**item, "id": item_id, "object": "realtime.item", "status": "completed"}})
            self.last_item = item_id
        elif kind == "response.create":
            if self.calls or not self.resume.is_set():
                self.resume.set()  # continue after a client tool's output
            instructions = (event.get("response") or {}).get("instructions")
            if self.pending_text:
                text, self.pending_text = " ".join(self.pending_text).strip(), []
                if text:
                    yield TextIn(text)
            elif isinstance(instructions, str) and instructions.strip() and self.loop is not None:
                # No user turn to answer: the client wants the agent to speak first ("Greet the
                # caller with exactly these words: ..."). The offline brain says those words.
                self.loop.say(instructions.split("exactly these words:", 1)[-1].strip())
        elif kind == "response.cancel":
            if self.loop is not None:
                await self.loop.interrupt()
            await self._close_response("cancelled")
        elif kind == "conversation.item.truncate":
            await self.emit({"type": "conversation.item.truncated", "item_id": event.get("item_id", ""),
                             "content_index": int(event.get("content_index") or 0),
                             "audio_end_ms": int(event.get("audio_end_ms") or 0)})
        else:
            await self.error(f"unknown client event {str(kind)[:60]!r}", "unknown_event", event_id)

    def _configure(self, update: dict[str, Any]) -> None:
        """Apply a ``session.update``: instructions, voice, formats, turn detection, tools."""
        session, loop = self.session, self.loop
        if isinstance(update.get("instructions"), str):
            session["instructions"] = update["instructions"]
            if loop is not None:
                loop.pipeline.agent.instructions = update["instructions"] or None
        audio = update.get("audio") or {}
        inp, out = audio.get("input") or {}, audio.get("output") or {}
        if isinstance(inp.get("format"), dict) and inp["format"].get("type") in ("audio/pcm", "audio/pcmu"):
            session["audio"]["input"]["format"] = inp["format"]
        if isinstance(out.get("format"), dict) and out["format"].get("type") in ("audio/pcm", "audio/pcmu"):
            session["audio"]["output"]["format"] = out["format"]
            self.format = out["format"]["type"]
            self.output_rate = 8000 if self.format == "audio/pcmu" else PCM_RATE
            if loop is not None:
                loop.set_output_rate(self.output_rate)
        if isinstance(out.get("voice"), str):
            session["audio"]["output"]["voice"] = out["voice"]
            if loop is not None:
                loop.pipeline.voice = out["voice"] if out["voice"] in loop.pipeline.engine.tts.capabilities.voices else None
        if "turn_detection" in inp:
            detection = inp["turn_detection"]
            session["audio"]["input"]["turn_detection"] = detection
            if loop is not None:
                loop.push_to_talk = detection is None
                if isinstance(detection, dict):
                    loop.configure_vad(detection.get("threshold"), detection.get("silence_duration_ms"),
                                       detection.get("prefix_padding_ms"))
        if isinstance(update.get("tools"), list) and loop is not None:
            session["tools"] = update["tools"]
            declared = [t.get("name") for t in update["tools"] if isinstance(t, dict) and t.get("type") == "function"]
            registry = loop.pipeline.engine.registry

            def remote(name: str):  # noqa: ANN202
                async def run(ctx, **arguments):  # noqa: ANN001, ANN202
                    return await self.call_client_tool(name, arguments)
                return run

            loop.pipeline.agent.registry = registry.derive({n: remote(n) for n in declared if registry.get(n)})
            loop.pipeline.agent.allowed_tools = [n for n in declared if registry.get(n)]


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The Realtime-compatible server app (run by ``forge realtime-server``).

    Args:
        settings: defaults to ``get_settings()``.
        engine: defaults to an Engine over ``settings``.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        app.state.api_key = settings.ensure_api_key()[0]
        app.state.engine = engine or Engine(settings)
        await asyncio.to_thread(app.state.engine.ensure_mock_data)
        app.state.warm = asyncio.create_task(asyncio.to_thread(app.state.engine.warm_up))
        yield

    app = FastAPI(title="Forge Realtime-compatible server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models_ready": bool(app.state.warm.done())}

    async def realtime(ws: WebSocket, persona: str | None = None) -> None:
        given = ws.headers.get("api-key") or ws.headers.get("authorization", "").partition(" ")[2]
        if not key_matches(app.state.api_key, given.strip() or None):
            try:
                await ws.send_denial_response(JSONResponse({"error": {"message": "invalid API key"}}, 401))
            except RuntimeError:
                await ws.close(code=1008)
            return
        await ws.accept()
        engine_: Engine = app.state.engine
        transport = RealtimeServerTransport(ws)
        try:
            pipeline = engine_.pipeline(persona, channel="realtime")
        except Exception:  # noqa: BLE001 - an unknown persona in the query
            await transport.error(f"no persona {persona!r}", "invalid_persona")
            await ws.close(code=1008)
            return
        loop = ConversationLoop(pipeline, transport, greet=False, name=f"realtime-{transport.session['id']}")
        transport.loop = loop
        transport.resume.set()
        session = transport.session
        session["model"] = ws.query_params.get("model") or ws.query_params.get("deployment") or session["model"]
        session["instructions"] = pipeline.persona.prompt_for("realtime")
        await transport.emit({"type": "session.created", "session": session})
        try:
            await loop.run(transport.events())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            await close(ws)

    app.websocket("/v1/realtime")(realtime)
    app.websocket("/openai/realtime")(realtime)  # Azure OpenAI's path (api-version, deployment in the query)
    return app
