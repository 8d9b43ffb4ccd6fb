"""An OpenAI-Realtime-compatible client as a transport of the one loop (``forge realtime-server``).

The sidecar's ``realtime`` role (server/routers/realtime.py) answers ``/v1/realtime?model=...``
(and Azure's ``/openai/realtime?api-version=...&deployment=...``) in the Realtime API's GA
events, and behind them runs the shared conversation loop: server VAD (``turn_detection``
honoured: threshold, silence, prefix padding; ``null`` for push-to-talk with
``input_audio_buffer.commit``), Whisper, the offline brain with the built-in tools, Piper. Audio
is ``audio/pcm`` at 24 kHz or ``audio/pcmu`` (μ-law 8 kHz) both ways. Speech over a reply
cancels it (``input_audio_buffer.speech_started``, then ``response.done`` with status
``cancelled``), and ``conversation.item.truncate`` is acknowledged. A tool the client declares
in ``session.update`` is not run here: its call is surfaced as
``response.function_call_arguments.done`` and the answer continues when the client sends the
``function_call_output`` and ``response.create``.

The adapter turns client events into the port's events (audio, text, and the control events
:class:`voiceforge.transport.Configure`, ``Interrupt``, ``ClearInput``, ``Say``, ``Remember``) and
the loop's notifications into server events; it never reaches into the loop. A malformed client
event is answered with an ``error`` event and the session goes on. Event shapes are in
:mod:`server.transports.realtime_protocol`.

So the official ``openai`` SDK, pointed at it with ``websocket_base_url``, holds a spoken
conversation with no keys: it is how Forge tests every Realtime feature, and the offline backend
of the speech-to-speech prototype.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import WebSocket

from server.schemas import clean_text
from server.transports import send
from server.transports.realtime_protocol import (
    MAX_MESSAGE,
    PCM_RATE,
    ClientEventError,
    Response,
    default_session,
    error_event,
    new_id,
    parse_session_update,
)
from voiceforge.audio.codecs import ulaw_to_pcm16
from voiceforge.tools.registry import ToolError
from voiceforge.transport import (
    AudioIn,
    ClearInput,
    Configure,
    InboundEvent,
    Interrupt,
    Notification,
    Remember,
    Say,
    SentenceStarted,
    SpeechStarted,
    SpeechStopped,
    TalkEnd,
    TalkStart,
    TextIn,
    Transcript,
    Transport,
    TurnFinished,
)

log = logging.getLogger("forge.sidecar.realtime")
CLIENT_TOOL_TIMEOUT_S = 60
"""How long a client has to answer a tool call it declared (``function_call_output``)."""


class RealtimeServerTransport(Transport):
    """One Realtime client, as the conversation loop's transport.

    Audio goes out as ``response.output_audio.delta`` in 20 ms frames, paced in real time (a
    Realtime client plays what it gets); playback is not confirmed by the client, so each
    sentence counts as heard once sent, and a barge-in keeps only what went out before it.

    Args:
        ws: the accepted websocket.
    """

    frame_ms = 20
    paced = True
    confirms_playback = False

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.output_rate = PCM_RATE
        self.output_encoding = "pcm16"
        self.session_config: dict[str, Any] = default_session()
        self.push_to_talk = False
        self._event_ids = itertools.count(1)
        self._response: Response | None = None
        self._user_item: str | None = None
        self._last_item: str | None = None
        self._audio_in_ms = 0.0
        self._pending_text: list[str] = []
        self._calls: dict[str, asyncio.Future] = {}
        self._resume = asyncio.Event()
        self._resume.set()
        self._talking = False

    @property
    def output_format(self) -> str:
        """The output audio format: "audio/pcm" (PCM16 24 kHz) or "audio/pcmu" (μ-law 8 kHz)."""
        return self.session_config["audio"]["output"]["format"]["type"]

    @property
    def _voice(self) -> str:
        return self.session_config["audio"]["output"]["voice"]

    async def emit(self, payload: dict[str, Any]) -> None:
        """Send one server event with a fresh ``event_id``."""
        await send(self.ws, json.dumps({"event_id": f"event_{next(self._event_ids)}", **payload}))

    async def error(self, message: str, code: str, event_id: str | None = None) -> None:
        """An ``error`` event (the session stays open)."""
        await self.emit(error_event(message, code, event_id))

    # --- responses ------------------------------------------------------------------------------
    async def _open_response(self) -> Response:
        if self._response is None:
            self._response = Response()
            for event in self._response.opening(self._last_item, self.output_format, self._voice):
                await self.emit(event)
            self._last_item = self._response.item
        return self._response

    async def _close_response(self, status: str) -> None:
        response, self._response = self._response, None
        if response is not None:
            for event in response.closing(status, self.output_format, self._voice):
                await self.emit(event)

    # --- the transport port -----------------------------------------------------------------------
    async def send_audio(self, frame: bytes, sample_rate: int) -> None:
        """One 20 ms frame as ``response.output_audio.delta`` (PCM16 24 kHz or μ-law 8 kHz, as the client asked)."""
        response = await self._open_response()
        await self.emit({"type": "response.output_audio.delta", **response.ids(),
                         "delta": base64.b64encode(frame).decode()})

    async def clear(self) -> None:
        """Barge-in: the response in progress is cancelled."""
        await self._close_response("cancelled")

    async def mark(self, name: str) -> None:
        """Nothing: a Realtime client reports what it played with ``conversation.item.truncate``."""

    async def hang_up(self) -> None:
        """Nothing: as with OpenAI's service, the client ends the session (end_call is its tool call)."""

    async def notify(self, event: Notification) -> None:
        """The loop's notifications as Realtime server events."""
        if isinstance(event, SpeechStarted):
            self._user_item = new_id("item")
            await self.emit({"type": "input_audio_buffer.speech_started", "item_id": self._user_item,
                             "audio_start_ms": int(self._audio_in_ms)})
        elif isinstance(event, SpeechStopped):
            item = self._user_item = self._user_item or new_id("item")
            await self.emit({"type": "input_audio_buffer.speech_stopped", "item_id": item,
                             "audio_end_ms": int(self._audio_in_ms)})
            await self._committed(item)
        elif isinstance(event, Transcript) and self._user_item:
            item, self._user_item = self._user_item, None
            await self.emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                             "content_index": 0, "transcript": event.text,
                             "usage": {"type": "duration", "seconds": 0}})
        elif isinstance(event, SentenceStarted):
            response = await self._open_response()
            text = event.text + " "
            response.transcript += text
            await self.emit({"type": "response.output_audio_transcript.delta", **response.ids(), "delta": text})
        elif isinstance(event, TurnFinished):
            await self._close_response("cancelled" if event.record.interrupted else "completed")

    async def _committed(self, item: str) -> None:
        await self.emit({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self._last_item})
        user = {"id": item, "type": "message", "role": "user", "object": "realtime.item", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        await self.emit({"type": "conversation.item.added", "previous_item_id": self._last_item, "item": user})
        self._last_item = item

    # --- client tools -----------------------------------------------------------------------------
    async def call_client_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Hand a declared tool's call to the client; wait for its output and ``response.create``.

        Raises:
            ToolError: the client answered ``{"error": "..."}``.
            TimeoutError: no output within :data:`CLIENT_TOOL_TIMEOUT_S`.
        """
        response = await self._open_response()
        call_id = new_id("call")
        item = {"id": new_id("item"), "type": "function_call", "object": "realtime.item", "status": "completed",
                "name": name, "call_id": call_id, "arguments": json.dumps(arguments)}
        await self.emit({"type": "response.output_item.added", "response_id": response.id, "output_index": 1,
                         "item": item})
        await self.emit({"type": "response.function_call_arguments.done", "response_id": response.id,
                         "item_id": item["id"], "output_index": 1, "call_id": call_id, "name": name,
                         "arguments": item["arguments"]})
        await self.emit({"type": "response.output_item.done", "response_id": response.id, "output_index": 1,
                         "item": item})
        self._response = None
        await self.emit({"type": "response.done",
                         "response": response.body("completed", [item], self.output_format, self._voice)})
        future = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._resume.clear()
        try:
            output = await asyncio.wait_for(future, CLIENT_TOOL_TIMEOUT_S)
            await asyncio.wait_for(self._resume.wait(), CLIENT_TOOL_TIMEOUT_S)
        finally:
            self._calls.pop(call_id, None)
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
        """Client events as the port's events, until the client leaves; bad ones get an ``error`` event."""
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
            except (json.JSONDecodeError, RecursionError, ValueError):
                await self.error("the event is not JSON", "invalid_json")
                continue
            if not isinstance(event, dict):
                await self.error("the event is not a JSON object", "invalid_event")
                continue
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            try:
                for inbound in await self._handle(event):
                    yield inbound
            except ClientEventError as exc:
                await self.error(str(exc), exc.code, event_id)

    async def _handle(self, event: dict[str, Any]) -> list[InboundEvent]:  # noqa: C901 - one branch per event
        """One client event: the port events it makes (server events it answers are sent here).

        Raises:
            ClientEventError: a malformed event.
        """
        kind = event.get("type")
        if kind == "session.update":
            session = event.get("session")
            return [await self._configure({} if session is None else session)]
        if kind == "input_audio_buffer.append":
            return self._append(event.get("audio"))
        if kind == "input_audio_buffer.commit":
            if not self._talking:
                raise ClientEventError("the input audio buffer is empty", "input_audio_buffer_commit_empty")
            self._talking = False
            await self._committed(self._user_item or new_id("item"))
            return [TalkEnd()]
        if kind == "input_audio_buffer.clear":
            await self.emit({"type": "input_audio_buffer.cleared"})
            return [ClearInput()]
        if kind == "conversation.item.create":
            return await self._create_item(event.get("item"))
        if kind == "response.create":
            return self._create_response(event.get("response"))
        if kind == "response.cancel":
            await self._close_response("cancelled")
            return [Interrupt()]
        if kind == "conversation.item.truncate":
            content_index, end_ms = event.get("content_index", 0), event.get("audio_end_ms", 0)
            if not isinstance(content_index, int) or not isinstance(end_ms, int) or isinstance(end_ms, bool):
                raise ClientEventError("content_index and audio_end_ms must be whole numbers")
            await self.emit({"type": "conversation.item.truncated", "item_id": str(event.get("item_id", ""))[:64],
                             "content_index": content_index, "audio_end_ms": end_ms})
            return []
        raise ClientEventError(f"unknown client event {str(kind)[:60]!r}", "unknown_event")

    def _append(self, audio: Any) -> list[InboundEvent]:
        if not isinstance(audio, str):
            raise ClientEventError("audio must be a base64 string", "invalid_audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientEventError("audio is not base64", "invalid_audio") from None
        if self.session_config["audio"]["input"]["format"]["type"] == "audio/pcmu":
            pcm, rate = ulaw_to_pcm16(raw), 8000
        else:
            if len(raw) % 2:
                raise ClientEventError("audio/pcm needs whole 16-bit samples", "invalid_audio")
            pcm, rate = raw, PCM_RATE
        self._audio_in_ms += len(pcm) / 2 / rate * 1000
        out: list[InboundEvent] = []
        if self.push_to_talk and not self._talking:
            self._talking = True
            self._user_item = new_id("item")
            out.append(TalkStart())
        out.append(AudioIn(pcm, rate))
        return out

    async def _create_item(self, item: Any) -> list[InboundEvent]:
        if not isinstance(item, dict):
            raise ClientEventError("item must be an object")
        out: list[InboundEvent] = []
        if item.get("type") == "function_call_output":
            future = self._calls.get(item.get("call_id"))  # type: ignore[arg-type]
            if future is None or future.done():
                raise ClientEventError(f"no pending call {str(item.get('call_id'))[:64]!r}", "invalid_call_id")
            future.set_result(item.get("output"))
        elif item.get("type") == "message" and item.get("role") in ("user", "assistant", "system"):
            content = item.get("content") or []
            if not isinstance(content, list):
                raise ClientEventError("message content must be a list")
            texts = " ".join(str(c.get("text") or c.get("transcript") or "") for c in content if isinstance(c, dict)
                             and c.get("type") in ("input_text", "output_text", "text", "output_audio")).strip()
            try:
                clean_text(texts)
            except ValueError as exc:
                raise ClientEventError(f"message text: {exc}") from None
            if item["role"] == "user":
                self._pending_text.append(texts)  # answered by the next response.create
            elif texts:  # history the client replays (a rolled-over session)
                if self._pending_text:
                    out.append(Remember("user", " ".join(self._pending_text)))
                    self._pending_text = []
                out.append(Remember(item["role"], texts))
        item_id = str(item.get("id") or new_id("item"))[:64]
        await self.emit({"type": "conversation.item.added", "previous_item_id": self._last_item,
                         "item": {**item, "id": item_id, "object": "realtime.item", "status": "completed"}})
        self._last_item = item_id
        return out

    def _create_response(self, response: Any) -> list[InboundEvent]:
        if response is not None and not isinstance(response, dict):
            raise ClientEventError("response must be an object")
        if self._calls or not self._resume.is_set():
            self._resume.set()  # continue after a client tool's output
        instructions = (response or {}).get("instructions")
        if self._pending_text:
            text, self._pending_text = " ".join(self._pending_text).strip(), []
            return [TextIn(text)] if text else []
        if isinstance(instructions, str) and instructions.strip():
            try:
                clean_text(instructions)
            except ValueError as exc:
                raise ClientEventError(f"instructions: {exc}") from None
            # No user turn to answer: the client wants the agent to speak first ("Greet the
            # caller with exactly these words: ..."). The offline brain says those words.
            return [Say(instructions.split("exactly these words:", 1)[-1].strip())]
        return []

    async def _configure(self, session: Any) -> Configure:
        """Apply a ``session.update`` to the session object and say what changes for the conversation."""
        update = parse_session_update(session)
        config = self.session_config
        if update.instructions is not None:
            config["instructions"] = update.instructions
        if update.input_format is not None:
            config["audio"]["input"]["format"] = {"type": update.input_format}
            if update.input_format == "audio/pcm":
                config["audio"]["input"]["format"]["rate"] = PCM_RATE
        if update.output_format is not None:
            config["audio"]["output"]["format"] = {"type": update.output_format}
            if update.output_format == "audio/pcm":
                config["audio"]["output"]["format"]["rate"] = PCM_RATE
            ulaw = update.output_format == "audio/pcmu"
            self.output_rate, self.output_encoding = (8000, "ulaw") if ulaw else (PCM_RATE, "pcm16")
        if update.voice is not None:
            config["audio"]["output"]["voice"] = update.voice
        if update.turn_detection is not None:
            config["audio"]["input"]["turn_detection"] = session["audio"]["input"]["turn_detection"]
            self.push_to_talk = not update.turn_detection
        if update.tools is not None:
            config["tools"] = update.raw_tools
        await self.emit({"type": "session.updated", "session": config})
        return Configure(vad_threshold=update.vad_threshold, silence_ms=update.silence_ms, prefix_ms=update.prefix_ms,
                         push_to_talk=self.push_to_talk if update.turn_detection is not None else None,
                         turn_detector=("model" if update.semantic else "silence") if update.turn_detection else None,
                         voice=update.voice, instructions=update.instructions, client_tools=update.tools,
                         run_client_tool=self.call_client_tool if update.tools is not None else None)

    async def start(self, model: str | None, instructions: str) -> None:
        """Name the model and the persona's instructions in the session, and send ``session.created``."""
        self.session_config["model"] = model or self.session_config["model"]
        self.session_config["instructions"] = instructions
        await self.emit({"type": "session.created", "session": self.session_config})
