"""What one turn produces: its stage clock, its typed events, its result.

Events, in order: :class:`Transcribed` (the user's words), :class:`ToolCallStarted` /
:class:`ToolCallFinished`, :class:`Sentence` (text, before its audio), :class:`AudioChunk`
(PCM16 at the TTS rate), :class:`SentenceEnd`, :class:`TurnError` (a stage failed; an apology
follows as ordinary sentences), and last :class:`TurnDone`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from voiceforge.agent import ToolFinished
from voiceforge.audio.codecs import wrap_wav
from voiceforge.cost import Usage


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
        usage: what the providers consumed (audio seconds, tokens, characters).
        cost: USD per stage and in total, from the price table (set when the turn is recorded).
        failover: stages served by the embedded provider instead of the configured one, with why.
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
    usage: Usage = field(default_factory=Usage)
    cost: dict[str, Any] | None = None
    failover: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (audio bytes omitted; ``audio_path`` where audio was written)."""
        return {
            "transcript": self.user_text, "reply": self.reply, "tool_calls": self.tool_calls,
            "timings_ms": self.timings_ms, "error": self.error, "ended": self.ended,
            "interrupted": self.interrupted, "turn_id": self.turn_id, "conversation_id": self.conversation_id,
            "audio_path": self.audio_path, "usage": self.usage.to_json(), "cost": self.cost,
            "failover": self.failover,
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
