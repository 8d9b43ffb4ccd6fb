"""Telling a real interruption from a backchannel, a cough or a click while the agent speaks.

The policy (LiveKit Agents' minimum interruption duration and false-interruption resume,
Pipecat's MinWords strategy, Bolna's minimum words):

1. Caller sound over the agent's speech changes nothing until it has been voiced for
   ``FORGE_MIN_INTERRUPTION_MS`` (300 ms) and Silero VAD hears at least half of that as speech
   (:class:`voiceforge.audio.vad.SileroSpeech`): a cough, a click or a noise burst never stops
   the agent, and is not answered.
2. Past that, the agent *pauses*: the far end drops what it buffered (a Twilio ``clear``) and
   the rest of the reply is kept.
3. When the caller's utterance ends it is transcribed: words that are not only a backchannel
   (:func:`is_backchannel`: "uh-huh", "yeah", "okay", "right", …) make it a barge-in (the
   turn ends with what was heard, the utterance is answered); a backchannel, or no words, and
   the agent *resumes* the sentence it was saying. If nothing has been decided
   ``FORGE_FALSE_INTERRUPTION_MS`` (1.5 s) after the sound ended, it resumes too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BACKCHANNEL_WORDS = frozenset({
    "uh", "huh", "uh-huh", "uhhuh", "mm", "mmm", "hmm", "hm", "mhm", "mm-hmm", "mmhmm", "um", "umm", "ah", "oh",
    "yeah", "yep", "yup", "ok", "okay", "right", "alright", "i", "see", "got", "it", "cool", "wow", "ow", "eh",
    "aha",
})
"""Words a listener says to show they are following, not to take the turn. "Yes" and "sure" are
not among them: said over the end of a question they answer it, and an answer must not be lost."""

MAX_BACKCHANNEL_WORDS = 3
"""A backchannel is short: "oh, I see", "okay, got it"; four words or more is a turn."""

_NON_SPEECH = re.compile(r"[\[(*][^\])*]*[\])*]")  # Whisper's "[cough]", "(clears throat)", "*sigh*"
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def words_of(text: str) -> list[str]:
    """The spoken words of a transcript, lower case, without non-speech annotations."""
    return _WORD.findall(_NON_SPEECH.sub(" ", text.lower()))


def _vocal(word: str) -> bool:
    """A backchannel word, an interjection, or a lone letter ("a" and "I" are words).

    Whisper writes a hummed "mm-hmm" as "M. M.".
    """
    return word in BACKCHANNEL_WORDS or (len(word) == 1 and word not in ("a", "i"))


def is_backchannel(text: str) -> bool:
    """True when ``text`` holds no words, or only a short backchannel ("uh-huh", "okay, right", "M. M.")."""
    words = words_of(text)
    return len(words) <= MAX_BACKCHANNEL_WORDS and all(_vocal(w) for w in words)


@dataclass
class Overlap:
    """Caller sound heard while the agent was audible, not yet judged.

    Attributes:
        started: ``time.perf_counter()`` when the VAD heard it start, s.
        paused: it lasted the minimum, and the agent was paused for it.
        deciding: utterances of it being transcribed to decide barge-in or resume.
        checked_at: when Silero last looked at it (at most every 60 ms).
        paused_at: ``time.perf_counter()`` when the agent was paused for it (0: not yet), s.
    """

    started: float
    paused: bool = False
    paused_at: float = 0.0
    deciding: int = 0
    checked_at: float = 0.0
