"""The one turn pipeline: STT → agent → sentences → TTS, its events and its record.

- :mod:`voiceforge.turn.pipeline`: :class:`TurnPipeline`, a conversation's turns;
- :mod:`voiceforge.turn.synthesis`: reply synthesis with look-ahead;
- :mod:`voiceforge.turn.reply_cap`: the phone reply cap;
- :mod:`voiceforge.turn.events`: the stage clock and the events a turn yields;
- :mod:`voiceforge.turn.deps`: what a pipeline uses (:class:`TurnDeps`).
"""

from voiceforge.records import TurnRecord
from voiceforge.turn.deps import TurnDeps, TurnSettings
from voiceforge.turn.events import (
    AudioChunk,
    Sentence,
    SentenceEnd,
    Timeline,
    ToolCallFinished,
    ToolCallStarted,
    Transcribed,
    TurnDone,
    TurnError,
    TurnEvent,
    tool_call_dict,
)
from voiceforge.turn.pipeline import APOLOGIES, NO_SPEECH_REPLY, TurnPipeline
from voiceforge.turn.reply_cap import cut_at_words

__all__ = [
    "APOLOGIES", "NO_SPEECH_REPLY", "AudioChunk", "Sentence", "SentenceEnd", "Timeline", "ToolCallFinished",
    "ToolCallStarted", "Transcribed", "TurnDeps", "TurnDone", "TurnError", "TurnEvent", "TurnPipeline",
    "TurnRecord", "TurnSettings", "cut_at_words", "tool_call_dict",
]
