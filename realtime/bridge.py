"""A live wire over a Realtime session: speech-to-speech behind the same transport port as the loop.

Phone (``audio/pcmu``): Twilio's μ-law 8 kHz goes to the session and the session's μ-law comes
back through the loop's own :class:`voiceforge.conversation.Playout`, untouched (no resampling).
Browser (``audio/pcm``, the Live page over WebRTC): microphone PCM16 at any rate is resampled to
24 kHz by the client, and the session's 24 kHz PCM16 is resampled by the playout to the
transport's rate.

The service finds the turns (server VAD); when the user talks over the agent
(``input_audio_buffer.speech_started``) the playout clears and the bridge truncates the agent's
item to the audio the far end confirmed played (the playout marks every 200 ms).
``end_call`` hangs up once the goodbye has played. Turns are stored by the client like any
other conversation's, and the transport is told what happens with the loop's own typed
notifications, so a page shows a Realtime conversation exactly as it shows a cascade one.
Only what is Realtime-specific lives here: the session's events, the truncation, the hang-up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

from realtime.client import PCM_RATE, RealtimeClient, RealtimeError
from voiceforge.audio.codecs import pcm16_to_ulaw
from voiceforge.conversation import Played, Playout
from voiceforge.engine import Engine
from voiceforge.transport import (
    AudioIn,
    End,
    InboundEvent,
    MarkPlayed,
    SentenceStarted,
    SpeechStarted,
    StateChanged,
    TextIn,
    ToolReturned,
    Transcript,
    Transport,
    TurnFinished,
)
from voiceforge.turn import TurnPipeline

log = logging.getLogger("forge.realtime.bridge")
MARK_EVERY_MS = 200
"""How finely the far end confirms what it played (the truncation point of a barge-in)."""


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
        self.transport, self.name = transport, name
        self.audio_format = audio_format
        pipeline = pipeline or engine.pipeline(persona_id, channel=channel, caller=caller)
        self.client = RealtimeClient(engine, persona_id, channel=channel, audio_format=audio_format,
                                     server_vad=True, on_event=self._on_event, pipeline=pipeline, voice=voice,
                                     vad_threshold=vad_threshold, silence_ms=silence_ms)
        self.playout = Playout(transport, mark_every_ms=MARK_EVERY_MS, on_sent=self._on_sent,
                               on_played=self._on_played)
        self._queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self._item: str | None = None
        self._spoken: set[str] = set()
        self._heard_whole: set[str] = set()
        self._hang_up_after: str | None = None
        self._generation = 0
        self._generation_of: dict[str, int] = {}  # item id -> the turn it belongs to (when it was added)
        self._sentences = 0
        self._background: set[asyncio.Task] = set()

    @property
    def persona_id(self) -> str:
        """The persona the call runs under."""
        return self.client.pipeline.persona.id

    async def ensure_conversation(self, title: str = "") -> int | None:
        """The stored conversation's id, created now (the phone router links the call to it)."""
        return await self.client.pipeline.ensure_conversation(title=title)

    async def run(self, events: Any) -> None:
        """Bridge until the inbound events end (``events``: the transport's inbound events)."""
        async with self.client:
            player = asyncio.create_task(self._play())
            reporter = asyncio.create_task(self._report())
            await self.transport.notify(StateChanged("listening"))
            greeting = self.client.pipeline.persona.greeting
            if greeting:
                await self.client.greet(greeting)
            try:
                async for event in events:
                    if isinstance(event, End):
                        break
                    await self._inbound(event)
            finally:
                for task in (player, reporter):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _inbound(self, event: InboundEvent) -> None:
        if isinstance(event, AudioIn):
            if self.client.failure is not None or self.client.closed:
                return
            try:
                if self.audio_format == "audio/pcmu":
                    await self.client.send_audio(pcm16_to_ulaw(event.pcm16))  # Twilio's μ-law, as it came
                else:
                    await self.client.send_audio(event.pcm16, event.sample_rate)
            except Exception as exc:  # noqa: BLE001 - the session went away: end the call, don't crash it
                log.warning("Realtime session of %s lost (%s); hanging up", self.name, type(exc).__name__)
                self.client.closed = True
                self._spawn(self.transport.hang_up())
        elif isinstance(event, TextIn):
            if self._item:
                await self._barge_in(self._item)
            self._generation += 1
            await self.transport.notify(Transcript(event.text, self._generation))
            await self.client.send_text(event.text)
        elif isinstance(event, MarkPlayed):
            self.playout.played(event.name)

    async def _on_event(self, event: Any) -> None:  # noqa: C901 - one branch per event type
        kind = event.type
        if kind == "response.output_item.added" and getattr(event.item, "type", "") == "message":
            self._item = event.item.id
            self._generation_of[event.item.id] = self._generation
        elif kind == "response.output_audio.delta":
            await self._queue.put(("audio", event.item_id, base64.b64decode(event.delta)))
        elif kind == "response.output_audio.done":
            await self._queue.put(("end", event.item_id, b""))
        elif kind == "input_audio_buffer.speech_started":
            await self.transport.notify(SpeechStarted())
            if self._item:
                await self._barge_in(self._item)
            await self.transport.notify(StateChanged("listening"))
        elif kind == "input_audio_buffer.speech_stopped":
            self._generation += 1
            await self.transport.notify(StateChanged("thinking"))
        elif kind == "conversation.item.input_audio_transcription.completed":
            await self.transport.notify(Transcript(event.transcript, self._generation))
        elif kind == "response.output_audio_transcript.done":
            # The greeting's transcript may come after the caller began to speak over it: it
            # belongs to the turn its item was added in, not to the caller's new one.
            generation = self._generation_of.get(event.item_id, self._generation)
            await self.transport.notify(SentenceStarted(event.transcript, self._sentences, False, generation))
            self._sentences += 1
        elif kind == "response.done" and self.client.ended and self._item:
            self._hang_up_after = self._item  # end_call ran: hang up once this item has played
            if self._item in self._heard_whole:
                self._spawn(self.transport.hang_up())

    async def _report(self) -> None:
        """Each stored turn to the transport, as the conversation loop reports its turns (until the session ends)."""
        with contextlib.suppress(RealtimeError, TimeoutError):
            async for turn in self.client.events():
                generation = self._generation_of.get(turn.item_id or "", self._generation)
                for call in turn.tool_calls:
                    await self.transport.notify(ToolReturned.of(call, generation))
                record = turn.stored or turn.record(0.0)
                await self.transport.notify(TurnFinished(record, generation))

    async def _barge_in(self, item: str) -> None:
        self._item = None
        while not self._queue.empty():
            self._queue.get_nowait()
        heard = await self.playout.clear()
        with contextlib.suppress(Exception):
            await self.client.truncate(heard.get(item, 0))  # what the far end heard, as its marks confirmed

    async def _play(self) -> None:
        while True:
            kind, item, audio = await self._queue.get()
            if kind == "end":
                await self.playout.end(item)
            elif self.audio_format == "audio/pcmu":
                await self.playout.write_ulaw(item, audio)  # Twilio: the service's μ-law, untouched
            else:
                await self.playout.write(item, audio, PCM_RATE)

    async def _on_sent(self, item: str, pcm16: bytes, rate: int) -> None:
        if item not in self._spoken:
            self._spoken.add(item)
            self.client.mark_audio_sent()
            await self.transport.notify(StateChanged("speaking"))

    def _on_played(self, played: Played) -> None:
        if played.complete:
            self._heard_whole.add(played.segment)
            if played.segment == self._hang_up_after:
                self._spawn(self.transport.hang_up())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


RealtimePhoneBridge = RealtimeBridge
"""The phone call's bridge (μ-law both ways): the name the Twilio router uses."""
