"""The one turn pipeline: STT → agent (LLM + tools, fillers) → sentence splitter → streaming TTS.

Every channel runs its turns here: text and WAV turns (CLI, app, REST) through
:meth:`TurnPipeline.complete`, live ones (phone, browser, device, Realtime server) through the
conversation loop, which calls :meth:`TurnPipeline.transcribe` and :meth:`TurnPipeline.respond`
and plays the events. A pipeline belongs to one conversation: it keeps the agent's memory
between turns and stores each turn through :meth:`TurnPipeline.store`, the one place a turn
is written.

The events it yields, its clock and its result are in :mod:`voiceforge.turn_events`.

Timings are milliseconds after the end of the user's speech (``Timeline``): for a live turn
that is the last voiced frame; for a recorded clip, the moment the clip was handed over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from voiceforge.agent import Agent, Filler, ReplyDone, SentenceSplitter, TextDelta, ToolFinished, ToolStarted
from voiceforge.agent.persona import Persona
from voiceforge.audio.decode import decode_audio
from voiceforge.cost import Usage
from voiceforge.providers import ProviderError, failover
from voiceforge.store import conversations
from voiceforge.tools import ToolContext
from voiceforge.turn_events import (
    AudioChunk,
    Sentence,
    SentenceEnd,
    Timeline,
    ToolCallFinished,
    ToolCallStarted,
    Transcribed,
    TurnDone,
    TurnError,
    TurnEvent,
    TurnResult,
    tool_call_dict,
)

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


def cut_at_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a clause or word boundary, ending in a period."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    for mark in (";", ",", " "):
        at = head.rfind(mark)
        if at >= limit // 2:
            head = head[:at]
            break
    return head.rstrip(" ,;:-") + "."


TTS_LOOKAHEAD = 1
"""Sentences synthesized ahead of the one being spoken. Piper takes about 55 ms per second of
audio on this 2-core machine (0.5 s for a 9 s sentence). Synthesized only once the one before it
had been sent, every sentence began after an added silence of 218 ms median (bench/speech_gaps.py)."""


FIRST_CLAUSE_CHARS = 20
"""A reply's first piece of speech may end at a comma, semicolon or colon this many characters
in (see :class:`SentenceSplitter`), so its first audio is not held up by a long sentence."""


class _Synthesis:
    """One sentence's TTS, started now in a task; its chunks are read later, in order."""

    def __init__(self, tts, text: str, voice: str | None) -> None:  # noqa: ANN001 - a TTS provider
        self._chunks: asyncio.Queue[bytes | ProviderError | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(tts, text, voice))

    async def _run(self, tts, text: str, voice: str | None) -> None:  # noqa: ANN001
        try:
            async for chunk in tts.stream(text, voice):
                self._chunks.put_nowait(chunk)
        except ProviderError as exc:
            self._chunks.put_nowait(exc)
        finally:
            self._chunks.put_nowait(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The audio as it is synthesized (PCM16 at the provider's rate).

        Raises:
            ProviderError: the TTS failed.
        """
        while (item := await self._chunks.get()) is not None:
            if isinstance(item, ProviderError):
                raise item
            yield item

    async def finished(self) -> None:
        """Wait until the synthesis has ended (done, failed or cancelled)."""
        await asyncio.wait({self._task})

    def cancel(self) -> None:
        """Stop synthesizing (the sentence will not be spoken)."""
        self._task.cancel()


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
        self.ctx = ToolContext(db=engine.db, business_db=engine.business_db, settings=engine.settings,
                               conversation_id=conversation_id, services=engine.services, caller=caller,
                               child_id=child_id)
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
        notes = failover.collect()
        try:
            transcript = await self.engine.stt.transcribe(pcm16, sample_rate, self.persona.domain_words)
        except ProviderError as exc:
            log.warning("STT failed: %s", exc)
            return TurnError("stt", str(exc))
        return Transcribed(transcript.text, transcript.elapsed_ms, notes)

    async def say(self, text: str, timeline: Timeline | None = None, start: int = 0,
                  filler: bool = False, audio: _Synthesis | None = None) -> AsyncIterator[TurnEvent]:
        """One sentence (a greeting, an apology, a reply's) as events; a TTS failure stays silent.

        ``audio`` is the sentence's synthesis when it was started ahead (None: synthesize now).
        """
        yield Sentence(start, text, filler)
        tts = self.engine.tts
        try:
            async for chunk in (audio.chunks() if audio is not None else tts.stream(text, self._voice())):
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
        notes = failover.collect()  # stages that fail over while answering (LLM, TTS)
        await self.ensure_conversation(title=user_text)  # tools (send_sms) link what they store to it
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> None:
            splitter = SentenceSplitter(first_clause_chars=FIRST_CLAUSE_CHARS if speak else None)
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

        # Sentences go to TTS as soon as they exist, up to TTS_LOOKAHEAD ahead of the one being
        # spoken, so the next one's audio is ready when this one ends.
        ahead: asyncio.Queue[Any] = asyncio.Queue()
        slots = asyncio.Semaphore(TTS_LOOKAHEAD + 1)  # the sentence being spoken and those ahead
        started: list[_Synthesis] = []

        def drop(synthesis: _Synthesis) -> None:  # a started sentence that will not be spoken
            synthesis.cancel()
            slots.release()

        async def synthesize_ahead() -> None:
            while (item := await queue.get()) is not None:
                if item[0] == "say" and speak:
                    await slots.acquire()
                    started.append(synthesis := _Synthesis(self.engine.tts, item[1], self._voice()))
                    await ahead.put((*item, synthesis))
                    # One synthesis at a time per turn: other calls' first sentences queue for the
                    # one TTS thread between this turn's sentences, not behind all of them.
                    await synthesis.finished()
                    continue
                await ahead.put(item)
            await ahead.put(None)

        result = TurnResult(user_text=user_text, reply="", conversation_id=self.conversation_id)
        producer = asyncio.create_task(produce())
        synthesizer = asyncio.create_task(synthesize_ahead())
        index = 0
        tts_failed = False
        done = ReplyDone(reply="")
        settings = self.engine.settings
        capped = False  # a phone reply stops at the cap; the LLM's remaining sentences are not spoken
        spoken_chars = 0
        try:
            while (item := await ahead.get()) is not None:
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
                    result.usage.llm_input_tokens += done.input_tokens
                    result.usage.llm_output_tokens += done.output_tokens
                    continue
                text, filler = item[1], item[2]
                synthesis: _Synthesis | None = item[3] if len(item) > 3 else None
                skip = capped
                if not capped and self.channel == "phone" and not filler:
                    if spoken_chars + len(text) > settings.forge_phone_reply_max_chars:
                        capped = True
                        skip = bool(spoken_chars)
                        if not skip:  # a first sentence over the cap is cut, and synthesized as cut
                            text = cut_at_words(text, settings.forge_phone_reply_max_chars)
                            if synthesis is not None:
                                drop(synthesis)
                                synthesis = None
                    if not skip:
                        spoken_chars += len(text) + 1
                if synthesis is not None and (skip or tts_failed):
                    drop(synthesis)
                    synthesis = None
                if skip:
                    continue
                if not filler:
                    timeline.mark("first_sentence")
                async for event in self._speak(text, index, filler, timeline, speak and not tts_failed,
                                               result.usage, synthesis):
                    if isinstance(event, TurnError):
                        tts_failed = True
                        result.error = result.error or event.message
                    yield event
                if synthesis is not None:
                    slots.release()  # spoken: one more sentence may start synthesizing
                result.sentences.append(text)
                index += 1
                if self.channel == "phone" and result.usage.tts_audio_s >= settings.forge_phone_reply_max_s:
                    capped = True
            if capped:
                log.info("phone reply capped at %d characters / %.0f s", settings.forge_phone_reply_max_chars,
                         settings.forge_phone_reply_max_s)
                self.memory.settle(" ".join(result.sentences))  # the agent remembers what was said
            for title, pcm, rate in list(self.ctx.playback):  # a recitation a tool asked for
                async for event in self._play_recording(title, pcm, rate, index, speak):
                    yield event
                result.sentences.append(f"({title})")
                index += 1
            if done.error:
                stage = "agent" if done.error.startswith("agent failed") else "llm"
                yield TurnError(stage, done.error)
                async for event in self._speak(APOLOGIES["llm"], index, False, timeline, speak and not tts_failed,
                                               result.usage):
                    yield event
                result.sentences.append(APOLOGIES["llm"])
                result.error = done.error
        finally:
            producer.cancel()
            synthesizer.cancel()
            for synthesis in started:
                synthesis.cancel()
        timeline.mark("turn_done")
        result.failover = list(notes)
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

    async def _speak(self, text: str, index: int, filler: bool, timeline: Timeline, speak: bool,
                     usage: Usage | None = None, audio: _Synthesis | None = None) -> AsyncIterator[TurnEvent]:
        if not speak:
            yield Sentence(index, text, filler)
            yield SentenceEnd(index)
            return
        if usage is not None:
            usage.tts_characters += len(text)
        async for event in self.say(text, timeline, start=index, filler=filler, audio=audio):
            if usage is not None and isinstance(event, AudioChunk):
                usage.tts_audio_s += len(event.pcm16) / 2 / event.sample_rate
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
        stt_audio_s = len(audio[0]) / 2 / audio[1] if audio is not None else 0.0
        if audio is not None:
            heard = await self.transcribe(*audio)
            timeline.mark("stt_final")
            if isinstance(heard, TurnError):
                yield heard
                result = TurnResult(user_text="", reply=APOLOGIES["stt"], error=heard.message,
                                    sentences=[APOLOGIES["stt"]], timings_ms=timeline.marks,
                                    usage=Usage(stt_audio_s=stt_audio_s))
                if speak:
                    async for event in self.say(APOLOGIES["stt"], timeline):
                        yield event
                yield TurnDone(result)
                return
            timeline.set("stt_ms", heard.stt_ms)
            yield heard
            if not heard.text:
                result = TurnResult(user_text="", reply=NO_SPEECH_REPLY, timings_ms=timeline.marks,
                                    usage=Usage(stt_audio_s=stt_audio_s))
                if speak:
                    async for event in self.say(NO_SPEECH_REPLY, timeline):
                        yield event
                yield TurnDone(result)
                return
            text = heard.text
        async for event in self.respond(text or "", timeline, speak=speak, first_token_s=first_token_s):
            if isinstance(event, TurnDone):
                event.result.usage.stt_audio_s += stt_audio_s
                event.result.failover[:0] = heard.failover if audio is not None else []
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

    async def wav_turn(self, data: bytes, speak: bool = True) -> TurnResult:
        """One stored turn from an audio file's bytes (WAV, MP3, OGG/Opus, WebM, M4A, FLAC).

        Raises:
            AudioFormatError: empty, damaged, unsupported, or too long; nothing is stored.
        """
        pcm, rate = await asyncio.to_thread(decode_audio, data, self.engine.settings.forge_max_turn_s)
        return await self.voice_turn(pcm, rate, speak=speak)

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
        if result.cost is None:
            result.cost = self.engine.turn_cost(result.usage).to_json()
        providers: dict[str, Any] = dict(self.engine.provider_labels())
        if result.failover:
            providers["failover"] = result.failover  # which stage the embedded provider served, and why
        record = conversations.NewTurn(
            user_text=result.user_text, assistant_text=result.reply, tool_calls=result.tool_calls,
            timings_ms=dict(result.timings_ms), error=result.error, interrupted=interrupted,
            providers=providers, user_audio=user_audio, reply_audio=reply_audio,
            usage=result.usage.to_json(), cost_usd=result.cost.get("total", 0.0),
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


__all__ = [
    "APOLOGIES", "NO_SPEECH_REPLY", "AudioChunk", "Sentence", "SentenceEnd", "Timeline", "ToolCallFinished",
    "ToolCallStarted", "Transcribed", "TurnDone", "TurnError", "TurnEvent", "TurnPipeline", "TurnResult",
    "tool_call_dict",
]
