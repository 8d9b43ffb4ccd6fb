"""The browser over WebRTC (the Live page, on streamlit-webrtc) as a transport of the one loop.

streamlit-webrtc runs aiortc in the Streamlit process. The microphone arrives as
``av.AudioFrame`` objects (Opus decoded by aiortc: 48 kHz, 20 ms, s16, mono or stereo) on a
sink track's callback; agent audio leaves through a source track that pulls one 20 ms frame
every 20 ms of wall clock. Both callbacks run on aiortc's event-loop thread; the conversation
loop runs on Forge's own loop, and the two meet in a thread-safe playout buffer:

- ``send_audio`` appends to the buffer, paced by the loop to the wall clock (80 ms ahead): when
  aiortc's thread stalls, its source track catches up by pulling frames back to back, and an
  unpaced buffer would hand it the whole reply at once, to sit in the browser's jitter buffer
  where no ``clear`` reaches it;
- ``clear`` (barge-in) empties it, so the next frame pulled is silence;
- ``mark`` records the buffer position; once the source track has pulled every byte before it,
  a :class:`MarkPlayed` goes back to the loop. "Played" is "sent on the RTP track": the
  browser's jitter buffer (tens of ms) is the only audio after that point.

The Live page's controller (forge_ui/live.py) owns one conversation over this transport.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable

import av
import numpy as np

from voiceforge.transport import AudioIn, InboundEvent, MarkPlayed, Notification, Transport

log = logging.getLogger("forge.webrtc")

OUTPUT_RATE = 48000
"""Agent audio rate on the source track (Hz): Opus's native rate, so aiortc does not resample."""
GAP_FILL_MS = 200
"""A microphone silent on the wire this long (DTX, a muted track) is filled with digital silence,
so the endpointer still sees the end of the utterance."""
MAX_QUEUED_INPUT = 500
"""Inbound frames (20 ms each, 10 s) waiting for the loop before new ones are dropped."""


def frame_to_pcm16(frame: av.AudioFrame) -> bytes:
    """One decoded WebRTC audio frame as PCM16 mono little-endian at ``frame.sample_rate`` Hz.

    Args:
        frame: packed or planar, s16 or float (``flt``/``fltp``), any channel count.

    Raises:
        ValueError: a sample format other than s16/s16p/flt/fltp.
    """
    name = frame.format.name
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if name in ("s16", "flt"):  # packed: one row, channels interleaved
        samples = data.reshape(-1, channels)
    elif name in ("s16p", "fltp"):  # planar: one row per channel
        samples = data.T
    else:
        raise ValueError(f"unsupported WebRTC sample format {name!r}")
    if name in ("flt", "fltp"):
        samples = np.clip(samples * 32767.0, -32768, 32767)
    mono = samples.astype(np.float32).mean(axis=1) if channels > 1 else samples[:, 0]
    return mono.astype("<i2").tobytes()


def level_dbfs(pcm16: bytes) -> float:
    """RMS level of PCM16 audio in dBFS (-100 for digital silence)."""
    if not pcm16:
        return -100.0
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
    rms = float(np.sqrt(np.mean(x * x))) / 32768.0
    return max(-100.0, 20 * math.log10(rms)) if rms > 0 else -100.0


class WebRtcTransport(Transport):
    """A WebRTC peer's audio as the loop's port (see the module docstring).

    Args:
        loop: the asyncio loop the conversation loop runs on (inbound events are posted to it).
        output_rate: the source track's rate, Hz.
        on_event: called on the conversation loop's thread with each notification.
    """

    frame_ms = 20
    paced = True  # only ~80 ms ahead of the source track: a catch-up burst after a stall pulls silence,
    confirms_playback = True  # not the rest of the reply (which would then sit past the reach of a clear)

    def __init__(self, loop: asyncio.AbstractEventLoop, output_rate: int = OUTPUT_RATE,
                 on_event: Callable[[Notification], None] | None = None) -> None:
        self.loop = loop
        self.output_rate = output_rate
        self.on_event = on_event
        self.inbound: asyncio.Queue[InboundEvent | None] = asyncio.Queue()
        self.hung_up = False
        self.level_db = -100.0
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._played = 0  # bytes pulled by the source track since the start
        self._queued = 0  # bytes ever appended
        self._marks: collections.deque[tuple[int, str]] = collections.deque()
        self._dropped = 0
        self.last_frame_at: float | None = None  # time.monotonic() of the last microphone frame

    # --- the conversation loop's side (Forge's loop) ---------------------------------------------
    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Queue one frame of agent audio (PCM16 mono at ``output_rate``) for the source track."""
        with self._lock:
            self._buffer += pcm16
            self._queued += len(pcm16)

    async def clear(self) -> None:
        """Barge-in: drop the queued agent audio and its marks (they were flushed, not played)."""
        with self._lock:
            self._queued -= len(self._buffer)
            self._buffer.clear()
            self._marks.clear()

    async def mark(self, name: str) -> None:
        """Echo ``name`` as played once the source track has pulled everything queued before it."""
        with self._lock:
            if self._played >= self._queued:
                done = True
            else:
                self._marks.append((self._queued, name))
                done = False
        if done:
            self.inbound.put_nowait(MarkPlayed(name))

    async def hang_up(self) -> None:
        """end_call: the conversation ends once the goodbye has played (the page stops the peer)."""
        self.hung_up = True
        self.inbound.put_nowait(None)

    async def notify(self, event: Notification) -> None:
        """Hand a loop notification to the page's feed."""
        if self.on_event is not None:
            self.on_event(event)

    async def events(self) -> AsyncIterator[InboundEvent]:
        """Inbound events (microphone audio, marks, typed text) until the session stops.

        While the peer sends no audio for :data:`GAP_FILL_MS` (after its first frame), a watchdog
        inserts 100 ms of silence at 48 kHz every 100 ms (off the per-frame path).
        """
        watchdog = asyncio.create_task(self._fill_gaps())
        try:
            while (event := await self.inbound.get()) is not None:
                yield event
        finally:
            watchdog.cancel()

    async def _fill_gaps(self) -> None:
        silence = AudioIn(bytes(OUTPUT_RATE // 10 * 2), OUTPUT_RATE)
        while True:
            await asyncio.sleep(0.1)
            if self.last_frame_at is not None and time.monotonic() - self.last_frame_at > GAP_FILL_MS / 1000:
                self.inbound.put_nowait(silence)

    # --- aiortc's side (its own thread) ----------------------------------------------------------
    def post(self, event: InboundEvent | None) -> None:
        """Hand an inbound event (or None: the end of input) to the conversation, from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the conversation is over
            self.loop.call_soon_threadsafe(self.inbound.put_nowait, event)

    def on_microphone_frame(self, frame: av.AudioFrame) -> None:
        """Sink-track callback: one microphone frame → ``AudioIn`` on the conversation loop."""
        pcm = frame_to_pcm16(frame)
        self.level_db = level_dbfs(pcm)
        self.last_frame_at = time.monotonic()
        if self.inbound.qsize() > MAX_QUEUED_INPUT:
            self._dropped += 1
            if self._dropped % 50 == 1:
                log.warning("the conversation loop is behind; dropped %d microphone frames", self._dropped)
            return
        self.post(AudioIn(pcm, frame.sample_rate))

    def next_agent_frame(self, pts: int, time_base: fractions.Fraction) -> av.AudioFrame:
        """Source-track callback: the next 20 ms of agent audio (silence when none is queued)."""
        size = self.output_rate * self.frame_ms // 1000 * 2
        played: list[str] = []
        with self._lock:
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._played = self._queued - len(self._buffer)
            while self._marks and self._marks[0][0] <= self._played:
                played.append(self._marks.popleft()[1])
        for name in played:
            self.post(MarkPlayed(name))
        samples = np.zeros((1, size // 2), dtype=np.int16)
        if chunk:
            samples[0, : len(chunk) // 2] = np.frombuffer(chunk, dtype="<i2")
        out = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        out.sample_rate = self.output_rate
        return out

    @property
    def queued_ms(self) -> float:
        """Agent audio queued but not yet pulled by the source track, ms."""
        with self._lock:
            return len(self._buffer) / 2 / self.output_rate * 1000
