"""The ESP32 push-to-talk device as a transport (the wire is written out in firmware/PROTOCOL.md).

Audio goes up in chunks of PCM16 mono at 16,000 or 44,100 Hz while the button is held, each
with a turn number and a chunk sequence number. A chunk seen twice (a re-send after a Wi-Fi
hiccup) is ignored, and the utterance is joined in sequence order at release. Only then does
anything reach the conversation loop, so a refused turn (too long, wrong format) leaves nothing
half-written. The reply comes back as PCM16 at the device's rate, 20 ms frames paced in real
time, with a mark after each sentence that the device echoes as ``played``.

Two carriers share the framing: a websocket (``/device/ws``) that stays open between presses,
and one chunked HTTP POST per press (``/device/turn``) whose response streams the reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import WebSocket

from server.transports import send
from voiceforge.records import TurnRecord
from voiceforge.transport import (
    AudioIn,
    Ignored,
    InboundEvent,
    MarkPlayed,
    Notification,
    StateChanged,
    TalkEnd,
    TalkStart,
    Transport,
    TurnFinished,
)

log = logging.getLogger("forge.sidecar.device")

DEVICE_RATES = (16000, 44100)
"""Upload rates a device may state (Hz): the firmware's 16 kHz, the seed's 44.1 kHz."""
WS_HEADER = struct.Struct("<II")
"""A websocket audio frame starts with (turn, chunk sequence number), uint32 little-endian."""
HTTP_HEADER = struct.Struct("<IIH")
"""An HTTP body chunk starts with (turn, chunk sequence number, payload bytes): uint32, uint32, uint16."""
MAX_CHUNK_BYTES = 8820
"""The largest chunk: 100 ms at 44.1 kHz (the firmware sends 20–50 ms)."""
MIN_CHUNK_BYTES = 160
"""A chunk carries at least 5 ms at 16 kHz on average: a press has at most ``max_bytes // 160``
chunks (a flood of tiny or empty frames is refused with 413, not kept)."""
PRESS_DEADLINE_S = 10.0
"""How long a press may take beyond its own length to arrive (a trickle of empty chunks stops here)."""
FRAME_AUDIO, FRAME_JSON = b"A", b"J"
"""HTTP response frames: one kind byte, a uint32 little-endian length, then the payload."""


class DeviceProtocolError(ValueError):
    """A message the device protocol does not allow; ``code`` is the HTTP-style status."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


class PressBuffer:
    """The chunks of one press, deduplicated by sequence number, bounded in bytes.

    Args:
        turn: the device's turn number.
        max_bytes: the most audio one turn may carry (``FORGE_MAX_TURN_S`` at the device's rate).
    """

    def __init__(self, turn: int, max_bytes: int) -> None:
        self.turn, self.max_bytes = turn, max_bytes
        self.chunks: dict[int, bytes] = {}
        self.size = 0
        self.duplicates = 0
        self.frames = 0
        self.max_frames = max(1000, max_bytes // MIN_CHUNK_BYTES)

    def add(self, seq: int, pcm16: bytes) -> None:
        """Keep one chunk (a repeat of a sequence number, or an empty chunk, is ignored).

        Raises:
            DeviceProtocolError: 415 for an odd byte count or an oversized chunk, 413 once the
                turn passes its limit in bytes or in chunks.
        """
        if len(pcm16) % 2 or len(pcm16) > MAX_CHUNK_BYTES:
            raise DeviceProtocolError(f"chunks are PCM16: an even number of bytes, at most {MAX_CHUNK_BYTES}", 415)
        self.frames += 1
        if self.frames > self.max_frames:
            raise DeviceProtocolError(f"the press is more than {self.max_frames} chunks", 413)
        if not pcm16:
            return
        if seq in self.chunks:
            self.duplicates += 1
            return
        self.size += len(pcm16)
        if self.size > self.max_bytes:
            raise DeviceProtocolError("the press is longer than a turn may be", 413)
        self.chunks[seq] = pcm16

    def audio(self) -> bytes:
        """The utterance: every chunk, in sequence order."""
        return b"".join(self.chunks[seq] for seq in sorted(self.chunks))


class DeviceTransport(Transport):
    """What both carriers share: the reply's rate, the device turn a loop turn answers, a turn hook.

    Args:
        rate: the device's rate, Hz.
        on_turn: awaited with each finished turn's event (the router logs interactions with it).
    """

    frame_ms = 20

    def __init__(self, rate: int, on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None) -> None:
        self.output_rate = rate
        self.on_turn = on_turn
        self.released: list[int] = []  # device turn numbers, in release order, not yet answered

    async def turn_finished(self, event: Notification) -> None:
        """Run the turn hook for a finished turn."""
        if self.on_turn is not None and isinstance(event, TurnFinished):
            await self.on_turn(event.record)

    def done_message(self, event: TurnFinished | Ignored) -> dict[str, Any]:
        """The ``done`` message for a finished (or ignored) turn of the loop."""
        turn = self.released.pop(0) if self.released else None
        record = event.record if isinstance(event, TurnFinished) else TurnRecord(user_text="", reply="")
        return {"type": "done", "turn": turn, "transcript": record.user_text, "reply": record.reply,
                "interrupted": record.interrupted, "tool_calls": [c["name"] for c in record.tool_calls],
                "error": record.error}


class DeviceSocket(DeviceTransport):
    """A device on ``/device/ws``: JSON control and binary audio both ways.

    Args:
        ws: the accepted websocket.
        rate: the device's stated rate, Hz (16000 or 44100); the reply comes back at it.
        max_bytes: the most audio one press may carry.
    """

    paced = True
    confirms_playback = True

    def __init__(self, ws: WebSocket, rate: int, max_bytes: int,
                 on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None) -> None:
        super().__init__(rate, on_turn)
        self.ws, self.max_bytes = ws, max_bytes
        self.press: PressBuffer | None = None
        self.turn_log: list[dict[str, Any]] = []

    async def send_json(self, payload: dict[str, Any]) -> None:
        """Send one JSON message (nothing once the socket is closed)."""
        await send(self.ws, json.dumps(payload, default=str))

    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """One 20 ms binary frame of reply PCM16 at the device's rate."""
        await send(self.ws, pcm16)

    async def clear(self) -> None:
        """The child pressed again: drop queued reply audio."""
        await self.send_json({"type": "clear"})

    async def mark(self, name: str) -> None:
        """Echo ``name`` as ``played`` once the audio before it has played."""
        await self.send_json({"type": "mark", "name": name})

    async def hang_up(self) -> None:
        """end_call: the device goes back to sleep; the socket stays for the next press."""
        await self.send_json({"type": "sleep"})

    async def notify(self, event: Notification) -> None:
        """``done`` after each turn; state changes for a device with a status light."""
        if isinstance(event, TurnFinished | Ignored):
            message = self.done_message(event)
            self.turn_log.append(message)
            await self.send_json(message)
            await self.turn_finished(event)
        elif isinstance(event, StateChanged):
            await self.send_json(event.to_json())

    async def events(self) -> AsyncIterator[InboundEvent]:
        """Inbound events until the socket closes.

        A refused press (413, 415) is answered with an ``error`` message and dropped; the
        socket stays open for the next one.

        Raises:
            DeviceProtocolError: a malformed control message (400).
        """
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                if len(data) < WS_HEADER.size:
                    raise DeviceProtocolError("an audio frame needs its 8-byte (turn, sequence) header")
                turn, seq = WS_HEADER.unpack_from(data)
                if self.press is not None and turn == self.press.turn:
                    try:
                        self.press.add(seq, data[WS_HEADER.size:])
                    except DeviceProtocolError as exc:
                        await self.send_json({"type": "error", "turn": turn, "code": exc.code, "message": str(exc)})
                        self.press = None
                        yield TalkEnd()  # nothing was handed over: the loop has nothing to answer
                continue  # audio of a press already released or refused: ignored
            try:
                payload = json.loads(message.get("text") or "")
            except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer over 4,300 digits
                raise DeviceProtocolError("bad message") from None
            if not isinstance(payload, dict):
                raise DeviceProtocolError("bad message")
            kind, turn = payload.get("type"), payload.get("turn")
            if kind == "press" and isinstance(turn, int) and not isinstance(turn, bool):
                if self.press is None or self.press.turn != turn:
                    self.press = PressBuffer(turn, self.max_bytes)
                    yield TalkStart()
            elif kind == "release" and self.press is not None and turn == self.press.turn:
                press, self.press = self.press, None
                if not press.chunks:  # nothing to hear: said so, and the loop is not woken
                    await self.send_json({"type": "error", "turn": turn, "code": 400,
                                          "message": "the press carried no audio"})
                    yield TalkEnd()
                    continue
                self.released.append(press.turn)
                yield AudioIn(press.audio(), self.output_rate)
                yield TalkEnd()
            elif kind == "played" and isinstance(payload.get("name"), str):
                yield MarkPlayed(payload["name"][:64])
            elif kind in ("hello", "ping", "release", "press"):
                continue  # a repeat, or a release of a press already refused
            else:
                await self.send_json({"type": "error", "code": 400, "message": f"unknown message {str(kind)[:40]!r}"})


class DeviceHttpTurn(DeviceTransport):
    """One press over chunked HTTP: the reply streams back as frames of the response body.

    The response is a sequence of frames: ``b"A"`` + uint32 length + PCM16 at the device's rate,
    or ``b"J"`` + uint32 length + a JSON event (``done`` last). Not paced: the device buffers.
    """

    paced = False
    confirms_playback = False

    def __init__(self, rate: int, on_turn: Callable[[TurnRecord], Awaitable[None]] | None = None) -> None:
        super().__init__(rate, on_turn)
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()

    @staticmethod
    def frame(kind: bytes, payload: bytes) -> bytes:
        """One response frame."""
        return kind + struct.pack("<I", len(payload)) + payload

    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Queue one 20 ms frame of reply audio."""
        await self.out.put(self.frame(FRAME_AUDIO, pcm16))

    async def clear(self) -> None:
        """Nothing to clear on a one-press request."""

    async def mark(self, name: str) -> None:
        """Marks need no echo here (``confirms_playback`` is False)."""

    async def hang_up(self) -> None:
        """end_call: tell the device to sleep."""
        await self.out.put(self.frame(FRAME_JSON, b'{"type": "sleep"}'))

    async def notify(self, event: Notification) -> None:
        """The ``done`` frame ends the response."""
        if isinstance(event, TurnFinished | Ignored):
            await self.out.put(self.frame(FRAME_JSON, json.dumps(self.done_message(event), default=str).encode()))
            await self.out.put(None)
            await self.turn_finished(event)


async def read_http_press(body: AsyncIterator[bytes], max_bytes: int, deadline_s: float | None = None) -> PressBuffer:
    """Parse a ``/device/turn`` body: HTTP_HEADER-framed chunks of one press, in any order.

    The body may arrive in pieces of any size (a long press is many chunks, which HTTP may hand
    over joined); each chunk's header is checked as soon as it is read.

    Args:
        body: the request body's pieces.
        max_bytes: the most audio the press may carry.
        deadline_s: the whole body must arrive within this many seconds (default: the press's
            own longest length plus :data:`PRESS_DEADLINE_S`, at 16 kHz).

    Raises:
        DeviceProtocolError: 400 malformed framing, chunks of two turns or no audio at all, 408
            the body took too long, 413 too long, 415 odd or oversized PCM.
    """
    pending = bytearray()
    press: PressBuffer | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (deadline_s if deadline_s is not None else max_bytes / 32000 + PRESS_DEADLINE_S)
    pieces = body.__aiter__()
    while True:
        try:
            piece = await asyncio.wait_for(anext(pieces), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise DeviceProtocolError("the press took too long to arrive", 408) from None
        pending += piece
        while len(pending) >= HTTP_HEADER.size:
            turn, seq, length = HTTP_HEADER.unpack_from(pending)
            if length > MAX_CHUNK_BYTES:
                raise DeviceProtocolError(f"a chunk's header promises {length} bytes; at most {MAX_CHUNK_BYTES}", 415)
            if len(pending) < HTTP_HEADER.size + length:
                break
            payload = bytes(pending[HTTP_HEADER.size:HTTP_HEADER.size + length])
            del pending[:HTTP_HEADER.size + length]
            press = press or PressBuffer(turn, max_bytes)
            if turn != press.turn:
                raise DeviceProtocolError("one request carries one press (one turn number)")
            press.add(seq, payload)
    if pending:
        raise DeviceProtocolError("the body ends inside a chunk")
    if press is None or not press.chunks:
        raise DeviceProtocolError("the press carried no audio")
    return press
