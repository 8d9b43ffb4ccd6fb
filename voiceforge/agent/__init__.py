"""The agent: personas, conversation memory, the tool-calling loop, sentence splitting."""

from voiceforge.agent.loop import Agent, AgentEvent, Filler, ReplyDone, TextDelta, ToolFinished, ToolStarted
from voiceforge.agent.memory import ConversationMemory
from voiceforge.agent.persona import Persona, PersonaError, list_personas, load_persona
from voiceforge.agent.sentences import SentenceSplitter, split_sentences

__all__ = [
    "Agent", "AgentEvent", "ConversationMemory", "Filler", "Persona", "PersonaError", "SentenceSplitter",
    "TextDelta", "ToolFinished", "ToolStarted", "ReplyDone", "list_personas", "load_persona", "split_sentences",
]
