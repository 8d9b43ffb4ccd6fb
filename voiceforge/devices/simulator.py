"""The device simulator: a Python push-to-talk device that speaks exactly the firmware's protocol.

Per utterance it presses the button, streams the WAV in real time in chunks with sequence
numbers (plus the firmware's pre-roll before and post-roll after the speech), releases, plays
the reply on a simulated speaker (echoing each mark as ``played`` when playback reaches it),
and reports the turn: transcript, reply, tool calls, and latency from release to the first
byte of reply audio. The wire is written out in firmware/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from voiceforge.audio.resample import resample

WS_HEADER = struct.Struct("<II")
HTTP_HEADER = struct.Struct("<IIH")


@dataclass
class DeviceTurn:
    """What the simulated device saw of one press."""

    turn: int
    released_at: float = 0.0
    first_audio_at: float | None = None
    audio: bytearray = field(default_factory=bytearray)
    done: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def report(self, rate: int) -> dict[str, Any]:
        """One JSON-ready line: transcript, reply, tool_calls, latency_ms (release → first audio byte)."""
        done = self.done or {}
        latency = None if self.first_audio_at is None else round((self.first_audio_at - self.released_at) * 1000, 1)
        return {"turn": self.turn, "transcript": done.get("transcript", ""), "reply": done.get("reply", ""),
                "tool_calls": done.get("tool_calls", []), "interrupted": done.get("interrupted", False),
                "latency_ms": latency, "reply_audio_ms": round(len(self.audio) / 2 / rate * 1000),
                "errors": self.errors}


def _chunks(pcm16: bytes, rate: int, chunk_ms: int) -> list[bytes]:
    size = rate * chunk_ms // 1000 * 2
    return [pcm16[i : i + size] for i in range(0, len(pcm16), size)]


def press_audio(pcm16: bytes, source_rate: int, rate: int, pre_roll_ms: int = 250, post_roll_ms: int = 600) -> bytes:
    """What the firmware uploads for an utterance: pre-roll, the speech at ``rate``, post-roll (silence)."""
    speech = resample(pcm16, source_rate, rate)
    return b"\x00\x00" * (rate * pre_roll_ms // 1000) + speech + b"\x00\x00" * (rate * post_roll_ms // 1000)


async def simulate_device(base_url: str, token: str, utterances: list[tuple[bytes, int]], rate: int = 16000,
                          chunk_ms: int = 40, resend_every: int = 0, timeout_s: float = 120.0,
                          progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Press and speak each utterance over ``/device/ws``; returns {"device", "turns": [...]}.

    Args:
        base_url: the sidecar, http://...
        token: the device token.
        utterances: speech, each (PCM16 mono, sample rate Hz).
        rate: the device's rate, 16000 or 44100 Hz.
        chunk_ms: chunk length, ms (the firmware sends 20–50).
        resend_every: send every n-th chunk twice (a flaky link); 0 never.
        timeout_s: give up on a reply after this long.
        progress: called with ``{"event": "pressed", "turn", "of", "seconds"}`` (the clip's length),
            ``{"event": "released", "turn"}``, ``{"event": "answered", "turn", "latency_ms"}`` (first
            reply audio after the release) and ``{"event": "done", "turn"}``.
    """

    def report(event: dict[str, Any]) -> None:
        if progress is not None:
            progress(event)

    url = base_url.replace("http://", "ws://").replace("https://", "wss://") + "/device/ws"
    turns: list[DeviceTurn] = []
    playlist: list[tuple[str, Any]] = []
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=1 << 20) as ws:
        await ws.send(json.dumps({"type": "hello", "rate": rate, "firmware": "device-sim"}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"the sidecar refused the device: {ready}")

        async def receive() -> None:
            async for message in ws:
                current = turns[-1] if turns else None
                if isinstance(message, bytes):
                    if current is not None:
                        if current.first_audio_at is None and current.released_at:
                            report({"event": "answered", "turn": current.turn,
                                    "latency_ms": (time.perf_counter() - current.released_at) * 1000})
                        current.first_audio_at = current.first_audio_at or time.perf_counter()
                        current.audio += message
                    playlist.append(("audio", message))
                    continue
                event = json.loads(message)
                if event["type"] == "mark":
                    playlist.append(("mark", event["name"]))
                elif event["type"] == "clear":
                    playlist.clear()
                elif event["type"] == "done" and current is not None:
                    current.done = event
                elif event["type"] == "error" and current is not None:
                    current.errors.append(event)

        async def speaker() -> None:
            while True:
                if not playlist:
                    await asyncio.sleep(0.005)
                    continue
                kind, item = playlist.pop(0)
                if kind == "audio":
                    await asyncio.sleep(len(item) / 2 / rate)
                else:
                    await ws.send(json.dumps({"type": "played", "name": item}))

        tasks = [asyncio.create_task(receive()), asyncio.create_task(speaker())]
        try:
            for number, (pcm, source_rate) in enumerate(utterances, start=1):
                turn = DeviceTurn(number)
                turns.append(turn)
                await ws.send(json.dumps({"type": "press", "turn": number}))
                report({"event": "pressed", "turn": number, "of": len(utterances),
                        "seconds": len(pcm) / 2 / source_rate})
                clock = time.perf_counter()
                for seq, chunk in enumerate(_chunks(press_audio(pcm, source_rate, rate), rate, chunk_ms)):
                    frame = WS_HEADER.pack(number, seq) + chunk
                    await ws.send(frame)
                    if resend_every and seq % resend_every == 0:
                        await ws.send(frame)  # the same chunk again: must not be heard twice
                    clock += len(chunk) / 2 / rate
                    await asyncio.sleep(max(0.0, clock - time.perf_counter()))
                turn.released_at = time.perf_counter()
                await ws.send(json.dumps({"type": "release", "turn": number}))
                report({"event": "released", "turn": number})
                deadline = time.perf_counter() + timeout_s
                while (turn.done is None and not turn.errors) or playlist:
                    if time.perf_counter() > deadline:
                        break
                    await asyncio.sleep(0.02)
                report({"event": "done", "turn": number})
        finally:
            for task in tasks:
                task.cancel()
    return {"device": ready.get("device_id"), "rate": rate, "turns": [t.report(rate) for t in turns],
            "_audio": [bytes(t.audio) for t in turns]}


async def simulate_http_press(base_url: str, token: str, pcm16: bytes, source_rate: int, rate: int = 16000,
                              turn: int = 1, chunk_ms: int = 40) -> dict[str, Any]:
    """One press over ``POST /device/turn`` (chunked body in real time, framed streamed reply)."""
    chunks = _chunks(press_audio(pcm16, source_rate, rate), rate, chunk_ms)
    result = DeviceTurn(turn)

    async def body():  # noqa: ANN202
        clock = time.perf_counter()
        for seq, chunk in enumerate(chunks):
            yield HTTP_HEADER.pack(turn, seq, len(chunk)) + chunk
            clock += len(chunk) / 2 / rate
            await asyncio.sleep(max(0.0, clock - time.perf_counter()))
        result.released_at = time.perf_counter()

    async with httpx.AsyncClient(timeout=120) as http:
        async with http.stream("POST", f"{base_url}/device/turn", params={"rate": rate}, content=body(),
                               headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status_code != 200:
                await response.aread()
                return {"status": response.status_code, "detail": response.json().get("detail")}
            pending = bytearray()
            async for piece in response.aiter_bytes():
                pending += piece
                while len(pending) >= 5:
                    kind, length = pending[:1], struct.unpack_from("<I", pending, 1)[0]
                    if len(pending) < 5 + length:
                        break
                    payload = bytes(pending[5 : 5 + length])
                    del pending[: 5 + length]
                    if kind == b"A":
                        result.first_audio_at = result.first_audio_at or time.perf_counter()
                        result.audio += payload
                    elif kind == b"J":
                        event = json.loads(payload)
                        if event.get("type") == "done":
                            result.done = event
    return {"status": 200, **result.report(rate), "_audio": bytes(result.audio)}
