"""The composition root: settings, providers, database, tool registry and personas, built once.

Turns run in :mod:`voiceforge.turn` and live conversations in :mod:`voiceforge.conversation`;
this module only builds and hands out the shared objects.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from voiceforge.agent.persona import Persona, load_persona
from voiceforge.config import Settings, get_settings
from voiceforge.cost import Cost, PriceTable, Usage
from voiceforge.providers import LLM, STT, TTS, build, describe, resolve
from voiceforge.store import conversations
from voiceforge.store.db import Database, business_database, get_database
from voiceforge.tools import ToolRegistry, build_registry
from voiceforge.turn import TurnPipeline

log = logging.getLogger(__name__)


class Engine:
    """Process-wide providers, database, tool registry and personas.

    Providers are built lazily (loading Whisper takes about a second), so a text-only user never
    pays for speech models. Pass providers to override the settings (tests pass fakes).

    Args:
        settings: defaults to ``get_settings()``.
        stt, llm, tts: providers to use instead of the ones settings select.
        db: the database (default: ``DATABASE_URL`` or the SQLite file in the data folder).
        registry: the tool registry (default: every built-in tool).
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
        self.business_db = business_database(self.settings.business_database_url_resolved, self.db)
        """Where customers, orders and appointments live: ``db`` unless configured apart (DuckDB)."""
        self.registry = registry or build_registry(self.settings.forge_tool_delay_ms)
        self._stt, self._llm, self._tts = stt, llm, tts
        # Clients tools may use, by name (a zero-argument callable is called on first use).
        self.services: dict[str, Any] = {"tts": lambda: self.tts}
        self.prices = PriceTable(self.settings.forge_prices)

    def price_key(self, kind: str) -> str:
        """``"<provider>:<model>"`` of the STT, LLM or TTS in use, the key of its price entry.

        A provider not built yet is named from the settings (no model is loaded for this).
        """
        built = {"stt": self._stt, "llm": self._llm, "tts": self._tts}[kind]
        if built is not None:
            model = getattr(built, "model_name", None) or getattr(built, "model", "") or ""
            return f"{built.name}:{model}"
        try:
            name = resolve(kind, self.settings)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a misconfigured provider has no price
            return f"{kind}:unknown"
        if name == "openai":
            return f"openai-{kind}:" + getattr(self.settings, f"openai_{kind}_model")
        return f"{name}:"

    def turn_cost(self, usage: Usage) -> Cost:
        """What ``usage`` cost with the providers in use (USD per stage, see voiceforge/cost.py)."""
        return self.prices.turn(usage, self.price_key("stt"), self.price_key("llm"), self.price_key("tts"))

    @property
    def stt(self) -> STT:
        """The speech-to-text provider."""
        if self._stt is None:
            self._stt = build("stt", self.settings, self._prompt_words())  # type: ignore[assignment]
        return self._stt

    @property
    def llm(self) -> LLM:
        """The LLM provider (OpenAI-compatible or the offline brain)."""
        if self._llm is None:
            self._llm = build("llm", self.settings)  # type: ignore[assignment]
        return self._llm

    @property
    def tts(self) -> TTS:
        """The text-to-speech provider."""
        if self._tts is None:
            self._tts = build("tts", self.settings)  # type: ignore[assignment]
        return self._tts

    def ensure_mock_data(self) -> None:
        """Seed the mock business data when the database has none (first run)."""
        if self.business_db.is_empty():
            from voiceforge.store import mockdata

            mockdata.generate(self.business_db, self.settings.forge_mock_customers)

    def warm_up(self, speech: bool = True) -> float:
        """Load the speech models and the offline brain's embeddings now (blocking); return the time in ms.

        Offline models load on first use otherwise, which would land in the first turn's STT
        or TTS time, and the brain embeds every tool's example phrasings (about 1.4 s).
        """
        start = time.perf_counter()
        if speech:
            for provider in (self.stt, self.tts):
                warm = getattr(provider, "warm_up", None)
                if warm is not None:
                    warm()
            self.llm.warm_up(self.registry.select(self.registry.names()))  # every tool, the opt-in ones too
        return (time.perf_counter() - start) * 1000

    def _prompt_words(self) -> list[str]:
        try:
            return self.persona(self.settings.forge_persona).domain_words
        except Exception:  # noqa: BLE001 - a broken persona must not stop STT
            log.warning("could not read persona %s for STT hints", self.settings.forge_persona)
            return []

    def persona(self, persona_id: str | None = None) -> Persona:
        """Load a persona (re-read each time, so personalization edits apply on the next turn).

        Raises:
            PersonaError: no such persona, or its file is broken.
        """
        return load_persona(persona_id or self.settings.forge_persona, self.settings.forge_data_dir)

    def provider_labels(self) -> dict[str, str]:
        """Labels of the STT, LLM and TTS in use (or configured, before they are built)."""
        out = {}
        for kind, built in (("stt", self._stt), ("llm", self._llm), ("tts", self._tts)):
            try:
                out[kind] = describe(built) if built is not None else resolve(kind, self.settings)
            except Exception as exc:  # noqa: BLE001 - a status display must not fail
                out[kind] = f"error: {exc}"
        return out

    def describe(self) -> dict[str, str]:
        """Labels of the active providers and the database, for status displays."""
        return {**self.provider_labels(), "database": self.db.describe()}

    def pipeline(self, persona_id: str | None = None, channel: str = "chat", conversation_id: int | None = None,
                 caller: str | None = None, child_id: int | None = None, persist: bool = True) -> TurnPipeline:
        """A turn pipeline for a new conversation (stored on its first turn) or a stored one.

        Raises:
            PersonaError: no such persona.
        """
        return TurnPipeline(self, self.persona(persona_id), channel, conversation_id, caller, child_id, persist)

    def resume(self, conversation_id: int, persona_id: str | None = None, channel: str = "api") -> TurnPipeline:
        """A pipeline that continues a stored conversation: its rolling summary and last turns.

        Raises:
            LookupError: no such conversation.
            PersonaError: no such persona.
        """
        pipeline = self.pipeline(persona_id, channel, conversation_id)  # PersonaError before the query
        stored = conversations.history(self.db, conversation_id, last=pipeline.memory.max_turns)
        if stored is None:
            raise LookupError(f"no conversation {conversation_id}")
        if persona_id is None and stored.persona != pipeline.persona.id:
            pipeline = self.pipeline(stored.persona, channel, conversation_id)
        pipeline.memory.restore(stored.summary, stored.turns, stored.tool_calls)
        return pipeline

    async def synthesize(self, text: str, voice: str | None = None) -> tuple[bytes, int]:
        """Speak ``text``: (PCM16 mono, sample rate in Hz).

        Raises:
            ValueError: ``text`` is empty or only white space.
            ProviderError: the TTS failed.
        """
        if not text.strip():
            raise ValueError("there is no text to speak")
        return await self.tts.synthesize(text, voice), self.tts.sample_rate
