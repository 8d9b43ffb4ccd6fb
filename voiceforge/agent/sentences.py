"""Split streamed LLM text into sentences, so TTS can start on the first one."""

from __future__ import annotations

import re

_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no."}
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


class SentenceSplitter:
    """Accumulate text deltas; hand back each sentence once it is complete.

    A sentence ends at ``.``, ``!`` or ``?`` followed by white space, unless the word is a
    common abbreviation or the sentence would be shorter than ``min_chars``.
    """

    def __init__(self, min_chars: int = 12) -> None:
        self.min_chars = min_chars
        self._buf = ""

    def push(self, delta: str) -> list[str]:
        """Add a delta; return the sentences it completed."""
        self._buf += delta
        out = []
        start = 0
        for m in _BOUNDARY.finditer(self._buf):
            candidate = self._buf[start : m.start()].strip()
            last_word = candidate.rsplit(" ", 1)[-1].lower()
            if len(candidate) < self.min_chars or last_word in _ABBREVIATIONS:
                continue
            out.append(candidate)
            start = m.end()
        self._buf = self._buf[start:]
        return out

    def flush(self) -> list[str]:
        """The remaining text as a final sentence (or nothing)."""
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []


def split_sentences(text: str) -> list[str]:
    """Split a whole text into sentences (same rules as :class:`SentenceSplitter`)."""
    splitter = SentenceSplitter()
    return splitter.push(text) + splitter.flush()
