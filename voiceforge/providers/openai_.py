"""OpenAI providers (also Azure OpenAI and any OpenAI-compatible base URL).

- STT: `POST /v1/audio/transcriptions` (multipart WAV; whisper-1 or gpt-4o-mini-transcribe).
- LLM: `POST /v1/chat/completions` with `stream=true` and `tools`; tool-call arguments arrive
  as string fragments per index and are joined here.
- TTS: `POST /v1/audio/speech` with `response_format="pcm"`: raw PCM16 mono 24 kHz, no header
  (OpenAI text-to-speech guide), read as a stream.

Clients are built with ``max_retries=0``; retries live in the provider base class.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import openai

from voiceforge.audio.codecs import wrap_wav
from voiceforge.providers.base import (
    LLM,
    STT,
    TTS,
    Capabilities,
    Message,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    TokenUsage,
    ToolCall,
)

if TYPE_CHECKING:
    from voiceforge.config import Settings
    from voiceforge.tools.registry import Tool

OPENAI_PCM_RATE = 24000
"""`response_format="pcm"` is 24 kHz 16-bit mono little-endian (OpenAI TTS docs)."""

OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
"""The built-in voices of `/v1/audio/speech` (OpenAI text-to-speech guide)."""


NO_KEY = "no-key-required"
"""The API key sent to an OpenAI-compatible server configured without one (the SDK needs a value;
Ollama, vLLM and llama.cpp servers ignore it). Never sent to api.openai.com: only with a base URL."""


def make_client(settings: Settings, timeout_s: float = 30.0, kind: str | None = None) -> openai.AsyncOpenAI:
    """An AsyncOpenAI (or AsyncAzureOpenAI) client for stage ``kind``, with SDK retries off.

    The stage's own base URL (``OPENAI_<KIND>_BASE_URL``) wins over ``OPENAI_BASE_URL``; with a
    base URL and no key, :data:`NO_KEY` is sent.
    """
    if settings.use_azure:
        return openai.AsyncAzureOpenAI(
            azure_endpoint=settings.azure_openai_endpoint,
            api_key=settings.azure_openai_api_key,
            api_version=settings.azure_api_version,
            max_retries=0,
            timeout=timeout_s,
        )
    base_url = settings.openai_base_url_for(kind)
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key or (NO_KEY if base_url else None),
        base_url=base_url,
        max_retries=0,
        timeout=timeout_s,
    )


def list_models(settings: Settings, kind: str, timeout_s: float = 3.0) -> list[str]:
    """Model ids the stage's server lists at ``/v1/models`` (sorted), through the official SDK.

    Raises:
        ProviderError: the server could not be reached or refused (the message says which).
    """
    base_url = settings.openai_base_url_for(kind)
    client = openai.OpenAI(api_key=settings.openai_api_key or (NO_KEY if base_url else None), base_url=base_url,
                           max_retries=0, timeout=timeout_s)
    try:
        return sorted(model.id for model in client.models.list())
    except openai.OpenAIError as exc:
        raise translate_error(exc, f"openai-{kind}") from exc


def translate_error(exc: Exception, provider: str) -> ProviderError:
    """Map an openai SDK exception to our ProviderError hierarchy (no key or body leaks)."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeoutError(f"{provider}: request timed out", provider)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderConnectionError(f"{provider}: cannot connect", provider)
    if isinstance(exc, openai.APIStatusError):
        return ProviderStatusError(f"{provider}: HTTP {exc.status_code}", exc.status_code, provider)
    return ProviderError(f"{provider}: {type(exc).__name__}", provider=provider)


class OpenAISTT(STT):
    """Transcriptions API over one utterance, sent as a 16-bit WAV."""

    name = "openai-stt"
    capabilities = Capabilities(streaming=False, sample_rate=None, offline=False)

    def __init__(self, client: openai.AsyncOpenAI, model: str, prompt_words: Sequence[str] = ()) -> None:
        super().__init__(prompt_words=prompt_words)
        self.client, self.model_name = client, model

    async def _transcribe(self, pcm16: bytes, sample_rate: int, words: Sequence[str]) -> tuple[str, str | None]:
        prompt = ("Vocabulary: " + ", ".join(words) + ".") if words else openai.omit
        try:
            result = await self.client.audio.transcriptions.create(
                file=("utterance.wav", wrap_wav(pcm16, sample_rate), "audio/wav"),
                model=self.model_name,
                prompt=prompt,
                response_format="json",
            )
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.name) from exc
        return result.text, getattr(result, "language", None)


class OpenAILLM(LLM):
    """Chat Completions with streaming and tools."""

    name = "openai-llm"
    capabilities = Capabilities(streaming=True, offline=False)

    def __init__(self, client: openai.AsyncOpenAI, model: str, temperature: float = 0.4) -> None:
        super().__init__()
        self.client, self.model, self.temperature = client, model, temperature

    async def _stream(self, messages: Sequence[Message], tools: Sequence[Tool]) -> AsyncIterator[str | ToolCall]:
        kwargs = {}
        if tools:
            kwargs["tools"] = [t.openai_schema() for t in tools]
        try:
            stream = await self.client.chat.completions.create(
                model=self.model,
                messages=list(messages),
                stream=True,
                stream_options={"include_usage": True},  # a last chunk with the billed tokens
                temperature=self.temperature,
                **kwargs,
            )
            partial: dict[int, dict[str, str]] = {}
            usage = None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = TokenUsage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield delta.content
                for tc in delta.tool_calls or ():
                    slot = partial.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function and tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function and tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.name) from exc
        for index in sorted(partial):
            slot = partial[index]
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = {"_invalid_json": slot["arguments"]}
            yield ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"], arguments=arguments)
        if usage is not None:
            yield usage


class OpenAITTS(TTS):
    """Speech API with `pcm` output, streamed as it downloads."""

    name = "openai-tts"
    sample_rate = OPENAI_PCM_RATE
    capabilities = Capabilities(streaming=True, sample_rate=OPENAI_PCM_RATE, offline=False, voices=OPENAI_VOICES)

    def __init__(self, client: openai.AsyncOpenAI, model: str, voice: str = "alloy") -> None:
        super().__init__(voice=voice)
        self.client, self.model_name = client, model

    async def _stream(self, text: str, voice: str | None) -> AsyncIterator[bytes]:
        carry = b""
        try:
            async with self.client.audio.speech.with_streaming_response.create(
                model=self.model_name, voice=voice or self.voice or "alloy", input=text, response_format="pcm"
            ) as response:
                async for chunk in response.iter_bytes(4096):
                    data = carry + chunk
                    cut = len(data) - len(data) % 2  # keep whole 16-bit samples
                    carry = data[cut:]
                    if cut:
                        yield data[:cut]
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.name) from exc
