"""What one turn produces: its stage clock and the typed events the pipeline yields to the loop.

Events, in order: :class:`Transcribed` (the user's words), :class:`ToolCallStarted` /
:class:`ToolCallFinished`, :class:`Sentence` (text, before its audio), :class:`AudioChunk`
(PCM16 at the TTS rate), :class:`SentenceEnd`, :class:`TurnError` (a stage failed; an apology
follows as ordinary sentences), and last :class:`TurnDone` with the turn's
:class:`voiceforge.records.TurnRecord`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from voiceforge.agent import ToolFinished
from voiceforge.records import TurnRecord


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
    failover: list[dict[str, str]] = field(default_factory=list)


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
class TurnDone:
    """The turn's generation is over; ``record`` holds everything it produced."""

    record: TurnRecord


TurnEvent = Transcribed | ToolCallStarted | ToolCallFinished | Sentence | AudioChunk | SentenceEnd | TurnError | TurnDone


def tool_call_dict(event: ToolFinished) -> dict[str, Any]:
    """A finished tool call as stored and reported: name, arguments, result, error, duration_ms."""
    return {
        "name": event.call.name, "arguments": event.result.arguments, "result": event.result.result,
        "error": event.result.error, "duration_ms": round(event.result.duration_ms, 1),
    }
