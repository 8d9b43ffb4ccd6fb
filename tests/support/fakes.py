"""Fakes that subclass the real provider bases, with fault knobs, and a recording transport.

They replace paid or slow services in unit tests of Forge's own logic (the conversation loop,
the turn pipeline); everything of Forge's runs for real around them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from voiceforge.providers.base import LLM, STT, TTS, Capabilities, Message, ProviderError, ToolCall
from voiceforge.transport import Notification, Transport


class FakeSTT(STT):
    """Returns scripted transcripts in order (then ``default``); ``delay`` s per call; ``exception`` raised."""

    name = "fake-stt"
    capabilities = Capabilities(streaming=False, sample_rate=16000, offline=True)

    def __init__(self, transcripts: Sequence[str] = (), default: str = "", delay: float = 0.0,
                 exception: Exception | None = None) -> None:
        super().__init__(attempts=1)
        self.transcripts, self.default, self.delay, self.exception = list(transcripts), default, delay, exception
        self.calls: list[float] = []  # seconds of audio per call

    async def _transcribe(self, pcm16: bytes, sample_rate: int, words) -> tuple[str, str | None]:  # noqa: ANN001
        self.calls.append(len(pcm16) / 2 / sample_rate)
        await asyncio.sleep(self.delay)
        if self.exception is not None:
            raise self.exception
        return (self.transcripts.pop(0) if self.transcripts else self.default), "en"


class ScriptedLLM(LLM):
    """Answers each request from ``script`` in order: a str (streamed word by word), a list of
    (tool name, arguments) tool calls, or a callable(messages) -> either. ``hang`` never answers;
    ``first_delay`` s before the first token."""

    name = "scripted-llm"
    model = "scripted"
    capabilities = Capabilities(streaming=True, offline=True)

    def __init__(self, script: Sequence[Any] = (), default: str = "Okay.", first_delay: float = 0.0,
                 hang: bool = False, exception: Exception | None = None) -> None:
        super().__init__(attempts=1)
        self.script, self.default = list(script), default
        self.first_delay, self.hang, self.exception = first_delay, hang, exception
        self.requests: list[list[Message]] = []

    async def _stream(self, messages: Sequence[Message], tools) -> AsyncIterator[str | ToolCall]:  # noqa: ANN001
        self.requests.append([dict(m) for m in messages])
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.first_delay)
        if self.exception is not None:
            raise self.exception
        step = self.script.pop(0) if self.script else self.default
        if callable(step):
            step = step(messages)
        if isinstance(step, list):
            for i, (name, args) in enumerate(step):
                yield ToolCall(id=f"call_{len(self.requests)}_{i}", name=name, arguments=args)
            return
        for i, word in enumerate(step.split(" ")):
            yield word if i == 0 else " " + word


class ToneTTS(TTS):
    """Speaks each sentence as ``ms_per_char`` ms of a 440 Hz tone per character, at 16 kHz."""

    name = "tone-tts"
    sample_rate = 16000
    capabilities = Capabilities(streaming=True, sample_rate=16000, offline=True, voices=("tone",))

    def __init__(self, ms_per_char: float = 10.0, delay: float = 0.0, fail: bool = False) -> None:
        super().__init__(voice="tone", attempts=1)
        self.ms_per_char, self.delay, self.fail = ms_per_char, delay, fail
        self.spoken: list[tuple[str, str | None]] = []

    async def _stream(self, text: str, voice: str | None) -> AsyncIterator[bytes]:
        self.spoken.append((text, voice))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ProviderError("tone-tts: down", provider=self.name)
        samples = int(self.sample_rate * len(text) * self.ms_per_char / 1000)
        t = np.arange(samples) / self.sample_rate
        pcm = (np.sin(2 * math.pi * 440 * t) * 8000).astype("<i2").tobytes()
        for i in range(0, len(pcm), 3200):
            yield pcm[i : i + 3200]


class LoudnessVad:
    """A VAD confidence source for tests: a frame is speech when its peak passes ``level``."""

    sample_rate = 16000

    def __init__(self, level: int = 1000) -> None:
        self.level = level

    def confidence(self, frame: bytes) -> float:
        """1.0 for a loud frame, 0.0 for a quiet one."""
        return 1.0 if np.abs(np.frombuffer(frame, "<i2")).max(initial=0) >= self.level else 0.0


class RecordingTransport(Transport):
    """A far end that plays audio on the wall clock and echoes marks when playback reaches them.

    Args:
        output_rate: Hz of the frames it wants.
        on_event: called with every inbound event it wants to send back (a mark echo); the test
            wires it to ``loop.handle``.
    """

    def __init__(self, output_rate: int = 16000) -> None:
        self.output_rate = output_rate
        self.frames: list[tuple[float, bytes]] = []
        self.marks_sent: list[str] = []
        self.marks_echoed: list[str] = []
        self.clears: list[float] = []
        self.hung_up: float | None = None
        self.events: list[dict[str, Any]] = []
        self.notifications: list[Notification] = []
        self._queue: list[tuple[str, Any]] = []
        self.echo: Callable[[str], Any] | None = None
        self._player: asyncio.Task | None = None

    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Queue a frame for playback."""
        assert sample_rate == self.output_rate and len(pcm16) == self.output_rate // 50 * 2
        self.frames.append((time.perf_counter(), pcm16))
        self._queue.append(("audio", pcm16))
        self._ensure_player()

    async def clear(self) -> None:
        """Drop queued audio (pending marks are not echoed as played)."""
        self.clears.append(time.perf_counter())
        self._queue = [item for item in self._queue if item[0] != "audio"]
        self._queue = [item for item in self._queue if item[0] != "mark"]

    async def mark(self, name: str) -> None:
        """Queue a mark behind the audio sent so far."""
        self.marks_sent.append(name)
        self._queue.append(("mark", name))
        self._ensure_player()

    async def hang_up(self) -> None:
        """Record the hang-up time."""
        self.hung_up = time.perf_counter()

    async def notify(self, event: Notification) -> None:
        """Record loop notifications (``events`` holds their JSON form, as the browser would get it)."""
        self.notifications.append(event)
        self.events.append(event.to_json())

    def _ensure_player(self) -> None:
        if self._player is None or self._player.done():
            self._player = asyncio.create_task(self._play())

    async def _play(self) -> None:
        while self._queue:
            kind, item = self._queue.pop(0)
            if kind == "audio":
                await asyncio.sleep(len(item) / 2 / self.output_rate)
            elif self.echo is not None:
                self.marks_echoed.append(item)
                await self.echo(item)
