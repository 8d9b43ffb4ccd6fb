"""The one live conversation loop, over any transport (Twilio, browser, ESP32, Realtime server).

Inbound audio at the transport's rate → one stateful resampler → exact 20 ms frames at the STT's
rate → VAD with hysteresis. Speech end is an utterance: it is transcribed at once (STT runs per
utterance, in order) and its turn runs the pipeline's agent and TTS; the reply is resampled to
the transport's rate, cut into frames, paced to the wall clock, and followed by a mark per
sentence. Speech start while the agent is being heard is a barge-in: ``clear`` goes out,
synthesis stops, and the stored reply is only the sentences whose marks came back (marks echoed
in answer to a clear were flushed, not played).

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

The loop does no I/O of its own: it reads :mod:`voiceforge.transport` events and calls the
transport's methods. Storage happens on one writer task per conversation, in turn order, so a
slow database never holds up audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiceforge.audio.framing import FrameBuffer, Pacer, frame_bytes
from voiceforge.audio.resample import StreamResampler
from voiceforge.audio.vad import TurnDetector, TurnEvent, UtteranceSegmenter, VadState, WebRtcVad
from voiceforge.transport import (
    AudioIn,
    DtmfIn,
    InboundEvent,
    MarkPlayed,
    TalkEnd,
    TalkStart,
    TextIn,
    Transport,
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
    TurnResult,
)

log = logging.getLogger(__name__)

VAD_RATES = (8000, 16000, 32000, 48000)
"""The rates webrtcvad accepts (Hz)."""


@dataclass
class LiveTurn:
    """One turn of a live conversation, from the user's utterance(s) to the stored reply.

    Attributes:
        generation: its number; marks are named ``"<generation>:<sentence index>"``.
        timeline: stage clock whose zero is the last voiced frame of the user's speech.
        inputs: what the user said, in order: STT tasks (or finished text) per utterance.
        user_audio: the utterances' PCM16 at the analysis rate (kept for recordings).
        store: False for the greeting and for noise that held no words.
        sentences / played: sentence texts by index, and the indices whose marks came back.
    """

    generation: int
    timeline: Timeline
    inputs: list[asyncio.Future] = field(default_factory=list)
    user_audio: bytearray = field(default_factory=bytearray)
    typed: bool = False  # some input was text, not speech
    store: bool = True
    after: asyncio.Task | None = None
    task: asyncio.Task | None = None
    memory_mark: tuple[int, int] | None = None
    sentences: dict[int, str] = field(default_factory=dict)
    played: set[int] = field(default_factory=set)
    audio_started: bool = False
    tools_started: bool = False
    result: TurnResult | None = None
    user_text: str = ""
    error: str | None = None
    done: bool = False
    finished: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reply_pcm: bytearray = field(default_factory=bytearray)
    reply_rate: int | None = None
    failover: list[dict[str, str]] = field(default_factory=list)

    @property
    def mergeable(self) -> bool:
        """Nothing of it has been heard and no tool has run: it can be redone with more input."""
        return not (self.audio_started or self.tools_started or self.done or self.finished)

    def heard(self) -> list[str]:
        """The sentences confirmed played, in order, up to the first one that was not."""
        out = []
        for i in sorted(self.sentences):
            if i not in self.played:
                break
            out.append(self.sentences[i])
        return out


class CallRecorder:
    """The whole conversation as audio (``ENABLE_RECORDINGS``): the caller's track, the agent's, and both mixed.

    Both tracks are PCM16 mono at ``rate`` Hz. The caller's is every inbound frame in order (its
    own clock: the wire delivers it in real time). Agent audio is placed at the caller track's
    position when it was sent, or straight after the previous agent audio if that is later (a
    reply queued faster than real time plays back to back), so the mix lines up turn by turn.
    Audio a barge-in cleared from the far end's buffer is still in the agent track.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._caller = bytearray()
        self._agent = bytearray()
        self._agent_end = 0  # bytes
        self._resampler: StreamResampler | None = None

    def caller(self, frame: bytes) -> None:
        """One inbound frame (PCM16 at ``rate``)."""
        self._caller += frame

    def agent(self, frame: bytes, sample_rate: int) -> None:
        """One frame of agent audio as sent (PCM16 at ``sample_rate``)."""
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, self.rate)
        pcm = self._resampler.process(frame)
        at = max(len(self._caller), self._agent_end)
        if len(self._agent) < at:
            self._agent += bytes(at - len(self._agent))
        self._agent[at : at + len(pcm)] = pcm
        self._agent_end = at + len(pcm)

    def save(self, folder: Path) -> list[Path]:
        """Write ``call-caller.wav``, ``call-agent.wav`` and ``call-mixed.wav`` into ``folder``; returns them."""
        import numpy as np

        from voiceforge.audio.codecs import wrap_wav

        if not self._caller and not self._agent:
            return []
        folder.mkdir(parents=True, exist_ok=True)
        length = max(len(self._caller), len(self._agent))
        caller = bytes(self._caller).ljust(length, b"\0")
        agent = bytes(self._agent).ljust(length, b"\0")
        mixed = np.clip(np.frombuffer(caller, "<i2").astype(np.int32) + np.frombuffer(agent, "<i2"), -32768, 32767)
        paths = []
        for name, pcm in (("caller", caller), ("agent", agent), ("mixed", mixed.astype("<i2").tobytes())):
            path = folder / f"call-{name}.wav"
            path.write_bytes(wrap_wav(pcm, self.rate))
            paths.append(path)
        return paths


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
        settings = pipeline.engine.settings
        self.pipeline, self.transport, self.name = pipeline, transport, name
        self.greet = greet
        self._on_dtmf = on_dtmf
        self._dtmf_order = asyncio.Lock()  # digits are handled one at a time, in the order pressed
        self.first_token_s = first_token_s if first_token_s is not None else settings.forge_llm_first_token_ms / 1000
        stt_rate = pipeline.engine.stt.capabilities.sample_rate
        self.rate = stt_rate if stt_rate in VAD_RATES else 16000
        persona = pipeline.persona
        self.endpointing_ms = endpointing_ms or persona.endpointing_ms or settings.forge_endpointing_ms
        detector = TurnDetector(start_ms=60, stop_ms=self.endpointing_ms,
                                max_utterance_ms=int(settings.forge_max_turn_s * 1000))
        self._segmenter = UtteranceSegmenter(self.rate, 20, detector, vad or WebRtcVad(self.rate))
        if vad is None and persona.vad_threshold is not None:
            self.configure_vad(threshold=persona.vad_threshold)  # the persona's turn detection
        self._frames = FrameBuffer(frame_bytes(self.rate, 20))
        self._inbound: StreamResampler | None = None
        self._pacer = Pacer(frame_ms=transport.frame_ms, lead_ms=80)
        self._out_frame = frame_bytes(transport.output_rate, transport.frame_ms)
        self._generation = 0
        self._turns: dict[int, LiveTurn] = {}
        self._current: LiveTurn | None = None
        self._cleared: set[int] = set()
        self._last_voiced: float | None = None
        self.speculate_ms = settings.forge_speculative_stt_ms if settings.forge_speculative_stt_ms < self.endpointing_ms else 0
        self._speculation: asyncio.Task | None = None  # STT of the utterance so far, while it may still be the whole
        self._speculating: asyncio.Task | None = None  # the last one started, until it finishes (one at a time)
        self.speculations = {"used": 0, "dropped": 0}
        self._writes: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._state = ""
        self.closed = False
        self.turns_stored = 0
        self.push_to_talk = push_to_talk
        self._held: bytearray | None = None  # push-to-talk audio while the button is down
        self._max_held = int(settings.forge_max_turn_s * self.rate) * 2
        self.recorder = CallRecorder(self.rate) if settings.enable_recordings else None

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, events: AsyncIterator[InboundEvent]) -> None:
        """Greet, handle inbound events until the source ends, then stop.

        Raises:
            Whatever ``events`` raises (a malformed message); the loop is stopped first.
        """
        try:
            await self.start()
            async for event in events:
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

    async def handle(self, event: InboundEvent) -> None:
        """Process one inbound event; returns quickly (work goes to tasks)."""
        if self.closed:
            return
        if isinstance(event, AudioIn):
            await self.on_audio(event.pcm16, event.sample_rate)
        elif isinstance(event, MarkPlayed):
            await self.on_mark(event.name)
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
                complete = turn.done and set(turn.sentences) <= turn.played
                self._finish(turn, interrupted=not complete)
        await self._writes.put(None)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), 20)
        conversation_id = self.pipeline.conversation_id
        if self.recorder is not None and conversation_id and self.pipeline.persist:
            folder = self.pipeline.engine.settings.forge_data_dir / "recordings" / str(conversation_id)
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
            if kind is TurnEvent.SPEECH_START:
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
        await self.transport.notify({"type": "speech_started"})
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
            await self.transport.notify({"type": "speech_stopped", "audio_ms": round(len(audio) / 2 / self.rate * 1000)})
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

    def configure_vad(self, threshold: float | None = None, silence_ms: int | None = None,
                      prefix_ms: int | None = None) -> None:
        """Change endpointing between utterances (a Realtime client's ``turn_detection``).

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

    def set_output_rate(self, rate: int) -> None:
        """The far end now wants agent audio at ``rate`` Hz (from the next frame on)."""
        self.transport.output_rate = rate
        self._out_frame = frame_bytes(rate, self.transport.frame_ms)

    async def on_mark(self, name: str) -> None:
        """A mark came back: the sentence before it has played (unless it answers a clear)."""
        generation, _, index = name.partition(":")
        if not generation.isdigit() or not index.isdigit():
            return
        gen = int(generation)
        turn = self._turns.get(gen)
        if gen in self._cleared or turn is None:
            return  # flushed by a clear, not played
        turn.played.add(int(index))
        self._maybe_finish(turn)

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
                await self.transport.notify({"type": "ignored", "generation": turn.generation, "reason": "no words"})
                if turn is self._current:
                    await self._set_state("listening")
                return
            turn.error = errors[0]
            await self._play(turn, self.pipeline.say(APOLOGIES["stt"], turn.timeline))
            return
        await self.transport.notify({"type": "transcript", "text": turn.user_text, "generation": turn.generation})
        turn.memory_mark = self.pipeline.memory.checkpoint()
        await self._play(turn, self.pipeline.respond(turn.user_text, turn.timeline,
                                                     first_token_s=self.first_token_s))

    async def _play(self, turn: LiveTurn, events: AsyncIterator[Any]) -> None:
        frames = FrameBuffer(self._out_frame)
        resampler: StreamResampler | None = None
        try:
            async for event in events:
                if isinstance(event, AudioChunk):
                    if resampler is None:
                        resampler = StreamResampler(event.sample_rate, self.transport.output_rate)
                    if self.pipeline.engine.settings.enable_recordings:
                        turn.reply_pcm += event.pcm16
                        turn.reply_rate = event.sample_rate
                    await self._send(turn, frames.push(resampler.process(event.pcm16)))
                elif isinstance(event, SentenceEnd):
                    if resampler is not None:
                        await self._send(turn, frames.push(resampler.flush()))
                        resampler = None
                    await self._send(turn, frames.flush())
                    if event.index in turn.sentences:
                        await self._mark(turn, event.index)
                elif isinstance(event, Sentence):
                    turn.sentences[event.index] = event.text
                    await self.transport.notify({"type": "sentence", "text": event.text, "index": event.index,
                                                 "filler": event.filler, "generation": turn.generation})
                elif isinstance(event, ToolCallStarted):
                    turn.tools_started = True
                    await self.transport.notify({"type": "tool_call", "name": event.name,
                                                 "arguments": event.arguments, "generation": turn.generation})
                elif isinstance(event, ToolCallFinished):
                    turn.tool_calls.append(event.call)
                    await self.transport.notify({"type": "tool_result", **event.call, "generation": turn.generation})
                elif isinstance(event, TurnError):
                    turn.error = turn.error or event.message
                elif isinstance(event, TurnDone):
                    turn.result = event.result
            turn.done = True
            self._maybe_finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one turn's failure must not end the conversation
            log.exception("turn %s failed on %s", turn.generation, self.name)
            turn.error = f"turn failed: {type(exc).__name__}"
            turn.done = True
            self._finish(turn, interrupted=True)

    async def _send(self, turn: LiveTurn, frames: list[bytes]) -> None:
        for frame in frames:
            if self.transport.paced:
                await self._pacer.wait()
            await self.transport.send_audio(frame, self.transport.output_rate)
            if self.recorder is not None:
                self.recorder.agent(frame, self.transport.output_rate)
            if not turn.audio_started:
                turn.audio_started = True
                turn.timeline.mark("first_frame_sent")
                await self._set_state("speaking")

    async def _mark(self, turn: LiveTurn, index: int) -> None:
        await self.transport.mark(f"{turn.generation}:{index}")
        if not self.transport.confirms_playback:
            turn.played.add(index)

    def _maybe_finish(self, turn: LiveTurn) -> None:
        if turn.done and not turn.finished and set(turn.sentences) <= turn.played:
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
        result = turn.result or TurnResult(user_text=turn.user_text, reply="", tool_calls=turn.tool_calls)
        result.user_text = turn.user_text
        result.conversation_id = self.pipeline.conversation_id
        result.error = result.error or turn.error
        result.timings_ms = dict(turn.timeline.marks)
        result.usage.stt_audio_s = len(turn.user_audio) / 2 / self.rate
        result.failover[:0] = turn.failover
        if turn.result is None and turn.sentences:
            result.sentences = [turn.sentences[i] for i in sorted(turn.sentences)]
            result.reply = " ".join(result.sentences)
        if turn.reply_pcm:
            result.audio, result.sample_rate = bytes(turn.reply_pcm), turn.reply_rate
        heard = turn.heard() if interrupted else None
        record = self.pipeline.record(result, heard=heard, interrupted=interrupted,
                                      user_audio=(bytes(turn.user_audio), self.rate) if turn.user_audio else None)
        self._writes.put_nowait((record, result))
        self._spawn(self.transport.notify({"type": "turn", **result.to_json(), "generation": turn.generation}))
        if result.ended and not interrupted:
            self._spawn(self._hang_up())

    async def _hang_up(self) -> None:
        try:
            await self.transport.hang_up()
        except Exception:  # noqa: BLE001 - the far end is going away anyway
            log.warning("hang-up on %s failed", self.name, exc_info=True)

    async def _barge_in_audible(self) -> None:
        for turn in [t for t in self._turns.values() if t.audio_started and not t.finished]:
            await self._barge_in(turn)

    async def _barge_in(self, turn: LiveTurn) -> None:
        """The user spoke over audible agent speech: clear, stop, keep what was heard."""
        self._cleared.add(turn.generation)
        await self.transport.clear()
        self._pacer.reset()
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
            self.pipeline.memory.rollback(turn.memory_mark)  # nobody heard it: as if never thought
            turn.memory_mark = None

    # --- background work ------------------------------------------------------------------------
    def _spawn(self, coro) -> None:  # noqa: ANN001
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_turns(self) -> None:
        while (item := await self._writes.get()) is not None:
            try:
                await self.pipeline.save(*item)
                self.turns_stored += 1
            except Exception:  # noqa: BLE001 - a failed write is logged; the call goes on
                log.exception("storing a turn of %s failed", self.name)

    async def _dtmf(self, digit: str) -> None:
        try:
            async with self._dtmf_order:
                await self._on_dtmf(digit)  # type: ignore[misc]
        except Exception:  # noqa: BLE001
            log.exception("handling a keypad digit on %s failed", self.name)

    async def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            await self.transport.notify({"type": "state", "state": state})
