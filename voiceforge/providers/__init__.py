"""Providers by name: STT, LLM and TTS, OpenAI or offline, picked from settings.

``auto`` resolves to OpenAI when a key (or the Azure set) is configured, else offline.
"""

from __future__ import annotations

from collections.abc import Sequence

from voiceforge.config import Settings
from voiceforge.providers.base import (
    LLM,
    STT,
    TTS,
    Capabilities,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    ToolCall,
    Transcript,
)


def build_stt(settings: Settings, prompt_words: Sequence[str] = ()) -> STT:
    """The STT named by STT_PROVIDER (whisper, pocketsphinx, openai)."""
    name = settings.resolve_provider("stt")
    if name == "openai":
        from voiceforge.providers.openai_ import OpenAISTT, make_client

        return OpenAISTT(make_client(settings), settings.openai_stt_model, prompt_words)
    if name == "pocketsphinx":
        from voiceforge.providers.local import PocketSphinxSTT

        return PocketSphinxSTT(prompt_words)
    from voiceforge.providers.local import WhisperSTT

    return WhisperSTT(settings.forge_cache_dir, settings.whisper_model, prompt_words)


def build_llm(settings: Settings) -> LLM:
    """The LLM named by LLM_PROVIDER (openai or the offline brain)."""
    if settings.resolve_provider("llm") == "openai":
        from voiceforge.providers.openai_ import OpenAILLM, make_client

        model = settings.azure_openai_deployment if settings.use_azure else settings.openai_llm_model
        return OpenAILLM(make_client(settings), model or settings.openai_llm_model)
    from voiceforge.providers.brain import OfflineBrain

    return OfflineBrain()


def build_tts(settings: Settings, voice: str | None = None) -> TTS:
    """The TTS named by TTS_PROVIDER (openai or piper)."""
    if settings.resolve_provider("tts") == "openai":
        from voiceforge.providers.openai_ import OpenAITTS, make_client

        return OpenAITTS(make_client(settings), settings.openai_tts_model, voice or settings.openai_tts_voice)
    from voiceforge.providers.local import PiperTTS

    return PiperTTS()


def describe(provider: STT | LLM | TTS) -> str:
    """A short label for the UI: ``name (model)``; offline ones say so."""
    model = getattr(provider, "model_name", None) or getattr(provider, "model", "")
    label = f"{provider.name} ({model})" if model else provider.name
    return label + (" · offline" if provider.capabilities.offline else "")


__all__ = [
    "LLM", "STT", "TTS", "Capabilities", "ProviderConnectionError", "ProviderError", "ProviderStatusError",
    "ProviderTimeoutError", "ToolCall", "Transcript", "build_llm", "build_stt", "build_tts", "describe",
]
