"""Provider interfaces: STT, LLM, TTS, and the error hierarchy they share.

Template-method style: the public method (``transcribe``, ``stream``) owns timing, retries
and error translation; an implementation overrides one protected hook (``_transcribe``,
``_stream``). SDK clients are built with ``max_retries=0`` so that only this layer retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceforge.tools.registry import Tool

log = logging.getLogger(__name__)


# --- errors ----------------------------------------------------------------------------------
class ProviderError(Exception):
    """A provider call failed.

    Args:
        message: what failed, safe to show and store (no keys, no transcripts).
        retryable: whether the same call may succeed if tried again.
    """

    def __init__(self, message: str, retryable: bool = False, provider: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.provider = provider


class ProviderConnectionError(ProviderError):
    """The provider could not be reached (retryable)."""

    def __init__(self, message: str, provider: str = "") -> None:
        super().__init__(message, retryable=True, provider=provider)


class ProviderTimeoutError(ProviderError):
    """The provider did not answer in time (retryable)."""

    def __init__(self, message: str, provider: str = "") -> None:
        super().__init__(message, retryable=True, provider=provider)


class ProviderStatusError(ProviderError):
    """The provider answered with an HTTP error status; 408, 409, 429 and 5xx are retryable."""

    def __init__(self, message: str, status: int, provider: str = "") -> None:
        super().__init__(message, retryable=status in (408, 409, 429) or status >= 500, provider=provider)
        self.status = status


async def _with_retries(name: str, attempts: int, call):  # noqa: ANN001 - internal helper
    """Await ``call()`` up to ``attempts`` times while it raises a retryable ProviderError."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ProviderError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            log.warning("%s failed (attempt %d/%d), retrying: %s", name, attempt, attempts, exc)
            await asyncio.sleep(0.2 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


# --- shared records --------------------------------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    """What a provider can do.

    Attributes:
        streaming: output arrives in pieces (LLM deltas, TTS chunks) rather than at once.
        sample_rate: native audio rate in Hz (STT input, TTS output); None means any rate.
        offline: runs on this machine with no network.
        voices: the TTS voices it knows; empty means it accepts any name (a custom server).
    """

    streaming: bool
    sample_rate: int | None = None
    offline: bool = True
    voices: tuple[str, ...] = ()


@dataclass
class Transcript:
    """An STT result: text, language if known, the audio's duration and the time it took (ms)."""

    text: str
    language: str | None = None
    audio_ms: float = 0.0
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one LLM call billed, from its response (Chat Completions' final ``usage`` chunk).

    An LLM's ``_stream`` yields it last, if the provider reports usage; it is not text.
    """

    input_tokens: int
    output_tokens: int


@dataclass
class ToolCall:
    """A tool call requested by an LLM: an id, the tool's name, JSON-decoded arguments."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        """The OpenAI chat-completions `tool_calls` entry for this call."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


Message = dict[str, Any]
"""An OpenAI chat-completions message: role, content, and tool_calls / tool_call_id."""


# --- STT -------------------------------------------------------------------------------------
class STT(ABC):
    """Speech to text over whole utterances of PCM16 mono."""

    name: str = "stt"
    provider_id: str = ""
    capabilities = Capabilities(streaming=False, sample_rate=16000)

    def __init__(self, prompt_words: Sequence[str] = (), attempts: int = 2) -> None:
        self.prompt_words = list(prompt_words)
        self.attempts = attempts

    async def transcribe(self, pcm16: bytes, sample_rate: int, hints: Sequence[str] = (),
                         prompt: bool = True) -> Transcript:
        """Transcribe one utterance.

        Args:
            pcm16: mono PCM16 little-endian audio.
            sample_rate: its rate in Hz (resampled to the provider's rate as needed).
            hints: domain words for this utterance (the persona's: "Hanuman", a product name),
                added to the provider's own ``prompt_words``.
            prompt: False transcribes with no domain words at all (a short sound judged for
                what it is: a prompt makes Whisper hear "Ava." in a hummed "mm-hmm").

        Returns:
            The Transcript, with ``elapsed_ms`` set.

        Raises:
            ProviderError: the provider failed (after retries when retryable).
        """
        start = time.perf_counter()
        words = list(dict.fromkeys([*self.prompt_words, *hints])) if prompt else []
        text, language = await _with_retries(
            self.name, self.attempts, lambda: self._guard(self._transcribe(pcm16, sample_rate, words))
        )
        return Transcript(
            text=text.strip(),
            language=language,
            audio_ms=len(pcm16) / 2 / sample_rate * 1000,
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )

    async def _guard(self, coro):  # noqa: ANN001
        try:
            return await coro
        except ProviderError:
            raise
        except Exception as exc:  # an unexpected failure inside the provider
            raise ProviderError(f"{self.name} failed: {type(exc).__name__}: {exc}", provider=self.name) from exc

    @abstractmethod
    async def _transcribe(self, pcm16: bytes, sample_rate: int, words: Sequence[str]) -> tuple[str, str | None]:
        """Return (text, language or None); ``words`` are the domain words to favour."""


# --- LLM -------------------------------------------------------------------------------------
class LLM(ABC):
    """A chat model that streams text deltas and tool calls."""

    name: str = "llm"
    provider_id: str = ""
    model: str = ""
    capabilities = Capabilities(streaming=True)

    def __init__(self, attempts: int = 2) -> None:
        self.attempts = attempts

    def warm_up(self, tools: Sequence[Tool] = ()) -> None:  # noqa: B027 - optional hook, nothing by default
        """Load whatever answering ``tools``' requests needs, before a turn waits for it (blocking)."""

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[Tool] = (), first_token_s: float | None = None
    ) -> AsyncIterator[str | ToolCall]:
        """Stream one assistant response.

        Args:
            messages: the chat so far (system first), OpenAI message dicts.
            tools: the tools the model may call.
            first_token_s: budget in seconds for the first item, retries included (a phone
                caller hears an apology rather than silence); None waits as long as the
                client's own timeout.

        Yields:
            Text deltas (str) as they arrive, then any ToolCall, whole.

        Raises:
            ProviderTimeoutError: nothing arrived within ``first_token_s``.
            ProviderError: the provider failed. Retries happen only before the first item
                and only while the first-token budget lasts.
        """
        loop = asyncio.get_running_loop()
        deadline = None if first_token_s is None else loop.time() + first_token_s
        attempt = 0
        while True:
            attempt += 1
            produced = False
            source = self._stream(messages, tools)
            try:
                while True:
                    if produced or deadline is None:
                        item = await anext(source)
                    else:
                        try:
                            item = await asyncio.wait_for(anext(source), max(0.0, deadline - loop.time()))
                        except TimeoutError:
                            raise ProviderTimeoutError(
                                f"{self.name}: no first token within {first_token_s:.1f} s", self.name
                            ) from None
                    produced = True
                    yield item
            except StopAsyncIteration:
                return
            except ProviderError as exc:
                pause = 0.2 * attempt
                out_of_time = deadline is not None and loop.time() + pause >= deadline
                if produced or not exc.retryable or attempt >= self.attempts or out_of_time:
                    raise
                log.warning("%s failed (attempt %d), retrying: %s", self.name, attempt, exc)
                await asyncio.sleep(pause)
            except Exception as exc:
                raise ProviderError(f"{self.name} failed: {type(exc).__name__}: {exc}", provider=self.name) from exc
            finally:
                await source.aclose()

    @abstractmethod
    def _stream(self, messages: Sequence[Message], tools: Sequence[Tool]) -> AsyncIterator[str | ToolCall]:
        """Yield text deltas and ToolCalls."""


# --- TTS -------------------------------------------------------------------------------------
class TTS(ABC):
    """Text to speech that streams PCM16 mono chunks at ``sample_rate``."""

    name: str = "tts"
    provider_id: str = ""
    sample_rate: int = 24000
    capabilities = Capabilities(streaming=True, sample_rate=24000)

    def __init__(self, voice: str | None = None, attempts: int = 2) -> None:
        self.voice = voice
        self.attempts = attempts

    def pick_voice(self, wanted: str | None) -> str | None:
        """``wanted`` when this provider knows it (or accepts any name), else the default voice."""
        if not wanted:
            return self.voice
        if self.capabilities.voices and wanted not in self.capabilities.voices:
            log.warning("%s has no voice %r; using %r", self.name, wanted, self.voice)
            return self.voice
        return wanted

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """Synthesize ``text``.

        Args:
            text: what to say.
            voice: a voice name from ``capabilities.voices`` (a persona's); None or an
                unknown name uses the provider's default voice.

        Yields:
            PCM16 mono chunks at ``self.sample_rate`` Hz, each a whole number of samples.

        Raises:
            ProviderError: the provider failed (retried only before the first chunk).
        """
        if not text.strip():
            return
        chosen = self.pick_voice(voice)
        attempt = 0
        while True:
            attempt += 1
            produced = False
            try:
                async for chunk in self._stream(text, chosen):
                    if chunk:
                        produced = True
                        yield chunk
                return
            except ProviderError as exc:
                if produced or not exc.retryable or attempt >= self.attempts:
                    raise
                await asyncio.sleep(0.2 * attempt)
            except Exception as exc:
                raise ProviderError(f"{self.name} failed: {type(exc).__name__}: {exc}", provider=self.name) from exc

    async def synthesize(self, text: str, voice: str | None = None) -> bytes:
        """The whole utterance as one PCM16 buffer at ``self.sample_rate`` Hz."""
        return b"".join([chunk async for chunk in self.stream(text, voice)])

    @abstractmethod
    def _stream(self, text: str, voice: str | None) -> AsyncIterator[bytes]:
        """Yield PCM16 chunks at ``self.sample_rate`` in ``voice`` (None: the default)."""
