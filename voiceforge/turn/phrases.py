"""Fixed sentences synthesized once and played at once: greetings, reprompts, wrap-ups, apologies.

A persona's greeting is the first thing every caller hears, and it is the same words every
time; synthesizing it when the stream starts put Piper's first-audio time (about 200 ms warm,
seconds cold) in front of every call. The sidecar fills this cache while it warms up (before
``/ready`` answers 200), and :meth:`voiceforge.turn.TurnPipeline.say` plays a cached sentence
without calling the TTS.

Keys are (TTS provider, voice, exact text): a personalization edit that changes a greeting's
words, or another voice, simply misses and is synthesized as usual.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)

MAX_PHRASES = 256
"""Sentences kept (the oldest goes first); a greeting of 4 s at 22,050 Hz is about 180 KB."""


class PhraseCache:
    """PCM16 of fixed sentences by (TTS provider, voice, text); thread-safe (filled from a worker thread)."""

    def __init__(self, max_phrases: int = MAX_PHRASES) -> None:
        self._audio: OrderedDict[tuple[str, str, str], tuple[bytes, int]] = OrderedDict()
        self._max = max_phrases
        self._lock = threading.Lock()

    @staticmethod
    def _key(tts: Any, voice: str | None, text: str) -> tuple[str, str, str]:
        return (getattr(tts, "name", "") or type(tts).__name__, voice or "", text.strip())

    def get(self, tts: Any, voice: str | None, text: str) -> tuple[bytes, int] | None:
        """The cached audio of ``text`` as (PCM16 mono, rate in Hz), or None."""
        with self._lock:
            return self._audio.get(self._key(tts, voice, text))

    async def fill(self, tts: Any, text: str, voice: str | None = None) -> bool:
        """Synthesize ``text`` with ``tts`` (a :class:`voiceforge.providers.base.TTS`) and keep it.

        Returns False (and logs) when the TTS failed; the sentence is then synthesized when said.
        """
        if not text.strip() or self.get(tts, voice, text) is not None:
            return True
        try:
            pcm = await tts.synthesize(text, voice)
        except Exception as exc:  # noqa: BLE001 - a cache miss later, not a failed start
            log.warning("could not synthesize %r ahead: %s", text[:40], exc)
            return False
        if not pcm:
            return False
        with self._lock:
            self._audio[self._key(tts, voice, text)] = (pcm, tts.sample_rate)
            while len(self._audio) > self._max:
                self._audio.popitem(last=False)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._audio)
