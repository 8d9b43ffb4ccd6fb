"""The browser websocket (``/ws``) as a transport, in two modes over the same conversation loop.

**Live mode** (the client's first message is ``{"type": "start", ...}``):

- client → server: binary frames of PCM16 mono little-endian at ``sample_rate`` Hz (stated in
  ``start``, 8000–48000); JSON ``{"type": "mark", "name"}`` when the audio before a mark has
  played, ``{"type": "text", "text"}`` to type, ``{"type": "stop"}`` to end.
- server → client: ``{"type": "ready", "conversation_id", "input_rate", "output_rate"}``, then
  binary frames of PCM16 at ``output_rate`` (20 ms each, paced in real time),
  ``{"type": "mark", "name"}`` after each sentence (echo it when played), ``{"type": "clear"}``
  on barge-in (drop queued audio; its marks need no echo), and live events: ``state``,
  ``transcript``, ``sentence``, ``tool_call``, ``tool_result``, ``turn``, ``hangup``.

**Batch mode** (anything else first; the protocol of the first release): JSON
``{"type": "audio_chunk", "data": base64 PCM16 16 kHz}`` or binary PCM16 16 kHz frames, and
``{"type": "text_input", "text"}``; answered with ``transcription`` (spoken turns),
``conversation_response`` (the turn) and ``audio_response`` (the reply as a base64 WAV). No
greeting, no pacing, no barge-in: a client that cannot report playback gets whole replies.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from server.schemas import clean_text
from server.transports import send
from voiceforge.audio.codecs import wrap_wav
from voiceforge.transport import (
    AudioIn,
    InboundEvent,
    MarkPlayed,
    Notification,
    TextIn,
    Transcript,
    Transport,
    TurnFinished,
)

log = logging.getLogger("forge.sidecar.browser")

MAX_TEXT_MESSAGE = 256 * 1024
"""Bytes in one JSON message (a base64 audio chunk of about 1 s at 48 kHz fits)."""
MAX_BINARY_MESSAGE = 192 * 1024
"""Bytes in one binary audio frame (2 s of PCM16 at 48 kHz)."""
BATCH_RATE = 16000
"""Input rate of batch-mode audio (the first release's protocol)."""


class BrowserProtocolError(ValueError):
    """A message the browser protocol does not allow; the socket is closed with 1003 or 1008."""

    def __init__(self, message: str, code: int = 1008) -> None:
        super().__init__(message)
        self.code = code


def _rate(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 8000 <= value <= 48000:
        raise BrowserProtocolError(f"{name} must be a whole number of Hz from 8000 to 48000")
    return value


class BrowserSocket(Transport):
    """One browser connection on ``/ws``.

    Args:
        ws: the accepted websocket.
        batch_output_rate: the reply rate in batch mode (the TTS's own, so no resampling).
    """

    frame_ms = 20

    def __init__(self, ws: WebSocket, batch_output_rate: int) -> None:
        self.ws = ws
        self.live = False
        self.input_rate = BATCH_RATE
        self.output_rate = batch_output_rate
        self.paced = False
        self.confirms_playback = False
        self.persona: str | None = None
        self._first: InboundEvent | None = None
        self._reply = bytearray()
        self._typed: set[str] = set()

    # --- outbound --------------------------------------------------------------------------------
    async def send_json(self, payload: dict[str, Any]) -> None:
        """Send one JSON message (nothing once the socket is closed)."""
        await send(self.ws, json.dumps(payload, default=str))

    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Live: one binary frame of PCM16 at ``output_rate``; batch: kept for the reply WAV."""
        if not self.live:
            self._reply += pcm16
            return
        await send(self.ws, pcm16)

    async def clear(self) -> None:
        """Tell the page to drop the audio it has queued."""
        if self.live:
            await self.send_json({"type": "clear"})

    async def mark(self, name: str) -> None:
        """Ask the page to echo ``name`` once it has played what came before."""
        if self.live:
            await self.send_json({"type": "mark", "name": name})

    async def hang_up(self) -> None:
        """end_call: say so and close the socket."""
        await self.send_json({"type": "hangup"})
        if self.ws.application_state is WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=1000)
            except (RuntimeError, OSError):
                pass

    async def notify(self, event: Notification) -> None:
        """Live: pass every loop notification on as JSON; batch: only the first release's three messages."""
        if self.live:
            await self.send_json(event.to_json())
            return
        if isinstance(event, Transcript) and event.text not in self._typed:
            await self.send_json({"type": "transcription", "text": event.text})
        elif isinstance(event, TurnFinished):
            self._typed.discard(event.record.user_text)
            await self.send_json({"type": "conversation_response", **event.record.to_json()})
            if self._reply:
                wav = wrap_wav(bytes(self._reply), self.output_rate)
                self._reply.clear()
                await self.send_json({"type": "audio_response", "format": "wav",
                                      "data": base64.b64encode(wav).decode()})

    # --- inbound ---------------------------------------------------------------------------------
    async def handshake(self) -> None:
        """Read the first message: ``start`` switches to live mode, anything else is batch.

        Raises:
            BrowserProtocolError: a malformed first message.
            WebSocketDisconnect: the client left.
        """
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("text") is not None:
            payload = self._json(message["text"])
            if payload.get("type") == "start":
                self.live = True
                self.input_rate = _rate(payload.get("sample_rate", 16000), "sample_rate")
                self.output_rate = _rate(payload.get("output_rate", self.input_rate), "output_rate")
                self.paced = self.confirms_playback = True
                persona = payload.get("persona")
                self.persona = persona if isinstance(persona, str) else None
                return
        self._first = await self._event(message)

    def _json(self, text: str) -> dict[str, Any]:
        if len(text) > MAX_TEXT_MESSAGE:
            raise BrowserProtocolError(f"message exceeds {MAX_TEXT_MESSAGE} bytes", 1009)
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer over 4,300 digits
            raise BrowserProtocolError("bad message: not JSON", 1003) from None
        if not isinstance(payload, dict):
            raise BrowserProtocolError("bad message", 1003)
        return payload

    async def _event(self, message: dict[str, Any]) -> InboundEvent | None:
        data = message.get("bytes")
        if data is not None:
            if len(data) > MAX_BINARY_MESSAGE or len(data) % 2:
                raise BrowserProtocolError("audio frames are PCM16: an even number of bytes, at most "
                                           f"{MAX_BINARY_MESSAGE}")
            return AudioIn(bytes(data), self.input_rate)
        payload = self._json(message.get("text") or "")
        kind = payload.get("type")
        if kind == "audio_chunk":
            chunk = payload.get("data", "")
            try:
                pcm = base64.b64decode(chunk if isinstance(chunk, str) else "", validate=True)
            except (binascii.Error, ValueError):
                raise BrowserProtocolError("bad message", 1003) from None
            if len(pcm) % 2 or len(pcm) > MAX_BINARY_MESSAGE:
                raise BrowserProtocolError("audio_chunk is not PCM16 of at most "
                                           f"{MAX_BINARY_MESSAGE} bytes")
            return AudioIn(pcm, self.input_rate)
        if kind in ("text_input", "text"):
            text = payload.get("text")
            if not isinstance(text, str) or len(text) > 4000:
                raise BrowserProtocolError("text must be a string of at most 4000 characters")
            try:
                clean_text(text)
            except ValueError as exc:
                raise BrowserProtocolError(f"text: {exc}") from None
            self._typed.add(text.strip())
            return TextIn(text)
        if kind == "mark" and isinstance(payload.get("name"), str):
            return MarkPlayed(payload["name"][:64])
        if kind == "stop":
            raise StopAsyncIteration
        await self.send_json({"type": "error", "message": f"unknown message type {str(kind)[:40]!r}"})
        return None

    async def events(self) -> AsyncIterator[InboundEvent]:
        """Inbound events until ``stop`` or the socket closes.

        Raises:
            BrowserProtocolError: a malformed message.
        """
        if self._first is not None:
            yield self._first
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                event = await self._event(message)
            except StopAsyncIteration:
                return
            if event is not None:
                yield event
