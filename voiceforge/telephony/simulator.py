"""The call simulator: plays Twilio's side of a call against a sidecar on loopback.

It POSTs the signed voice webhook, follows the TwiML to the media-stream websocket (signing
the upgrade as Twilio does), sends `connected` and `start` with the TwiML's parameters,
streams each caller WAV as real-time μ-law frames with silence between turns, plays the
agent's audio on a simulated clock and echoes each mark when playback reaches it (all pending
marks at once on `clear`, as Twilio does), and can barge in ``barge_in_ms`` into a reply.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voiceforge.audio.resample import resample
from voiceforge.telephony.security import sign

FRAME = 160  # bytes of μ-law per 20 ms


@dataclass
class SimTurn:
    """What the simulator saw of one caller turn."""

    index: int
    speech_start: float = 0.0
    speech_end: float = 0.0
    first_media: float | None = None
    clear_at: float | None = None
    media_after_clear: int = 0
    agent_ulaw: bytearray = field(default_factory=bytearray)

    def latency_ms(self) -> float | None:
        """The caller's last voiced frame → the first agent media frame, ms."""
        return None if self.first_media is None else round((self.first_media - self.speech_end) * 1000, 1)


class _Line:
    """Twilio's side of the stream: playback clock, marks, clear."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, Any]] = []  # ("audio", bytes) | ("mark", name), in arrival order
        self.marks_echoed: list[str] = []
        self.last_media = 0.0
        self.turns: list[SimTurn] = []
        self.greeting = bytearray()
        self.clears = 0
        self.marks_received: list[float] = []  # when each mark arrived from the agent
        self.progress: Callable[[dict[str, Any]], None] | None = None

    def report(self, **event: Any) -> None:
        """Tell the caller of :func:`simulate_call` how the call is going (never raises)."""
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # noqa: BLE001 - a display callback must not end the call
                pass

    def reply_done(self, since: float) -> bool:
        """The agent sent a mark after ``since`` and everything it sent has played."""
        return self.idle and any(t > since for t in self.marks_received)

    @property
    def idle(self) -> bool:
        return not self.queue and time.perf_counter() - self.last_media > 1.5


async def simulate_call(
    base_url: str,
    auth_token: str,
    utterances: list[tuple[bytes, int]],
    persona: str | None = None,
    barge_in_ms: int | None = None,
    silence_ms: int = 800,
    timeout_s: float = 90.0,
    api_key: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    each: list[dict[str, int | None]] | None = None,
) -> dict[str, Any]:
    """Run one simulated call; returns {"call_sid", "turns": [...], "clears", ...}.

    Args:
        base_url: the sidecar's public base URL (what PUBLIC_BASE_URL says), http://...
        auth_token: the Twilio auth token the sidecar checks signatures with.
        utterances: caller speech, each (PCM16 mono, sample rate Hz).
        persona: the persona to answer with (the voice webhook's ``persona`` parameter).
        barge_in_ms: start each utterance after the first this many ms into the agent's
            reply instead of waiting for it to finish.
        silence_ms: caller silence before each utterance, ms.
        timeout_s: give up on the call after this long.
        api_key: the sidecar's API key, to read the stored turns back from ``/api/calls``.
        progress: called (from the event loop) with ``{"event": "greeting", "seconds"}``,
            ``{"event": "speaking", "turn", "of"}`` and ``{"event": "answered", "turn", "latency_ms"}``
            as the call goes; turn numbers start at 1.
        each: per utterance, ``{"barge_in_ms": ..., "silence_ms": ...}`` overriding the two
            arguments above for that utterance (an eval's per-turn settings).
    """
    call_sid = "CA" + secrets.token_hex(16)
    stream_sid = "MZ" + secrets.token_hex(16)
    voice_url = base_url.rstrip("/") + "/twilio/voice" + (f"?persona={persona}" if persona else "")
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001",
            "CallStatus": "in-progress", "Direction": "inbound"}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        answer = await http.post(voice_url, data=form, headers={"X-Twilio-Signature": sign(auth_token, voice_url, form)})
        answer.raise_for_status()
        stream = ET.fromstring(answer.text).find("./Connect/Stream")
        if stream is None:
            raise RuntimeError("the voice webhook did not answer <Connect><Stream>")
        stream_url = stream.attrib["url"]
        params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        frames = [pcm16_to_ulaw(resample(pcm, rate, 8000)) for pcm, rate in utterances]
        line = _Line()
        line.progress = progress
        headers = {"X-Twilio-Signature": sign(auth_token, stream_url, {})}
        async with websockets.connect(stream_url, additional_headers=headers, max_size=1 << 20) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(json.dumps({
                "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                "start": {"accountSid": form["AccountSid"], "streamSid": stream_sid, "callSid": call_sid,
                          "tracks": ["inbound"], "customParameters": params,
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
            }))
            receiver = asyncio.create_task(_receive(ws, line))
            player = asyncio.create_task(_play(ws, line))
            try:
                overrides = (each or []) + [{}] * len(frames)
                settings = [{"barge_in_ms": barge_in_ms, "silence_ms": silence_ms, **overrides[i]}
                            for i in range(len(frames))]
                await asyncio.wait_for(_speak(ws, line, frames, settings, stream_sid), timeout_s)
            except websockets.ConnectionClosed:
                pass  # the agent hung up (end_call)
            finally:
                try:
                    await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid, "stop": {"callSid": call_sid}}))
                except websockets.ConnectionClosed:
                    pass
                player.cancel()
                receiver.cancel()
        # The sidecar stores a turn when its last mark comes back (or the stream closes), in a
        # worker thread, and marks the call completed when the stream ends: poll for both.
        deadline = time.perf_counter() + 15
        while True:
            response = await http.get(base_url.rstrip("/") + f"/api/calls/{call_sid}")
            stored = response.json() if response.status_code == 200 else {}
            ended = stored.get("status") in ("completed", "busy", "failed", "no-answer", "canceled")
            if (len(stored.get("turns", [])) >= len(line.turns) and ended) or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.2)
    turns = []
    stored_turns = stored.get("turns", [])
    for sim, row in zip(line.turns, stored_turns + [{}] * (len(line.turns) - len(stored_turns)), strict=False):
        turns.append({
            "index": sim.index, "transcript": row.get("user_text", ""), "reply": row.get("assistant_text", ""),
            "interrupted": row.get("interrupted", False), "tool_calls": row.get("tool_calls", []),
            "error": row.get("error"),
            "latency_ms": sim.latency_ms(), "timings_ms": row.get("timings_ms", {}),
            "cost_usd": row.get("cost_usd", 0.0), "usage": row.get("usage", {}),
            "barge_in_clear_ms": None if sim.clear_at is None else round((sim.clear_at - sim.speech_start) * 1000, 1),
            "agent_audio_ms": round(len(sim.agent_ulaw) / 8, 1), "media_after_clear": sim.media_after_clear,
        })
    return {"call_sid": call_sid, "stream_sid": stream_sid, "turns": turns, "clears": line.clears,
            "marks_echoed": len(line.marks_echoed), "greeting_ms": round(len(line.greeting) / 8),
            "status": stored.get("status"), "_audio": [bytes(t.agent_ulaw) for t in line.turns]}


async def _receive(ws, line: _Line) -> None:  # noqa: ANN001
    async for raw in ws:
        msg = json.loads(raw)
        now = time.perf_counter()
        if msg["event"] == "media":
            ulaw = base64.b64decode(msg["media"]["payload"])
            line.last_media = now
            line.queue.append(("audio", ulaw))
            turn = line.turns[-1] if line.turns else None
            if turn is not None and turn.speech_end == 0 and any(t.clear_at for t in line.turns[-2:]):
                turn.media_after_clear += 1  # agent audio while the barging-in caller still speaks
            if turn is None:
                line.greeting += ulaw
            elif now >= turn.speech_end > 0:
                if turn.first_media is None:
                    turn.first_media = now
                    line.report(event="answered", turn=turn.index + 1, latency_ms=turn.latency_ms())
                turn.agent_ulaw += ulaw
        elif msg["event"] == "mark":
            line.marks_received.append(now)
            line.queue.append(("mark", msg["mark"]["name"]))
        elif msg["event"] == "clear":
            line.clears += 1
            if line.turns and line.turns[-1].clear_at is None:
                line.turns[-1].clear_at = now
            pending = [item for kind, item in line.queue if kind == "mark"]
            line.queue.clear()
            for name in pending:  # Twilio answers a clear by echoing every pending mark
                await ws.send(json.dumps({"event": "mark", "streamSid": msg["streamSid"], "mark": {"name": name}}))
                line.marks_echoed.append(name)


async def _play(ws, line: _Line) -> None:  # noqa: ANN001
    """Consume queued agent audio in real time and echo marks as playback reaches them."""
    while True:
        if line.queue and line.queue[0][0] == "mark":
            _, name = line.queue.pop(0)
            await ws.send(json.dumps({"event": "mark", "streamSid": "", "mark": {"name": name}}))
            line.marks_echoed.append(name)
            continue
        if line.queue:
            _, audio = line.queue.pop(0)
            await asyncio.sleep(len(audio) / 8000)
            continue
        await asyncio.sleep(0.01)


def last_voiced_frame(ulaw: bytes) -> int:
    """Index of the last 20 ms frame of μ-law 8 kHz audio that webrtcvad calls speech (-1: none).

    Latency is measured from the last voiced frame of the caller's speech everywhere in Forge,
    so a recording's trailing silence is not counted as the agent's time.
    """
    from voiceforge.audio.vad import WebRtcVad

    vad = WebRtcVad(8000)
    last = -1
    for n, k in enumerate(range(0, len(ulaw) - FRAME + 1, FRAME)):
        if vad.confidence(ulaw_to_pcm16(ulaw[k : k + FRAME])) >= 0.5:
            last = n
    return last


async def _speak(ws, line: _Line, utterances: list[bytes], settings: list[dict[str, int | None]],
                 stream_sid: str) -> None:  # noqa: ANN001
    """Play each utterance in real time; ``settings[i]`` has its ``barge_in_ms`` and ``silence_ms``."""
    clock = time.perf_counter()

    async def send_frame(ulaw: bytes) -> None:
        nonlocal clock
        clock += 0.02
        await asyncio.sleep(max(0.0, clock - time.perf_counter()))
        await ws.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                  "media": {"track": "inbound", "payload": base64.b64encode(ulaw).decode()}}))

    silence = b"\xff" * FRAME
    started = time.perf_counter()
    for i, ulaw in enumerate(utterances):
        barge_in_ms, silence_ms = settings[i]["barge_in_ms"], int(settings[i]["silence_ms"] or 0)
        previous = line.turns[-1] if line.turns else None
        # Wait for the agent: until it is quiet, or (barge-in) N ms into its reply.
        while True:
            if barge_in_ms is not None and previous is not None and previous.first_media is not None:
                if time.perf_counter() - previous.first_media >= barge_in_ms / 1000:
                    break
            elif previous is None:
                silent_line = not line.marks_received and time.perf_counter() - line.last_media > 3
                if line.reply_done(started) or time.perf_counter() - started > 60 or (
                        silent_line and time.perf_counter() - started > 3):
                    break  # the greeting has played (or the line does not greet)
            elif line.reply_done(previous.speech_end) or time.perf_counter() - previous.speech_end > 60:
                break
            await send_frame(silence)
        if i == 0:
            line.report(event="greeting", seconds=round(len(line.greeting) / 8000, 1))
        for _ in range(silence_ms // 40 if barge_in_ms is None else 0):
            await send_frame(silence)
        line.report(event="speaking", turn=i + 1, of=len(utterances))
        turn = SimTurn(index=i, speech_start=time.perf_counter())
        line.turns.append(turn)
        last_voiced = last_voiced_frame(ulaw)
        for n, k in enumerate(range(0, len(ulaw), FRAME)):
            await send_frame(ulaw[k : k + FRAME].ljust(FRAME, b"\xff"))
            if n == last_voiced:
                turn.speech_end = time.perf_counter()  # the clock starts at the last voiced frame
        if turn.speech_end == 0.0:
            turn.speech_end = time.perf_counter()
    last = line.turns[-1] if line.turns else None
    deadline = time.perf_counter() + 60
    while last is not None and time.perf_counter() < deadline and not line.reply_done(last.speech_end):
        await send_frame(silence)
