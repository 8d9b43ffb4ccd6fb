"""What a turn, a conversation and a call cost, from usage counted off the providers' responses.

Usage is what each stage consumed: seconds of audio transcribed (STT bills per minute), LLM
tokens in and out (from the Chat Completions ``usage`` chunk), characters synthesised (TTS),
audio seconds on a phone line (Twilio bills per minute), messages sent (SMS). Local providers
(Whisper, the offline brain, Piper, Forge's Realtime server) cost 0 and are shown as such.

Prices are a table keyed ``"<provider>:<model>"`` (or ``"twilio:voice"``, ``"twilio:sms"``), in
US dollars. The defaults are the list prices on the vendors' pricing pages
(https://openai.com/api/pricing, https://www.twilio.com/en-us/voice/pricing/us,
https://www.twilio.com/en-us/sms/pricing/us) as Forge's authors last read them; prices change,
so ``FORGE_PRICES`` (a JSON object of the same shape) overrides or adds entries. A model with no
entry is reported as "no price" rather than silently free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    # OpenAI speech to text: per minute of audio.
    "openai-stt:whisper-1": {"per_minute": 0.006},
    "openai-stt:gpt-4o-transcribe": {"per_minute": 0.006},
    "openai-stt:gpt-4o-mini-transcribe": {"per_minute": 0.003},
    # OpenAI chat models: per million tokens.
    "openai-llm:gpt-4o-mini": {"per_1m_input_tokens": 0.15, "per_1m_output_tokens": 0.60},
    "openai-llm:gpt-4o": {"per_1m_input_tokens": 2.50, "per_1m_output_tokens": 10.00},
    "openai-llm:gpt-4.1-mini": {"per_1m_input_tokens": 0.40, "per_1m_output_tokens": 1.60},
    "openai-llm:gpt-4.1-nano": {"per_1m_input_tokens": 0.10, "per_1m_output_tokens": 0.40},
    # OpenAI text to speech: per million characters (tts-1) or the per-minute estimate OpenAI
    # publishes for gpt-4o-mini-tts (billed by tokens; ~$0.015 a minute of audio).
    "openai-tts:tts-1": {"per_1m_characters": 15.0},
    "openai-tts:tts-1-hd": {"per_1m_characters": 30.0},
    "openai-tts:gpt-4o-mini-tts": {"per_minute": 0.015},
    # OpenAI Realtime (speech to speech): per million audio tokens in and out.
    "openai-realtime:gpt-realtime": {"per_1m_input_tokens": 32.0, "per_1m_output_tokens": 64.0},
    "openai-realtime:gpt-realtime-mini": {"per_1m_input_tokens": 10.0, "per_1m_output_tokens": 20.0},
    # Twilio, United States: an outbound local call per minute, an SMS segment.
    "twilio:voice": {"per_minute": 0.014},
    "twilio:sms": {"per_message": 0.0083},
}

LOCAL = ("whisper", "pocketsphinx", "offline", "piper", "forge-realtime", "local", "fake")
"""Provider-name prefixes that run on this machine and cost nothing."""


@dataclass
class Usage:
    """What one turn consumed.

    Attributes:
        stt_audio_s: seconds of audio transcribed.
        llm_input_tokens / llm_output_tokens: tokens the LLM billed (its ``usage``), all steps.
        tts_characters: characters synthesised.
        tts_audio_s: seconds of audio synthesised.
        realtime_input_tokens / realtime_output_tokens: a Realtime session's tokens for the turn
            (its ``response.done`` usage), audio and text together.
    """

    stt_audio_s: float = 0.0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    tts_characters: int = 0
    tts_audio_s: float = 0.0
    realtime_input_tokens: int = 0
    realtime_output_tokens: int = 0

    def to_json(self) -> dict[str, float]:
        """The non-zero counts, rounded (seconds to 0.01)."""
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items() if v}


@dataclass
class Cost:
    """A turn's price in US dollars, per stage; ``unpriced`` names the providers with no price entry."""

    stt: float = 0.0
    llm: float = 0.0
    tts: float = 0.0
    unpriced: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        """The sum of the three stages, USD."""
        return self.stt + self.llm + self.tts

    def to_json(self) -> dict[str, Any]:
        """``{"stt", "llm", "tts", "total"}`` in USD (6 decimals), plus ``unpriced`` when any."""
        out: dict[str, Any] = {k: round(v, 6) for k, v in (("stt", self.stt), ("llm", self.llm), ("tts", self.tts),
                                                          ("total", self.total))}
        if self.unpriced:
            out["unpriced"] = self.unpriced
        return out


class PriceTable:
    """Prices by ``"<provider>:<model>"``, the defaults overlaid with ``FORGE_PRICES``.

    Args:
        overrides: a dict (or its JSON text) of entries to add or replace.

    Raises:
        ValueError: ``overrides`` is not a JSON object of objects of numbers.
    """

    def __init__(self, overrides: dict[str, dict[str, float]] | str | None = None) -> None:
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides) if overrides.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"FORGE_PRICES is not JSON: {exc}") from None
        table = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
        for key, entry in (overrides or {}).items():
            if not isinstance(entry, dict) or not all(isinstance(v, int | float) for v in entry.values()):
                raise ValueError(f"FORGE_PRICES[{key!r}] must be an object of numbers, e.g. {{\"per_minute\": 0.006}}")
            table[key] = {k: float(v) for k, v in entry.items()}
        self.table = table

    @staticmethod
    def is_local(provider: str) -> bool:
        """True for a provider that runs on this machine (its price is 0)."""
        return provider.split(":")[0].split(" ")[0].lower().startswith(LOCAL)

    def entry(self, provider: str) -> dict[str, float] | None:
        """The price entry for ``"<provider>:<model>"``: {} when local (free), None when unknown."""
        if self.is_local(provider):
            return {}
        return self.table.get(provider)

    def turn(self, usage: Usage, stt: str, llm: str, tts: str) -> Cost:
        """The cost of one turn served by the named providers (``"<provider>:<model>"`` each)."""
        cost = Cost()
        for stage, key in (("stt", stt), ("llm", llm), ("tts", tts)):
            price = self.entry(key)
            if price is None:
                cost.unpriced.append(key)
                continue
            if stage == "stt":
                cost.stt = usage.stt_audio_s / 60 * price.get("per_minute", 0.0)
            elif stage == "llm":
                cost.llm = (usage.llm_input_tokens * price.get("per_1m_input_tokens", 0.0)
                            + usage.llm_output_tokens * price.get("per_1m_output_tokens", 0.0)) / 1e6
            else:
                cost.tts = (usage.tts_characters * price.get("per_1m_characters", 0.0) / 1e6
                            + usage.tts_audio_s / 60 * price.get("per_minute", 0.0))
        return cost

    def realtime(self, model: str, input_tokens: int, output_tokens: int, local: bool = False) -> float:
        """A Realtime session's cost in USD for the tokens its ``response.done`` usage reported."""
        if local:
            return 0.0
        price = self.table.get(f"openai-realtime:{model}", {})
        return (input_tokens * price.get("per_1m_input_tokens", 0.0)
                + output_tokens * price.get("per_1m_output_tokens", 0.0)) / 1e6

    def call(self, seconds: float) -> float:
        """Twilio's price for a call of ``seconds`` (billed per started minute), USD."""
        minutes = -(-int(seconds) // 60) if seconds > 0 else 0
        return minutes * self.table["twilio:voice"].get("per_minute", 0.0)

    def sms(self, messages: int = 1) -> float:
        """Twilio's price for ``messages`` SMS segments, USD."""
        return messages * self.table["twilio:sms"].get("per_message", 0.0)

    def spent(self, turn_cost_usd: float, billed_call_seconds: list[float] | tuple[float, ...] = (),
              billed_sms: int = 0) -> Spent:
        """What was spent: the one definition every page and the CLI show (see :class:`Spent`).

        Args:
            turn_cost_usd: the stored turns' provider cost (local providers priced at 0), USD.
            billed_call_seconds: the length of each call Twilio bills, s (simulated calls are not
                among them: :func:`twilio_bills`).
            billed_sms: texts Twilio bills.
        """
        calls = sum(self.call(seconds) for seconds in billed_call_seconds)
        return Spent(turn_cost_usd, calls, self.sms(billed_sms))


@dataclass(frozen=True)
class Spent:
    """Money spent, USD: what a provider bills for what actually ran, nothing else.

    - providers: STT, LLM, TTS and Realtime usage at the price table's prices; a local provider
      (Whisper, the offline brain, Piper, Forge's Realtime server) costs 0.
    - calls: Twilio's per-started-minute price of each call Twilio carried; a simulated call
      (the call simulator, Compare's phone style) never reached Twilio and costs 0.
    - sms: Twilio's per-message price of each text Twilio sent.
    """

    providers: float = 0.0
    calls: float = 0.0
    sms: float = 0.0

    @property
    def total(self) -> float:
        """The sum of providers, calls and sms, USD."""
        return self.providers + self.calls + self.sms


def twilio_bills(account_sid: str | None, configured_account_sid: str | None) -> bool:
    """Whether Twilio bills a call or text whose webhook carried ``account_sid``.

    True only when it is this deployment's account (``TWILIO_ACCOUNT_SID``): a signed webhook
    from the call simulator or a test carries another (or no) account and costs nothing.
    """
    return bool(configured_account_sid) and account_sid == configured_account_sid


def format_usd(value: float | None) -> str:
    """A price for people: "$0" for free, "<$0.0001" for tiny, else 4 significant decimals."""
    if value is None:
        return "no price"
    if value == 0:
        return "$0 (local)"
    if value < 0.0001:
        return "<$0.0001"
    return f"${value:.4f}"
