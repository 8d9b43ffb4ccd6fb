"""The call loop: one live phone conversation over a Twilio media stream.

Inbound μ-law 8 kHz → PCM16 16 kHz (one stateful resampler) → exact 20 ms frames → VAD turn
detection. Speech end starts a reply: STT → agent → TTS sentence by sentence → μ-law 8 kHz,
160-byte frames paced at 20 ms, a mark after each sentence. Speech start while the agent is
active is a barge-in: `clear` is sent, pending synthesis is cancelled, and the stored
assistant turn holds only the sentences whose marks came back before the clear (marks
echoed in answer to a clear were flushed, not played).

The loop does no socket I/O itself: it gets an async ``send`` for outbound JSON text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voiceforge.agent.loop import ToolFinished, TurnDone
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voiceforge.audio.framing import FrameBuffer, Pacer, frame_bytes
from voiceforge.audio.resample import StreamResampler
from voiceforge.audio.vad import TurnDetector, TurnEvent, UtteranceSegmenter
from voiceforge.engine import Engine, SentenceAudio, SentenceDone, Timeline, tool_call_dict
from voiceforge.providers import ProviderError
from voiceforge.telephony import media

log = logging.getLogger(__name__)

ULAW_FRAME = frame_bytes(8000, 20, 1)  # 160 bytes: 20 ms of μ-law at 8 kHz
ULAW_SILENCE = b"\xff"


@dataclass
class PendingTurn:
    """A reply being played: its sentences, which marks came back, and what to store."""

    generation: int
    user_text: str
    timeline: Timeline
    store: bool = True
    sentences: dict[int, str] = field(default_factory=dict)
    played: set[int] = field(default_factory=set)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    ended: bool = False
    finished: bool = False

    def played_text(self) -> str:
        """The sentences confirmed played, in order (stopping at the first gap)."""
        out = []
        for i in sorted(self.sentences):
            if i not in self.played:
                break
            out.append(self.sentences[i])
        return " ".join(out)


class PhoneCall:
    """One call's loop. Feed it parsed media-stream events; it sends media, marks and clears.

    Args:
        engine: the shared Engine.
        persona_id: the persona for this call (its phone reply-length rule applies).
        call_sid, stream_sid: Twilio's identifiers.
        send: coroutine sending one JSON text frame to Twilio.
        hangup: coroutine ending the call through the REST API (end_call), or None.
        stop_ms: silence that ends the caller's utterance (endpointing), ms.
    """

    def __init__(
        self,
        engine: Engine,
        persona_id: str | None,
        call_sid: str,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        hangup: Callable[[], Awaitable[None]] | None = None,
        stop_ms: int = 500,
    ) -> None:
        self.engine = engine
        self.session = engine.session(persona_id, channel="phone")
        self.call_sid, self.stream_sid = call_sid, stream_sid
        self._send, self._hangup = send, hangup
        self._inbound = StreamResampler(8000, 16000)
        self._frames = FrameBuffer(frame_bytes(16000, 20))
        self._segmenter = UtteranceSegmenter(16000, 20, TurnDetector(start_ms=60, stop_ms=stop_ms))
        self._pacer = Pacer(frame_ms=20, lead_ms=80)
        self._generation = 0
        self._reply: asyncio.Task | None = None
        self._pending: PendingTurn | None = None
        self._cleared: set[int] = set()
        self._outstanding = 0  # marks sent and not yet echoed
        self.closed = False

    @property
    def conversation_id(self) -> int:
        """The conversation this call's turns are stored in (created on demand)."""
        return self.session.ensure_conversation(title=f"Call {self.call_sid}")

    # --- inbound ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Speak the persona's greeting."""
        self._generation += 1
        pending = PendingTurn(self._generation, "", Timeline(), store=False)
        self._begin(pending, self._say(self.session.persona.greeting))

    async def on_media(self, ulaw: bytes) -> None:
        """Feed caller audio (μ-law 8 kHz) through resampling, framing and turn detection."""
        pcm16 = self._inbound.process(ulaw_to_pcm16(ulaw))
        for frame in self._frames.push(pcm16):
            event = self._segmenter.push(frame)
            if event is None:
                continue
            kind, utterance = event
            if kind is TurnEvent.SPEECH_START:
                if self.agent_active:
                    await self.barge_in()
            elif kind is TurnEvent.SPEECH_END and utterance:
                await self._cancel_reply()
                self._generation += 1
                pending = PendingTurn(self._generation, "", Timeline())
                pending.timeline.set("speech_end", 0.0)
                self._begin(pending, self._reply_events(pending, utterance))

    async def on_mark(self, name: str) -> None:
        """A mark came back: the sentence before it has played (unless it answers a clear)."""
        generation, _, index = name.partition(":")
        if not generation.isdigit() or not index.isdigit():
            return
        self._outstanding = max(0, self._outstanding - 1)
        gen = int(generation)
        pending = self._pending
        if gen in self._cleared or pending is None or pending.generation != gen:
            return  # flushed by a clear, not played
        pending.played.add(int(index))
        await self._maybe_finish(pending)

    async def on_dtmf(self, digit: str) -> None:
        """Store a keypad digit on the call."""
        from voiceforge.store.calls import add_dtmf

        await asyncio.to_thread(add_dtmf, self.engine.db, self.call_sid, digit)

    async def stop(self) -> None:
        """The stream ended: cancel work and store what was played of the current reply."""
        if self.closed:
            return
        self.closed = True
        await self._cancel_reply()
        if self._pending and not self._pending.finished:
            await self._finish(self._pending, interrupted=not self._pending.done
                               or len(self._pending.played) < len(self._pending.sentences))

    # --- barge-in -----------------------------------------------------------------------------
    @property
    def agent_active(self) -> bool:
        """True while a reply is being produced or its audio has not all been played."""
        return (self._reply is not None and not self._reply.done()) or self._outstanding > 0

    async def barge_in(self) -> None:
        """Caller speech over the agent: clear Twilio's buffer, cancel synthesis, store what played."""
        gen = self._generation
        self._cleared.add(gen)
        await self._send(media.clear_message(self.stream_sid))
        self._outstanding = 0
        self._pacer.reset()
        await self._cancel_reply()
        pending = self._pending
        if pending and not pending.finished:
            await self._finish(pending, interrupted=True)

    async def _cancel_reply(self) -> None:
        task, self._reply = self._reply, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - already logged in the task
                pass

    # --- outbound -----------------------------------------------------------------------------
    def _begin(self, pending: PendingTurn, events: AsyncIterator[Any]) -> None:
        self._pending = pending
        self._reply = asyncio.create_task(self._play(pending, events), name=f"reply-{self.call_sid}-{pending.generation}")

    async def _reply_events(self, pending: PendingTurn, utterance: bytes) -> AsyncIterator[Any]:
        try:
            transcript = await self.engine.stt.transcribe(utterance, 16000)
        except ProviderError as exc:
            pending.error = str(exc)
            pending.user_text = ""
            async for event in self._say("Sorry, I couldn't hear that. Could you say it again?"):
                yield event
            return
        pending.timeline.mark("stt_final")
        pending.timeline.set("stt_ms", transcript.elapsed_ms)
        pending.user_text = transcript.text
        if not transcript.text:
            pending.store = False
            return
        async for event in self.session.stream_turn(transcript.text, pending.timeline):
            yield event

    async def _say(self, text: str) -> AsyncIterator[Any]:
        """One fixed sentence (greeting, apology) as reply events; a TTS failure stays silent."""
        tts = self.engine.tts
        try:
            async for chunk in tts.stream(text):
                yield SentenceAudio(text, 0, chunk, tts.sample_rate)
        except ProviderError:
            pass
        yield SentenceDone(text, 0)
        yield TurnDone(reply=text)

    async def _play(self, pending: PendingTurn, events: AsyncIterator[Any]) -> None:
        frames = FrameBuffer(ULAW_FRAME, pad=ULAW_SILENCE)
        resampler: StreamResampler | None = None
        try:
            async for event in events:
                if isinstance(event, SentenceAudio):
                    if resampler is None:
                        resampler = StreamResampler(event.sample_rate, 8000)
                    await self._send_frames(pending, frames.push(pcm16_to_ulaw(resampler.process(event.pcm16))))
                elif isinstance(event, SentenceDone):
                    if resampler is not None:
                        await self._send_frames(pending, frames.push(pcm16_to_ulaw(resampler.flush())))
                        resampler = None
                    await self._send_frames(pending, frames.flush())
                    pending.sentences[event.index] = event.sentence
                    self._outstanding += 1
                    await self._send(media.mark_message(self.stream_sid, f"{pending.generation}:{event.index}"))
                elif isinstance(event, ToolFinished):
                    pending.tool_calls.append(tool_call_dict(event))
                elif isinstance(event, TurnDone):
                    pending.error = pending.error or event.error
                    pending.ended = event.ended
            pending.done = True
            await self._maybe_finish(pending)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one reply's failure must not end the call
            log.exception("reply failed on call %s", self.call_sid)
            pending.error = f"reply failed: {type(exc).__name__}"
            pending.done = True
            await self._finish(pending, interrupted=True)

    async def _send_frames(self, pending: PendingTurn, frames: list[bytes]) -> None:
        for frame in frames:
            await self._pacer.wait()
            await self._send(media.media_message(self.stream_sid, frame))
            pending.timeline.mark("first_frame_sent")

    async def _maybe_finish(self, pending: PendingTurn) -> None:
        if pending.done and not pending.finished and pending.played >= set(pending.sentences):
            pending.timeline.mark("playback_confirmed")
            await self._finish(pending, interrupted=False)

    async def _finish(self, pending: PendingTurn, interrupted: bool) -> None:
        pending.finished = True
        if pending.store and (pending.user_text or pending.error):
            text = pending.played_text() if interrupted else " ".join(pending.sentences[i] for i in sorted(pending.sentences))
            self.conversation_id  # noqa: B018 - make sure the call's conversation exists
            await asyncio.to_thread(
                self.session.store_turn, pending.user_text, text, pending.tool_calls,
                dict(pending.timeline.marks), pending.error, interrupted,
            )
        if pending.ended and not interrupted and self._hangup is not None:
            await self._hangup()
