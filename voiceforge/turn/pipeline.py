"""The one turn pipeline: STT → agent (LLM + tools, fillers) → sentence splitter → streaming TTS.

Every channel runs its turns here: text and WAV turns (CLI, app, REST) through
:meth:`TurnPipeline.complete`, live ones (phone, browser, device, Realtime server) through the
conversation loop, which calls :meth:`TurnPipeline.transcribe` and :meth:`TurnPipeline.respond`
and plays the events. A pipeline belongs to one conversation: it keeps the agent's memory
between turns and stores each turn through :meth:`TurnPipeline.save`, the one place a turn is
written. It uses only what its :class:`voiceforge.turn.deps.TurnDeps` hands it.

Timings are milliseconds after the end of the user's speech (``Timeline``): for a live turn
that is the last voiced frame; for a recorded clip, the moment the clip was handed over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from voiceforge import telemetry
from voiceforge.agent import (
    Filler,
    ReplyDone,
    SentenceSplitter,
    TextDelta,
    ToolFinished,
    ToolStarted,
)
from voiceforge.audio.decode import decode_audio
from voiceforge.cost import Usage
from voiceforge.providers import ProviderError, failover
from voiceforge.records import TurnRecord
from voiceforge.store import conversations
from voiceforge.turn.events import (
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
    tool_call_dict,
)
from voiceforge.turn.reply_cap import ReplyCap
from voiceforge.turn.state import ConversationState
from voiceforge.turn.synthesis import LookAhead, SentenceSynthesis, Speak

log = logging.getLogger(__name__)

NO_SPEECH_REPLY = "Sorry, I didn't catch that. Could you say it again?"
"""Said to a recorded clip with no words in it (a live loop stays silent instead)."""

APOLOGIES = {
    "stt": "Sorry, I couldn't hear that. Could you say it again?",
    "llm": "Sorry, I'm having trouble answering right now. Please try again in a moment.",
    "wait": "Sorry for the wait.",
}
"""The one apology per failed stage, and for a wait on an LLM that failed over (said before the
embedded brain's answer when the caller waited longer than ``FORGE_FILLER_AFTER_MS`` for it);
the failure itself is stored as the turn's error."""

FIRST_CLAUSE_CHARS = 20
"""A reply's first piece of speech may end at a comma, semicolon or colon this many characters
in (see :class:`SentenceSplitter`), so its first audio is not held up by a long sentence."""


class TurnPipeline(ConversationState):
    """One conversation's turn pipeline: its agent state, the turn's stages and the storage of each turn.

    The state (memory, tool context, a client's overrides) and its verbs are
    :class:`ConversationState`'s, and so are the arguments; the stages are STT and the agent's
    reply spoken with look-ahead.
    """

    # --- conversation -------------------------------------------------------------------------
    def _refresh_persona(self) -> None:
        # Re-read the persona so that personalization edits apply from the next turn on; a
        # pipeline pinned to one version (an eval of an older version) keeps it.
        if self.pinned_version is not None:
            return
        try:
            self.persona = self._agent.persona = self.deps.persona(self.persona.id)
        except Exception:  # noqa: BLE001 - a file edited into a broken state keeps the last good one
            log.warning("persona %s could not be re-read; keeping the loaded one", self.persona.id)

    # --- stages -------------------------------------------------------------------------------
    async def transcribe(self, pcm16: bytes, sample_rate: int, prompt: bool = True) -> Transcribed | TurnError:
        """Speech to text for one utterance (PCM16 mono at ``sample_rate`` Hz); never raises.

        ``prompt`` False leaves out the persona's domain words (see :meth:`STT.transcribe`).
        """
        notes = failover.collect()
        try:
            transcript = await self.deps.providers.stt.transcribe(pcm16, sample_rate, self.persona.domain_words,
                                                                  prompt=prompt)
        except ProviderError as exc:
            log.warning("STT failed: %s", exc)
            return TurnError("stt", str(exc))
        return Transcribed(transcript.text, transcript.elapsed_ms, notes)

    async def say(self, text: str, timeline: Timeline | None = None, start: int = 0,
                  filler: bool = False, audio: SentenceSynthesis | None = None) -> AsyncIterator[TurnEvent]:
        """One sentence (a greeting, an apology, a reply's) as events; a TTS failure stays silent.

        ``audio`` is the sentence's synthesis when it was started ahead (None: synthesize now).
        """
        yield Sentence(start, text, filler)
        tts = self.deps.providers.tts
        voice = self._voice()
        cached = self.deps.phrases.get(tts, voice, text) if audio is None else None
        if cached is not None:  # synthesized ahead (a greeting, a reprompt, an apology)
            if timeline is not None:
                timeline.mark("tts_first_audio")
            yield AudioChunk(start, cached[0], cached[1])
            yield SentenceEnd(start)
            return
        try:
            async for chunk in (audio.chunks() if audio is not None else tts.stream(text, voice)):
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
        return self.persona.voice.get(self.deps.providers.tts.provider_id) if self.persona.voice else None

    async def _agent_reply(self, user_text: str, timeline: Timeline, speak: bool, first_token_s: float | None,
                           out: asyncio.Queue[Any]) -> None:
        """The agent's reply as :class:`Speak` items and its tool and done events, then None (a task body)."""
        splitter = SentenceSplitter(first_clause_chars=FIRST_CLAUSE_CHARS if speak else None)
        waited_too_long = self.settings.filler_after_ms / 1000 if speak else float("inf")
        apologised = False
        try:
            async for event in self._agent.respond(user_text, first_token_s=first_token_s):
                if not apologised and failover.waited_s("llm") > waited_too_long:
                    apologised = True  # the caller heard nothing while the configured LLM hung
                    await out.put(Speak(APOLOGIES["wait"], filler=True))
                if isinstance(event, TextDelta):
                    timeline.mark("llm_first_token")
                    for sentence in splitter.push(event.text):
                        await out.put(Speak(sentence))
                elif isinstance(event, Filler):
                    if speak:  # a filler fills silence on a line; a texted or typed reply has none to fill
                        await out.put(Speak(event.text, filler=True))
                elif isinstance(event, ReplyDone):
                    for sentence in splitter.flush():
                        await out.put(Speak(sentence))
                    await out.put(event)
                else:
                    await out.put(event)
        except Exception as exc:  # noqa: BLE001 - reported as the turn's error, with the apology
            log.exception("agent failed")
            await out.put(ReplyDone(reply="", error=f"agent failed: {type(exc).__name__}"))
        finally:
            await out.put(None)

    async def respond(self, user_text: str, timeline: Timeline, speak: bool = True,
                      first_token_s: float | None = None) -> AsyncIterator[TurnEvent]:
        """Run the agent on ``user_text`` and speak its reply sentence by sentence.

        The LLM keeps generating while earlier sentences are synthesized (:class:`LookAhead`).
        A failed LLM ends with the apology; a failed TTS stops the audio, not the turn. A phone
        reply stops at its cap (:class:`ReplyCap`). Marks ``llm_first_token``, ``tool_start``,
        ``tool_end``, ``first_sentence``, ``tts_first_audio`` and ``turn_done`` on ``timeline``.

        Args:
            user_text: what the user said.
            timeline: the turn's stage clock.
            speak: synthesize audio (False for text chat).
            first_token_s: the LLM's first-token budget (phone calls); None for no budget.

        Yields:
            Tool, sentence, audio and error events, then one :class:`TurnDone`.
        """
        self._refresh_persona()
        self._ctx.playback.clear()
        notes = failover.collect()  # stages that fail over while answering (LLM, TTS)
        await self.ensure_conversation(title=user_text)  # tools (send_sms) link what they store to it
        reply: asyncio.Queue[Any] = asyncio.Queue()
        ahead: asyncio.Queue[Any] = asyncio.Queue()
        lookahead = LookAhead(self.deps.providers.tts, self._voice(), enabled=speak)
        cap = ReplyCap(self.settings.phone_reply_max_chars, self.settings.phone_reply_max_s,
                       active=self.channel == "phone")
        record = TurnRecord(user_text=user_text, reply="", conversation_id=self.conversation_id)
        tasks = [asyncio.create_task(self._agent_reply(user_text, timeline, speak, first_token_s, reply)),
                 asyncio.create_task(lookahead.run(reply, ahead))]
        done = ReplyDone(reply="")
        tts_failed = False
        index = 0
        try:
            while (item := await ahead.get()) is not None:
                if isinstance(item, ToolStarted):
                    timeline.mark("tool_start")
                    yield ToolCallStarted(item.call.name, dict(item.call.arguments))
                elif isinstance(item, ToolFinished):
                    timeline.mark("tool_end", once=False)
                    call = tool_call_dict(item)
                    record.tool_calls.append(call)
                    yield ToolCallFinished(call)
                elif isinstance(item, ReplyDone):
                    done = item
                    record.usage.llm_input_tokens += done.input_tokens
                    record.usage.llm_output_tokens += done.output_tokens
                elif isinstance(item, Speak):
                    admitted = cap.admit(item.text, item.filler)
                    synthesis = item.synthesis
                    if admitted.text is None or admitted.cut or tts_failed:
                        lookahead.drop(synthesis)
                        synthesis = None
                    if admitted.text is None:
                        continue
                    if not item.filler:
                        timeline.mark("first_sentence")
                    async for event in self._speak(admitted.text, index, item.filler, timeline,
                                                   speak and not tts_failed, record.usage, synthesis):
                        if isinstance(event, TurnError):
                            tts_failed = True
                            record.error = record.error or event.message
                        yield event
                    lookahead.spoken(synthesis)
                    record.sentences.append(admitted.text)
                    index += 1
                    cap.spoke(record.usage.tts_audio_s)
            if cap.capped:
                log.info("phone reply capped at %d characters / %.0f s", cap.max_chars, cap.max_s)
                self.settle(" ".join(record.sentences))  # the agent remembers what was said
            for title, pcm, rate in list(self._ctx.playback):  # a recitation a tool asked for
                async for event in self._play_recording(title, pcm, rate, index, speak):
                    yield event
                record.sentences.append(f"({title})")
                index += 1
            if done.error:
                stage = "agent" if done.error.startswith("agent failed") else "llm"
                yield TurnError(stage, done.error)
                async for event in self._speak(APOLOGIES["llm"], index, False, timeline, speak and not tts_failed,
                                               record.usage):
                    yield event
                record.sentences.append(APOLOGIES["llm"])
                record.error = done.error
        finally:
            for task in tasks:
                task.cancel()
            lookahead.close()
        timeline.mark("turn_done")
        record.failover = list(notes)
        record.reply = " ".join(record.sentences) if record.sentences else done.reply
        record.ended = done.ended
        record.timings_ms = timeline.marks
        yield TurnDone(record)

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
                     usage: Usage | None = None, audio: SentenceSynthesis | None = None) -> AsyncIterator[TurnEvent]:
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
        heard: Transcribed | TurnError | None = None
        if audio is not None:
            heard = await self.transcribe(*audio)
            timeline.mark("stt_final")
            if isinstance(heard, TurnError) or not heard.text:
                yield heard
                failed = isinstance(heard, TurnError)
                said = APOLOGIES["stt"] if failed else NO_SPEECH_REPLY
                if not failed:
                    timeline.set("stt_ms", heard.stt_ms)
                record = TurnRecord(user_text="", reply=said, error=heard.message if failed else None,
                                    sentences=[said] if failed else [], timings_ms=timeline.marks,
                                    usage=Usage(stt_audio_s=stt_audio_s))
                if speak:
                    async for event in self.say(said, timeline):
                        yield event
                yield TurnDone(record)
                return
            timeline.set("stt_ms", heard.stt_ms)
            yield heard
            text = heard.text
        async for event in self.respond(text or "", timeline, speak=speak, first_token_s=first_token_s):
            if isinstance(event, TurnDone):
                event.record.usage.stt_audio_s += stt_audio_s
                event.record.failover[:0] = heard.failover if isinstance(heard, Transcribed) else []
            yield event

    async def complete(self, *, text: str | None = None, audio: tuple[bytes, int] | None = None,
                       speak: bool = True) -> TurnRecord:
        """Run a whole turn, collect its audio and store it (a clip with no words is not stored).

        Returns:
            The TurnRecord with ``audio`` (PCM16 at ``sample_rate``) when spoken, and
            ``turn_id`` once stored.
        """
        pcm = bytearray()
        rate = None
        record = TurnRecord(user_text="", reply="")
        async for event in self.run(text=text, audio=audio, speak=speak):
            if isinstance(event, AudioChunk):
                pcm += event.pcm16
                rate = event.sample_rate
            elif isinstance(event, TurnDone):
                record = event.record
        record.audio, record.sample_rate = (bytes(pcm), rate) if pcm else (None, None)
        if record.user_text or record.error:
            await self.store(record, user_audio=audio)
        record.conversation_id = self.conversation_id
        return record

    async def text_turn(self, user_text: str, speak: bool = False) -> TurnRecord:
        """One stored turn from typed text; with ``speak`` the reply audio too."""
        return await self.complete(text=user_text, speak=speak)

    async def voice_turn(self, pcm16: bytes, sample_rate: int, speak: bool = True) -> TurnRecord:
        """One stored turn from a recorded utterance (PCM16 mono at ``sample_rate`` Hz)."""
        return await self.complete(audio=(pcm16, sample_rate), speak=speak)

    async def wav_turn(self, data: bytes, speak: bool = True) -> TurnRecord:
        """One stored turn from an audio file's bytes (WAV, MP3, OGG/Opus, WebM, M4A, FLAC).

        Raises:
            AudioFormatError: empty, damaged, unsupported, or too long; nothing is stored.
        """
        pcm, rate = await asyncio.to_thread(decode_audio, data, self.settings.max_turn_s)
        return await self.voice_turn(pcm, rate, speak=speak)

    # --- storage ------------------------------------------------------------------------------
    def record(self, record: TurnRecord, heard: list[str] | None = None, interrupted: bool = False,
               user_audio: tuple[bytes, int] | None = None) -> TurnRecord:
        """Close a turn in memory and make it ready to store (call :meth:`save` to write it).

        Runs on the event loop, before any later turn thinks: when a barge-in cut the reply
        short, or an apology replaced it, the agent's memory becomes exactly what was said.

        Args:
            record: the turn (its ``TurnDone.record``).
            heard: the sentences the user heard, when a barge-in cut the reply short; the stored
                reply becomes exactly these.
            interrupted: the user barged in.
            user_audio: the utterance (PCM16, Hz), kept when ``ENABLE_RECORDINGS`` is on.

        Returns:
            ``record``, with its reply, cost, providers and audio set, and ``error`` naming a
            stage that failed over in this turn when nothing else went wrong.
        """
        if heard is not None:
            record.reply = " ".join(heard)
        record.interrupted = interrupted
        if interrupted or record.error:
            self.settle(" ".join(heard if heard is not None else record.sentences))
        if record.cost is None:
            record.cost = self.deps.price(record.usage).to_json()
        providers: dict[str, Any] = dict(self.deps.providers.labels())
        if record.failover:
            providers["failover"] = record.failover  # which stage the embedded provider served, and why
            record.error = record.error or failover.failures(record.failover)  # what failed, for turns.error
        record.providers = providers
        record.user_audio = user_audio if self.settings.enable_recordings else None  # the caller's voice: opt-in
        telemetry.observe_turn(record, self.channel, self.persona.id)
        return record

    async def save(self, record: TurnRecord) -> int:
        """Write a recorded turn (the one place a turn is stored); returns its id.

        The database call runs in a worker thread, so a slow or locked database holds up only
        this write, never the event loop. ``record`` gets the turn and conversation ids. Returns
        0 and writes nothing when the pipeline does not persist (no consent).
        """
        if not self.persist:
            return 0
        conversation_id = await self.ensure_conversation(title=record.user_text)
        summary = self.summary or None
        turn_id = await asyncio.to_thread(conversations.save_turn, self.deps.db, conversation_id, record,
                                          self.settings.recordings_dir, summary)
        record.turn_id, record.conversation_id = turn_id, conversation_id
        return turn_id

    async def store(self, record: TurnRecord, heard: list[str] | None = None, interrupted: bool = False,
                    user_audio: tuple[bytes, int] | None = None) -> int:
        """:meth:`record` then :meth:`save`: store one turn now; returns its id (0: not persisted)."""
        return await self.save(self.record(record, heard, interrupted, user_audio))
