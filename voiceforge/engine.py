"""The engine: providers, tools, personas and storage wired together, and one turn end to end.

``Engine`` holds the process-wide heavy objects (models, DB engine, tool registry);
``ChatSession`` is one conversation under one persona. A turn runs
STT → agent (LLM + tools) → sentence splitter → TTS, with the stage timestamps of DESIGN.md
recorded as milliseconds after the end of the user's speech.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiceforge.agent import Agent, Filler, SentenceSplitter, TextDelta, ToolFinished, ToolStarted, TurnDone
from voiceforge.agent.persona import Persona, load_persona
from voiceforge.audio.codecs import unwrap_wav, wrap_wav
from voiceforge.config import Settings, get_settings
from voiceforge.providers import LLM, STT, TTS, ProviderError, build_llm, build_stt, build_tts, describe
from voiceforge.store.db import Database, get_database
from voiceforge.store.models import Conversation, ToolCallRecord, Turn
from voiceforge.tools import ToolContext, ToolRegistry, build_registry

log = logging.getLogger(__name__)

NO_SPEECH_REPLY = "Sorry, I didn't catch that. Could you say it again?"
STT_APOLOGY = "Sorry, I couldn't understand the audio just now. Please try again."


class Timeline:
    """Stage timestamps in ms after a zero point (the end of the user's speech)."""

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


@dataclass
class SentenceAudio:
    """A spoken sentence's audio chunk (PCM16 at ``sample_rate``) while the reply streams."""

    sentence: str
    index: int
    pcm16: bytes
    sample_rate: int


@dataclass
class SentenceDone:
    """Every chunk of sentence ``index`` has been yielded."""

    sentence: str
    index: int
    filler: bool = False


@dataclass
class TurnResult:
    """One finished turn, as the CLI, the app and the API report it."""

    user_text: str
    reply: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    ended: bool = False
    turn_id: int | None = None
    conversation_id: int | None = None
    audio: bytes | None = None
    sample_rate: int | None = None
    audio_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (audio bytes omitted; ``audio_path`` where audio was written)."""
        return {
            "transcript": self.user_text,
            "reply": self.reply,
            "tool_calls": self.tool_calls,
            "timings_ms": self.timings_ms,
            "error": self.error,
            "ended": self.ended,
            "turn_id": self.turn_id,
            "conversation_id": self.conversation_id,
            "audio_path": self.audio_path,
        }

    def reply_wav(self) -> bytes | None:
        """The reply audio as a WAV file, when the turn was spoken."""
        return wrap_wav(self.audio, self.sample_rate) if self.audio and self.sample_rate else None


class Engine:
    """Process-wide providers, database, tool registry and personas.

    Providers are built lazily (loading Whisper takes seconds), so a text-only user never
    pays for speech models. Pass providers to override the settings (tests use fakes).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        stt: STT | None = None,
        llm: LLM | None = None,
        tts: TTS | None = None,
        db: Database | None = None,
        registry: ToolRegistry | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.db = db or get_database(self.settings.database_url_resolved)
        self.registry = registry or build_registry(self.settings.forge_tool_delay_ms)
        self._stt, self._llm, self._tts = stt, llm, tts
        self.services: dict[str, Any] = {}

    @property
    def stt(self) -> STT:
        """The speech-to-text provider."""
        if self._stt is None:
            self._stt = build_stt(self.settings, prompt_words=self._prompt_words())
        return self._stt

    @property
    def llm(self) -> LLM:
        """The LLM provider (OpenAI-compatible or the offline brain)."""
        if self._llm is None:
            self._llm = build_llm(self.settings)
        return self._llm

    @property
    def tts(self) -> TTS:
        """The text-to-speech provider."""
        if self._tts is None:
            self._tts = build_tts(self.settings)
        return self._tts

    def ensure_mock_data(self) -> None:
        """Seed the mock business data when the database has none (first run)."""
        if self.db.is_empty():
            from voiceforge.store import mockdata

            mockdata.generate(self.db, self.settings.forge_mock_customers)

    def warm_up(self, speech: bool = True) -> float:
        """Load the speech models now (blocking); return the time it took in ms.

        Offline models load on first use otherwise, which would land in the first turn's STT
        or TTS time.
        """
        start = time.perf_counter()
        for provider in (self.stt, self.tts) if speech else ():
            warm = getattr(provider, "warm_up", None)
            if warm is not None:
                warm()
        return (time.perf_counter() - start) * 1000

    def _prompt_words(self) -> list[str]:
        words: list[str] = []
        try:
            words += self.persona(self.settings.forge_persona).domain_words
        except Exception:  # noqa: BLE001 - a broken persona must not stop STT
            log.warning("could not read persona %s for STT hints", self.settings.forge_persona)
        return words

    def persona(self, persona_id: str | None = None) -> Persona:
        """Load a persona (re-read each time, so personalization edits apply on the next turn)."""
        return load_persona(persona_id or self.settings.forge_persona, self.settings.forge_data_dir)

    def describe(self) -> dict[str, str]:
        """Labels of the active providers and database, for status displays."""
        out = {}
        for kind in ("stt", "llm", "tts"):
            try:
                name = self.settings.resolve_provider(kind)  # type: ignore[arg-type]
                built = {"stt": self._stt, "llm": self._llm, "tts": self._tts}[kind]
                out[kind] = describe(built) if built is not None else name
            except Exception as exc:  # noqa: BLE001
                out[kind] = f"error: {exc}"
        out["database"] = self.db.describe()
        return out

    def session(
        self, persona_id: str | None = None, channel: str = "chat", conversation_id: int | None = None
    ) -> ChatSession:
        """A new conversation (stored on its first turn) or a stored one to continue."""
        return ChatSession(self, self.persona(persona_id), channel, conversation_id)

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        """Speak ``text``: (PCM16 mono, sample rate in Hz)."""
        return await self.tts.synthesize(text), self.tts.sample_rate


class ChatSession:
    """One conversation: an agent with memory under a persona, storing each turn."""

    def __init__(self, engine: Engine, persona: Persona, channel: str, conversation_id: int | None = None) -> None:
        self.engine, self.persona, self.channel = engine, persona, channel
        self.conversation_id = conversation_id
        self.ctx = ToolContext(db=engine.db, settings=engine.settings, conversation_id=conversation_id,
                               services=engine.services)
        self.agent = Agent(
            engine.llm, engine.registry, persona, self.ctx, channel=channel,
            filler_after_ms=engine.settings.forge_filler_after_ms,
        )
        self.ended = False

    # --- one turn ---------------------------------------------------------------------------
    async def stream_turn(
        self, user_text: str, timeline: Timeline, speak: bool = True
    ) -> AsyncIterator[SentenceAudio | SentenceDone | ToolStarted | ToolFinished | TurnDone]:
        """Run the agent on ``user_text`` and speak its reply sentence by sentence.

        The LLM keeps generating while earlier sentences are synthesized. Yields tool events,
        audio chunks per sentence, SentenceDone after each sentence, and finally TurnDone.
        Stages ``llm_first_token``, ``first_sentence`` and ``tts_first_audio`` go on
        ``timeline``. A TTS failure stops the audio, not the turn (its error is in TurnDone).
        """
        # Re-read the persona so that personalization edits apply from the next turn on.
        self.persona = self.agent.persona = self.engine.persona(self.persona.id)
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> None:
            splitter = SentenceSplitter()
            try:
                async for event in self.agent.respond(user_text):
                    if isinstance(event, TextDelta):
                        timeline.mark("llm_first_token")
                        for sentence in splitter.push(event.text):
                            await queue.put(("say", sentence, False))
                    elif isinstance(event, Filler):
                        await queue.put(("say", event.text, True))
                    elif isinstance(event, TurnDone):
                        for sentence in splitter.flush():
                            await queue.put(("say", sentence, False))
                        await queue.put(("event", event))
                    else:
                        await queue.put(("event", event))
            except Exception as exc:  # noqa: BLE001 - reported as the turn's error
                log.exception("agent failed")
                await queue.put(("event", TurnDone(reply="", error=f"agent failed: {type(exc).__name__}")))
            finally:
                await queue.put(None)

        producer = asyncio.create_task(produce())
        tts_error: str | None = None
        index = 0
        try:
            while (item := await queue.get()) is not None:
                if item[0] == "event":
                    event = item[1]
                    if isinstance(event, TurnDone) and tts_error and not event.error:
                        event.error = tts_error
                    yield event
                    continue
                _, sentence, is_filler = item
                if not is_filler:
                    timeline.mark("first_sentence")
                if speak and tts_error is None:
                    tts = self.engine.tts
                    try:
                        async for chunk in tts.stream(sentence):
                            timeline.mark("tts_first_audio")
                            yield SentenceAudio(sentence, index, chunk, tts.sample_rate)
                    except ProviderError as exc:
                        log.warning("TTS failed: %s", exc)
                        tts_error = str(exc)
                yield SentenceDone(sentence, index, is_filler)
                index += 1
        finally:
            producer.cancel()

    async def text_turn(self, user_text: str, speak: bool = False, timeline: Timeline | None = None) -> TurnResult:
        """One turn from text; with ``speak`` the reply audio is synthesized too. Stored."""
        timeline = timeline or Timeline()
        return await self._collect(user_text, timeline, speak)

    async def voice_turn(self, pcm16: bytes, sample_rate: int, speak: bool = True) -> TurnResult:
        """One turn from an utterance (PCM16 mono at ``sample_rate`` Hz). Stored unless silent.

        The zero of the timings is the call (the end of the recorded speech).
        """
        timeline = Timeline()
        timeline.set("speech_end", 0.0)
        try:
            transcript = await self.engine.stt.transcribe(pcm16, sample_rate)
        except ProviderError as exc:
            log.warning("STT failed: %s", exc)
            result = TurnResult(user_text="", reply=STT_APOLOGY, error=str(exc), timings_ms=timeline.marks)
            if speak:
                result.audio, result.sample_rate = await self._speak_safely(STT_APOLOGY)
            result.turn_id = self.store_turn("", STT_APOLOGY, [], timeline.marks, error=str(exc))
            result.conversation_id = self.conversation_id
            return result
        timeline.mark("stt_final")
        timeline.set("stt_ms", transcript.elapsed_ms)
        if not transcript.text:
            result = TurnResult(user_text="", reply=NO_SPEECH_REPLY, timings_ms=timeline.marks)
            if speak:
                result.audio, result.sample_rate = await self._speak_safely(NO_SPEECH_REPLY)
            return result
        result = await self._collect(transcript.text, timeline, speak, user_audio=(pcm16, sample_rate))
        return result

    async def wav_turn(self, wav: bytes, speak: bool = True) -> TurnResult:
        """One turn from a WAV file's bytes.

        Raises:
            AudioFormatError: empty, truncated or not WAV; nothing is stored.
        """
        pcm16, rate = unwrap_wav(wav)
        return await self.voice_turn(pcm16, rate, speak=speak)

    async def _speak_safely(self, text: str) -> tuple[bytes | None, int | None]:
        try:
            return await self.engine.tts.synthesize(text), self.engine.tts.sample_rate
        except ProviderError:
            return None, None

    async def _collect(
        self, user_text: str, timeline: Timeline, speak: bool, user_audio: tuple[bytes, int] | None = None
    ) -> TurnResult:
        audio = bytearray()
        rate = None
        spoken: list[str] = []
        tools: list[dict[str, Any]] = []
        done = TurnDone(reply="")
        self.ensure_conversation(title=user_text)  # tools (send_sms) link what they store to it
        async for event in self.stream_turn(user_text, timeline, speak=speak):
            if isinstance(event, SentenceAudio):
                audio += event.pcm16
                rate = event.sample_rate
            elif isinstance(event, SentenceDone):
                spoken.append(event.sentence)
            elif isinstance(event, ToolFinished):
                tools.append(tool_call_dict(event))
            elif isinstance(event, TurnDone):
                done = event
        timeline.mark("turn_done")
        reply = " ".join(spoken) or done.reply
        result = TurnResult(
            user_text=user_text, reply=reply, tool_calls=tools, timings_ms=dict(timeline.marks),
            error=done.error, ended=done.ended, audio=bytes(audio) or None, sample_rate=rate,
        )
        self.ended = self.ended or done.ended
        result.turn_id = self.store_turn(
            user_text, reply, tools, result.timings_ms, error=done.error,
            user_audio=user_audio, reply_audio=(result.audio, rate) if result.audio else None,
        )
        result.conversation_id = self.conversation_id
        return result

    # --- storage ------------------------------------------------------------------------------
    def ensure_conversation(self, title: str = "") -> int:
        """Create the conversation row if it does not exist yet; return its id."""
        if self.conversation_id is None:
            with self.engine.db.session() as s:
                conv = Conversation(channel=self.channel, persona=self.persona.id, title=title[:200])
                s.add(conv)
                s.flush()
                self.conversation_id = conv.id
            self.ctx.conversation_id = self.conversation_id
        return self.conversation_id

    def store_turn(
        self,
        user_text: str,
        reply: str,
        tool_calls: list[dict[str, Any]],
        timings_ms: dict[str, float],
        error: str | None = None,
        interrupted: bool = False,
        user_audio: tuple[bytes, int] | None = None,
        reply_audio: tuple[bytes, int] | None = None,
    ) -> int:
        """Store one turn with its tool calls (and recordings when ENABLE_RECORDINGS); return its id."""
        conversation_id = self.ensure_conversation(title=user_text)
        with self.engine.db.session() as s:
            conv = s.get(Conversation, conversation_id)
            turn = Turn(
                conversation_id=conversation_id,
                index=len(conv.turns),
                user_text=user_text,
                assistant_text=reply,
                interrupted=interrupted,
                error=error,
                timings_ms=timings_ms,
                providers=self.engine.describe(),
            )
            if not conv.title and user_text:
                conv.title = user_text[:200]
            s.add(turn)
            s.flush()
            for call in tool_calls:
                s.add(ToolCallRecord(turn_id=turn.id, name=call["name"], arguments=call["arguments"],
                                     result=call["result"], error=call["error"], duration_ms=call["duration_ms"]))
            if self.engine.settings.enable_recordings:
                folder = self.engine.settings.forge_data_dir / "recordings" / str(conversation_id)
                turn.user_audio_path = _save_wav(folder / f"{turn.index:03d}-user.wav", user_audio)
                turn.reply_audio_path = _save_wav(folder / f"{turn.index:03d}-reply.wav", reply_audio)
            return turn.id


def tool_call_dict(event: ToolFinished) -> dict[str, Any]:
    """A finished tool call as the dict stored and reported: name, arguments, result, error, ms."""
    return {
        "name": event.call.name,
        "arguments": event.result.arguments,
        "result": event.result.result,
        "error": event.result.error,
        "duration_ms": round(event.result.duration_ms, 1),
    }


def _save_wav(path: Path, audio: tuple[bytes, int] | None) -> str | None:
    if not audio or not audio[0]:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wrap_wav(audio[0], audio[1]))
    return str(path)
