"""Split streamed LLM text into sentences, so TTS can start on the first one."""

from __future__ import annotations

import re

_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no."}
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_CLAUSE = re.compile(r"(?<=[,;:])\s+")


class SentenceSplitter:
    """Accumulate text deltas; hand back each sentence once it is complete.

    A sentence ends at ``.``, ``!`` or ``?`` followed by white space, unless the word is a
    common abbreviation or the sentence would be shorter than ``min_chars``.

    With ``first_clause_chars``, the first piece handed back may end earlier, at a comma,
    semicolon or colon followed by white space once it has that many characters: TTS then
    starts on a short clause (Piper takes about 55 ms per second of audio, so a 9 s first
    sentence delayed the first audio by 0.5 s) and synthesizes the rest while it plays.
    """

    def __init__(self, min_chars: int = 12, first_clause_chars: int | None = None) -> None:
        self.min_chars = min_chars
        self.first_clause_chars = first_clause_chars
        self._buf = ""
        self._started = False

    def push(self, delta: str) -> list[str]:
        """Add a delta; return the sentences (or first clause) it completed."""
        self._buf += delta
        out = []
        start = 0
        if not self._started and self.first_clause_chars:
            end = _BOUNDARY.search(self._buf)
            for m in _CLAUSE.finditer(self._buf):
                if end is not None and m.start() > end.start():
                    break  # the first sentence ends before any long-enough clause
                if m.start() >= self.first_clause_chars:
                    out.append(self._buf[: m.start()].strip())
                    start = m.end()
                    break
        for m in _BOUNDARY.finditer(self._buf):
            candidate = self._buf[start : m.start()].strip()
            last_word = candidate.rsplit(" ", 1)[-1].lower()
            if len(candidate) < self.min_chars or last_word in _ABBREVIATIONS:
                continue
            out.append(candidate)
            start = m.end()
        self._buf = self._buf[start:]
        self._started = self._started or bool(out)
        return out

    def flush(self) -> list[str]:
        """The remaining text as a final sentence (or nothing)."""
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []


def split_sentences(text: str) -> list[str]:
    """Split a whole text into sentences (same rules as :class:`SentenceSplitter`)."""
    splitter = SentenceSplitter()
    return splitter.push(text) + splitter.flush()
