"""Reply synthesis with look-ahead: each sentence goes to TTS as soon as the agent has written it.

While one sentence is spoken the next :data:`TTS_LOOKAHEAD` are already being synthesized, so
the next one's audio is ready when this one ends. :class:`LookAhead` reads the agent's reply as
a queue of :class:`Speak` items and other events, starts a :class:`SentenceSynthesis` per
sentence within the look-ahead, and hands them on in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from voiceforge.providers import ProviderError

TTS_LOOKAHEAD = 1
"""Sentences synthesized ahead of the one being spoken. Piper takes about 55 ms per second of
audio on this 2-core machine (0.5 s for a 9 s sentence). Synthesized only once the one before it
had been sent, every sentence began after an added silence of 218 ms median (bench/speech_gaps.py)."""


class SentenceSynthesis:
    """One sentence's TTS, started now in a task; its chunks are read later, in order.

    Args:
        tts: the TTS provider.
        text: the sentence.
        voice: the voice name (None: the provider's default).
    """

    def __init__(self, tts: Any, text: str, voice: str | None) -> None:
        self._chunks: asyncio.Queue[bytes | ProviderError | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(tts, text, voice))

    async def _run(self, tts: Any, text: str, voice: str | None) -> None:
        try:
            async for chunk in tts.stream(text, voice):
                self._chunks.put_nowait(chunk)
        except ProviderError as exc:
            self._chunks.put_nowait(exc)
        finally:
            self._chunks.put_nowait(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The audio as it is synthesized (PCM16 at the provider's rate).

        Raises:
            ProviderError: the TTS failed.
        """
        while (item := await self._chunks.get()) is not None:
            if isinstance(item, ProviderError):
                raise item
            yield item

    async def finished(self) -> None:
        """Wait until the synthesis has ended (done, failed or cancelled)."""
        await asyncio.wait({self._task})

    def cancel(self) -> None:
        """Stop synthesizing (the sentence will not be spoken)."""
        self._task.cancel()


@dataclass
class Speak:
    """A sentence of the reply to speak; ``filler`` covers a slow tool. ``synthesis`` once started."""

    text: str
    filler: bool = False
    synthesis: SentenceSynthesis | None = None


class LookAhead:
    """Starts each :class:`Speak`'s synthesis up to :data:`TTS_LOOKAHEAD` sentences ahead of the one spoken.

    Args:
        tts: the TTS provider.
        voice: the voice name.
        enabled: False passes sentences on unsynthesized (a text turn).
    """

    def __init__(self, tts: Any, voice: str | None, enabled: bool = True) -> None:
        self.tts, self.voice, self.enabled = tts, voice, enabled
        self._slots = asyncio.Semaphore(TTS_LOOKAHEAD + 1)  # the sentence being spoken and those ahead
        self._started: list[SentenceSynthesis] = []

    async def run(self, source: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        """Move items from ``source`` to ``out`` until None, starting syntheses on the way (a task body)."""
        while (item := await source.get()) is not None:
            if isinstance(item, Speak) and self.enabled:
                await self._slots.acquire()
                item.synthesis = SentenceSynthesis(self.tts, item.text, self.voice)
                self._started.append(item.synthesis)
                await out.put(item)
                # One synthesis at a time per turn: other calls' first sentences queue for the one
                # TTS thread between this turn's sentences, not behind all of them.
                await item.synthesis.finished()
                continue
            await out.put(item)
        await out.put(None)

    def spoken(self, synthesis: SentenceSynthesis | None) -> None:
        """A started sentence has been spoken: one more may start."""
        if synthesis is not None:
            self._slots.release()

    def drop(self, synthesis: SentenceSynthesis | None) -> None:
        """A started sentence will not be spoken (capped, cut, or the TTS failed): stop it."""
        if synthesis is not None:
            synthesis.cancel()
            self._slots.release()

    def close(self) -> None:
        """Stop every synthesis still running (the turn ended or was abandoned)."""
        for synthesis in self._started:
            synthesis.cancel()
