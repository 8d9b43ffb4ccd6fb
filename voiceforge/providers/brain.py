"""The offline brain: a deterministic, tool-aware responder behind the LLM interface.

No local model that ships here can hold a conversation, so offline Forge matches the user's
utterance against each offered tool's trigger patterns, extracts arguments, calls the tool
and phrases its result; anything else gets a short, honest reply. It reads only the message
list, like a real model, so the agent loop treats it exactly like OpenAI. The UI labels it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from voiceforge.providers.base import LLM, Capabilities, Message, ToolCall

if TYPE_CHECKING:
    from voiceforge.tools.registry import Tool

_CUSTOMER_KEYS = ("name", "phone")

TAG_OFFERS = {
    "customers": "looking up customers", "orders": "orders", "appointments": "appointments",
    "sql": "questions about the customer records", "messages": "sending a text or a team message",
    "chalisa": "the Hanuman Chalisa", "stories": "stories about Hanuman",
}
"""How the offline brain names what its tools can do (end_call needs no mention)."""


def _facts(messages: Sequence[Message]) -> dict[str, Any]:
    """Facts from earlier tool results: the last identified customer id and name."""
    known: dict[str, Any] = {}
    for m in messages:
        if m.get("role") != "tool":
            continue
        try:
            result = json.loads(m.get("content") or "{}").get("result")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(result, dict) and result.get("customer_id"):
            known["customer_id"] = result["customer_id"]
            if result.get("name"):
                known["customer_name"] = result["name"]
        if isinstance(result, dict) and "next_step_index" in result and "index" in result:
            known["chalisa_last"] = result["index"]  # the Chalisa step just taught
    return known


def _tool_name_of(messages: Sequence[Message], call_id: str) -> str | None:
    for m in messages:
        for tc in m.get("tool_calls") or ():
            if tc.get("id") == call_id:
                return tc["function"]["name"]
    return None


class OfflineBrain(LLM):
    """Deterministic responder that calls tools by trigger phrase; streams word by word."""

    name = "offline"
    model = "offline-brain"
    capabilities = Capabilities(streaming=True, offline=True)

    def __init__(self) -> None:
        super().__init__(attempts=1)
        self._calls = 0

    async def _stream(self, messages: Sequence[Message], tools: Sequence[Tool]) -> AsyncIterator[str | ToolCall]:
        reply = self._respond(messages, tools)
        if isinstance(reply, ToolCall):
            yield reply
            return
        for i, word in enumerate(reply.split(" ")):
            yield word if i == 0 else " " + word

    def _call(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        self._calls += 1
        return ToolCall(id=f"call_offline_{self._calls}", name=name, arguments=arguments)

    def _respond(self, messages: Sequence[Message], tools: Sequence[Tool]) -> str | ToolCall:
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            return "Hello! How can I help?"
        last = users[-1]
        utterance = str(messages[last].get("content") or "")
        by_name = {t.name: t for t in tools}
        known = _facts(messages[:last])
        intent, args = None, None
        asked = messages[last - 1] if last > 0 else {}
        if len(users) > 1 and asked.get("role") == "assistant" and str(asked.get("content") or "").rstrip().endswith("?"):
            # An answer to our own question ("Could you tell me your name?") continues the
            # earlier request, so match the two utterances together first.
            earlier = str(messages[users[-2]].get("content") or "")
            intent, args = self._match(earlier + " " + utterance, tools, known)
            if isinstance(args, str):
                intent, args = None, None
        if intent is None:
            intent, args = self._match(utterance, tools, known)
        results = [m for m in messages[last + 1 :] if m.get("role") == "tool"]
        if not results:
            if intent is None:
                return self._small_talk(utterance, messages, tools)
            if isinstance(args, str):
                return args
            return self._plan(intent, args, by_name, fresh_customer=None)
        payload = json.loads(results[-1].get("content") or "{}")
        done = _tool_name_of(messages, results[-1].get("tool_call_id", ""))
        if "error" in payload:
            return f"Sorry, {payload['error']}."
        result = payload.get("result")
        if (
            intent is not None
            and done == "lookup_customer"
            and intent.name != "lookup_customer"
            and isinstance(result, dict)
            and result.get("customer_id")
            and isinstance(args, dict)
        ):
            return self._plan(intent, args, by_name, fresh_customer=result["customer_id"])
        return self._phrase(by_name.get(done or ""), result)

    def _match(self, utterance: str, tools: Sequence[Tool], known: dict[str, Any]):  # noqa: ANN202
        for tool in tools:
            if tool.extract is None or not tool.matches(utterance):
                continue
            args = tool.extract(utterance, known)
            if args is not None:
                return tool, args
        return None, None

    def _plan(self, intent: Tool, args: dict[str, Any], by_name: dict[str, Tool], fresh_customer: int | None) -> ToolCall:
        needs_id = "customer_id" in intent.parameters["properties"] and "customer_id" not in args
        if needs_id and any(k in args for k in _CUSTOMER_KEYS):
            ref = {k: args[k] for k in _CUSTOMER_KEYS if k in args}
            rest = {k: v for k, v in args.items() if k not in _CUSTOMER_KEYS}
            if fresh_customer is not None:
                return self._call(intent.name, {"customer_id": fresh_customer, **rest})
            if "lookup_customer" in by_name:
                return self._call("lookup_customer", ref)
        return self._call(intent.name, args)

    @staticmethod
    def _phrase(tool: Tool | None, result: Any) -> str:
        if tool is not None and tool.phrase is not None:
            return tool.phrase(result)
        if isinstance(result, dict) and result.get("summary"):
            return str(result["summary"])
        return "Done."

    @staticmethod
    def _small_talk(utterance: str, messages: Sequence[Message], tools: Sequence[Tool]) -> str:
        system = str(messages[0].get("content", "")) if messages and messages[0].get("role") == "system" else ""
        m = re.search(r"\byou are ([A-Z][\w-]+)", system, re.I)
        me = m.group(1) if m else "Forge's assistant"
        text = utterance.lower()
        if re.search(r"\b(hello|hi|hey|good (morning|afternoon|evening))\b", text):
            return f"Hi, I'm {me}. How can I help you today?"
        if re.search(r"\b(thanks|thank you)\b", text):
            return "You're welcome. Is there anything else I can do?"
        if re.search(r"\b(who are you|your name|what are you)\b", text):
            return f"I'm {me}, running on Forge's offline brain."
        offers = [TAG_OFFERS[tag] for tag in dict.fromkeys(tag for t in tools for tag in t.tags) if tag in TAG_OFFERS]
        if "stories" in {tag for t in tools for tag in t.tags}:  # a child's storyteller: an invitation, not a menu
            return "Would you like a story about Hanuman, or shall we learn a verse of the Hanuman Chalisa?"
        if offers:
            listed = offers[0] if len(offers) == 1 else ", ".join(offers[:-1]) + " and " + offers[-1]
            return f"I'm running on Forge's offline brain, so I can help with {listed}. Could you say that another way?"
        return "I'm running on Forge's offline brain and can't answer that. Could you say it another way?"
