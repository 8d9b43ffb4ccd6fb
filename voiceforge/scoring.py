"""Accuracy and latency figures shared by the tests, the Compare page and `bench/`."""

from __future__ import annotations

import re

# Contractions spelled out, as WER normalisers do (Whisper's EnglishTextNormalizer expands the
# same endings): "where's" and "where is" are one utterance heard two ways, not a word error.
# A bare "'s" is expanded only after words where it can only mean "is" (never a possessive).
_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"), (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"), (re.compile(r"\blet's\b"), "let us"),
    (re.compile(r"n't\b"), " not"), (re.compile(r"'re\b"), " are"), (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"), (re.compile(r"'m\b"), " am"), (re.compile(r"'d\b"), " would"),
    (re.compile(r"\b(where|what|who|how|when|why|there|here|it|that|he|she)'s\b"), r"\1 is"),
]


def words(text: str) -> list[str]:
    """Normalised words for WER: lower case, no punctuation, "four" → "4", "a.m." → "am", "don't" → "do not".

    Whisper writes numbers as digits or words, and contractions joined or apart, at will; both
    spellings are the same words.
    """
    from voiceforge.tools.spoken import spoken_int

    text = re.sub(r"\b([ap])\.m\.", r"\1m", text.lower().replace("\u2019", "'"))
    text = text.replace("-", " ").replace("lookup", "look up")
    for pattern, spelled in _CONTRACTIONS:
        text = pattern.sub(spelled, text)
    out = []
    for word in re.findall(r"[a-z0-9']+", text):
        number = spoken_int(word)
        out.append(str(number) if number is not None else word)
    return out


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions, deletions)."""
    d = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hypothesis, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hypothesis)]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one utterance: edit distance / reference words (0 for an empty reference)."""
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)) / max(1, len(ref))


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """WER over many (reference, hypothesis) pairs: total edits / total reference words."""
    edits = sum(edit_distance(words(r), words(h)) for r, h in pairs)
    return edits / max(1, sum(len(words(r)) for r, _ in pairs))


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0–100, nearest rank on the sorted values); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]
