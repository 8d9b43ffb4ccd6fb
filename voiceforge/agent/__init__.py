"""The agent: personas, conversation memory, the tool-calling loop (ToolLoop), sentence splitting."""

from voiceforge.agent.memory import ConversationMemory
from voiceforge.agent.persona import Persona, PersonaError, list_personas, load_persona
from voiceforge.agent.sentences import SentenceSplitter, split_sentences
from voiceforge.agent.tool_loop import (
    AgentEvent,
    Filler,
    ReplyDone,
    TextDelta,
    ToolFinished,
    ToolLoop,
    ToolStarted,
)

__all__ = [
    "AgentEvent", "ConversationMemory", "Filler", "Persona", "PersonaError", "SentenceSplitter", "ToolLoop",
    "TextDelta", "ToolFinished", "ToolStarted", "ReplyDone", "list_personas", "load_persona", "split_sentences",
]
