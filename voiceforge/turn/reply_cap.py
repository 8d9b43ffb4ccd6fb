"""The phone reply cap: a caller on the phone hears at most so many characters or seconds of a reply.

Applied after the LLM, at a sentence boundary (``FORGE_PHONE_REPLY_MAX_CHARS``, the seed's
300-character rule, and ``FORGE_PHONE_REPLY_MAX_S``). A first sentence over the cap is cut at a
clause or word boundary rather than dropped; fillers never count.
"""

from __future__ import annotations

from dataclasses import dataclass


def cut_at_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a clause or word boundary, ending in a period."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    for mark in (";", ",", " "):
        at = head.rfind(mark)
        if at >= limit // 2:
            head = head[:at]
            break
    return head.rstrip(" ,;:-") + "."


@dataclass
class Admitted:
    """What the cap lets through of one sentence.

    ``text`` is what to speak (None: skip it); ``cut`` when the text was shortened (a synthesis
    started for the whole sentence must be redone).
    """

    text: str | None
    cut: bool = False


class ReplyCap:
    """One reply's cap.

    Args:
        max_chars: the most characters spoken, fillers aside.
        max_s: the most seconds of audio spoken.
        active: False lets everything through (channels other than the phone).
    """

    def __init__(self, max_chars: int, max_s: float, active: bool) -> None:
        self.max_chars, self.max_s, self.active = max_chars, max_s, active
        self.capped = False
        self._chars = 0

    def admit(self, text: str, filler: bool) -> Admitted:
        """The next sentence of the reply, as far as the cap lets it through."""
        if self.capped:
            return Admitted(None)
        if not self.active or filler:
            return Admitted(text)
        if self._chars + len(text) > self.max_chars:
            self.capped = True
            if self._chars:
                return Admitted(None)
            text = cut_at_words(text, self.max_chars)  # a first sentence over the cap is cut, not dropped
            self._chars += len(text) + 1
            return Admitted(text, cut=True)
        self._chars += len(text) + 1
        return Admitted(text)

    def spoke(self, audio_s: float) -> None:
        """``audio_s`` seconds of the reply have been spoken so far: past ``max_s`` nothing more is."""
        if self.active and audio_s >= self.max_s:
            self.capped = True
