"""The composition root: settings, providers, database, tool registry and personas, built once.

Turns run in :mod:`voiceforge.turn` and live conversations in :mod:`voiceforge.conversation`;
this module builds the shared objects and hands each pipeline the small record of what it uses
(:class:`voiceforge.turn.TurnDeps`), never itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from voiceforge.agent.persona import Persona, load_persona
from voiceforge.config import Settings, get_settings
from voiceforge.cost import Cost, PriceTable, Usage
from voiceforge.providers.registry import Providers
from voiceforge.store import conversations
from voiceforge.store.db import Database, business_database, get_database
from voiceforge.tools import ToolRegistry, build_registry
from voiceforge.turn import TurnDeps, TurnPipeline, TurnSettings
from voiceforge.turn.phrases import PhraseCache

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

    def __init__(self, settings: Settings | None = None, *, stt: Any = None, llm: Any = None, tts: Any = None,
                 db: Database | None = None, registry: ToolRegistry | None = None) -> None:
        self.settings = settings or get_settings()
        self.db = db or get_database(self.settings.database_url_resolved)
        self.business_db = business_database(self.settings.business_database_url_resolved, self.db)
        """Where customers, orders and appointments live: ``db`` unless configured apart (DuckDB)."""
        self.registry = registry or build_registry(self.settings.forge_tool_delay_ms)
        self.providers = Providers(self.settings, stt=stt, llm=llm, tts=tts, prompt_words=self._prompt_words)
        # Clients tools may use, by name (a zero-argument callable is called on first use).
        self.services: dict[str, Any] = {"tts": lambda: self.tts}
        self.prices = PriceTable(self.settings.forge_prices)
        self.phrases = PhraseCache()
        """Fixed sentences synthesized ahead (:meth:`prepare_phrases`), shared by every conversation."""

    def turn_cost(self, usage: Usage) -> Cost:
        """What ``usage`` cost with the providers in use (USD per stage, see voiceforge/cost.py)."""
        p = self.providers
        return self.prices.turn(usage, p.price_key("stt"), p.price_key("llm"), p.price_key("tts"))

    @property
    def stt(self) -> Any:
        """The speech-to-text provider."""
        return self.providers.stt

    @property
    def llm(self) -> Any:
        """The LLM provider (OpenAI-compatible or the offline brain)."""
        return self.providers.llm

    @property
    def tts(self) -> Any:
        """The text-to-speech provider."""
        return self.providers.tts

    def ensure_mock_data(self) -> None:
        """Seed the mock business data when the database has none (first run; one process at a time)."""
        if not self.business_db.is_empty():
            return
        with self.business_db.exclusive("seed"):
            if self.business_db.is_empty():  # another process may have seeded it meanwhile
                from voiceforge.store import mockdata

                mockdata.generate(self.business_db, self.settings.forge_mock_customers)

    def warm_up(self, speech: bool = True) -> float:
        """Load the offline brain's embeddings and (``speech``) the speech models now (blocking); return ms.

        Offline models load on first use otherwise, which would land in the first turn's STT
        or TTS time, and the brain embeds every tool's example phrasings (about 1.4 s).
        """
        start = time.perf_counter()
        self.llm.warm_up(self.registry.select(self.registry.names()))  # every tool, the opt-in ones too
        self._warm_agents_own_tools()
        if speech:
            for provider in (self.stt, self.tts):
                warm = getattr(provider, "warm_up", None)
                if warm is not None:
                    warm()
            from faster_whisper.vad import get_vad_model

            get_vad_model()  # Silero, which confirms interruptions
            if self.settings.forge_turn_detector == "model":
                from voiceforge.audio.turn_model import SmartTurn, TurnModelMissing

                try:
                    SmartTurn.shared()  # the end-of-turn model, loaded before the first call needs it
                except TurnModelMissing as exc:
                    log.warning("%s", exc)
        return (time.perf_counter() - start) * 1000

    def _warm_agents_own_tools(self) -> None:
        """Embed the examples of every agent's own tools (declared, MCP: their servers are listed now).

        The offline brain keeps one index per set of offered tools, so an agent with tools of its
        own would otherwise pay for its examples (about 10 ms each) in its first turn.
        """
        from voiceforge.agent.persona import PersonaError, list_personas

        for persona_id in list_personas(data_dir=self.settings.forge_data_dir):
            try:
                persona = self.persona(persona_id)
                if persona.own_tools or persona.mcp:
                    self.llm.warm_up(self.pipeline(persona_id, persist=False).tools)
            except PersonaError as exc:
                log.warning("agent %s does not load: %s", persona_id, exc)

    async def prepare_phrases(self) -> int:
        """Synthesize every persona's fixed sentences and the apologies now.

        The greeting, reprompt, goodbye and wrap-up are then played without waiting for the
        TTS (the first call's greeting starts at once). Returns the number of sentences cached; a TTS failure only logs (they are synthesized when said).
        """
        from voiceforge.agent.persona import PersonaError, list_personas
        from voiceforge.turn.pipeline import APOLOGIES

        tts = self.tts
        wanted: list[tuple[str, str | None]] = []
        for persona_id in list_personas(data_dir=self.settings.forge_data_dir):
            try:
                persona = self.persona(persona_id)
            except PersonaError:
                continue
            voice = persona.voice.get(tts.provider_id) if persona.voice else None
            wanted += [(text, voice) for text in (persona.greeting, persona.reprompt, persona.idle_goodbye,
                                                  persona.wrap_up, *APOLOGIES.values())]
        for text, voice in dict.fromkeys(wanted):
            await self.phrases.fill(tts, text, voice)
        return len(self.phrases)

    def _prompt_words(self) -> list[str]:
        try:
            return self.persona(self.settings.forge_persona).domain_words
        except Exception:  # noqa: BLE001 - a broken persona must not stop STT
            log.warning("could not read persona %s for STT hints", self.settings.forge_persona)
            return []

    def persona(self, persona_id: str | None = None, version: int | None = None) -> Persona:
        """Load a persona's current version (or ``version``); re-read each time, so edits apply on the next turn.

        Raises:
            PersonaError: no such persona, or its file is broken.
            VersionError: no such ``version``.
        """
        return load_persona(persona_id or self.settings.forge_persona, self.settings.forge_data_dir, version=version)

    def provider_labels(self) -> dict[str, str]:
        """Labels of the STT, LLM and TTS in use (or configured, before they are built)."""
        return self.providers.labels()

    def describe(self) -> dict[str, str]:
        """Labels of the active providers and the database, for status displays."""
        return {**self.provider_labels(), "database": self.db.describe()}

    def turn_deps(self) -> TurnDeps:
        """The record of what a turn pipeline uses (providers, stores, tools, settings)."""
        return TurnDeps(providers=self.providers, db=self.db, business_db=self.business_db, registry=self.registry,
                        settings=TurnSettings.from_settings(self.settings), tool_settings=self.settings,
                        price=self.turn_cost, persona=self.persona, services=self.services, phrases=self.phrases)

    def pipeline(self, persona_id: str | None = None, channel: str = "chat", conversation_id: int | None = None,
                 caller: str | None = None, child_id: int | None = None, persist: bool = True,
                 persona_version: int | None = None) -> TurnPipeline:
        """A turn pipeline for a new conversation (stored on its first turn) or a stored one.

        It runs on the persona's current version, or on ``persona_version``.

        Raises:
            PersonaError: no such persona.
            VersionError: no such ``persona_version``.
        """
        pipeline = TurnPipeline(self.turn_deps(), self.persona(persona_id, persona_version), channel, conversation_id,
                                caller, child_id, persist)
        pipeline.pinned_version = persona_version
        return pipeline

    def resume(self, conversation_id: int, persona_id: str | None = None, channel: str = "api",
               caller: str | None = None) -> TurnPipeline:
        """A pipeline that continues a stored conversation: its rolling summary and last turns.

        Args:
            conversation_id: the stored conversation.
            persona_id: the persona (None: the conversation's own).
            channel: the channel this pipeline serves.
            caller: the E.164 number on a phone or SMS thread (send_sms may text it).

        Raises:
            LookupError: no such conversation.
            PersonaError: no such persona.
        """
        pipeline = self.pipeline(persona_id, channel, conversation_id, caller)  # PersonaError before the query
        stored = conversations.history(self.db, conversation_id, last=pipeline.memory_turns)
        if stored is None:
            raise LookupError(f"no conversation {conversation_id}")
        if persona_id is None and stored.persona != pipeline.persona.id:
            pipeline = self.pipeline(stored.persona, channel, conversation_id, caller)
        pipeline.restore(stored.summary, stored.turns, stored.tool_calls)
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
