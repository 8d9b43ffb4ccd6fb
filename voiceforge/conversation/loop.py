"""The one live conversation loop, over any transport (Twilio, browser, ESP32, Realtime client).

The caller's audio goes to the :class:`voiceforge.conversation.listener.Listener` (framing, VAD,
speculative STT, push-to-talk), which reports speech starts and utterances. An utterance is
transcribed at once (STT runs per utterance, in order) and its turn runs the pipeline's agent
and TTS (:class:`voiceforge.conversation.turns.Turns`); the reply goes out through the one
:class:`voiceforge.conversation.playout.Playout`, a sentence per segment, each confirmed by its
mark. Speech start while the agent is being heard is a barge-in: the playout clears,
synthesis stops, and the stored reply is only the sentences whose marks came back.

An utterance that ends while the previous turn is still being transcribed or thought about
(no audio yet, no tool run) is merged into it: the thinking is redone once with both; once a
tool has run, the new utterance is queued and answered after. Either way every utterance is
answered and stored.

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

from voiceforge.audio.turn_model import SmartTurn, TurnModelMissing
from voiceforge.audio.vad import SileroSpeech, SileroVad, WebRtcVad
from voiceforge.conversation.end_of_turn import Verdict
from voiceforge.conversation.interruptions import Overlap, is_backchannel
from voiceforge.conversation.keypad import Keypad
from voiceforge.conversation.limits import CallLimits
from voiceforge.conversation.listener import Listener, SpeechBegan, UtteranceEnded
from voiceforge.conversation.recorder import CallRecorder
from voiceforge.conversation.turns import Turns
from voiceforge.transport import (
    AudioIn,
    ClearInput,
    Configure,
    DtmfIn,
    End,
    EndOfTurn,
    Ignored,
    InboundEvent,
    Interrupt,
    MarkPlayed,
    Notification,
    Remember,
    Say,
    SpeechStarted,
    SpeechStopped,
    State,
    StateChanged,
    TalkEnd,
    TalkStart,
    TextIn,
    Transport,
)
from voiceforge.turn import Timeline, Transcribed, TurnPipeline

log = logging.getLogger(__name__)


def smart_turn(name: str = "") -> Callable[[bytes, int], float] | None:
    """Smart Turn's ``probability``, or None (logged) when the model is not installed."""
    try:
        return SmartTurn.shared().probability
    except TurnModelMissing as exc:
        log.warning("%s: the silence endpoint decides the end of turn: %s", name or "conversation", exc)
        return None

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
        turn_detector: "model" or "silence" (default: the persona's, else ``FORGE_TURN_DETECTOR``);
            see :mod:`voiceforge.conversation.end_of_turn`.
        limits: reprompt a silent caller, let them go after the reprompts, wrap up at the maximum
            duration (the persona's ``idle_s``, ``idle_reprompts``, ``max_call_s``, else
            ``FORGE_IDLE_S``, ``FORGE_IDLE_REPROMPTS``, ``FORGE_MAX_CALL_S``). Off for a
            single device press and for Realtime clients, which end their own sessions.
    """

    def __init__(self, pipeline: TurnPipeline, transport: Transport, *, endpointing_ms: int | None = None,
                 first_token_s: float | None = None, greet: bool = True, name: str = "",
                 on_dtmf: Callable[[str], Awaitable[None]] | None = None, vad: Any = None,
                 push_to_talk: bool = False, limits: bool = True, turn_detector: str | None = None) -> None:
        settings = pipeline.settings
        self.pipeline, self.transport, self.name = pipeline, transport, name
        self.greet = greet
        self._on_dtmf = on_dtmf
        self._dtmf_order = asyncio.Lock()  # digits are handled one at a time, in the order pressed
        first_token_s = first_token_s if first_token_s is not None else settings.llm_first_token_ms / 1000
        stt_rate = pipeline.stt_rate
        self.rate = stt_rate if stt_rate in VAD_RATES else 16000
        persona = pipeline.persona
        self.recorder = CallRecorder(self.rate) if settings.enable_recordings else None
        self.silence_ms = endpointing_ms or persona.endpointing_ms or settings.endpointing_ms
        self.turn_detector = turn_detector or persona.turn_detector or settings.turn_detector
        turn_model = smart_turn(name) if self.turn_detector == "model" and not push_to_talk else None
        if turn_model is None:
            self.turn_detector = "silence"
        if vad is None and settings.vad == "silero" and self.rate == SileroVad.RATE:
            vad = SileroVad(self.rate)
        self.listener = Listener(self.rate, settings.turn_max_wait_ms if turn_model else self.silence_ms,
                                 settings.max_turn_s, pipeline.transcribe, speculate_ms=settings.speculative_stt_ms,
                                 vad=vad, recorder=self.recorder, push_to_talk=push_to_talk, turn_model=turn_model)
        if vad is None and persona.vad_threshold is not None:
            self.listener.configure_vad(threshold=persona.vad_threshold)  # the persona's turn detection
        self.turns = Turns(pipeline, transport, self.rate, first_token_s, notify=self._notify,
                           set_state=self._set_state, spawn=self._spawn, recorder=self.recorder, name=name)
        self._background: set[asyncio.Task] = set()
        self._state = ""
        self.closed = False
        self.keypad = Keypad(persona.keypad, self._keypad_entry)
        self.min_interruption_s = settings.min_interruption_ms / 1000
        self.false_interruption_s = settings.false_interruption_ms / 1000
        self._overlap: Overlap | None = None  # caller sound over the agent, not yet judged
        self._awaited_verdict: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        # A second opinion on interruptions (webrtcvad hears a cough as speech); a VAD passed in
        # is trusted as it is.
        self._speech_check = SileroSpeech() if isinstance(self.listener.vad, WebRtcVad) and \
            self.rate == SileroSpeech.RATE else None
        self.interruptions = {"ignored": 0, "resumed": 0, "barge_in": 0}
        """Caller sounds over the agent: too short to count, judged a backchannel or no words
        (the agent resumed), and real barge-ins."""
        self.limits = CallLimits(
            persona.idle_s if persona.idle_s is not None else settings.idle_s,
            persona.idle_reprompts if persona.idle_reprompts is not None else settings.idle_reprompts,
            persona.max_call_s if persona.max_call_s is not None else settings.max_call_s,
            time.monotonic()) if limits else None

    @property
    def turns_stored(self) -> int:
        """Turns written to the database so far."""
        return self.turns.writer.stored

    @property
    def conversation_id(self) -> int | None:
        """The stored conversation's id (None until its first turn is stored)."""
        return self.pipeline.conversation_id

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
        self.turns.writer.start()
        await self._set_state("listening")
        if self.greet and self.pipeline.persona.greeting:
            self.say(self.pipeline.persona.greeting)
        if self.limits is not None:
            self.limits.start(time.monotonic())
            self._watcher = asyncio.ensure_future(self._watch())

    def say(self, text: str) -> None:
        """Speak a fixed sentence now (a greeting); it is not stored as a turn."""
        self.turns.say(text)

    async def handle(self, event: InboundEvent) -> None:  # noqa: C901 - one branch per event type
        """Process one inbound event; returns quickly (work goes to tasks)."""
        if self.closed:
            return
        if isinstance(event, AudioIn):
            await self.on_audio(event.pcm16, event.sample_rate)
        elif isinstance(event, MarkPlayed):
            self.turns.playout.played(event.name)
        elif isinstance(event, TextIn):
            if event.text.strip():
                self._caller_active()
                await self.on_utterance(text=event.text.strip())
        elif isinstance(event, TalkStart):
            self.listener.talk_start()
            await self.on_speech_start(explicit=True)
        elif isinstance(event, TalkEnd):
            held = self.listener.talk_end()
            if held:
                await self.on_utterance(audio=held)
        elif isinstance(event, DtmfIn):
            self._caller_active()
            if self._on_dtmf is not None:
                self._spawn(self._dtmf(event.digit))  # stored on the call, in order
            await self.keypad.press(event.digit)
        elif isinstance(event, Configure):
            self.configure(event)
        elif isinstance(event, Interrupt):
            await self.turns.interrupt()
        elif isinstance(event, ClearInput):
            self.listener.clear_input()
        elif isinstance(event, Say):
            self.say(event.text)
        elif isinstance(event, Remember):
            self.pipeline.remember(event.role, event.text)

    async def stop(self) -> None:
        """The connection ended: stop working, store what was heard, and drain the writer."""
        if self.closed:
            return
        self.closed = True
        self.keypad.close()
        if self._watcher is not None:
            self._watcher.cancel()  # nothing of it needs finishing
        await self.turns.close()
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
        """Feed caller audio (PCM16 mono at ``sample_rate`` Hz) to the listener and act on what it heard."""
        await self._act_on(self.listener.hear(pcm16, sample_rate))
        judging = self.listener.judging
        if judging is not None and judging is not self._awaited_verdict:
            self._awaited_verdict = judging  # acted on when reached, even if no more audio comes
            judging.add_done_callback(lambda _: self._spawn(self._verdict_reached()))

    async def _verdict_reached(self) -> None:
        if not self.closed:
            await self._act_on(self.listener.poll())

    async def _act_on(self, heard_list: list) -> None:
        for heard in heard_list:
            if isinstance(heard, SpeechBegan):
                await self.on_speech_start()
            elif self._overlap is not None:
                await self._overlap_ended(heard)
            else:
                await self.on_utterance(audio=heard.audio, speculation=heard.speculation, verdict=heard.verdict)
        if self._overlap is not None:
            await self._judge_overlap()

    async def on_speech_start(self, explicit: bool = False) -> None:
        """The user started speaking: over the agent, an overlap to judge; else hold back thinking.

        See :mod:`voiceforge.conversation.interruptions` for how an overlap is judged.

        Args:
            explicit: a push-to-talk press, which interrupts at once.
        """
        self._caller_active()
        await self._notify(SpeechStarted())
        if self._overlap is not None:
            return  # more sound of the overlap being judged
        if not explicit and self.min_interruption_s > 0 and self.turns.speaking:
            self._overlap = Overlap(time.perf_counter())
            return
        await self.turns.barge_in()
        current = self.turns.current
        if current is not None and current.store and current.mergeable and current.task is not None:
            await self.turns.cancel(current)  # redone once this utterance is in (see on_utterance)
        await self._set_state("listening")

    async def on_utterance(self, audio: bytes | None = None, text: str | None = None,
                           speculation: asyncio.Task | None = None, ended_at: float | None = None,
                           last_voiced: float | None = None, verdict: Verdict | None = None) -> None:
        """An utterance ended (or a message was typed): answer it, merged or queued.

        Args:
            audio: the utterance, PCM16 at the loop's rate (None for typed text).
            text: the typed text.
            speculation: STT of ``audio`` started before the endpoint (see the listener).
            ended_at: ``time.perf_counter()`` of its endpoint, when it is answered later than that
                (an interruption judged by its words).
            last_voiced: ``time.perf_counter()`` of its last voiced frame, in that case.
            verdict: the end-of-turn model's decision, when it ended the utterance (or was overruled
                by the silence fallback).
        """
        now = ended_at or time.perf_counter()
        last_voiced = last_voiced or self.listener.last_voiced
        zero = last_voiced if audio is not None and last_voiced else now
        timeline = Timeline(zero)
        timeline.set("speech_end", 0.0)
        if audio is not None:
            timeline.set("endpointing_ms", (now - zero) * 1000)
            await self._notify(SpeechStopped(round(len(audio) / 2 / self.rate * 1000)))
            if verdict is not None and verdict.probability is not None:
                timeline.set("end_of_turn_p", round(verdict.probability, 3))
            if verdict is not None:
                timeline.set("end_of_turn_model", 1 if verdict.complete else 0)  # 0: silence overruled "unfinished"
            await self._notify(EndOfTurn(
                complete=True, detector="model" if verdict is not None and verdict.complete else "silence",
                probability=verdict.probability if verdict is not None else None,
                waited_ms=round((now - zero) * 1000, 1)))
        await self.turns.barge_in()  # typed, or the agent began while the user still spoke
        previous = self.turns.current
        merge = previous is not None and previous.store and previous.mergeable
        # Speech split by a pause is transcribed again as one: Whisper hears the two parts
        # together better than apart (on its own, "a joke about the weather" once came out as
        # "how did you talk about the weather").
        joint = merge and audio is not None and not previous.typed and bool(previous.user_audio)
        source: asyncio.Future
        if audio is None:
            source = asyncio.get_running_loop().create_future()
            source.set_result(Transcribed(text or ""))
        elif speculation is not None and not joint:  # quiet since it started: the rest is silence
            source = speculation
            self.listener.count_speculation(used=True)
            timeline.set("stt_speculative", 1)
        else:
            if speculation is not None:
                self.listener.count_speculation(used=False)
            heard = bytes(previous.user_audio) + audio if joint else audio
            source = asyncio.create_task(self.pipeline.transcribe(heard, self.rate))
        turn = self.turns.new(timeline)
        if merge:
            await self.turns.cancel(previous)
            self.turns.absorb(previous, into=turn, joint=joint)
        elif previous is not None and previous.task is not None and not previous.finished:
            turn.after = previous.task
        turn.inputs.append(source)
        if audio is not None:
            turn.user_audio += audio
        else:
            turn.typed = True
        self.turns.answer(turn)
        await self._set_state("thinking")

    async def interrupt(self) -> None:
        """Stop the agent now (a client's ``response.cancel``): clear what is audible, drop thinking."""
        await self.turns.interrupt()

    def configure(self, change: Configure) -> None:
        """Apply a client's :class:`voiceforge.transport.Configure` (turn detection, voice, prompt, tools)."""
        if change.push_to_talk is not None:
            self.listener.push_to_talk = change.push_to_talk
        if change.turn_detector is not None and change.turn_detector != self.turn_detector:
            model = smart_turn(self.name) if change.turn_detector == "model" else None
            self.turn_detector = "model" if model else "silence"
            self.listener.set_turn_model(model, self.pipeline.settings.turn_max_wait_ms if model else self.silence_ms)
        if (change.vad_threshold, change.silence_ms, change.prefix_ms) != (None, None, None):
            self.configure_vad(change.vad_threshold, change.silence_ms, change.prefix_ms)
        self.pipeline.configure(voice=change.voice, instructions=change.instructions,
                                client_tools=change.client_tools, run_client_tool=change.run_client_tool)

    def configure_vad(self, threshold: float | None = None, silence_ms: int | None = None,
                      prefix_ms: int | None = None) -> None:
        """Change the VAD and the silence endpoint between utterances (see :meth:`Listener.configure_vad`).

        With the model detector ``silence_ms`` is kept for a switch to the silence endpoint and
        does not shorten the model's wait for an unfinished turn.
        """
        if silence_ms:
            self.silence_ms = max(100, min(5000, int(silence_ms)))
        self.listener.configure_vad(threshold, silence_ms if self.turn_detector == "silence" else None, prefix_ms)

    # --- interruptions ---------------------------------------------------------------------------
    async def _judge_overlap(self) -> None:
        """Judge an open overlap at each audio chunk: pause the agent, or resume it.

        The agent pauses once the overlap has lasted the minimum (and Silero heard speech in
        it); it resumes when the overlap has been quiet past the false-interruption time undecided.
        """
        overlap = self._overlap
        assert overlap is not None
        now = time.perf_counter()
        voiced_s = (self.listener.last_voiced or overlap.started) - overlap.started + 0.06  # + the VAD's onset
        if not overlap.paused and voiced_s >= self.min_interruption_s:
            if not self.turns.speaking:  # the agent finished meanwhile: an ordinary utterance
                self._overlap = None
                return
            if self._speech_check is not None:
                if now - overlap.checked_at < 0.06:
                    return
                overlap.checked_at = now
                if self._speech_check.speech_ms(self.listener.utterance_so_far()) < self.min_interruption_s * 500:
                    return  # loud, but not speech (yet): a cough, a click, a noise burst
            overlap.paused = True
            await self.turns.playout.pause()
            overlap.paused_at = time.perf_counter()
            await self._set_state("listening")
        elif (overlap.paused and not overlap.deciding and not self.listener.in_speech
              and now - (self.listener.last_voiced or now) > self.false_interruption_s):
            await self._resume("no words")

    async def _overlap_ended(self, heard: UtteranceEnded) -> None:
        """An utterance of the overlap ended: too short (ignored), or judged by its words."""
        overlap = self._overlap
        assert overlap is not None
        if not overlap.paused:
            self._overlap = None
            self.interruptions["ignored"] += 1
            if heard.speculation is not None:
                heard.speculation.cancel()
            await self._notify(Ignored(0, "too short to interrupt"))
            return
        overlap.deciding += 1
        self._spawn(self._decide(overlap, heard, time.perf_counter(), self.listener.last_voiced))

    async def _decide(self, overlap: Overlap, heard: UtteranceEnded, ended_at: float,
                      last_voiced: float | None) -> None:
        """Barge in on words, resume on a backchannel or none (a task per utterance of the overlap)."""
        # Judged without the persona's domain words: with them Whisper wrote a hummed "mm-hmm" as "Ava."
        if heard.speculation is not None:
            heard.speculation.cancel()
        source = asyncio.ensure_future(self.pipeline.transcribe(heard.audio, self.rate, prompt=False))
        outcome = await asyncio.shield(source)
        overlap.deciding -= 1
        if self._overlap is not overlap or self.closed:
            return
        words = outcome.text if isinstance(outcome, Transcribed) else ""
        if isinstance(outcome, Transcribed) and not is_backchannel(words):
            self._overlap = None
            self.interruptions["barge_in"] += 1
            log.info("%s: interrupted by %d words", self.name, len(words.split()))
            # The agent went quiet when the overlap qualified (paused); stored on the turn it cut.
            await self.turns.barge_in(stopped_after_ms=(overlap.paused_at - overlap.started) * 1000)
            await self.on_utterance(audio=heard.audio, speculation=source, ended_at=ended_at, last_voiced=last_voiced,
                                    verdict=heard.verdict)
        elif not overlap.deciding and not self.listener.in_speech:
            await self._resume(f"backchannel {words!r}" if words else "no words")

    async def _resume(self, why: str) -> None:
        self._overlap = None
        self.interruptions["resumed"] += 1
        log.info("%s: not an interruption (%s); the agent resumes", self.name, why)
        await self._notify(Ignored(0, f"not an interruption: {why}"))
        if self.turns.speaking:
            await self._set_state("speaking")
        await self.turns.playout.resume()

    async def wrap_up(self) -> None:
        """Say the persona's wrap-up and hang up (a draining server's last word to a live call)."""
        await self.end_with(self.pipeline.persona.wrap_up)

    async def end_with(self, text: str) -> None:
        """Stop whatever the agent is doing, say ``text`` (a goodbye, a wrap-up), then hang up."""
        if self.closed:
            return
        await self.turns.interrupt()
        self.pipeline.remember("assistant", text)
        self.turns.say(text, hang_up=True)

    async def _keypad_entry(self, text: str) -> None:
        """A keypad entry (see :mod:`voiceforge.conversation.keypad`), answered like an utterance."""
        if not self.closed:
            await self.on_utterance(text=text)

    def _caller_active(self) -> None:
        if self.limits is not None:
            self.limits.caller_spoke(time.monotonic())

    async def _watch(self) -> None:
        """Every 100 ms: reprompt a silent caller, let them go, or wrap the call up (see CallLimits)."""
        persona = self.pipeline.persona
        limits = self.limits
        assert limits is not None
        while not self.closed:
            await asyncio.sleep(0.1)
            due = limits.due(time.monotonic(), busy=self.turns.live or self.listener.in_speech)
            if due == "reprompt":
                log.info("%s: the caller has been silent; reprompting (%d)", self.name, limits.reprompted)
                self.pipeline.remember("assistant", persona.reprompt)
                self.say(persona.reprompt)
            elif due is not None:
                log.info("%s: %s", self.name, "the caller did not answer the reprompts; ending the call"
                         if due == "goodbye" else "the maximum call duration was reached; wrapping up")
                await self.end_with(persona.idle_goodbye if due == "goodbye" else persona.wrap_up)
                return

    # --- background work ------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
