"""Providers: STT, LLM and TTS interfaces, their implementations, and the one registry.

Build them with :func:`voiceforge.providers.registry.build` (or the ``build_*`` shorthands
here); ``auto`` resolves to OpenAI when configured, else the embedded offline providers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from voiceforge.providers.base import (
    LLM,
    STT,
    TTS,
    Capabilities,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    TokenUsage,
    ToolCall,
    Transcript,
)
from voiceforge.providers.registry import PROVIDERS, build, resolve

if TYPE_CHECKING:
    from voiceforge.config import Settings


def build_stt(settings: Settings, prompt_words: Sequence[str] = ()) -> STT:
    """The STT that ``STT_PROVIDER`` selects (whisper, pocketsphinx, openai)."""
    return build("stt", settings, prompt_words)  # type: ignore[return-value]


def build_llm(settings: Settings) -> LLM:
    """The LLM that ``LLM_PROVIDER`` selects (openai or the offline brain)."""
    return build("llm", settings)  # type: ignore[return-value]


def build_tts(settings: Settings, voice: str | None = None) -> TTS:
    """The TTS that ``TTS_PROVIDER`` selects (openai or piper), with ``voice`` as its default."""
    tts: TTS = build("tts", settings)  # type: ignore[assignment]
    if voice:
        tts.voice = voice
    return tts


def describe(provider: STT | LLM | TTS) -> str:
    """A short label for the UI: ``name (model)``; offline ones say so."""
    model = getattr(provider, "model_name", None) or getattr(provider, "model", "")
    label = f"{provider.name} ({model})" if model else provider.name
    return label + (" · offline" if provider.capabilities.offline else "")


__all__ = [
    "LLM", "PROVIDERS", "STT", "TTS", "Capabilities", "ProviderConnectionError", "ProviderError",
    "ProviderStatusError", "ProviderTimeoutError", "TokenUsage", "ToolCall", "Transcript", "build", "build_llm", "build_stt",
    "build_tts", "describe", "resolve",
]
