"""The one turn record: what a turn produced, as the pipeline builds it, the loop reports it and the store writes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voiceforge.audio.codecs import wrap_wav
from voiceforge.cost import Usage

STAGE_MARKS = [("stt_final", "STT"), ("llm_first_token", "LLM first token"), ("tool_end", "tool"),
               ("first_sentence", "first sentence"), ("tts_first_audio", "TTS first audio"),
               ("first_audio_delta", "Realtime first audio"), ("first_frame_sent", "first audio sent"),
               ("playback_confirmed", "playback confirmed"), ("turn_done", "turn done")]
"""Timeline marks (ms after the end of the user's speech) in the order a turn reaches them, and
the stage that ends at each (the waterfall's bars, the traces' spans, the metrics' stages)."""
FIRST_AUDIO_MARKS = ("first_frame_sent", "first_audio_delta", "tts_first_audio")
"""Which mark is "the agent starts speaking", best first (sent on the wire > Realtime delta > synthesised)."""


def first_audio_ms(timings: dict[str, float]) -> float | None:
    """Voice-to-voice of a turn: from the last voiced frame to the first agent audio, ms (None: not spoken)."""
    return next((float(timings[m]) for m in FIRST_AUDIO_MARKS if m in timings), None)


def stage_spans(timings: dict[str, float]) -> list[tuple[str, float, float]]:
    """The turn's stages as (label, start ms, end ms), ms after the end of the user's speech.

    Each stage runs from the latest earlier mark to its own; the tool stage from ``tool_start``
    to ``tool_end``; the end of turn (the silence waited for, label "endpointing") comes before zero.
    """
    out: list[tuple[str, float, float]] = []
    if timings.get("endpointing_ms"):
        out.append(("endpointing", -float(timings["endpointing_ms"]), 0.0))
    reached = 0.0
    for mark, label in STAGE_MARKS:
        if mark not in timings:
            continue
        end = float(timings[mark])
        start = float(timings.get("tool_start", reached)) if mark == "tool_end" else reached
        out.append((label, min(start, end), end))
        reached = max(reached, end)
    return out


@dataclass
class TurnRecord:
    """One finished turn.

    Attributes:
        user_text: the transcript or typed text; "" when nothing was understood.
        reply: what the user heard: every sentence spoken (fillers and apologies included) or,
            on an interrupted turn, only the sentences whose playback was confirmed; the reply
            text when not spoken.
        tool_calls: dicts with name, arguments, result, error, duration_ms, in call order.
        timings_ms: stage → ms after the end of the user's speech (see ``Timeline``).
        error: the stage failure the turn apologised for, if any.
        ended: end_call ran.
        interrupted: the user barged in before the reply finished.
        turn_id / conversation_id: set once stored.
        audio / sample_rate: the reply's PCM16 mono at ``sample_rate`` Hz, when synthesized.
        audio_path: where the reply's audio was written, if it was.
        sentences: the reply's sentences in order (before any barge-in cut them).
        usage: what the providers consumed (audio seconds, tokens, characters).
        cost: USD per stage and in total (``voiceforge.cost.Cost.to_json()``), set when the
            turn is recorded.
        failover: stages served by the embedded provider instead of the configured one, with why.
        providers: labels of the STT, LLM and TTS that served the turn (and ``failover``).
        user_audio: (PCM16 mono, Hz) of the utterance, kept when recordings are on.
        answered: False for the record stored as soon as the caller's words are transcribed,
            before any reply (so a crash mid-reply loses nothing the caller said).
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
    providers: dict[str, Any] = field(default_factory=dict)
    user_audio: tuple[bytes, int] | None = None
    answered: bool = True

    @property
    def cost_usd(self) -> float:
        """The turn's total price in US dollars (0 before it is priced)."""
        return float((self.cost or {}).get("total", 0.0))

    @property
    def reply_audio(self) -> tuple[bytes, int] | None:
        """(PCM16 mono, Hz) of the reply, when it was synthesized."""
        return (self.audio, self.sample_rate) if self.audio and self.sample_rate else None

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
