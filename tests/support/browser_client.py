"""A browser's side of ``/ws`` live mode, over a real websocket: what the Live page's JavaScript does.

The microphone streams 20 ms PCM16 frames in real time, silence between utterances; agent audio
is played on a clock, each mark is echoed when playback reaches it, and ``clear`` drops what is
queued (its marks are never echoed, as nothing behind them was heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets


@dataclass
class Heard:
    """What the page saw: events, agent audio per turn generation, clears, marks echoed."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: dict[int, bytearray] = field(default_factory=dict)
    first_audio_at: dict[int, float] = field(default_factory=dict)
    last_audio_at: dict[int, float] = field(default_factory=dict)
    clears: list[float] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)

    def turns(self) -> list[dict[str, Any]]:
        """The ``turn`` events, in order."""
        return [e for e in self.events if e["type"] == "turn"]


class LiveBrowser:
    """Connect with :func:`connect`; ``say(pcm16)`` speaks into the microphone."""

    def __init__(self, ws, rate: int, output_rate: int) -> None:  # noqa: ANN001
        self.ws, self.rate, self.output_rate = ws, rate, output_rate
        self.heard = Heard()
        self._playlist: list[tuple[str, Any]] = []
        self._mic: asyncio.Queue[bytes] = asyncio.Queue()
        self._generation = 0
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._play()),
                       asyncio.create_task(self._microphone())]

    async def stop(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(json.dumps({"type": "stop"}))
        for task in self._tasks:
            task.cancel()

    async def say(self, pcm16: bytes) -> tuple[float, float]:
        """Queue ``pcm16`` (at ``rate``) on the microphone; returns (speech start, speech end) times."""
        frame = self.rate // 50 * 2
        done = asyncio.get_running_loop().create_future()
        frames = [pcm16[i : i + frame].ljust(frame, b"\x00") for i in range(0, len(pcm16), frame)]
        await self._mic.put((frames, done))
        return await done

    async def _microphone(self) -> None:
        frame = self.rate // 50 * 2
        clock = time.perf_counter()
        while True:
            try:
                frames, done = self._mic.get_nowait()
            except asyncio.QueueEmpty:
                frames, done = [b"\x00" * frame], None
            started = None
            for f in frames:
                clock += 0.02
                await asyncio.sleep(max(0.0, clock - time.perf_counter()))
                await self.ws.send(f)
                started = started or time.perf_counter()
            if done is not None:
                done.set_result((started, time.perf_counter()))

    async def _receive(self) -> None:
        async for message in self.ws:
            now = time.perf_counter()
            if isinstance(message, bytes):
                self.heard.audio.setdefault(self._generation, bytearray()).extend(message)
                self.heard.first_audio_at.setdefault(self._generation, now)
                self.heard.last_audio_at[self._generation] = now
                self._playlist.append(("audio", message))
                continue
            event = json.loads(message)
            event["_at"] = now
            self.heard.events.append(event)
            if event["type"] == "sentence":
                self._generation = event["generation"]
            elif event["type"] == "mark":
                self._playlist.append(("mark", event["name"]))
            elif event["type"] == "clear":
                self.heard.clears.append(now)
                self._playlist.clear()

    async def _play(self) -> None:
        while True:
            if not self._playlist:
                await asyncio.sleep(0.005)
                continue
            kind, item = self._playlist.pop(0)
            if kind == "audio":
                await asyncio.sleep(len(item) / 2 / self.output_rate)
            else:
                self.heard.marks_echoed.append(item)
                await self.ws.send(json.dumps({"type": "mark", "name": item}))

    async def wait_for(self, predicate, timeout_s: float = 60.0) -> dict[str, Any]:  # noqa: ANN001
        """The first event (old or new) for which ``predicate(event)`` is true."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            for event in self.heard.events:
                if predicate(event):
                    return event
            await asyncio.sleep(0.01)
        raise TimeoutError("no such event")


@contextlib.asynccontextmanager
async def connect(base_url: str, key: str, persona: str | None = None, rate: int = 16000,
                  output_rate: int = 16000):  # noqa: ANN201
    """Open ``/ws`` in live mode the way a browser would (key as a subprotocol, an Origin)."""
    url = base_url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(url, subprotocols=["forge.v1", f"bearer.{key}"],
                                  origin="http://127.0.0.1:8501", max_size=1 << 20) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "output_rate": output_rate,
                                  "persona": persona}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        browser = LiveBrowser(ws, rate, ready["output_rate"])
        browser.start()
        try:
            yield browser
        finally:
            await browser.stop()
