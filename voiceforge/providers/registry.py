"""The one provider registry: each STT, LLM and TTS by name, with a factory and what it needs.

``STT_PROVIDER``, ``LLM_PROVIDER`` and ``TTS_PROVIDER`` name one of these (or ``auto``) and
are checked where they are resolved (:func:`resolve`); ``auto`` resolves to OpenAI when a key,
an Azure set or an OpenAI-compatible base URL is configured, and to the embedded offline
provider otherwise. A new provider is one entry here; nothing else branches on provider names.
:class:`Providers` holds the three a process uses, built on first use.

This module imports no SDK and no model at import time: factories import lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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
        ConfigError: an unknown provider name, or the named provider lacks its configuration;
            the message names the environment variables.
    """
    chosen = str(getattr(settings, f"{kind}_provider")).strip().lower()
    if chosen not in names(kind):
        raise ConfigError(f"{kind.upper()}_PROVIDER: unknown provider {chosen!r}; one of {', '.join(names(kind))}")
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


class Providers:
    """The STT, LLM and TTS one process uses, each built from the settings on first use.

    Loading Whisper takes about a second, so a text-only user never pays for speech models.

    Args:
        settings: Forge's settings.
        stt, llm, tts: providers to use instead of the ones the settings select (tests pass fakes).
        prompt_words: returns the domain words for STT (the default persona's), asked once.
    """

    def __init__(self, settings: Settings, *, stt: Any = None, llm: Any = None, tts: Any = None,
                 prompt_words: Callable[[], Sequence[str]] = tuple) -> None:
        self.settings = settings
        self._built: dict[Kind, Any] = {"stt": stt, "llm": llm, "tts": tts}
        self._prompt_words = prompt_words

    def _get(self, kind: Kind) -> Any:
        if self._built[kind] is None:
            self._built[kind] = build(kind, self.settings, self._prompt_words() if kind == "stt" else ())
        return self._built[kind]

    @property
    def stt(self) -> Any:
        """The speech-to-text provider (or its failover wrapper): ``transcribe(pcm16, rate, hints)``.

        Raises:
            ConfigError: see :func:`resolve`.
        """
        return self._get("stt")

    @property
    def llm(self) -> Any:
        """The LLM (OpenAI-compatible or the offline brain, or its failover wrapper): ``stream(messages, tools)``."""
        return self._get("llm")

    @property
    def tts(self) -> Any:
        """The text-to-speech provider (or its failover wrapper): ``stream(text, voice)``, ``sample_rate``."""
        return self._get("tts")

    def built(self, kind: Kind) -> Any:
        """The provider of ``kind`` if it has been built, else None (nothing is loaded for this)."""
        return self._built[kind]

    def labels(self) -> dict[str, str]:
        """Labels of the STT, LLM and TTS in use (or configured, before they are built)."""
        from voiceforge.providers import describe

        out = {}
        for kind in KINDS:
            built = self._built[kind]
            try:
                out[kind] = describe(built) if built is not None else resolve(kind, self.settings)
            except Exception as exc:  # noqa: BLE001 - a status display must not fail
                out[kind] = f"error: {exc}"
        return out

    def price_key(self, kind: Kind) -> str:
        """``"<provider>:<model>"`` of the provider of ``kind``, the key of its price entry.

        A provider not built yet is named from the settings (no model is loaded for this).
        """
        built = self._built[kind]
        if built is not None:
            model = getattr(built, "model_name", None) or getattr(built, "model", "") or ""
            return f"{built.name}:{model}"
        try:
            name = resolve(kind, self.settings)
        except Exception:  # noqa: BLE001 - a misconfigured provider has no price
            return f"{kind}:unknown"
        if name == "openai":
            return f"openai-{kind}:" + getattr(self.settings, f"openai_{kind}_model")
        return f"{name}:"
