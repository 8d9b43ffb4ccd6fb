"""The one live conversation: the loop (turn-taking), the playout (audio out), the recorder.

- :mod:`voiceforge.conversation.loop`: :class:`ConversationLoop`, over any transport;
- :mod:`voiceforge.conversation.playout`: :class:`Playout`, agent audio as the far end hears it;
- :mod:`voiceforge.conversation.recorder`: :class:`CallRecorder`, the whole call as WAV tracks;
- :mod:`voiceforge.conversation.live_turn`: :class:`LiveTurn`, one turn as the loop tracks it.
"""

from voiceforge.conversation.live_turn import LiveTurn
from voiceforge.conversation.loop import VAD_RATES, ConversationLoop
from voiceforge.conversation.playout import Played, Playout
from voiceforge.conversation.recorder import CallRecorder

__all__ = ["VAD_RATES", "CallRecorder", "ConversationLoop", "LiveTurn", "Played", "Playout"]
