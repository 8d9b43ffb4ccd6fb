"""The one provider registry: each STT, LLM and TTS by name, with a factory and what it needs.

Settings validate ``STT_PROVIDER``, ``LLM_PROVIDER`` and ``TTS_PROVIDER`` against these names
(plus ``auto``); ``auto`` resolves to OpenAI when a key, an Azure set or an OpenAI-compatible
base URL is configured, and to the embedded offline provider otherwise. A new provider is one
entry here; nothing else branches on provider names.

This module imports no SDK and no model at import time: factories import lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from voiceforge.config import ConfigError

if TYPE_CHECKING:
    from voiceforge.config import Settings
    from voiceforge.providers.base import LLM, STT, TTS

Kind = Literal["stt", "llm", "tts"]
KINDS: tuple[Kind, ...] = ("stt", "llm", "tts")


@dataclass(frozen=True)
class ProviderSpec:
    """One provider in the registry.

    Attributes:
        kind: "stt", "llm" or "tts".
        name: the name settings use (``STT_PROVIDER=whisper``).
        offline: True when it runs on this machine with no network.
        build: factory ``(settings, prompt_words) -> provider``.
        missing: ``settings -> None`` when it can be built, else what is missing (a sentence
            naming the environment variables).
    """

    kind: Kind
    name: str
    offline: bool
    build: Callable[[Settings, Sequence[str]], STT | LLM | TTS]
    missing: Callable[[Settings], str | None] = lambda settings: None


def _openai_missing(kind: Kind) -> Callable[[Settings], str | None]:
    def missing(settings: Settings) -> str | None:
        if settings.openai_ready(kind):
            return None
        if settings.use_azure:
            return "needs AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY"
        return f"needs OPENAI_API_KEY, OPENAI_BASE_URL or OPENAI_{kind.upper()}_BASE_URL"

    return missing


def _whisper(settings: Settings, words: Sequence[str]) -> STT:
    from voiceforge.providers.local import WhisperSTT

    return WhisperSTT(settings.forge_cache_dir, settings.whisper_model, words, settings.forge_whisper_window_s)


def _pocketsphinx(settings: Settings, words: Sequence[str]) -> STT:
    from voiceforge.providers.local import PocketSphinxSTT

    return PocketSphinxSTT(words)


def _openai_stt(settings: Settings, words: Sequence[str]) -> STT:
    from voiceforge.providers.openai_ import OpenAISTT, make_client

    return OpenAISTT(make_client(settings, kind="stt"), settings.openai_stt_model, words)


def _offline_brain(settings: Settings, words: Sequence[str]) -> LLM:
    from voiceforge.providers.brain import OfflineBrain

    return OfflineBrain()


def _openai_llm(settings: Settings, words: Sequence[str]) -> LLM:
    from voiceforge.providers.openai_ import OpenAILLM, make_client

    model = settings.azure_openai_deployment if settings.use_azure else settings.openai_llm_model
    return OpenAILLM(make_client(settings, kind="llm"), model or settings.openai_llm_model)


def _piper(settings: Settings, words: Sequence[str]) -> TTS:
    from voiceforge.providers.local import PiperTTS

    return PiperTTS()


def _openai_tts(settings: Settings, words: Sequence[str]) -> TTS:
    from voiceforge.providers.openai_ import OpenAITTS, make_client

    return OpenAITTS(make_client(settings, kind="tts"), settings.openai_tts_model, settings.openai_tts_voice)


PROVIDERS: dict[Kind, dict[str, ProviderSpec]] = {
    "stt": {
        "whisper": ProviderSpec("stt", "whisper", True, _whisper),
        "pocketsphinx": ProviderSpec("stt", "pocketsphinx", True, _pocketsphinx),
        "openai": ProviderSpec("stt", "openai", False, _openai_stt, _openai_missing("stt")),
    },
    "llm": {
        "offline": ProviderSpec("llm", "offline", True, _offline_brain),
        "openai": ProviderSpec("llm", "openai", False, _openai_llm, _openai_missing("llm")),
    },
    "tts": {
        "piper": ProviderSpec("tts", "piper", True, _piper),
        "openai": ProviderSpec("tts", "openai", False, _openai_tts, _openai_missing("tts")),
    },
}
"""Every provider Forge can build, by kind and name."""

OFFLINE_DEFAULT: dict[Kind, str] = {"stt": "whisper", "llm": "offline", "tts": "piper"}
"""What ``auto`` means with no OpenAI configuration: the embedded providers."""


def names(kind: Kind) -> list[str]:
    """The provider names of ``kind``, plus ``auto``."""
    return ["auto", *PROVIDERS[kind]]


def resolve(kind: Kind, settings: Settings) -> str:
    """The concrete provider name for ``kind`` under ``settings`` (``auto`` resolved).

    Raises:
        ConfigError: the named provider lacks its configuration; the message names
            the environment variables.
    """
    chosen = getattr(settings, f"{kind}_provider")
    if chosen == "auto":
        return "openai" if settings.openai_ready(kind) else OFFLINE_DEFAULT[kind]
    spec = PROVIDERS[kind][chosen]
    problem = spec.missing(settings)
    if problem:
        raise ConfigError(f"{kind.upper()}_PROVIDER={chosen} {problem}")
    return chosen


def build(kind: Kind, settings: Settings, prompt_words: Sequence[str] = ()) -> STT | LLM | TTS:
    """Build the provider of ``kind`` that ``settings`` select.

    Args:
        kind: "stt", "llm" or "tts".
        settings: Forge's settings.
        prompt_words: domain words for STT (Whisper's prompt, PocketSphinx's dictionary).

    Raises:
        ConfigError: see :func:`resolve`.
    """
    name = resolve(kind, settings)
    provider = PROVIDERS[kind][name].build(settings, prompt_words)
    provider.provider_id = name
    if settings.forge_failover and not PROVIDERS[kind][name].offline:
        from voiceforge.providers.failover import WRAPPERS

        embedded = PROVIDERS[kind][OFFLINE_DEFAULT[kind]]

        def fallback() -> STT | LLM | TTS:
            built = embedded.build(settings, prompt_words)
            built.provider_id = embedded.name
            return built

        provider = WRAPPERS[kind](provider, fallback, settings.forge_failover_after_s)
        provider.provider_id = name
    return provider
