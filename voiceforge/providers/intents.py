"""Intent matching by meaning, for the offline brain: sentence embeddings against example phrasings.

Trigger patterns catch the phrasings their author thought of; callers use others ("has my
package shipped yet"). Each tool declares a handful of example requests, and so do the small
talk intents below. An utterance is embedded and compared (cosine) with every example of
every offered intent; the best intent wins if its score clears ``ACCEPT`` and beats the
runner-up intent by ``MARGIN``, and a score between ``CLARIFY`` and ``ACCEPT`` makes the brain
ask whether that is what the caller meant.

The embeddings are WordLlama's packaged ``l2_supercat`` 256-dimension static token vectors
(https://github.com/dleemiller/WordLlama, 16 MB inside the PyPI wheel, no torch): about 0.5 s
to load once per process, then about 0.2 ms per utterance on this 2-core machine.

The thresholds were chosen by leave-one-out over the declared examples
(``python bench/routing.py --tune``), never on the held-out set the bench reports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from voiceforge.tools.registry import Tool

log = logging.getLogger(__name__)

ACCEPT = 0.44
"""Best example similarity (cosine, 0–1) at which the intent is taken without asking."""
CLARIFY = 0.35
"""Best similarity at which the brain asks "Did you want me to …?" instead of giving up."""
MARGIN = 0.08
"""How far the best intent must lead the runner-up intent to be taken without asking."""

SMALL_TALK: dict[str, list[str]] = {
    "greeting": ["hello", "hi there", "hey", "good afternoon", "good evening", "hiya, anyone there"],
    "thanks": ["thank you", "thanks", "cheers, I appreciate it", "that's very kind, thanks", "great, thanks for that"],
    "agent_name": ["who are you", "what is your name", "what should I call you", "who am I speaking with",
                   "are you a bot", "am I talking to a human"],
    "user_name": ["what's my name", "do you know who I am", "who am I", "do you know my name"],
    "capabilities": ["what can you do", "how can you help me", "what are you able to help with",
                     "what services do you offer", "what kind of things can I ask you", "help"],
    "how_are_you": ["how are you", "how's it going", "how are you doing today", "are you doing well"],
}
"""Small talk the offline brain answers itself, as intent → example phrasings."""


@dataclass
class Match:
    """The best reading of an utterance.

    Attributes:
        intent: a tool name or a ``SMALL_TALK`` key.
        score: its best cosine similarity to one of its examples (0–1).
        runner_up: the second-best intent's score (0 when there is none).
    """

    intent: str
    score: float
    runner_up: float

    @property
    def confident(self) -> bool:
        """True when the intent can be acted on without asking."""
        return self.score >= ACCEPT and self.score - self.runner_up >= MARGIN

    @property
    def plausible(self) -> bool:
        """True when it is worth asking whether this is what the caller meant."""
        return self.score >= CLARIFY


class _Embedder:
    """WordLlama loaded once per process, from the files inside its wheel (never downloaded)."""

    _lock = threading.Lock()
    _model: Any = None

    @classmethod
    def model(cls) -> Any:
        with cls._lock:
            if cls._model is None:
                import wordllama
                from wordllama import WordLlama

                # The wheel ships weights/ and tokenizers/; pointing the cache at the package
                # finds both (its own lookup looks in tokenizer/, singular, and would download).
                cls._model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
            return cls._model


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length sentence vectors, shape (len(texts), 256), float32."""
    if not texts:
        return np.zeros((0, 256), dtype=np.float32)
    return np.asarray(_Embedder.model().embed(texts, norm=True), dtype=np.float32)


def warm_up() -> None:
    """Load the embedding model now (about 0.5 s) instead of in the first turn."""
    embed(["hello"])


class IntentIndex:
    """Example phrasings of intents, embedded once; matches utterances against them.

    Args:
        examples: intent name → example requests (a tool's ``examples``, or ``SMALL_TALK``).
    """

    def __init__(self, examples: dict[str, list[str]]) -> None:
        self.labels: list[str] = []
        texts: list[str] = []
        for intent, phrasings in examples.items():
            for text in phrasings:
                self.labels.append(intent)
                texts.append(text)
        self.texts = texts
        self.vectors = embed(texts)

    def scores(self, utterance: str, allowed: set[str] | None = None) -> dict[str, float]:
        """Each intent's best similarity to ``utterance`` (only ``allowed`` intents when given)."""
        if not self.labels:
            return {}
        sims = self.vectors @ embed([utterance])[0]
        best: dict[str, float] = {}
        for label, sim in zip(self.labels, sims.tolist(), strict=True):
            if allowed is not None and label not in allowed:
                continue
            if sim > best.get(label, -1.0):
                best[label] = sim
        return best

    def match(self, utterance: str, allowed: set[str] | None = None) -> Match | None:
        """The best intent for ``utterance`` with its runner-up's score, or None when none is allowed."""
        return best_of(self.scores(utterance, allowed))


def best_of(scores: dict[str, float]) -> Match | None:
    """The best of per-intent ``scores`` (from :meth:`IntentIndex.scores`) with its runner-up's score."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked:
        return None
    return Match(ranked[0][0], ranked[0][1], ranked[1][1] if len(ranked) > 1 else 0.0)


_indexes: dict[tuple, IntentIndex] = {}
_indexes_lock = threading.Lock()


def index_for(tools: list[Tool], prepare: Callable[[str], str] = str) -> IntentIndex:
    """The index of these tools' examples plus the small talk, built once per set of tools.

    ``prepare`` rewrites each example the way utterances are rewritten before matching.
    """
    key = (prepare, *((t.name, tuple(t.examples)) for t in tools))
    with _indexes_lock:
        index = _indexes.get(key)
    if index is None:
        examples = {**{t.name: list(t.examples) for t in tools if t.examples}, **SMALL_TALK}
        index = IntentIndex({name: [prepare(e) for e in texts] for name, texts in examples.items()})
        with _indexes_lock:
            _indexes[key] = index
    return index
