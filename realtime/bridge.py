"""A live wire over a Realtime session: speech-to-speech behind the same transport port as the loop.

Phone (``audio/pcmu``): Twilio's μ-law 8 kHz goes to the session and the session's μ-law comes
back in 20 ms frames, both untouched (no resampling). Browser (``audio/pcm``, the Live page over
WebRTC): microphone PCM16 at any rate is resampled to 24 kHz by the session, and the session's
24 kHz PCM16 is resampled to the transport's ``output_rate``.

The service finds the turns (server VAD); when the user talks over the agent
(``input_audio_buffer.speech_started``) the bridge sends ``clear`` and truncates the agent's
item to the audio the far end confirmed played, by the marks it sends every 200 ms.
``end_call`` hangs up once the goodbye has played. Turns are stored by the session like any
other conversation's, and the transport is told what happens in the loop's own event shapes
(``state``, ``speech_started``, ``transcript``, ``sentence``, ``tool_result``, ``turn``), so a page
shows a Realtime conversation exactly as it shows a cascade one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

from realtime.session import PCM_RATE, RealtimeError, RealtimeSession
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voiceforge.audio.framing import FrameBuffer, Pacer
from voiceforge.audio.resample import StreamResampler
from voiceforge.engine import Engine
from voiceforge.transport import AudioIn, InboundEvent, MarkPlayed, TextIn, Transport
from voiceforge.turn import TurnPipeline

log = logging.getLogger("forge.realtime.bridge")
ULAW_FRAME = 160  # 20 ms at 8 kHz, one byte a sample
PCM_FRAME = PCM_RATE // 50 * 2  # 20 ms of 24 kHz PCM16
MARK_EVERY_MS = 200


class RealtimeBridge:
    """One live connection's bridge to a Realtime session.

    Args:
        engine: Forge's engine.
        transport: the connection's transport (audio out, clear, marks, hang-up, notify).
        persona_id: the persona.
        caller: the caller's number (send_sms may text it); None off the phone.
        name: the call SID or connection id, for logs.
        audio_format: "audio/pcmu" (a Twilio call, μ-law 8 kHz in and out) or "audio/pcm".
        channel: the stored conversation's channel.
        voice: an OpenAI voice overriding the persona's (None: the persona's).
        pipeline: the conversation's turn pipeline (default: a new one for the persona).
        vad_threshold / silence_ms: the service's turn detection (default: the settings').
    """

    def __init__(self, engine: Engine, transport: Transport, persona_id: str | None, caller: str | None,
                 name: str = "", *, audio_format: str = "audio/pcmu", channel: str = "phone",
                 voice: str | None = None, pipeline: TurnPipeline | None = None,
                 vad_threshold: float | None = None, silence_ms: int | None = None) -> None:
        self.engine, self.transport, self.name = engine, transport, name
        self.audio_format = audio_format
        pipeline = pipeline or engine.pipeline(persona_id, channel=channel, caller=caller)
        self.session = RealtimeSession(engine, persona_id, channel=channel, audio_format=audio_format,
                                       server_vad=True, on_event=self._on_event, pipeline=pipeline, voice=voice,
                                       vad_threshold=vad_threshold, silence_ms=silence_ms)
        ulaw = audio_format == "audio/pcmu"
        self._frames = FrameBuffer(ULAW_FRAME if ulaw else PCM_FRAME, pad=b"\xff" if ulaw else b"\x00")
        self._out: StreamResampler | None = None
        self._pacer = Pacer(frame_ms=20, lead_ms=80)
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._player: asyncio.Task | None = None
        self._item: str | None = None
        self._sent_ms: dict[str, int] = {}
        self._played_ms: dict[str, int] = {}
        self._cleared: set[str] = set()
        self._hang_up_after: str | None = None
        self._generation = 0
        self._sentences = 0

    async def run(self, events: Any) -> None:
        """Bridge until the inbound events end (``events``: the transport's inbound events)."""
        async with self.session:
            self._player = asyncio.create_task(self._play())
            reporter = asyncio.create_task(self._report())
            await self.transport.notify({"type": "state", "state": "listening"})
            if self.session.pipeline.persona.greeting:
                await self.session.greet(self.session.pipeline.persona.greeting)
            try:
                async for event in events:
                    await self._inbound(event)
            finally:
                for task in (self._player, reporter):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _inbound(self, event: InboundEvent) -> None:
        if isinstance(event, AudioIn):
            if self.session.failure is not None or self.session.closed:
                return
            try:
                if self.audio_format == "audio/pcmu":
                    await self.session.send_audio(pcm16_to_ulaw(event.pcm16))  # Twilio's μ-law, as it came
                else:
                    await self.session.send_audio(event.pcm16, event.sample_rate)
            except Exception as exc:  # noqa: BLE001 - the session went away: end the call, don't crash it
                log.warning("Realtime session of %s lost (%s); hanging up", self.name, type(exc).__name__)
                self.session.closed = True
                asyncio.create_task(self.transport.hang_up())
        elif isinstance(event, TextIn):
            if self._item:
                await self._barge_in(self._item)
            self._generation += 1
            await self.transport.notify({"type": "transcript", "text": event.text})
            await self.session.send_text(event.text)
        elif isinstance(event, MarkPlayed):
            item, _, ms = event.name.partition("@")
            if item not in self._cleared and ms.isdigit():
                self._played_ms[item] = max(self._played_ms.get(item, 0), int(ms))
                if item == self._hang_up_after and self._played_ms[item] >= self._sent_ms.get(item, 0):
                    asyncio.create_task(self.transport.hang_up())

    async def _on_event(self, event: Any) -> None:  # noqa: C901 - one branch per event type
        kind = event.type
        if kind == "response.output_item.added" and getattr(event.item, "type", "") == "message":
            self._item = event.item.id
        elif kind == "response.output_audio.delta":
            await self._queue.put(("audio", (event.item_id, base64.b64decode(event.delta))))
        elif kind == "response.output_audio.done":
            await self._queue.put(("flush", event.item_id))
        elif kind == "input_audio_buffer.speech_started":
            await self.transport.notify({"type": "speech_started"})
            if self._item:
                await self._barge_in(self._item)
            await self.transport.notify({"type": "state", "state": "listening"})
        elif kind == "input_audio_buffer.speech_stopped":
            self._generation += 1
            await self.transport.notify({"type": "state", "state": "thinking"})
        elif kind == "conversation.item.input_audio_transcription.completed":
            await self.transport.notify({"type": "transcript", "text": event.transcript})
        elif kind == "response.output_audio_transcript.done":
            await self.transport.notify({"type": "sentence", "text": event.transcript, "index": self._sentences,
                                         "generation": self._generation})
            self._sentences += 1
        elif kind == "response.done" and self.session.pipeline.ctx.state.get("ended") and self._item:
            self._hang_up_after = self._item  # end_call ran: hang up once this item has played

    async def _report(self) -> None:
        """Each stored turn to the transport, as the conversation loop reports its turns (until the session ends)."""
        with contextlib.suppress(RealtimeError, TimeoutError):
            await self._report_turns()

    async def _report_turns(self) -> None:
        async for turn in self.session.events():
            for call in turn.tool_calls:
                await self.transport.notify({"type": "tool_result", **call, "generation": self._generation})
            await self.transport.notify({"type": "turn", "transcript": turn.user_text, "reply": turn.reply,
                                         "tool_calls": turn.tool_calls, "timings_ms": turn.timings_ms,
                                         "interrupted": turn.interrupted, "error": turn.error,
                                         "cost": turn.cost, "usage": {"realtime_input_tokens": turn.input_tokens,
                                                                      "realtime_output_tokens": turn.output_tokens},
                                         "generation": self._generation})

    async def _barge_in(self, item: str) -> None:
        self._cleared.add(item)
        self._item = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self._frames.clear()
        self._out = None
        self._pacer.reset()
        await self.transport.clear()
        played = min(self._played_ms.get(item, 0), self._sent_ms.get(item, 0))
        with contextlib.suppress(Exception):
            await self.session.truncate(played)  # what the far end heard, as its marks confirmed

    async def _play(self) -> None:
        while True:
            kind, payload = await self._queue.get()
            if kind == "audio":
                item, audio = payload
                if item in self._cleared:
                    continue
                for frame in self._frames.push(audio):
                    await self._send(item, frame)
            elif payload not in self._cleared:
                for frame in self._frames.flush():
                    await self._send(payload, frame)
                await self.transport.mark(f"{payload}@{self._sent_ms.get(payload, 0)}")

    async def _send(self, item: str, frame: bytes) -> None:
        await self._pacer.wait()
        if item not in self._sent_ms:
            self.session.mark_audio_sent()
            await self.transport.notify({"type": "state", "state": "speaking"})
        if self.audio_format == "audio/pcmu" and hasattr(self.transport, "send_ulaw"):
            await self.transport.send_ulaw(frame)  # Twilio: the service's μ-law, untouched
        elif self.audio_format == "audio/pcmu":
            await self.transport.send_audio(ulaw_to_pcm16(frame), 8000)
        else:
            if self._out is None:
                self._out = StreamResampler(PCM_RATE, self.transport.output_rate)
            out = self._out.process(frame)
            if out:
                await self.transport.send_audio(out, self.transport.output_rate)
        sent = self._sent_ms[item] = self._sent_ms.get(item, 0) + 20
        if sent % MARK_EVERY_MS == 0:
            await self.transport.mark(f"{item}@{sent}")


RealtimePhoneBridge = RealtimeBridge
"""The phone call's bridge (μ-law both ways): the name the Twilio router uses."""
