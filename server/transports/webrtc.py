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

:class:`LiveSession` owns one conversation: the transport, the loop's task on Forge's loop, and
a feed of the loop's events (state, transcript, sentences, tool calls, turns with their timings)
and the microphone level for the page to poll.
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
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from voiceforge.conversation import ConversationLoop
from voiceforge.transport import AudioIn, InboundEvent, MarkPlayed, TextIn, Transport

if TYPE_CHECKING:
    from voiceforge.engine import Engine

log = logging.getLogger("forge.webrtc")

OUTPUT_RATE = 48000
"""Agent audio rate on the source track (Hz): Opus's native rate, so aiortc does not resample."""
GAP_FILL_MS = 200
"""A microphone silent on the wire this long (DTX, a muted track) is filled with digital silence,
so the endpointer still sees the end of the utterance."""
MAX_QUEUED_INPUT = 500
"""Inbound frames (20 ms each, 10 s) waiting for the loop before new ones are dropped."""
FEED_LIMIT = 400
"""Loop events kept for the page (oldest dropped first)."""


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
        on_event: called on the conversation loop's thread with each ``notify`` event.
    """

    frame_ms = 20
    paced = True  # only ~80 ms ahead of the source track: a catch-up burst after a stall pulls silence,
    confirms_playback = True  # not the rest of the reply (which would then sit past the reach of a clear)

    def __init__(self, loop: asyncio.AbstractEventLoop, output_rate: int = OUTPUT_RATE,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
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

    async def notify(self, event: dict[str, Any]) -> None:
        """Hand a loop event to the page's feed."""
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
    def _post(self, event: InboundEvent | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the session is over
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
        self._post(AudioIn(pcm, frame.sample_rate))

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
            self._post(MarkPlayed(name))
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


class LiveSession:
    """One live conversation on the Live page: transport, loop and the page's feed.

    Args:
        engine: Forge's engine.
        loop: the asyncio loop to run the conversation on (the app's background loop).
        persona_id: the persona (None: the default).
        voice: a TTS voice overriding the persona's (None: the persona's).
        vad_threshold: 0.3–0.95, how sure the VAD must be that a frame is speech.
        silence_ms: the silence that ends an utterance (endpointing), ms.
        backend: "cascade" (the conversation loop: STT → LLM → TTS) or "realtime" (speech-to-speech
            over a Realtime session: OpenAI when configured, else Forge's offline server at
            ``FORGE_REALTIME_URL``; the service does its own turn detection).

    Raises:
        PersonaError: no such persona.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, persona_id: str | None = None, *,
                 voice: str | None = None, vad_threshold: float = 0.5, silence_ms: int | None = None,
                 backend: str = "cascade") -> None:
        if backend not in ("cascade", "realtime"):
            raise ValueError(f"unknown backend {backend!r}: cascade or realtime")
        self.engine, self.loop, self.backend = engine, loop, backend
        self.voice = voice
        self.pipeline = engine.pipeline(persona_id, channel="browser")
        self.pipeline.voice = voice
        self.vad_threshold, self.silence_ms = vad_threshold, silence_ms
        self.transport = WebRtcTransport(loop, on_event=self._on_event)
        self.state = "connecting"
        self.started_at = time.time()
        self.error: str | None = None
        self.closed = False
        self._feed: collections.deque[dict[str, Any]] = collections.deque(maxlen=FEED_LIMIT)
        self._feed_lock = threading.Lock()
        self._conversation: ConversationLoop | None = None
        self._task: asyncio.Future | None = None

    def start(self) -> None:
        """Start the conversation on the loop (the greeting plays once the peer connects).

        The cascade's speech models are loaded first (blocking, once per process), so that the
        first utterance's STT time is transcription, not model loading.
        """
        if self.backend == "cascade":
            self.engine.warm_up()
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self.loop)

    async def _run(self) -> None:
        name = f"live-{id(self):x}"
        try:
            if self.backend == "realtime":
                from realtime.bridge import RealtimeBridge

                self.pipeline.voice = None  # the service speaks in its own voices
                bridge = RealtimeBridge(self.engine, self.transport, self.pipeline.persona.id, None, name,
                                        audio_format="audio/pcm", channel="browser", voice=self.voice,
                                        pipeline=self.pipeline, vad_threshold=self.vad_threshold,
                                        silence_ms=self.silence_ms)
                await bridge.run(self.transport.events())
                return
            self._conversation = ConversationLoop(self.pipeline, self.transport, name=name)
            self._conversation.configure_vad(threshold=self.vad_threshold, silence_ms=self.silence_ms)
            await self._conversation.run(self.transport.events())
        except Exception as exc:  # noqa: BLE001 - shown on the page, the app goes on
            log.exception("live conversation failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed = True
            self.state = "ended"

    def configure(self, vad_threshold: float | None = None, silence_ms: int | None = None) -> None:
        """Change the VAD sensitivity (0.3–0.95) and endpointing silence (ms) from the next utterance."""
        if self._conversation is not None:
            self.loop.call_soon_threadsafe(self._conversation.configure_vad, vad_threshold, silence_ms)

    def say(self, text: str) -> None:
        """A typed message in the live conversation."""
        self.transport._post(TextIn(text))

    def stop(self, timeout: float = 20.0) -> None:
        """End the conversation: store what was heard, then return (at most ``timeout`` s)."""
        if self.closed and self._task is None:
            return
        self.transport._post(None)
        if self._task is not None:
            with contextlib.suppress(Exception):
                self._task.result(timeout)
        self.closed = True

    @property
    def conversation_id(self) -> int | None:
        """The stored conversation's id (None until its first turn is stored)."""
        return self.pipeline.conversation_id

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "state":
            self.state = event["state"]
        with self._feed_lock:
            self._feed.append({**event, "at": time.time()})

    def feed(self) -> list[dict[str, Any]]:
        """The loop's events so far (oldest first), each with ``at`` (Unix time, s)."""
        with self._feed_lock:
            return list(self._feed)

    def transcript(self) -> list[dict[str, Any]]:
        """The conversation as the page shows it: one entry per utterance and per reply.

        Entries: ``{"role": "user", "text", "partial"}`` (``partial`` while the user is still
        speaking or being transcribed) and ``{"role": "agent", "text", "generation",
        "interrupted", "tool_calls", "timings_ms", "done"}``.
        """
        entries: list[dict[str, Any]] = []
        agents: dict[int, dict[str, Any]] = {}
        pending_user: dict[str, Any] | None = None
        for event in self.feed():
            kind = event.get("type")
            if kind == "speech_started":
                if pending_user is None:
                    pending_user = {"role": "user", "text": "…", "partial": True}
                    entries.append(pending_user)
            elif kind == "transcript":
                if pending_user is not None:
                    pending_user.update(text=event["text"], partial=False)
                    pending_user = None
                else:
                    entries.append({"role": "user", "text": event["text"], "partial": False})
            elif kind == "ignored" and pending_user is not None:
                entries.remove(pending_user)
                pending_user = None
            elif kind in ("sentence", "tool_call", "tool_result", "turn"):
                gen = event.get("generation", 0)
                agent = agents.get(gen)
                if agent is None:
                    agent = {"role": "agent", "text": "", "generation": gen, "interrupted": False,
                             "tool_calls": [], "timings_ms": {}, "done": False, "sentences": []}
                    agents[gen] = agent
                    entries.append(agent)
                if kind == "sentence":
                    agent["sentences"].append(event["text"])
                    agent["text"] = " ".join(agent["sentences"])
                elif kind == "tool_result":
                    agent["tool_calls"].append({k: v for k, v in event.items() if k not in ("type", "at")})
                elif kind == "turn":
                    agent.update(interrupted=bool(event.get("interrupted")), timings_ms=event.get("timings_ms") or {},
                                 done=True, error=event.get("error"), cost=event.get("cost"),
                                 usage=event.get("usage"))
                    if event.get("interrupted") and event.get("reply") is not None:
                        agent["heard"] = event.get("reply")
        return entries
