"""The one playout: agent audio out over a transport, as the far end will hear it.

Audio is played in *segments*, each with a string id (a sentence of a reply, an item of a
Realtime response). The playout resamples each segment to the wire's rate, cuts it into exact
frames (``frame_ms``), encodes them (PCM16 or G.711 μ-law), paces them to the wall clock (80 ms
ahead, so a ``clear`` stops what the far end has queued) and sends marks. A mark comes back
when the far end has played the audio before it; that, never "we sent it", is what was heard.

- :meth:`Playout.clear` (a barge-in) drops what the far end buffered and ends every segment
  in flight: marks that come back afterwards were flushed, not played, and are ignored.
- :meth:`Playout.pause` / :meth:`Playout.resume` (a possible interruption, then none) stop
  the audio at the far end and later send it again from the point that was heard.

A segment's last mark is named as the segment; the marks within it are ``"<segment>@<ms>"``,
``ms`` being the audio of the segment sent before the mark. Marks still out when the playout
clears or pauses were flushed, not played (Twilio echoes them at once on a ``clear``), so their
echoes are ignored; after a pause, marks carry ``"~<pauses>"`` so that a name sent again is
never taken for the flushed one. The conversation loop and the Realtime bridge both play
through this class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voiceforge.audio.framing import FrameBuffer, Pacer, frame_bytes
from voiceforge.audio.resample import StreamResampler
from voiceforge.transport import Transport

log = logging.getLogger(__name__)

LEAD_MS = 80
"""How far ahead of the wall clock frames are sent: enough to absorb jitter, little enough that
a clear stops the audio at once."""


@dataclass(frozen=True)
class Played:
    """A mark came back: segment ``segment`` has been heard up to ``heard_ms``; ``complete`` when all of it."""

    segment: str
    heard_ms: int
    complete: bool


@dataclass
class _Segment:
    resampler: StreamResampler | None = None
    frames: FrameBuffer | None = None
    ulaw: bool = False  # μ-law 8 kHz passed through as it came
    sent_ms: int = 0
    heard_ms: int = 0
    ended: bool = False
    since_mark_ms: int = 0
    history: list[tuple[int, bytes]] = field(default_factory=list)  # (ms at its end, wire frame) not yet heard


FrameSent = Callable[[str, bytes, int], Awaitable[None]]
"""Called after each frame is sent: (segment, the frame as PCM16 mono, its rate in Hz)."""


class Playout:
    """Agent audio over one transport (see the module docstring).

    Args:
        transport: the wire; its ``output_rate``, ``output_encoding``, ``frame_ms``, ``paced`` and
            ``confirms_playback`` are read at each frame, so a client may change them mid-call.
        mark_every_ms: a mark every this many ms of a segment's audio, besides the one at its
            end (0: only at the end). Finer marks tell how much of a segment was heard.
        on_sent: see :data:`FrameSent` (the recorder, the first-frame clock).
        on_played: called with each :class:`Played` (from the far end's echo, or at once when
            the transport cannot confirm playback).
    """

    def __init__(self, transport: Transport, *, mark_every_ms: int = 0, on_sent: FrameSent | None = None,
                 on_played: Callable[[Played], None] | None = None) -> None:
        self.transport = transport
        self.mark_every_ms = mark_every_ms
        self._on_sent, self._on_played = on_sent, on_played
        self._pacer = Pacer(frame_ms=transport.frame_ms, lead_ms=LEAD_MS)
        self._segments: dict[str, _Segment] = {}
        self._closed: set[str] = set()  # segments heard whole or cleared: they take no more audio
        self._outstanding: dict[str, tuple[str, int, bool]] = {}  # mark → (segment, ms, last of it)
        self._pauses = 0
        self._running = asyncio.Event()
        self._running.set()
        self._send_lock = asyncio.Lock()

    # --- writing ---------------------------------------------------------------------------------
    async def write(self, segment: str, pcm16: bytes, sample_rate: int) -> None:
        """Play PCM16 mono at ``sample_rate`` Hz as part of ``segment``; returns once it is sent (paced).

        A segment that was cleared takes nothing more.
        """
        seg = self._open(segment, ulaw=False)
        if seg is None:
            return
        if seg.resampler is None or seg.resampler.in_rate != sample_rate:
            seg.resampler = StreamResampler(sample_rate, self.transport.output_rate)
        await self._send_frames(segment, seg, seg.frames.push(seg.resampler.process(pcm16)))

    async def write_ulaw(self, segment: str, ulaw: bytes) -> None:
        """Play G.711 μ-law at 8 kHz as part of ``segment``.

        Passed through untouched when the wire takes μ-law at 8 kHz (a Realtime ``audio/pcmu``
        reply to a phone call), else decoded to PCM16 and played as :meth:`write` does.
        """
        if self.transport.output_encoding != "ulaw" or self.transport.output_rate != 8000:
            await self.write(segment, ulaw_to_pcm16(ulaw), 8000)
            return
        seg = self._open(segment, ulaw=True)
        if seg is not None:
            await self._send_frames(segment, seg, seg.frames.push(ulaw))

    async def end(self, segment: str) -> None:
        """The segment is whole: send its last partial frame (padded with silence) and its end mark."""
        if segment in self._closed:
            return
        seg = self._segments.get(segment)
        if seg is None:  # no audio (a failed TTS, a text reply): the mark alone says it was "heard"
            seg = self._segments[segment] = _Segment()
        if seg.ended:
            return
        tail = b""
        if seg.resampler is not None:
            tail = seg.resampler.flush()
            seg.resampler = None
        frames = (seg.frames.push(tail) + seg.frames.flush()) if seg.frames is not None else []
        await self._send_frames(segment, seg, frames)
        if self._segments.get(segment) is not seg:
            return  # cleared while the tail was sent
        seg.ended = True
        await self._mark(segment, seg, last=True)

    def _open(self, segment: str, ulaw: bool) -> _Segment | None:
        seg = self._segments.get(segment)
        if seg is None:
            if segment in self._closed:
                return None
            seg = self._segments[segment] = _Segment(ulaw=ulaw)
        if seg.ended:
            return None
        if seg.frames is None or seg.ulaw != ulaw:
            seg.ulaw = ulaw
            width = 1 if ulaw else 2
            seg.frames = FrameBuffer(frame_bytes(8000 if ulaw else self.transport.output_rate,
                                                 self.transport.frame_ms, width),
                                     pad=b"\xff" if ulaw else b"\x00")
        return seg

    async def _send_frames(self, segment: str, seg: _Segment, frames: list[bytes]) -> None:
        for frame in frames:
            while True:
                await self._running.wait()  # paused: wait for resume (or a clear, which ends the segment)
                if self._segments.get(segment) is not seg:
                    return
                if await self._send(segment, seg, frame):
                    break

    async def _send(self, segment: str, seg: _Segment, frame: bytes) -> bool:
        """Send one frame when its time comes; False when a pause came first (it is sent after resume)."""
        transport = self.transport
        async with self._send_lock:  # frames of two segments never interleave within one pacing slot
            if transport.paced:
                await self._pacer.wait()
            if self._segments.get(segment) is not seg:
                return True
            if not self._running.is_set():
                return False
            if seg.ulaw:
                wire, pcm, rate = frame, ulaw_to_pcm16(frame), 8000
            else:
                rate = transport.output_rate
                pcm = frame
                wire = pcm16_to_ulaw(frame) if transport.output_encoding == "ulaw" else frame
            await transport.send_audio(wire, rate)
            seg.sent_ms += transport.frame_ms
            seg.since_mark_ms += transport.frame_ms
            if transport.confirms_playback:
                seg.history.append((seg.sent_ms, wire))
        if self._on_sent is not None:
            await self._on_sent(segment, pcm, rate)
        if self.mark_every_ms and seg.since_mark_ms >= self.mark_every_ms:
            await self._mark(segment, seg)
        return True

    async def _mark(self, segment: str, seg: _Segment, last: bool = False) -> None:
        seg.since_mark_ms = 0
        name = (segment if last else f"{segment}@{seg.sent_ms}") + (f"~{self._pauses}" if self._pauses else "")
        self._outstanding[name] = (segment, seg.sent_ms, last)
        await self.transport.mark(name)
        if not self.transport.confirms_playback:
            self.played(name)

    # --- what was heard --------------------------------------------------------------------------
    def played(self, name: str) -> Played | None:
        """A mark came back (:class:`voiceforge.transport.MarkPlayed`); None when it is not ours or was flushed."""
        out = self._outstanding.pop(name, None)
        if out is None:
            return None
        segment, ms, last = out
        seg = self._segments.get(segment)
        if seg is None:
            return None
        seg.heard_ms = max(seg.heard_ms, ms)
        seg.history = [(end, frame) for end, frame in seg.history if end > seg.heard_ms]
        played = Played(segment, seg.heard_ms, last and seg.ended and seg.heard_ms >= seg.sent_ms)
        if played.complete:
            del self._segments[segment]
            self._closed.add(segment)
        if self._on_played is not None:
            self._on_played(played)
        return played

    def heard_ms(self, segment: str) -> int:
        """How much of ``segment`` the far end confirmed playing, ms (all of it once complete)."""
        seg = self._segments.get(segment)
        return seg.heard_ms if seg is not None else 0

    def sent_ms(self, segment: str) -> int:
        """How much of ``segment`` has been sent, ms."""
        seg = self._segments.get(segment)
        return seg.sent_ms if seg is not None else 0

    @property
    def audible(self) -> bool:
        """Audio was sent that the far end has not yet confirmed playing."""
        return any(seg.sent_ms > seg.heard_ms for seg in self._segments.values())

    # --- barge-in --------------------------------------------------------------------------------
    async def clear(self) -> dict[str, int]:
        """Stop all audio now: the far end drops what it buffered, every segment in flight ends.

        Returns:
            segment → ms the far end confirmed playing before the clear, for each one in flight.
        """
        heard = {name: seg.heard_ms for name, seg in self._segments.items()}
        self._outstanding.clear()  # their echoes, if any come, are flushes
        self._closed.update(self._segments)
        self._segments.clear()
        self._pacer.reset()
        self._running.set()  # a paused writer wakes, finds its segment gone and returns
        await self.transport.clear()
        return heard

    async def pause(self) -> None:
        """Stop the audio at the far end but keep it.

        Writers wait, and :meth:`resume` plays on from the last point the far end confirmed (what
        it had buffered is sent again).
        """
        if not self._running.is_set():
            return
        self._running.clear()
        self._outstanding.clear()  # their echoes, if any come, are flushes
        self._pauses += 1
        self._pacer.reset()
        await self.transport.clear()

    async def resume(self) -> None:
        """Play on after :meth:`pause`, from the point that was heard."""
        if self._running.is_set():
            return
        async with self._send_lock:
            for name, seg in list(self._segments.items()):
                replay, seg.history = seg.history, []
                seg.sent_ms = seg.heard_ms
                for end_ms, wire in replay:
                    if self.transport.paced:
                        await self._pacer.wait()
                    await self.transport.send_audio(wire, 8000 if seg.ulaw else self.transport.output_rate)
                    seg.sent_ms = end_ms
                    seg.history.append((end_ms, wire))
                if seg.ended and replay:
                    await self._mark(name, seg, last=True)
        self._running.set()

    @property
    def paused(self) -> bool:
        """Between :meth:`pause` and :meth:`resume` (or a clear)."""
        return not self._running.is_set()
