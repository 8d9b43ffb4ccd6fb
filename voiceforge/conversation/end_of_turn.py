"""Has the caller finished? Two signals at the first pause: the sound (Smart Turn) and the words.

With ``FORGE_TURN_DETECTOR=model`` the listener does not wait for a fixed silence. After a
short pause (``FORGE_SPECULATIVE_STT_MS``, 200 ms) it transcribes the utterance so far and
asks :class:`voiceforge.audio.turn_model.SmartTurn` about its audio, both at once, and
:func:`decide` combines them:

- the words: a turn that ends on a word that cannot end a sentence ("my customer number is",
  "an appointment for", "and", "um") or on a trailing comma or ellipsis is unfinished, whatever
  the intonation says (LiveKit's turn detector is a text model for this reason; Smart Turn
  called "My customer number is" complete, p 0.98, on Piper's voice here);
- the sound: a finished-looking text is complete when Smart Turn gives p >= 0.5.

Unfinished, the listener keeps listening up to ``FORGE_TURN_MAX_WAIT_MS`` (2 s) of silence,
then ends the utterance anyway (the silence fallback). ``FORGE_TURN_DETECTOR=silence`` (or a
persona's ``turn_detector = "silence"``) is the plain endpoint, ``FORGE_ENDPOINTING_MS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voiceforge.conversation.interruptions import words_of

UNFINISHED_ENDINGS = frozenset({
    # articles, possessives and determiners
    "a", "an", "the", "my", "your", "his", "our", "their", "every", "each",
    # prepositions that take an object
    "to", "for", "of", "at", "with", "from", "about", "into", "onto", "between", "through", "than", "via", "per",
    # conjunctions and relatives
    "and", "or", "but", "because", "if", "which", "whose", "although", "though", "unless",
    # a copula waiting for its complement ("my number is", "it was")
    "is", "was", "were", "i'm", "it's", "we're", "they're", "you're",
    # hesitations
    "um", "umm", "uh", "uhm", "er", "erm",
})
"""Words a finished English sentence does not end on: closed-class words that need what follows,
and hesitations. Words that often end a sentence ("you" in "thank you", "no", "so", "then", "in",
"do", "can", "please") are not among them."""

_TRAILING_OPEN = re.compile(r"(,|;|:|\.\.\.|…|-|—)\s*$")


def text_complete(transcript: str) -> bool:
    """False when the words so far cannot be a finished turn (see :data:`UNFINISHED_ENDINGS`).

    An empty transcript is "complete" here (no word leaves it open); :func:`decide` waits on it.
    """
    words = words_of(transcript)
    if not words:
        return True
    return not (_TRAILING_OPEN.search(transcript.strip()) or words[-1] in UNFINISHED_ENDINGS)


COMPLETE_AT = 0.5
"""Smart Turn's probability at or above which a finished-looking turn is complete (its own cut-off)."""


@dataclass(frozen=True)
class Verdict:
    """The decision at a pause.

    Attributes:
        complete: answer now (True) or keep listening (False).
        probability: Smart Turn's P(complete), or None when it did not run.
        text_complete: the words' verdict, or None when there was no transcript in time.
        waited_ms: the silence before the decision was taken, ms.
    """

    complete: bool
    probability: float | None
    text_complete: bool | None
    waited_ms: float = 0.0


def decide(probability: float | None, transcript: str | None, waited_ms: float = 0.0) -> Verdict:
    """Combine the sound and the words (see the module docstring).

    Args:
        probability: Smart Turn's P(complete) (None: no audio verdict).
        transcript: the speculative transcript of the utterance so far (None: none in time).
        waited_ms: the silence so far, ms (recorded on the verdict).
    """
    words_ok = None if transcript is None else text_complete(transcript)
    if transcript is not None and not words_of(transcript):
        # No words yet: a fragment too short for Whisper, or noise. Either way the silence
        # fallback ends it (noise is then ignored); answering now cut callers off mid-word.
        return Verdict(False, probability, None, waited_ms)
    audio_ok = True if probability is None else probability >= COMPLETE_AT
    return Verdict(bool(words_ok is not False and audio_ok), probability, words_ok, waited_ms)
