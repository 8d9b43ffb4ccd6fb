"""The one turn pipeline: STT → agent (LLM + tools, fillers) → sentence splitter → streaming TTS.

Every channel runs its turns here: text and WAV turns (CLI, app, REST) through
:meth:`TurnPipeline.complete`, live ones (phone, browser, device, Realtime server) through the
conversation loop, which calls :meth:`TurnPipeline.transcribe` and :meth:`TurnPipeline.respond`
and plays the events. A pipeline belongs to one conversation: it keeps the agent's memory
between turns and stores each turn through :meth:`TurnPipeline.store`, the one place a turn
is written.

Events, in order: :class:`Transcribed` (the user's words), :class:`ToolCallStarted` /
:class:`ToolCallFinished`, :class:`Sentence` (text, before its audio), :class:`AudioChunk`
(PCM16 at the TTS rate), :class:`SentenceEnd`, :class:`TurnError` (a stage failed; an apology
follows as ordinary sentences), and last :class:`TurnDone`.

Timings are milliseconds after the end of the user's speech (``Timeline``): for a live turn
that is the last voiced frame; for a recorded clip, the moment the clip was handed over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voiceforge.agent import Agent, Filler, ReplyDone, SentenceSplitter, TextDelta, ToolFinished, ToolStarted
from voiceforge.agent.persona import Persona
from voiceforge.audio.codecs import unwrap_wav, wrap_wav
from voiceforge.providers import ProviderError
from voiceforge.store import conversations
from voiceforge.tools import ToolContext

if TYPE_CHECKING:
    from voiceforge.engine import Engine

log = logging.getLogger(__name__)

NO_SPEECH_REPLY = "Sorry, I didn't catch that. Could you say it again?"
"""Said to a recorded clip with no words in it (a live loop stays silent instead)."""

APOLOGIES = {
    "stt": "Sorry, I couldn't hear that. Could you say it again?",
    "llm": "Sorry, I'm having trouble answering right now. Please try again in a moment.",
}
"""The one apology per failed stage; the failure itself is stored as the turn's error."""


class Timeline:
    """Stage timestamps in ms after a zero point (the end of the user's speech).

    Args:
        zero: ``time.perf_counter()`` value of the zero point; default now.
    """

    def __init__(self, zero: float | None = None) -> None:
        self.zero = time.perf_counter() if zero is None else zero
        self.marks: dict[str, float] = {}

    def mark(self, stage: str, once: bool = True) -> None:
        """Record ``stage`` now (the first time only, unless ``once`` is False)."""
        if once and stage in self.marks:
            return
        self.marks[stage] = round((time.perf_counter() - self.zero) * 1000, 1)

    def set(self, stage: str, ms: float) -> None:
        """Record ``stage`` at ``ms`` after zero."""
        self.marks[stage] = round(ms, 1)


# --- events ------------------------------------------------------------------------------------
@dataclass
class Transcribed:
    """The user's words for this turn, and how long STT took (ms)."""

    text: str
    stt_ms: float = 0.0


@dataclass
class ToolCallStarted:
    """The agent called a tool; it is running."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ToolCallFinished:
    """A tool call ended: ``call`` has name, arguments, result, error, duration_ms."""

    call: dict[str, Any]


@dataclass
class Sentence:
    """A sentence about to be spoken; ``filler`` when it covers a slow tool."""

    index: int
    text: str
    filler: bool = False


@dataclass
class AudioChunk:
    """Speech of sentence ``index``: PCM16 mono at ``sample_rate`` Hz (the TTS's rate)."""

    index: int
    pcm16: bytes
    sample_rate: int


@dataclass
class SentenceEnd:
    """Every chunk of sentence ``index`` has been yielded."""

    index: int


@dataclass
class TurnError:
    """A stage ("stt", "llm", "tts", "agent") failed; ``message`` is safe to show."""

    stage: str
    message: str


@dataclass
class TurnResult:
    """One finished turn, as the CLI, the app and the API report it.

    Attributes:
        user_text: the transcript or typed text.
        reply: every sentence spoken (fillers and apologies included), or the reply text when
            not spoken.
        tool_calls: name, arguments, result, error, duration_ms per call.
        timings_ms: stage → ms after the end of the user's speech.
        error: the provider failure, if any.
        ended: end_call ran.
        audio: the reply's PCM16 at ``sample_rate`` Hz, when synthesized.
    """

    user_text: str
    reply: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    ended: bool = False
    interrupted: bool = False
    turn_id: int | None = None
    conversation_id: int | None = None
    audio: bytes | None = None
    sample_rate: int | None = None
    audio_path: str | None = None
    sentences: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (audio bytes omitted; ``audio_path`` where audio was written)."""
        return {
            "transcript": self.user_text, "reply": self.reply, "tool_calls": self.tool_calls,
            "timings_ms": self.timings_ms, "error": self.error, "ended": self.ended,
            "interrupted": self.interrupted, "turn_id": self.turn_id, "conversation_id": self.conversation_id,
            "audio_path": self.audio_path,
        }

    def reply_wav(self) -> bytes | None:
        """The reply audio as a WAV file, when the turn was spoken."""
        return wrap_wav(self.audio, self.sample_rate) if self.audio and self.sample_rate else None


@dataclass
class TurnDone:
    """The turn's generation is over; ``result`` holds everything it produced."""

    result: TurnResult


TurnEvent = Transcribed | ToolCallStarted | ToolCallFinished | Sentence | AudioChunk | SentenceEnd | TurnError | TurnDone


def tool_call_dict(event: ToolFinished) -> dict[str, Any]:
    """A finished tool call as stored and reported: name, arguments, result, error, duration_ms."""
    return {
        "name": event.call.name, "arguments": event.result.arguments, "result": event.result.result,
        "error": event.result.error, "duration_ms": round(event.result.duration_ms, 1),
    }


class TurnPipeline:
    """One conversation's turn pipeline: an agent with memory under a persona, storing each turn.

    Args:
        engine: the composition root (providers, database, tools, settings).
        persona: the persona (system prompt, tools, voices, phone reply rule).
        channel: "chat", "voice", "phone", "sms", "browser", "device", "api", "cli", ...
        conversation_id: a stored conversation to continue, or None (created on first use).
        caller: the caller's E.164 number on phone and SMS channels (send_sms may text it).
        child_id: the child a storyteller device belongs to (its tools keep the child's progress).
        persist: store turns; False when a parent has not consented (nothing about the child
            is written, the conversation still works).
    """

    def __init__(self, engine: Engine, persona: Persona, channel: str, conversation_id: int | None = None,
                 caller: str | None = None, child_id: int | None = None, persist: bool = True) -> None:
        self.engine, self.persona, self.channel = engine, persona, channel
        self.conversation_id = conversation_id
        self.child_id, self.persist = child_id, persist
        self.voice: str | None = None  # a voice that overrides the persona's (a device's setting)
        self.ctx = ToolContext(db=engine.db, settings=engine.settings, conversation_id=conversation_id,
                               services=engine.services, caller=caller, child_id=child_id)
        self.agent = Agent(engine.llm, engine.registry, persona, self.ctx, channel=channel,
                           filler_after_ms=engine.settings.forge_filler_after_ms)

    @property
    def memory(self):  # noqa: ANN201 - ConversationMemory
        """The agent's conversation memory."""
        return self.agent.memory

    # --- conversation -------------------------------------------------------------------------
    async def ensure_conversation(self, title: str = "") -> int | None:
        """The stored conversation's id, created now if there is none yet (None when not persisting)."""
        if self.conversation_id is None and self.persist:
            self.conversation_id = await asyncio.to_thread(
                conversations.create_conversation, self.engine.db, self.channel, self.persona.id, title)
            self.ctx.conversation_id = self.conversation_id
        return self.conversation_id

    def _refresh_persona(self) -> None:
        # Re-read the persona so that personalization edits apply from the next turn on.
        try:
            self.persona = self.agent.persona = self.engine.persona(self.persona.id)
        except Exception:  # noqa: BLE001 - a file edited into a broken state keeps the last good one
            log.warning("persona %s could not be re-read; keeping the loaded one", self.persona.id)

    # --- stages -------------------------------------------------------------------------------
    async def transcribe(self, pcm16: bytes, sample_rate: int) -> Transcribed | TurnError:
        """Speech to text for one utterance (PCM16 mono at ``sample_rate`` Hz); never raises."""
        try:
            transcript = await self.engine.stt.transcribe(pcm16, sample_rate, self.persona.domain_words)
        except ProviderError as exc:
            log.warning("STT failed: %s", exc)
            return TurnError("stt", str(exc))
        return Transcribed(transcript.text, transcript.elapsed_ms)

    async def say(self, text: str, timeline: Timeline | None = None, start: int = 0,
                  filler: bool = False) -> AsyncIterator[TurnEvent]:
        """One fixed sentence (a greeting, an apology) as events; a TTS failure stays silent."""
        yield Sentence(start, text, filler)
        tts = self.engine.tts
        try:
            async for chunk in tts.stream(text, self._voice()):
                if timeline is not None:
                    timeline.mark("tts_first_audio")
                yield AudioChunk(start, chunk, tts.sample_rate)
        except ProviderError as exc:
            log.warning("TTS failed: %s", exc)
            yield TurnError("tts", str(exc))
        yield SentenceEnd(start)

    def _voice(self) -> str | None:
        if self.voice:
            return self.voice
        return self.persona.voice.get(self.engine.tts.provider_id) if self.persona.voice else None

    async def respond(self, user_text: str, timeline: Timeline, speak: bool = True,
                      first_token_s: float | None = None) -> AsyncIterator[TurnEvent]:
        """Run the agent on ``user_text`` and speak its reply sentence by sentence.

        The LLM keeps generating while earlier sentences are synthesized. A failed LLM ends
        with the apology; a failed TTS stops the audio, not the turn. Marks
        ``llm_first_token``, ``tool_start``, ``tool_end``, ``first_sentence``,
        ``tts_first_audio`` and ``turn_done`` on ``timeline``.

        Args:
            user_text: what the user said.
            timeline: the turn's stage clock.
            speak: synthesize audio (False for text chat).
            first_token_s: the LLM's first-token budget (phone calls); None for no budget.

        Yields:
            Tool, sentence, audio and error events, then one :class:`TurnDone`.
        """
        self._refresh_persona()
        self.ctx.playback.clear()
        await self.ensure_conversation(title=user_text)  # tools (send_sms) link what they store to it
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> None:
            splitter = SentenceSplitter()
            try:
                async for event in self.agent.respond(user_text, first_token_s=first_token_s):
                    if isinstance(event, TextDelta):
                        timeline.mark("llm_first_token")
                        for sentence in splitter.push(event.text):
                            await queue.put(("say", sentence, False))
                    elif isinstance(event, Filler):
                        await queue.put(("say", event.text, True))
                    elif isinstance(event, ReplyDone):
                        for sentence in splitter.flush():
                            await queue.put(("say", sentence, False))
                        await queue.put(("done", event))
                    else:
                        await queue.put(("event", event))
            except Exception as exc:  # noqa: BLE001 - reported as the turn's error, with the apology
                log.exception("agent failed")
                await queue.put(("done", ReplyDone(reply="", error=f"agent failed: {type(exc).__name__}")))
            finally:
                await queue.put(None)

        result = TurnResult(user_text=user_text, reply="", conversation_id=self.conversation_id)
        producer = asyncio.create_task(produce())
        index = 0
        tts_failed = False
        done = ReplyDone(reply="")
        try:
            while (item := await queue.get()) is not None:
                kind = item[0]
                if kind == "event":
                    event = item[1]
                    if isinstance(event, ToolStarted):
                        timeline.mark("tool_start")
                        yield ToolCallStarted(event.call.name, dict(event.call.arguments))
                    elif isinstance(event, ToolFinished):
                        timeline.mark("tool_end", once=False)
                        call = tool_call_dict(event)
                        result.tool_calls.append(call)
                        yield ToolCallFinished(call)
                    continue
                if kind == "done":
                    done = item[1]
                    continue
                _, text, filler = item
                if not filler:
                    timeline.mark("first_sentence")
                async for event in self._speak(text, index, filler, timeline, speak and not tts_failed):
                    if isinstance(event, TurnError):
                        tts_failed = True
                        result.error = result.error or event.message
                    yield event
                result.sentences.append(text)
                index += 1
            for title, pcm, rate in list(self.ctx.playback):  # a recitation a tool asked for
                async for event in self._play_recording(title, pcm, rate, index, speak):
                    yield event
                result.sentences.append(f"({title})")
                index += 1
            if done.error:
                stage = "agent" if done.error.startswith("agent failed") else "llm"
                yield TurnError(stage, done.error)
                async for event in self._speak(APOLOGIES["llm"], index, False, timeline, speak and not tts_failed):
                    yield event
                result.sentences.append(APOLOGIES["llm"])
                result.error = done.error
        finally:
            producer.cancel()
        timeline.mark("turn_done")
        result.reply = " ".join(result.sentences) if result.sentences else done.reply
        result.ended = done.ended
        result.timings_ms = timeline.marks
        yield TurnDone(result)

    @staticmethod
    async def _play_recording(title: str, pcm16: bytes, rate: int, index: int,
                              speak: bool) -> AsyncIterator[TurnEvent]:
        yield Sentence(index, f"({title})")
        if speak:
            step = rate // 10 * 2  # 100 ms
            for i in range(0, len(pcm16), step):
                yield AudioChunk(index, pcm16[i : i + step], rate)
        yield SentenceEnd(index)

    async def _speak(self, text: str, index: int, filler: bool, timeline: Timeline,
                     speak: bool) -> AsyncIterator[TurnEvent]:
        if not speak:
            yield Sentence(index, text, filler)
            yield SentenceEnd(index)
            return
        async for event in self.say(text, timeline, start=index, filler=filler):
            yield event

    # --- whole turns --------------------------------------------------------------------------
    async def run(self, *, text: str | None = None, audio: tuple[bytes, int] | None = None,
                  timeline: Timeline | None = None, speak: bool = True,
                  first_token_s: float | None = None) -> AsyncIterator[TurnEvent]:
        """A whole turn from typed text or a recorded utterance ``(PCM16 mono, Hz)``.

        A clip with no words gets :data:`NO_SPEECH_REPLY`; a failed STT gets its apology.
        """
        timeline = timeline or Timeline()
        timeline.set("speech_end", 0.0)
        if audio is not None:
            heard = await self.transcribe(*audio)
            timeline.mark("stt_final")
            if isinstance(heard, TurnError):
                yield heard
                result = TurnResult(user_text="", reply=APOLOGIES["stt"], error=heard.message,
                                    sentences=[APOLOGIES["stt"]], timings_ms=timeline.marks)
                if speak:
                    async for event in self.say(APOLOGIES["stt"], timeline):
                        yield event
                yield TurnDone(result)
                return
            timeline.set("stt_ms", heard.stt_ms)
            yield heard
            if not heard.text:
                result = TurnResult(user_text="", reply=NO_SPEECH_REPLY, timings_ms=timeline.marks)
                if speak:
                    async for event in self.say(NO_SPEECH_REPLY, timeline):
                        yield event
                yield TurnDone(result)
                return
            text = heard.text
        async for event in self.respond(text or "", timeline, speak=speak, first_token_s=first_token_s):
            yield event

    async def complete(self, *, text: str | None = None, audio: tuple[bytes, int] | None = None,
                       speak: bool = True) -> TurnResult:
        """Run a whole turn, collect its audio and store it (a clip with no words is not stored).

        Returns:
            The TurnResult with ``audio`` (PCM16 at ``sample_rate``) when spoken, and
            ``turn_id`` once stored.
        """
        pcm = bytearray()
        rate = None
        result = TurnResult(user_text="", reply="")
        async for event in self.run(text=text, audio=audio, speak=speak):
            if isinstance(event, AudioChunk):
                pcm += event.pcm16
                rate = event.sample_rate
            elif isinstance(event, TurnDone):
                result = event.result
        result.audio, result.sample_rate = (bytes(pcm), rate) if pcm else (None, None)
        if result.user_text or result.error:
            await self.store(result, user_audio=audio)
        result.conversation_id = self.conversation_id
        return result

    async def text_turn(self, user_text: str, speak: bool = False) -> TurnResult:
        """One stored turn from typed text; with ``speak`` the reply audio too."""
        return await self.complete(text=user_text, speak=speak)

    async def voice_turn(self, pcm16: bytes, sample_rate: int, speak: bool = True) -> TurnResult:
        """One stored turn from a recorded utterance (PCM16 mono at ``sample_rate`` Hz)."""
        return await self.complete(audio=(pcm16, sample_rate), speak=speak)

    async def wav_turn(self, wav: bytes, speak: bool = True) -> TurnResult:
        """One stored turn from a WAV file's bytes.

        Raises:
            AudioFormatError: empty, truncated or not WAV; nothing is stored.
        """
        return await self.voice_turn(*unwrap_wav(wav), speak=speak)

    # --- storage ------------------------------------------------------------------------------
    def record(self, result: TurnResult, heard: list[str] | None = None, interrupted: bool = False,
               user_audio: tuple[bytes, int] | None = None) -> conversations.NewTurn:
        """Close a turn in memory and shape it for storage (call :meth:`save` to write it).

        Runs on the event loop, before any later turn thinks: when a barge-in cut the reply
        short, or an apology replaced it, the agent's memory becomes exactly what was said.

        Args:
            result: the turn (its ``TurnDone.result``).
            heard: the sentences the user heard, when a barge-in cut the reply short; the stored
                reply becomes exactly these.
            interrupted: the user barged in.
            user_audio: the utterance (PCM16, Hz), kept when ``ENABLE_RECORDINGS`` is on.
        """
        if heard is not None:
            result.reply = " ".join(heard)
        result.interrupted = interrupted
        if interrupted or result.error:
            self.memory.settle(" ".join(heard if heard is not None else result.sentences))
        reply_audio = (result.audio, result.sample_rate) if result.audio and result.sample_rate else None
        record = conversations.NewTurn(
            user_text=result.user_text, assistant_text=result.reply, tool_calls=result.tool_calls,
            timings_ms=dict(result.timings_ms), error=result.error, interrupted=interrupted,
            providers=self.engine.provider_labels(), user_audio=user_audio, reply_audio=reply_audio,
        )
        return record

    async def save(self, record: conversations.NewTurn, result: TurnResult | None = None) -> int:
        """Write a recorded turn (the one place a turn is stored); returns its id.

        The database call runs in a worker thread, so a slow or locked database holds up only
        this write, never the event loop. ``result`` gets the turn and conversation ids. Returns
        0 and writes nothing when the pipeline does not persist (no consent).
        """
        if not self.persist:
            return 0
        conversation_id = await self.ensure_conversation(title=record.user_text)
        settings = self.engine.settings
        recordings = settings.forge_data_dir / "recordings" if settings.enable_recordings else None
        summary = self.memory.summary or None
        turn_id = await asyncio.to_thread(conversations.save_turn, self.engine.db, conversation_id, record,
                                          recordings, summary)
        if result is not None:
            result.turn_id, result.conversation_id = turn_id, conversation_id
        return turn_id

    async def store(self, result: TurnResult, heard: list[str] | None = None, interrupted: bool = False,
                    user_audio: tuple[bytes, int] | None = None) -> int:
        """:meth:`record` then :meth:`save`: store one turn now; returns its id (0: not persisted)."""
        return await self.save(self.record(result, heard, interrupted, user_audio), result)
