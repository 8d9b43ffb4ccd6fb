"""One turn of a live conversation, as the loop tracks it from the caller's utterance to the stored reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voiceforge.conversation.playout import Playout
from voiceforge.records import TurnRecord
from voiceforge.transport import Notification, SentenceStarted, ToolCalled, ToolReturned, TurnFailed
from voiceforge.turn.events import (
    AudioChunk,
    Sentence,
    SentenceEnd,
    Timeline,
    ToolCallFinished,
    ToolCallStarted,
    TurnDone,
    TurnError,
)


@dataclass
class LiveTurn:
    """One turn of a live conversation.

    Attributes:
        generation: its number; its sentences play as segments ``"<generation>:<index>"``.
        timeline: stage clock whose zero is the last voiced frame of the user's speech.
        inputs: what the user said, in order: STT tasks (or finished text) per utterance.
        user_audio: the utterances' PCM16 at the analysis rate (kept for recordings).
        typed: some input was text, not speech.
        store: False for the greeting and for noise that held no words.
        after: the turn before it, which it waits for (a queued turn).
        task: the task thinking and speaking it.
        memory_mark: the agent's memory before it thought (rolled back if nobody heard it).
        sentences / played: sentence texts by index, and the indices whose playback came back.
        audio_started / tools_started: its first frame was sent / a tool ran.
        record: the pipeline's record, once the reply is generated.
        done: generation is over; finished: settled in memory and queued for storage.
        hang_up_after: the transport hangs up once this turn has played (a goodbye).
    """

    generation: int
    timeline: Timeline
    inputs: list[asyncio.Future] = field(default_factory=list)
    user_audio: bytearray = field(default_factory=bytearray)
    typed: bool = False
    store: bool = True
    after: asyncio.Task | None = None
    task: asyncio.Task | None = None
    memory_mark: tuple[int, int] | None = None
    sentences: dict[int, str] = field(default_factory=dict)
    played: set[int] = field(default_factory=set)
    audio_started: bool = False
    tools_started: bool = False
    record: TurnRecord | None = None
    user_text: str = ""
    error: str | None = None
    done: bool = False
    finished: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reply_pcm: bytearray = field(default_factory=bytearray)
    reply_rate: int | None = None
    failover: list[dict[str, str]] = field(default_factory=list)
    hang_up_after: bool = False

    @property
    def mergeable(self) -> bool:
        """Nothing of it has been heard and no tool has run: it can be redone with more input."""
        return not (self.audio_started or self.tools_started or self.done or self.finished)

    def segment(self, index: int) -> str:
        """The playout segment of sentence ``index``."""
        return f"{self.generation}:{index}"

    def heard(self) -> list[str]:
        """The sentences confirmed played, in order, up to the first one that was not."""
        out = []
        for i in sorted(self.sentences):
            if i not in self.played:
                break
            out.append(self.sentences[i])
        return out

    async def play(self, events: AsyncIterator[Any], playout: Playout,
                   notify: Callable[[Notification], Awaitable[None]], keep_audio: bool = False) -> None:
        """Speak the pipeline's ``events`` for this turn: audio to the playout, a segment per sentence.

        Sentences, tool calls and stage failures are announced through ``notify``; the turn keeps
        its sentences, tool calls, error and record. ``keep_audio`` keeps the reply's PCM16 (recordings).

        Raises:
            Whatever the pipeline's events raise.
        """
        async for event in events:
            if isinstance(event, AudioChunk):
                if keep_audio:
                    self.reply_pcm += event.pcm16
                    self.reply_rate = event.sample_rate
                await playout.write(self.segment(event.index), event.pcm16, event.sample_rate)
            elif isinstance(event, SentenceEnd):
                if event.index in self.sentences:
                    await playout.end(self.segment(event.index))
            elif isinstance(event, Sentence):
                self.sentences[event.index] = event.text
                await notify(SentenceStarted(event.text, event.index, event.filler, self.generation))
            elif isinstance(event, ToolCallStarted):
                self.tools_started = True
                await notify(ToolCalled(event.name, event.arguments, self.generation))
            elif isinstance(event, ToolCallFinished):
                self.tool_calls.append(event.call)
                await notify(ToolReturned.of(event.call, self.generation))
            elif isinstance(event, TurnError):
                self.error = self.error or event.message
                await notify(TurnFailed(event.stage, event.message, self.generation))
            elif isinstance(event, TurnDone):
                self.record = event.record

    def to_record(self, conversation_id: int | None, rate: int) -> TurnRecord:
        """The turn as the one turn record (before the pipeline settles what was heard).

        Args:
            conversation_id: the stored conversation's id.
            rate: the rate (Hz) of ``user_audio``.
        """
        record = self.record or TurnRecord(user_text=self.user_text, reply="", tool_calls=self.tool_calls)
        record.user_text = self.user_text
        record.conversation_id = conversation_id
        record.error = record.error or self.error
        record.timings_ms = dict(self.timeline.marks)
        record.usage.stt_audio_s = len(self.user_audio) / 2 / rate
        record.failover[:0] = self.failover
        if self.record is None and self.sentences:
            record.sentences = [self.sentences[i] for i in sorted(self.sentences)]
            record.reply = " ".join(record.sentences)
        if self.reply_pcm:
            record.audio, record.sample_rate = bytes(self.reply_pcm), self.reply_rate
        return record

    @property
    def complete(self) -> bool:
        """Generated, and every sentence confirmed played."""
        return self.done and set(self.sentences) <= self.played
