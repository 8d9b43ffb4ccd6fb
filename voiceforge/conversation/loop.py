"""The one live conversation loop, over any transport (Twilio, browser, ESP32, Realtime client).

Inbound audio at the transport's rate → one stateful resampler → exact 20 ms frames at the STT's
rate → VAD with hysteresis. Speech end is an utterance: it is transcribed at once (STT runs per
utterance, in order) and its turn runs the pipeline's agent and TTS; the reply goes out through
the one :class:`voiceforge.conversation.playout.Playout`, a sentence per segment, each confirmed
by its mark. Speech start while the agent is being heard is a barge-in: the playout clears,
synthesis stops, and the stored reply is only the sentences whose marks came back.

An utterance that ends while the previous turn is still being transcribed or thought about
(no audio yet, no tool run) is merged into it: the thinking is redone once with both; once a
tool has run, the new utterance is queued and answered after. Either way every utterance is
answered and stored.

Speculative transcription: once the speaker has been quiet for ``FORGE_SPECULATIVE_STT_MS``
(less than the endpointing silence), the utterance so far is sent to STT. If they stay quiet
until the endpoint, that transcript is the utterance's (the audio after it is silence) and the
endpointing wait has overlapped with STT; if they speak again it is dropped and never answered.
At most one runs at a time.

Latency is measured the same way on every wire: from the last voiced frame of the user's
speech (the zero of the turn's timeline) to the first agent frame sent (``first_frame_sent``);
``endpointing_ms`` is the silence the VAD waited for before calling the utterance finished.

Push-to-talk wires (the ESP32 devices) bound the utterance with the button instead of the VAD:
``TalkStart`` interrupts the agent and starts the utterance, ``TalkEnd`` ends it, and the
release is the zero of the turn's timeline (the device's post-roll is part of the utterance).

The loop does no I/O of its own: it reads :mod:`voiceforge.transport` events (audio, marks and
a client's control events) and talks back through the transport's methods and typed
notifications. Storage happens on one writer task per conversation, in turn order, so a slow
database never holds up audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from voiceforge.audio.framing import FrameBuffer, frame_bytes
from voiceforge.audio.resample import StreamResampler
from voiceforge.audio.vad import SpeechDetector, UtteranceSegmenter, VadEvent, VadState, WebRtcVad
from voiceforge.conversation.live_turn import LiveTurn
from voiceforge.conversation.playout import Played, Playout
from voiceforge.conversation.recorder import CallRecorder
from voiceforge.records import TurnRecord
from voiceforge.transport import (
    AudioIn,
    ClearInput,
    Configure,
    DtmfIn,
    End,
    Ignored,
    InboundEvent,
    Interrupt,
    MarkPlayed,
    Notification,
    Remember,
    Say,
    SentenceStarted,
    SpeechStarted,
    SpeechStopped,
    State,
    StateChanged,
    TalkEnd,
    TalkStart,
    TextIn,
    ToolCalled,
    ToolReturned,
    Transcript,
    Transport,
    TurnFailed,
    TurnFinished,
)
from voiceforge.turn import (
    APOLOGIES,
    AudioChunk,
    Sentence,
    SentenceEnd,
    Timeline,
    ToolCallFinished,
    ToolCallStarted,
    Transcribed,
    TurnDone,
    TurnError,
    TurnPipeline,
)

log = logging.getLogger(__name__)

VAD_RATES = (8000, 16000, 32000, 48000)
"""The rates webrtcvad accepts (Hz)."""


class ConversationLoop:
    """One live conversation: a turn pipeline talking over a transport.

    Args:
        pipeline: the conversation's turn pipeline (persona, memory, storage).
        transport: the wire adapter.
        endpointing_ms: silence that ends an utterance (default ``FORGE_ENDPOINTING_MS``).
        first_token_s: the LLM's first-token budget (default ``FORGE_LLM_FIRST_TOKEN_MS``).
        greet: speak the persona's greeting when the conversation starts.
        name: a label for logs (a call SID, a connection id); never a phone number.
        on_dtmf: called with each keypad digit (the Twilio adapter stores them on the call).
        vad: a speech-confidence source with ``confidence(frame) -> 0..1`` for 20 ms PCM16 frames
            at the analysis rate (default webrtcvad; tests script one).
        push_to_talk: utterances are bounded by TalkStart/TalkEnd, not by the VAD.
    """

    def __init__(self, pipeline: TurnPipeline, transport: Transport, *, endpointing_ms: int | None = None,
                 first_token_s: float | None = None, greet: bool = True, name: str = "",
                 on_dtmf: Callable[[str], Awaitable[None]] | None = None, vad: Any = None,
                 push_to_talk: bool = False) -> None:
        settings = pipeline.settings
        self.pipeline, self.transport, self.name = pipeline, transport, name
        self.greet = greet
        self._on_dtmf = on_dtmf
        self._dtmf_order = asyncio.Lock()  # digits are handled one at a time, in the order pressed
        self.first_token_s = first_token_s if first_token_s is not None else settings.llm_first_token_ms / 1000
        stt_rate = pipeline.stt_rate
        self.rate = stt_rate if stt_rate in VAD_RATES else 16000
        persona = pipeline.persona
        self.endpointing_ms = endpointing_ms or persona.endpointing_ms or settings.endpointing_ms
        detector = SpeechDetector(start_ms=60, stop_ms=self.endpointing_ms,
                                  max_utterance_ms=int(settings.max_turn_s * 1000))
        self._segmenter = UtteranceSegmenter(self.rate, 20, detector, vad or WebRtcVad(self.rate))
        if vad is None and persona.vad_threshold is not None:
            self.configure_vad(threshold=persona.vad_threshold)  # the persona's turn detection
        self._frames = FrameBuffer(frame_bytes(self.rate, 20))
        self._inbound: StreamResampler | None = None
        self.recorder = CallRecorder(self.rate) if settings.enable_recordings else None
        self.playout = Playout(transport, on_sent=self._on_sent, on_played=self._on_played)
        self._generation = 0
        self._turns: dict[int, LiveTurn] = {}
        self._current: LiveTurn | None = None
        self._last_voiced: float | None = None
        self.speculate_ms = settings.speculative_stt_ms if settings.speculative_stt_ms < self.endpointing_ms else 0
        self._speculation: asyncio.Task | None = None  # STT of the utterance so far, while it may still be the whole
        self._speculating: asyncio.Task | None = None  # the last one started, until it finishes (one at a time)
        self.speculations = {"used": 0, "dropped": 0}
        self._writes: asyncio.Queue[TurnRecord | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._state = ""
        self.closed = False
        self.turns_stored = 0
        self.push_to_talk = push_to_talk
        self._held: bytearray | None = None  # push-to-talk audio while the button is down
        self._max_held = int(settings.max_turn_s * self.rate) * 2

    @property
    def conversation_id(self) -> int | None:
        """The stored conversation's id (None until its first turn is stored)."""
        return self.pipeline.conversation_id

    @property
    def live(self) -> bool:
        """The agent has turns in flight (thinking or speaking)."""
        return bool(self._turns)

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, events: AsyncIterator[InboundEvent]) -> None:
        """Greet, handle inbound events until the source ends (or an :class:`End`), then stop.

        Raises:
            Whatever ``events`` raises (a malformed message); the loop is stopped first.
        """
        try:
            await self.start()
            async for event in events:
                if isinstance(event, End):
                    break
                await self.handle(event)
        finally:
            await self.stop()

    async def start(self) -> None:
        """Start the storage writer and speak the greeting."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_turns(), name=f"store-{self.name}")
        await self._set_state("listening")
        if self.greet and self.pipeline.persona.greeting:
            self.say(self.pipeline.persona.greeting)

    def say(self, text: str) -> None:
        """Speak a fixed sentence now (a greeting); it is not stored as a turn."""
        turn = self._new_turn(Timeline(), store=False)
        turn.task = asyncio.create_task(self._play(turn, self.pipeline.say(text)))

    async def handle(self, event: InboundEvent) -> None:  # noqa: C901 - one branch per event type
        """Process one inbound event; returns quickly (work goes to tasks)."""
        if self.closed:
            return
        if isinstance(event, AudioIn):
            await self.on_audio(event.pcm16, event.sample_rate)
        elif isinstance(event, MarkPlayed):
            self.playout.played(event.name)
        elif isinstance(event, TextIn):
            if event.text.strip():
                await self.on_utterance(text=event.text.strip())
        elif isinstance(event, TalkStart):
            self._held = bytearray()
            await self.on_speech_start()
        elif isinstance(event, TalkEnd) and self._held is not None:
            if self._inbound is not None:
                self._held += self._inbound.flush()  # the resampler's tail belongs to this press
                self._inbound = None
            held, self._held = bytes(self._held), None
            self._last_voiced = time.perf_counter()  # the release is the end of speech
            if held:
                await self.on_utterance(audio=held)
        elif isinstance(event, DtmfIn) and self._on_dtmf is not None:
            self._spawn(self._dtmf(event.digit))
        elif isinstance(event, Configure):
            self.configure(event)
        elif isinstance(event, Interrupt):
            await self.interrupt()
        elif isinstance(event, ClearInput):
            if self._held is not None:
                self._held = bytearray()
            elif not self.push_to_talk:
                self._segmenter.clear()
                self._speculation = None
        elif isinstance(event, Say):
            self.say(event.text)
        elif isinstance(event, Remember):
            self.pipeline.remember(event.role, event.text)

    async def stop(self) -> None:
        """The connection ended: stop working, store what was heard, and drain the writer."""
        if self.closed:
            return
        self.closed = True
        for turn in list(self._turns.values()):
            for source in turn.inputs:
                if isinstance(source, asyncio.Task):
                    source.cancel()
            await self._cancel(turn)
            if not turn.finished:
                self._finish(turn, interrupted=not turn.complete)
        await self._writes.put(None)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), 20)
        conversation_id = self.pipeline.conversation_id
        if self.recorder is not None and conversation_id and self.pipeline.persist:
            folder = self.pipeline.settings.data_dir / "recordings" / str(conversation_id)
            try:
                await asyncio.to_thread(self.recorder.save, folder)
            except OSError:
                log.exception("saving the recordings of %s failed", self.name)
        for task in list(self._background):
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)

    # --- inbound --------------------------------------------------------------------------------
    async def on_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Feed caller audio (PCM16 mono at ``sample_rate`` Hz) through framing and VAD."""
        if self._inbound is None or self._inbound.in_rate != sample_rate:
            # Upsampled live (a phone line's 8 kHz): soxr's low-latency engine, so the VAD hears
            # the caller stop within 30 ms rather than up to 110 ms late.
            self._inbound = StreamResampler(sample_rate, self.rate, low_latency=sample_rate < self.rate)
        if self.push_to_talk:
            if self._held is not None and len(self._held) < self._max_held:
                self._held += self._inbound.process(pcm16)
            return
        for frame in self._frames.push(self._inbound.process(pcm16)):
            if self.recorder is not None:
                self.recorder.caller(frame)
            event = self._segmenter.push(frame)
            if self._segmenter.detector.state is VadState.SPEAKING:
                self._last_voiced = time.perf_counter()
            if event is None:
                if self.speculate_ms:
                    self._speculate()
                continue
            kind, utterance = event
            if kind is VadEvent.SPEECH_START:
                self._last_voiced = time.perf_counter()
                await self.on_speech_start()
            elif utterance:
                await self.on_utterance(audio=utterance)

    def _speculate(self) -> None:
        """Start STT on the utterance so far after a short silence; drop it if speech resumes."""
        detector = self._segmenter.detector
        if self._speculation is not None and detector.state is VadState.SPEAKING:
            self._speculation = None  # the speaker went on: its transcript is never used
            self.speculations["dropped"] += 1
        elif (self._speculation is None and detector.state is VadState.STOPPING
              and detector.silence_ms >= self.speculate_ms
              and (self._speculating is None or self._speculating.done())):
            audio = self._segmenter.audio_so_far()
            self._speculation = self._speculating = asyncio.create_task(self.pipeline.transcribe(audio, self.rate))

    async def on_speech_start(self) -> None:
        """The user started speaking: barge in on audible agent speech, hold back thinking."""
        await self._notify(SpeechStarted())
        await self._barge_in_audible()
        current = self._current
        if current is not None and current.store and current.mergeable and current.task is not None:
            await self._cancel(current)  # redone once this utterance is in (see on_utterance)
        await self._set_state("listening")

    async def on_utterance(self, audio: bytes | None = None, text: str | None = None) -> None:
        """An utterance ended (or a message was typed): answer it, merged or queued."""
        now = time.perf_counter()
        zero = self._last_voiced if audio is not None and self._last_voiced else now
        timeline = Timeline(zero)
        timeline.set("speech_end", 0.0)
        if audio is not None:
            timeline.set("endpointing_ms", (now - zero) * 1000)
            await self._notify(SpeechStopped(round(len(audio) / 2 / self.rate * 1000)))
        await self._barge_in_audible()  # typed, or the agent began while the user still spoke
        previous = self._current
        merge = previous is not None and previous.store and previous.mergeable
        # Speech split by a pause is transcribed again as one: Whisper hears the two parts
        # together better than apart (on its own, "a joke about the weather" once came out as
        # "how did you talk about the weather").
        joint = merge and audio is not None and not previous.typed and bool(previous.user_audio)
        source: asyncio.Future
        if audio is None:
            source = asyncio.get_running_loop().create_future()
            source.set_result(Transcribed(text or ""))
        elif self._speculation is not None and not joint:  # quiet since it started: the rest is silence
            source, self._speculation = self._speculation, None
            self.speculations["used"] += 1
            timeline.set("stt_speculative", 1)
        else:
            if self._speculation is not None:
                self._speculation = None
                self.speculations["dropped"] += 1
            heard = bytes(previous.user_audio) + audio if joint else audio
            source = asyncio.create_task(self.pipeline.transcribe(heard, self.rate))
        turn = self._new_turn(timeline)
        if merge:
            await self._cancel(previous)
            previous.finished = True  # absorbed into this turn
            self._turns.pop(previous.generation, None)
            turn.user_audio += previous.user_audio
            turn.after = previous.after
            turn.typed = previous.typed
            if not joint:
                turn.inputs += previous.inputs
        elif previous is not None and previous.task is not None and not previous.finished:
            turn.after = previous.task
        turn.inputs.append(source)
        if audio is not None:
            turn.user_audio += audio
        else:
            turn.typed = True
        turn.task = asyncio.create_task(self._answer(turn), name=f"turn-{self.name}-{turn.generation}")
        await self._set_state("thinking")

    async def interrupt(self) -> None:
        """Stop the agent now (a client's ``response.cancel``): clear what is audible, drop thinking."""
        await self._barge_in_audible()
        current = self._current
        if current is not None and not current.finished and current.task is not None:
            await self._cancel(current)
            self._finish(current, interrupted=True)

    def configure(self, change: Configure) -> None:
        """Apply a client's :class:`voiceforge.transport.Configure` (turn detection, voice, prompt, tools)."""
        if change.push_to_talk is not None:
            self.push_to_talk = change.push_to_talk
        if (change.vad_threshold, change.silence_ms, change.prefix_ms) != (None, None, None):
            self.configure_vad(change.vad_threshold, change.silence_ms, change.prefix_ms)
        self.pipeline.configure(voice=change.voice, instructions=change.instructions,
                                client_tools=change.client_tools, run_client_tool=change.run_client_tool)

    def configure_vad(self, threshold: float | None = None, silence_ms: int | None = None,
                      prefix_ms: int | None = None) -> None:
        """Change endpointing between utterances (a Realtime client's ``turn_detection``, the Live page).

        Args:
            threshold: 0.3–0.95, how sure the VAD must be that a frame is speech; webrtcvad's
                aggressiveness follows it (below 0.5: 1, below 0.7: 2, else 3).
            silence_ms: silence that ends an utterance, ms.
            prefix_ms: audio kept from before the detected start, ms.
        """
        if self._segmenter.speaking:
            return  # never mid-utterance; the next one uses the new settings
        detector = self._segmenter.detector
        if silence_ms:
            detector.stop_ms = self.endpointing_ms = max(100, min(5000, int(silence_ms)))
        if threshold is not None and isinstance(self._segmenter.vad, WebRtcVad):
            level = 1 if threshold < 0.5 else 2 if threshold < 0.7 else 3
            self._segmenter.vad = WebRtcVad(self.rate, aggressiveness=level)
        if prefix_ms is not None:
            self._segmenter.set_preroll(max(0, min(1000, int(prefix_ms))))

    @property
    def vad_aggressiveness(self) -> int | None:
        """Webrtcvad's aggressiveness (0–3) in use, or None for another VAD."""
        vad = self._segmenter.vad
        return vad.aggressiveness if isinstance(vad, WebRtcVad) else None

    # --- turns ----------------------------------------------------------------------------------
    def _new_turn(self, timeline: Timeline, store: bool = True) -> LiveTurn:
        self._generation += 1
        turn = LiveTurn(self._generation, timeline, store=store)
        self._turns[turn.generation] = turn
        if store:
            self._current = turn
        return turn

    async def _answer(self, turn: LiveTurn) -> None:
        heard: list[str] = []
        errors: list[str] = []
        for source in turn.inputs:
            outcome = await asyncio.shield(source)
            if isinstance(outcome, TurnError):
                errors.append(outcome.message)
            elif outcome.text:
                heard.append(outcome.text)
                turn.timeline.set("stt_ms", outcome.stt_ms)
                turn.failover += outcome.failover
        turn.timeline.mark("stt_final")
        if turn.after is not None:
            await asyncio.wait({turn.after})  # a queued turn waits for the one before it
        turn.user_text = " ".join(heard)
        if not turn.user_text:
            if not errors:  # noise: nothing to answer, nothing to store
                turn.store = False
                turn.done = True
                self._maybe_finish(turn)
                await self._notify(Ignored(turn.generation, "no words"))
                if turn is self._current:
                    await self._set_state("listening")
                return
            turn.error = errors[0]
            await self._play(turn, self.pipeline.say(APOLOGIES["stt"], turn.timeline))
            return
        await self._notify(Transcript(turn.user_text, turn.generation))
        turn.memory_mark = self.pipeline.checkpoint()
        await self._play(turn, self.pipeline.respond(turn.user_text, turn.timeline, first_token_s=self.first_token_s))

    async def _play(self, turn: LiveTurn, events: AsyncIterator[Any]) -> None:
        recordings = self.pipeline.settings.enable_recordings
        try:
            async for event in events:
                if isinstance(event, AudioChunk):
                    if recordings:
                        turn.reply_pcm += event.pcm16
                        turn.reply_rate = event.sample_rate
                    await self.playout.write(turn.segment(event.index), event.pcm16, event.sample_rate)
                elif isinstance(event, SentenceEnd):
                    if event.index in turn.sentences:
                        await self.playout.end(turn.segment(event.index))
                elif isinstance(event, Sentence):
                    turn.sentences[event.index] = event.text
                    await self._notify(SentenceStarted(event.text, event.index, event.filler, turn.generation))
                elif isinstance(event, ToolCallStarted):
                    turn.tools_started = True
                    await self._notify(ToolCalled(event.name, event.arguments, turn.generation))
                elif isinstance(event, ToolCallFinished):
                    turn.tool_calls.append(event.call)
                    await self._notify(ToolReturned.of(event.call, turn.generation))
                elif isinstance(event, TurnError):
                    turn.error = turn.error or event.message
                    await self._notify(TurnFailed(event.stage, event.message, turn.generation))
                elif isinstance(event, TurnDone):
                    turn.record = event.record
            turn.done = True
            self._maybe_finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one turn's failure must not end the conversation
            log.exception("turn %s failed on %s", turn.generation, self.name)
            turn.error = f"turn failed: {type(exc).__name__}"
            turn.done = True
            self._finish(turn, interrupted=True)

    def _turn_of(self, segment: str) -> tuple[LiveTurn | None, int]:
        generation, _, index = segment.partition(":")
        turn = self._turns.get(int(generation)) if generation.isdigit() else None
        return turn, int(index) if index.isdigit() else -1

    async def _on_sent(self, segment: str, pcm16: bytes, rate: int) -> None:
        if self.recorder is not None:
            self.recorder.agent(pcm16, rate)
        turn, _ = self._turn_of(segment)
        if turn is not None and not turn.audio_started:
            turn.audio_started = True
            turn.timeline.mark("first_frame_sent")
            await self._set_state("speaking")

    def _on_played(self, played: Played) -> None:
        turn, index = self._turn_of(played.segment)
        if turn is not None and played.complete:
            turn.played.add(index)
            self._maybe_finish(turn)

    def _maybe_finish(self, turn: LiveTurn) -> None:
        if not turn.finished and turn.complete:
            if turn.sentences:
                turn.timeline.mark("playback_confirmed")
            self._finish(turn, interrupted=False)

    def _finish(self, turn: LiveTurn, interrupted: bool) -> None:
        """Settle memory now (before any later turn thinks) and queue the write."""
        turn.finished = True
        self._turns.pop(turn.generation, None)
        if not self._turns:
            self._spawn(self._set_state("listening"))
        if not turn.store or not (turn.user_text or turn.error):
            return
        record = turn.record or TurnRecord(user_text=turn.user_text, reply="", tool_calls=turn.tool_calls)
        record.user_text = turn.user_text
        record.conversation_id = self.pipeline.conversation_id
        record.error = record.error or turn.error
        record.timings_ms = dict(turn.timeline.marks)
        record.usage.stt_audio_s = len(turn.user_audio) / 2 / self.rate
        record.failover[:0] = turn.failover
        if turn.record is None and turn.sentences:
            record.sentences = [turn.sentences[i] for i in sorted(turn.sentences)]
            record.reply = " ".join(record.sentences)
        if turn.reply_pcm:
            record.audio, record.sample_rate = bytes(turn.reply_pcm), turn.reply_rate
        heard = turn.heard() if interrupted else None
        self.pipeline.record(record, heard=heard, interrupted=interrupted,
                             user_audio=(bytes(turn.user_audio), self.rate) if turn.user_audio else None)
        self._writes.put_nowait(record)
        self._spawn(self._notify(TurnFinished(record, turn.generation)))
        if record.ended and not interrupted:
            self._spawn(self._hang_up())

    async def _hang_up(self) -> None:
        try:
            await self.transport.hang_up()
        except Exception:  # noqa: BLE001 - the far end is going away anyway
            log.warning("hang-up on %s failed", self.name, exc_info=True)

    async def _barge_in_audible(self) -> None:
        """The user spoke over audible agent speech: clear, stop, keep what was heard."""
        audible = [t for t in self._turns.values() if t.audio_started and not t.finished]
        if not audible:
            return
        await self.playout.clear()
        for turn in audible:
            await self._cancel(turn)
            if not turn.finished:
                self._finish(turn, interrupted=True)

    async def _cancel(self, turn: LiveTurn) -> None:
        task, turn.task = turn.task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if turn.mergeable and turn.memory_mark is not None:
            self.pipeline.rollback(turn.memory_mark)  # nobody heard it: as if never thought
            turn.memory_mark = None

    # --- background work ------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_turns(self) -> None:
        while (record := await self._writes.get()) is not None:
            try:
                await self.pipeline.save(record)
                self.turns_stored += 1
            except Exception:  # noqa: BLE001 - a failed write is logged; the call goes on
                log.exception("storing a turn of %s failed", self.name)

    async def _dtmf(self, digit: str) -> None:
        try:
            async with self._dtmf_order:
                await self._on_dtmf(digit)  # type: ignore[misc]
        except Exception:  # noqa: BLE001
            log.exception("handling a keypad digit on %s failed", self.name)

    async def _notify(self, event: Notification) -> None:
        await self.transport.notify(event)

    async def _set_state(self, state: State) -> None:
        if state != self._state:
            self._state = state
            await self._notify(StateChanged(state))
