"""One exchange over a Realtime session, and how it is stored like any other conversation's turn."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from voiceforge.audio.codecs import ulaw_to_pcm16
from voiceforge.cost import Usage
from voiceforge.records import TurnRecord
from voiceforge.turn import TurnPipeline

log = logging.getLogger("forge.realtime")
PCM_RATE = 24000
"""``audio/pcm`` in the Realtime API is 24 kHz PCM16 mono (OpenAI Realtime docs)."""


@dataclass
class RealtimeTurn:
    """One exchange over Realtime: what was said and heard, tools, timings (ms after speech end).

    ``audio`` is the reply as the service sent it: PCM16 at 24 kHz, or μ-law at 8 kHz when
    ``audio_format`` is "audio/pcmu".
    """

    user_text: str = ""
    reply: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    audio_format: str = "audio/pcm"
    interrupted: bool = False
    error: str | None = None
    response_id: str | None = None
    item_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: dict[str, float] | None = None
    stored: TurnRecord | None = None

    @property
    def has_content(self) -> bool:
        """Something was said, answered or done."""
        return bool(self.user_text or self.reply or self.tool_calls)

    def pcm16(self, data: bytes) -> tuple[bytes, int]:
        """Audio in this turn's format as (PCM16 mono, Hz)."""
        return (ulaw_to_pcm16(data), 8000) if self.audio_format == "audio/pcmu" else (data, PCM_RATE)

    def record(self, price_usd: float) -> TurnRecord:
        """The one turn record, priced at ``price_usd`` (the Realtime tokens' cost)."""
        record = TurnRecord(user_text=self.user_text, reply=self.reply, tool_calls=self.tool_calls,
                            timings_ms=self.timings_ms, error=self.error, sentences=[self.reply],
                            interrupted=self.interrupted,
                            usage=Usage(realtime_input_tokens=self.input_tokens, realtime_output_tokens=self.output_tokens))
        record.cost = self.cost = {"realtime": round(price_usd, 6), "total": round(price_usd, 6)}
        return record


async def store_turn(pipeline: TurnPipeline, turn: RealtimeTurn, price_usd: float,
                     user_audio: bytes | None) -> TurnRecord:
    """Remember ``turn`` in the conversation's memory and store it; a failed write is logged.

    Args:
        pipeline: the conversation's pipeline.
        turn: the exchange, its timings set.
        price_usd: what its tokens cost.
        user_audio: what the user sent this turn (in the turn's format), when recordings are on.

    Returns:
        The stored record (``turn_id`` set when the write succeeded).
    """
    record = turn.stored = turn.record(price_usd)
    if pipeline.settings.keep_reply_audio and turn.audio:
        record.audio, record.sample_rate = turn.pcm16(bytes(turn.audio))
    pipeline.remember("user", turn.user_text)
    pipeline.remember("assistant", turn.reply)
    try:
        await pipeline.store(record, interrupted=turn.interrupted,
                             user_audio=turn.pcm16(user_audio) if user_audio else None)
    except Exception:  # noqa: BLE001 - a failed write is logged; the conversation goes on
        log.exception("storing a Realtime turn failed")
    return record
