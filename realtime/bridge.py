"""A phone call over a Realtime session: the Twilio media stream bridged to speech-to-speech.

Twilio's μ-law 8 kHz goes to the session as ``audio/pcmu`` and the session's ``audio/pcmu``
comes back in 20 ms frames, both untouched (no resampling). The service finds the turns (server
VAD); when the caller talks over the agent (``input_audio_buffer.speech_started``) the bridge
sends Twilio ``clear`` and truncates the agent's item to the audio Twilio confirmed played, by
the marks it sent every 200 ms. ``end_call`` hangs up once the goodbye has played. Turns are
stored by the session like any other conversation's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

from realtime.session import RealtimeSession
from voiceforge.audio.framing import FrameBuffer, Pacer
from voiceforge.engine import Engine
from voiceforge.transport import AudioIn, InboundEvent, MarkPlayed, Transport

log = logging.getLogger("forge.realtime.bridge")
ULAW_FRAME = 160  # 20 ms at 8 kHz, one byte a sample
MARK_EVERY_MS = 200


class RealtimePhoneBridge:
    """One call's bridge.

    Args:
        engine: Forge's engine.
        transport: the call's Twilio transport (μ-law out, clear, marks, hang-up).
        persona_id: the persona.
        caller: the caller's number (send_sms may text it).
        name: the call SID, for logs.
    """

    def __init__(self, engine: Engine, transport: Transport, persona_id: str | None, caller: str | None,
                 name: str = "") -> None:
        self.engine, self.transport, self.name = engine, transport, name
        pipeline = engine.pipeline(persona_id, channel="phone", caller=caller)
        self.session = RealtimeSession(engine, persona_id, channel="phone", audio_format="audio/pcmu",
                                       server_vad=True, on_event=self._on_event, pipeline=pipeline)
        self._frames = FrameBuffer(ULAW_FRAME, pad=b"\xff")
        self._pacer = Pacer(frame_ms=20, lead_ms=80)
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._player: asyncio.Task | None = None
        self._item: str | None = None
        self._sent_ms: dict[str, int] = {}
        self._played_ms: dict[str, int] = {}
        self._cleared: set[str] = set()
        self._hang_up_after: str | None = None

    async def run(self, events: Any) -> None:
        """Bridge until the stream ends (``events``: the transport's inbound events)."""
        async with self.session:
            self._player = asyncio.create_task(self._play())
            if self.session.pipeline.persona.greeting:
                await self.session.greet(self.session.pipeline.persona.greeting)
            try:
                async for event in events:
                    await self._inbound(event)
            finally:
                self._player.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._player

    async def _inbound(self, event: InboundEvent) -> None:
        if isinstance(event, AudioIn):
            from voiceforge.audio.codecs import pcm16_to_ulaw

            if self.session.failure is not None or self.session.closed:
                return
            try:
                await self.session.send_audio(pcm16_to_ulaw(event.pcm16))  # Twilio's μ-law, as it came
            except Exception as exc:  # noqa: BLE001 - the session went away: end the call, don't crash it
                log.warning("Realtime session of %s lost (%s); hanging up", self.name, type(exc).__name__)
                self.session.closed = True
                asyncio.create_task(self.transport.hang_up())
        elif isinstance(event, MarkPlayed):
            item, _, ms = event.name.partition("@")
            if item not in self._cleared and ms.isdigit():
                self._played_ms[item] = max(self._played_ms.get(item, 0), int(ms))
                if item == self._hang_up_after and self._played_ms[item] >= self._sent_ms.get(item, 0):
                    asyncio.create_task(self.transport.hang_up())

    async def _on_event(self, event: Any) -> None:
        kind = event.type
        if kind == "response.output_item.added" and getattr(event.item, "type", "") == "message":
            self._item = event.item.id
        elif kind == "response.output_audio.delta":
            await self._queue.put(("audio", (event.item_id, base64.b64decode(event.delta))))
        elif kind == "response.output_audio.done":
            await self._queue.put(("flush", event.item_id))
        elif kind == "input_audio_buffer.speech_started" and self._item:
            await self._barge_in(self._item)
        elif kind == "response.done" and self.session.pipeline.ctx.state.get("ended") and self._item:
            self._hang_up_after = self._item  # end_call ran: hang up once this item has played

    async def _barge_in(self, item: str) -> None:
        self._cleared.add(item)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._frames.clear()
        self._pacer.reset()
        await self.transport.clear()
        played = min(self._played_ms.get(item, 0), self._sent_ms.get(item, 0))
        with contextlib.suppress(Exception):
            await self.session.truncate(played)  # what the caller heard, as Twilio confirmed it

    async def _play(self) -> None:
        while True:
            kind, payload = await self._queue.get()
            if kind == "audio":
                item, ulaw = payload
                if item in self._cleared:
                    continue
                for frame in self._frames.push(ulaw):
                    await self._send(item, frame)
            else:
                for frame in self._frames.flush():
                    await self._send(payload, frame)
                await self.transport.mark(f"{payload}@{self._sent_ms.get(payload, 0)}")

    async def _send(self, item: str, frame: bytes) -> None:
        await self._pacer.wait()
        if hasattr(self.transport, "send_ulaw"):
            await self.transport.send_ulaw(frame)  # Twilio: the service's μ-law, untouched
        else:
            from voiceforge.audio.codecs import ulaw_to_pcm16

            await self.transport.send_audio(ulaw_to_pcm16(frame), 8000)
        sent = self._sent_ms[item] = self._sent_ms.get(item, 0) + 20
        if sent % MARK_EVERY_MS == 0:
            await self.transport.mark(f"{item}@{sent}")
