"""One turn of a live conversation, as the loop tracks it from the caller's utterance to the stored reply."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from voiceforge.records import TurnRecord
from voiceforge.turn.events import Timeline


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

    @property
    def complete(self) -> bool:
        """Generated, and every sentence confirmed played."""
        return self.done and set(self.sentences) <= self.played
