"""Per-stage failover: a configured cloud provider that fails falls back to the embedded one.

Each wrapper holds the configured provider and the embedded one and offers the stage's public
method (``transcribe``, ``stream``, ``synthesize``); it is not itself a provider, so the
providers' one-hook rule (the public method owns timing and retries, a provider implements one
hook) holds for both of the providers it wraps.

When the configured STT, LLM or TTS fails with a retryable error (connection refused, 429, 5xx)
or does not answer within ``FORGE_FAILOVER_AFTER_S``, that call is served by the embedded
provider (Whisper, the offline brain, Piper) and the turn records which provider served it and
why. Every later call tries the configured provider again, except that after
``BREAKER_FAILURES`` failures in a row a circuit breaker sends calls straight to the embedded
provider for ``BREAKER_COOLDOWN_S`` (a dead endpoint is not hammered), then lets one through.
A non-retryable error (a bad key, 400) is not failed over: it is the user's to fix, and the
turn apologises as before. ``FORGE_FAILOVER=false`` turns all of this off.

What happened is collected per turn through a context variable: :func:`collect` starts a list
in the current task, and the wrappers append ``{"stage", "configured", "served_by", "reason"}``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from voiceforge.audio.resample import StreamResampler
from voiceforge.providers.base import LLM, STT, TTS, Message, ProviderError, ProviderTimeoutError, Transcript

if TYPE_CHECKING:
    from voiceforge.tools.registry import Tool

log = logging.getLogger(__name__)
BREAKER_FAILURES = 3
"""Failures in a row that open a stage's circuit."""
BREAKER_COOLDOWN_S = 30.0
"""How long an open circuit sends calls straight to the embedded provider, s."""

_NOTES: contextvars.ContextVar[list[dict[str, str]] | None] = contextvars.ContextVar("forge_failover", default=None)


def collect() -> list[dict[str, str]]:
    """Start collecting failovers in the current task (and tasks it creates); returns the list."""
    notes: list[dict[str, str]] = []
    _NOTES.set(notes)
    return notes


class Breaker:
    """A circuit breaker: open after ``failures`` in a row, for ``cooldown_s``; then one trial call."""

    def __init__(self, failures: int = BREAKER_FAILURES, cooldown_s: float = BREAKER_COOLDOWN_S) -> None:
        self.failures, self.cooldown_s = failures, cooldown_s
        self._in_a_row = 0
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        """True while calls should skip the configured provider."""
        return time.monotonic() < self._open_until

    def record(self, ok: bool) -> None:
        """Count one call's outcome."""
        if ok:
            self._in_a_row = 0
            return
        self._in_a_row += 1
        if self._in_a_row >= self.failures:
            self._open_until = time.monotonic() + self.cooldown_s
            self._in_a_row = 0


class _Failover:
    """Shared plumbing: the configured provider, the embedded one (built on first need), the breaker."""

    stage = ""

    def _setup(self, primary: Any, fallback: Callable[[], Any], after_s: float, breaker: Breaker | None) -> None:
        self.primary = primary
        self._make_fallback = fallback
        self._fallback: Any = None
        self.after_s = after_s
        self.breaker = breaker or Breaker()
        self.name = primary.name
        self.provider_id = primary.provider_id
        self.capabilities = primary.capabilities
        self.model_name = getattr(primary, "model_name", None)

    def warm_up(self, *args: Any) -> None:
        """Warm the configured provider, and build and warm the embedded one now (blocking).

        A failover mid-call must not also wait for a model to load: the offline brain's sentence
        model, example vectors and head take about 1.5 s, Whisper about 0.5 s. ``args`` are the
        stage's own warm-up arguments (the LLM's tools).
        """
        for provider in (self.primary, self.fallback):
            warm = getattr(provider, "warm_up", None)
            if warm is not None:
                warm(*args)

    @property
    def fallback(self) -> Any:
        """The embedded provider (built on first use, or by :meth:`warm_up`)."""
        if self._fallback is None:
            self._fallback = self._make_fallback()
        return self._fallback

    def _usable(self, exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError | ProviderTimeoutError) or (
            isinstance(exc, ProviderError) and exc.retryable)

    def _note(self, reason: str) -> None:
        log.warning("%s failed over from %s to %s: %s", self.stage.upper(), self.primary.name,
                    self.fallback.name, reason)
        notes = _NOTES.get()
        if notes is not None and not any(n["stage"] == self.stage for n in notes):  # once per stage and turn
            notes.append({"stage": self.stage, "configured": self.primary.name, "served_by": self.fallback.name,
                          "reason": reason})

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.after_s:g} s"
        return str(exc) or type(exc).__name__


class FailoverSTT(_Failover):
    """STT that falls back to the embedded recogniser (see the module docstring).

    Args:
        primary: the configured STT.
        fallback: builds the embedded STT.
        after_s: the configured STT's budget per utterance, s.
        breaker: the stage's circuit breaker.
    """

    stage = "stt"

    def __init__(self, primary: STT, fallback: Callable[[], STT], after_s: float, breaker: Breaker | None = None) -> None:
        self._setup(primary, fallback, after_s, breaker)
        self.prompt_words = primary.prompt_words

    async def transcribe(self, pcm16: bytes, sample_rate: int, hints: Sequence[str] = ()) -> Transcript:
        """:meth:`STT.transcribe` on the configured provider, or on the embedded one when it fails over.

        Raises:
            ProviderError: a non-retryable failure of the configured provider, or the embedded one failed.
        """
        if self.breaker.open:
            self._note("circuit open after repeated failures")
            return await self.fallback.transcribe(pcm16, sample_rate, hints)
        try:
            transcript = await asyncio.wait_for(self.primary.transcribe(pcm16, sample_rate, hints), self.after_s)
        except (ProviderError, TimeoutError) as exc:
            if not self._usable(exc):
                raise
            self.breaker.record(False)
            self._note(self._reason(exc))
            return await self.fallback.transcribe(pcm16, sample_rate, hints)
        self.breaker.record(True)
        return transcript


class FailoverLLM(_Failover):
    """An LLM that falls back to the offline brain before its first token (see the module docstring).

    A reply that already started streaming is never switched mid-way: a failure after the first
    token is raised as before.
    """

    stage = "llm"

    def __init__(self, primary: LLM, fallback: Callable[[], LLM], after_s: float, breaker: Breaker | None = None) -> None:
        self._setup(primary, fallback, after_s, breaker)
        self.model = getattr(primary, "model", "")

    async def stream(self, messages: Sequence[Message], tools: Sequence[Tool] = (),
                     first_token_s: float | None = None) -> AsyncIterator[Any]:
        """:meth:`LLM.stream` on the configured provider, or the offline brain when it fails before its first item."""
        if self.breaker.open:
            self._note("circuit open after repeated failures")
            async for item in self.fallback.stream(messages, tools, first_token_s):
                yield item
            return
        budget = min(first_token_s, self.after_s) if first_token_s else self.after_s
        source = self.primary.stream(messages, tools, first_token_s=budget)
        try:
            first = await anext(source)
        except StopAsyncIteration:
            self.breaker.record(True)
            return
        except (ProviderError, TimeoutError) as exc:
            await source.aclose()
            if not self._usable(exc):
                raise
            self.breaker.record(False)
            self._note(self._reason(exc))
            async for item in self.fallback.stream(messages, tools, first_token_s):
                yield item
            return
        self.breaker.record(True)
        try:
            yield first
            async for item in source:
                yield item
        finally:
            await source.aclose()


class FailoverTTS(_Failover):
    """TTS that falls back to Piper before its first chunk, resampled to the configured rate.

    The stage keeps the configured provider's ``sample_rate`` whichever provider speaks, so the
    turn's audio has one rate.
    """

    stage = "tts"

    def __init__(self, primary: TTS, fallback: Callable[[], TTS], after_s: float, breaker: Breaker | None = None) -> None:
        self._setup(primary, fallback, after_s, breaker)
        self.voice = primary.voice
        self.sample_rate = primary.sample_rate

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """:meth:`TTS.stream` on the configured provider, or Piper when it fails before the first chunk."""
        if self.breaker.open:
            self._note("circuit open after repeated failures")
            async for chunk in self._fallback_stream(text):
                yield chunk
            return
        source = self.primary.stream(text, voice)
        try:
            first = await asyncio.wait_for(anext(source), self.after_s)
        except StopAsyncIteration:
            return
        except (ProviderError, TimeoutError) as exc:
            await source.aclose()
            if not self._usable(exc):
                raise
            self.breaker.record(False)
            self._note(self._reason(exc))
            async for chunk in self._fallback_stream(text):
                yield chunk
            return
        self.breaker.record(True)
        try:
            yield first
            async for chunk in source:
                yield chunk
        finally:
            await source.aclose()

    async def _fallback_stream(self, text: str) -> AsyncIterator[bytes]:
        fallback = self.fallback
        resampler = StreamResampler(fallback.sample_rate, self.sample_rate) if fallback.sample_rate != self.sample_rate \
            else None
        async for chunk in fallback.stream(text):  # the embedded provider's own voice
            out = resampler.process(chunk) if resampler else chunk
            if out:
                yield out
        if resampler is not None and (tail := resampler.flush()):
            yield tail

    async def synthesize(self, text: str, voice: str | None = None) -> bytes:
        """The whole utterance as one PCM16 buffer at ``sample_rate`` Hz (see :meth:`stream`)."""
        return b"".join([chunk async for chunk in self.stream(text, voice)])


WRAPPERS: dict[str, type] = {"stt": FailoverSTT, "llm": FailoverLLM, "tts": FailoverTTS}
