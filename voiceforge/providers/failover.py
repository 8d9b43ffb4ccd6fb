"""Per-stage failover: a configured cloud provider that fails falls back to the embedded one, and stays there.

Each wrapper holds the configured provider and the embedded one and offers the stage's public
method (``transcribe``, ``stream``, ``synthesize``); it is not itself a provider, so the
providers' one-hook rule (the public method owns timing and retries, a provider implements one
hook) holds for both of the providers it wraps.

When the configured STT, LLM or TTS fails with a retryable error (connection refused, 429, 5xx)
or does not answer within ``FORGE_FAILOVER_AFTER_S`` (the LLM: its first-token budget, if
shorter), that call is served by the embedded provider (Whisper, the offline brain, Piper), and
the stage's circuit opens: every later call, the rest of this turn (an LLM follow-up after a
tool) and every call of every conversation, goes straight to the embedded provider, so nobody
waits for a dead endpoint twice. While the circuit is open a health probe (a one-word request
to the configured provider, bounded by the same budget) runs in the background, 5 s after the
failure and then at doubling intervals up to 60 s; the first probe that succeeds closes it.
The turn records which stage failed, why, and who served it (``failover``, and ``error`` for a
failure in that turn). A non-retryable error (a bad key, 400) is not failed over: it is the
user's to fix, and the turn apologises as before. ``FORGE_FAILOVER=false`` turns all of this off.

What happened is collected per turn through a context variable: :func:`collect` starts a list
in the current task, and the wrappers append ``{"stage", "configured", "served_by", "reason"}``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from voiceforge.audio.resample import StreamResampler
from voiceforge.providers.base import LLM, STT, TTS, Message, ProviderError, ProviderTimeoutError, Transcript

if TYPE_CHECKING:
    from voiceforge.tools.registry import Tool

log = logging.getLogger(__name__)
PROBE_FIRST_S = 5.0
"""The first health probe of a failed provider runs this long after the failure, s."""
PROBE_MAX_S = 60.0
"""Probes come at doubling intervals up to this, s."""
CIRCUIT_OPEN = "circuit open since a failure; the provider is probed until it answers"
"""The ``reason`` of a failover that skipped the configured provider without trying it."""

_NOTES: contextvars.ContextVar[list[dict[str, str]] | None] = contextvars.ContextVar("forge_failover", default=None)


def collect() -> list[dict[str, str]]:
    """Start collecting failovers in the current task (and tasks it creates); returns the list."""
    notes: list[dict[str, str]] = []
    _NOTES.set(notes)
    return notes


def waited_s(stage: str) -> float:
    """How long the current turn waited on ``stage``'s configured provider before it failed over (0: it did not)."""
    notes = _NOTES.get() or []
    return max((float(n.get("waited_ms", 0)) / 1000 for n in notes if n["stage"] == stage), default=0.0)


def failures(notes: list[dict[str, str]]) -> str | None:
    """What failed in a turn, for ``turns.error`` (skips of an already open circuit are not failures), or None."""
    failed = [f"{n['stage'].upper()} {n['configured']} failed ({n['reason']}); {n['served_by']} answered"
              for n in notes if n["reason"] != CIRCUIT_OPEN]
    return "; ".join(failed) or None


class Breaker:
    """A stage's circuit: open from a failure until a health probe of the configured provider succeeds.

    Args:
        probe_first_s: seconds from the failure to the first probe.
        probe_max_s: the longest interval between probes (they double from ``probe_first_s``).
    """

    def __init__(self, probe_first_s: float = PROBE_FIRST_S, probe_max_s: float = PROBE_MAX_S) -> None:
        self.probe_first_s, self.probe_max_s = probe_first_s, probe_max_s
        self._open = False
        self._interval = probe_first_s
        self._next_probe = 0.0
        self._probing: asyncio.Task | None = None
        self.probes = 0
        """Health probes run since the circuit last opened."""

    @property
    def open(self) -> bool:
        """True while calls should skip the configured provider."""
        return self._open

    def trip(self) -> None:
        """The configured provider failed: open the circuit (a probe is due in ``probe_first_s``)."""
        if not self._open:
            self._open, self.probes = True, 0
            self._interval = self.probe_first_s
            self._next_probe = time.monotonic() + self._interval

    def close(self) -> None:
        """The configured provider answered: calls go to it again."""
        self._open = False

    def probe_if_due(self, probe: Callable[[], Awaitable[None]], name: str) -> None:
        """While open, start ``probe()`` in the background when one is due and none is running.

        Started from a call on the running event loop, so it runs wherever calls run (a call
        served meanwhile never waits for it). Success closes the circuit; failure doubles the
        interval, up to ``probe_max_s``.
        """
        if not self._open or (self._probing is not None and not self._probing.done()):
            return
        if time.monotonic() < self._next_probe:
            return
        self._probing = asyncio.get_running_loop().create_task(self._probe(probe, name), name=f"probe-{name}",
                                                               context=contextvars.Context())

    async def _probe(self, probe: Callable[[], Awaitable[None]], name: str) -> None:
        self.probes += 1
        try:
            await probe()
        except Exception as exc:  # noqa: BLE001 - any failure keeps the circuit open
            self._interval = min(self._interval * 2, self.probe_max_s)
            self._next_probe = time.monotonic() + self._interval
            log.info("%s is still failing (%s); next probe in %.0f s", name, exc or type(exc).__name__, self._interval)
            return
        log.warning("%s answered a health probe: calls go to it again", name)
        self.close()


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

    def _skip_primary(self) -> bool:
        """Whether this call goes straight to the embedded provider.

        Yes while the circuit is open (recorded in the turn's notes, and a probe started when
        one is due) or when this stage already failed over in this turn.
        """
        notes = _NOTES.get()
        if self.breaker.open:
            self.breaker.probe_if_due(self._probe, f"{self.stage.upper()} {self.primary.name}")
            self._note(CIRCUIT_OPEN)
            return True
        return notes is not None and any(n["stage"] == self.stage for n in notes)

    def _failed(self, exc: BaseException, started: float) -> None:
        self.breaker.trip()
        self._note(self._reason(exc), waited_s=time.monotonic() - started)

    async def _first_item(self, source: AsyncIterator[Any]) -> None:
        """A health probe's wait: the first item of the configured provider's stream within ``after_s``."""
        try:
            await asyncio.wait_for(anext(source), self.after_s)
        except StopAsyncIteration:
            pass
        finally:
            await source.aclose()

    async def _probe(self) -> None:
        """One small request to the configured provider within ``after_s``; raises if it fails."""
        raise NotImplementedError

    def _usable(self, exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError | ProviderTimeoutError) or (
            isinstance(exc, ProviderError) and exc.retryable)

    def _note(self, reason: str, waited_s: float = 0.0) -> None:
        if reason != CIRCUIT_OPEN:
            log.warning("%s failed over from %s to %s after %.1f s: %s", self.stage.upper(), self.primary.name,
                        self.fallback.name, waited_s, reason)
        notes = _NOTES.get()
        if notes is not None and not any(n["stage"] == self.stage for n in notes):  # once per stage and turn
            notes.append({"stage": self.stage, "configured": self.primary.name, "served_by": self.fallback.name,
                          "reason": reason, "waited_ms": round(waited_s * 1000)})

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

    async def transcribe(self, pcm16: bytes, sample_rate: int, hints: Sequence[str] = (),
                         prompt: bool = True) -> Transcript:
        """:meth:`STT.transcribe` on the configured provider, or on the embedded one when it fails over.

        Raises:
            ProviderError: a non-retryable failure of the configured provider, or the embedded one failed.
        """
        if self._skip_primary():
            return await self.fallback.transcribe(pcm16, sample_rate, hints, prompt)
        started = time.monotonic()
        try:
            return await asyncio.wait_for(self.primary.transcribe(pcm16, sample_rate, hints, prompt), self.after_s)
        except (ProviderError, TimeoutError) as exc:
            if not self._usable(exc):
                raise
            self._failed(exc, started)
            return await self.fallback.transcribe(pcm16, sample_rate, hints, prompt)

    async def _probe(self) -> None:
        await asyncio.wait_for(self.primary.transcribe(bytes(16000), 16000), self.after_s)  # 0.5 s of silence


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
        if self._skip_primary():
            async for item in self.fallback.stream(messages, tools, first_token_s):
                yield item
            return
        budget = min(first_token_s, self.after_s) if first_token_s else self.after_s
        started = time.monotonic()
        source = self.primary.stream(messages, tools, first_token_s=budget)
        try:
            first = await anext(source)
        except StopAsyncIteration:
            return
        except (ProviderError, TimeoutError) as exc:
            await source.aclose()
            if not self._usable(exc):
                raise
            self._failed(exc, started)
            async for item in self.fallback.stream(messages, tools, first_token_s):
                yield item
            return
        try:
            yield first
            async for item in source:
                yield item
        finally:
            await source.aclose()


    async def _probe(self) -> None:
        await self._first_item(self.primary.stream([{"role": "user", "content": "Say OK."}], (),
                                                    first_token_s=self.after_s))


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
        if self._skip_primary():
            async for chunk in self._fallback_stream(text):
                yield chunk
            return
        started = time.monotonic()
        source = self.primary.stream(text, voice)
        try:
            first = await asyncio.wait_for(anext(source), self.after_s)
        except StopAsyncIteration:
            return
        except (ProviderError, TimeoutError) as exc:
            await source.aclose()
            if not self._usable(exc):
                raise
            self._failed(exc, started)
            async for chunk in self._fallback_stream(text):
                yield chunk
            return
        try:
            yield first
            async for chunk in source:
                yield chunk
        finally:
            await source.aclose()

    async def _probe(self) -> None:
        await self._first_item(self.primary.stream("OK."))

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
