"""The tool-calling loop: LLM → tool calls → results → LLM, with a step limit and fillers.

The agent speaks no fixed sentences of its own except the step-limit reply: a provider
failure ends the reply with ``ReplyDone.error`` set, and the turn pipeline (``voiceforge/turn``)
speaks the one apology.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from voiceforge.agent.memory import ConversationMemory
from voiceforge.agent.persona import Persona
from voiceforge.providers.base import LLM, ProviderError, TokenUsage, ToolCall
from voiceforge.tools.registry import Tool, ToolContext, ToolRegistry, ToolResult

log = logging.getLogger(__name__)

STEP_LIMIT_REPLY = "Sorry, that took too many steps. Could you ask in a simpler way?"


@dataclass
class TextDelta:
    """A piece of the assistant's reply text, as streamed."""

    text: str


@dataclass
class Filler:
    """A filler sentence to speak while a slow tool runs (not part of the LLM's reply)."""

    text: str


@dataclass
class ToolStarted:
    """The LLM asked for a tool call; it is now running."""

    call: ToolCall


@dataclass
class ToolFinished:
    """A tool call finished (``result.error`` set when it failed)."""

    call: ToolCall
    result: ToolResult


@dataclass
class ReplyDone:
    """The reply ended: its text, the LLM failure that cut it short, whether end_call ran.

    ``input_tokens`` / ``output_tokens``: what the LLM billed over all of the turn's steps (0
    when it reports no usage, as the offline brain does).
    """

    reply: str
    error: str | None = None
    ended: bool = False
    input_tokens: int = 0
    output_tokens: int = 0


AgentEvent = TextDelta | Filler | ToolStarted | ToolFinished | ReplyDone


CONFIRM_FIRST = {
    "done": False,
    "needs_confirmation": True,
    "instruction": "Nothing was done. This action needs the caller's yes first: ask them to confirm exactly what "
                   "you will do (what, for whom, when), then call the tool again once they say yes.",
}
"""The result an LLM gets for a tool declared ``confirm = true`` that it called before the caller said yes."""


def needs_confirmation(tool: Tool | None, asked: str, said: str) -> bool:
    """Whether a call of ``tool`` must wait for the caller's yes (and gets :data:`CONFIRM_FIRST` instead).

    True for a tool declared ``confirm = true`` unless the caller's latest utterance ``said``
    says yes to a question the agent ``asked`` just before it. The one gate for every model
    that calls tools: an LLM in :class:`ToolLoop`, a Realtime model through
    :meth:`voiceforge.turn.TurnPipeline.run_tool`.
    """
    from voiceforge.providers.dialogue import affirms

    return tool is not None and tool.confirm is True and not (asked.rstrip().endswith("?") and affirms(said))


class ToolLoop:
    """One persona's agent over one conversation: the tool-calling loop (LLM → tools → LLM) of each turn.

    Args:
        llm: the LLM provider.
        registry: the tool registry (the persona's ``tools`` select from it).
        persona: the persona (system prompt, tools).
        ctx: the tool context for this conversation.
        channel: "chat", "voice", "phone", ... (phone adds the reply-length rule).
        max_steps: LLM calls allowed per turn (each tool round is one step).
        filler_after_ms: a tool still running after this long gets a filler sentence.
    """

    def __init__(
        self,
        llm: LLM,
        registry: ToolRegistry,
        persona: Persona,
        ctx: ToolContext,
        channel: str = "chat",
        memory: ConversationMemory | None = None,
        max_steps: int = 4,
        filler_after_ms: int = 600,
    ) -> None:
        self.llm, self.registry, self.persona, self.ctx = llm, registry, persona, ctx
        self.channel = channel
        self.memory = memory or ConversationMemory()
        self.max_steps = max_steps
        self.filler_after_s = filler_after_ms / 1000
        self.allowed_tools: list[str] | None = None  # overrides the persona's (a Realtime client's tools)
        self.persona_tools: list[str] | None = None  # the persona's names with its own tools (Persona.offered)
        self.instructions: str | None = None  # overrides the persona's prompt (a Realtime client's)
        self.withheld: set[str] = set()  # tools not offered in this conversation (run_sql to a stranger's text)
        self._caller_line: str | None = None  # who the caller's number belongs to, read once per conversation

    @property
    def tools(self):  # noqa: ANN201
        """The tools this persona (or a client that declared its own) may call."""
        names = self.allowed_tools if self.allowed_tools is not None else self.persona_tools or self.persona.tools
        offered = self.registry.select(names)
        return [t for t in offered if t.name not in self.withheld]

    def _system_prompt(self, tools: list[Any]) -> str:
        """The persona's prompt (or a Realtime client's), plus run_sql's dialect and tables when offered."""
        prompt = self.instructions or self.persona.prompt_for(self.channel)
        business = getattr(self.ctx, "business", None)
        if business is not None and any(t.name == "run_sql" for t in tools):
            from voiceforge.tools.sql import TABLES

            names = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "duckdb": "DuckDB"}
            prompt += f"\n\nrun_sql runs {names.get(business.dialect, business.dialect)} SQL over {TABLES}."
        if self._caller_line:
            prompt += "\n\n" + self._caller_line
        return prompt

    def _caller_identity(self) -> str:
        """A line for the system prompt with the caller's number and the customer it belongs to ("" if none).

        A phone or SMS caller's own number identifies them (Twilio's ``From``); the offline brain
        and an LLM both read it from the prompt, so nobody asks them for their name.
        """
        from voiceforge.store.business import customer_by_phone

        business = getattr(self.ctx, "business", None)
        caller = getattr(self.ctx, "caller", None)
        if not caller or business is None:
            return ""
        try:
            found = customer_by_phone(business, caller)
        except Exception:  # noqa: BLE001 - no identity is better than no answer
            log.warning("looking up the caller's number failed", exc_info=True)
            return ""
        line = f"The caller is calling from {caller}."
        if found:
            line += (f" That is the phone number of customer {found['customer_id']} ({found['name']}): "
                     "treat them as that customer.")
        return line

    async def respond(self, user_text: str, first_token_s: float | None = None) -> AsyncIterator[AgentEvent]:
        """Run one turn for ``user_text``; yields events, ending with exactly one ReplyDone.

        Args:
            user_text: what the user said.
            first_token_s: each LLM step's budget for its first token (phone calls), or None.

        A ProviderError from the LLM ends the reply with the error in ``ReplyDone.error``
        (the caller apologizes); it is never raised.
        """
        self.memory.add_user(user_text)
        tools = self.tools
        reply_parts: list[str] = []
        ended = False
        tokens = [0, 0]

        def done(reply: str, **kwargs: Any) -> ReplyDone:
            return ReplyDone(reply=reply, input_tokens=tokens[0], output_tokens=tokens[1], **kwargs)

        for _step in range(self.max_steps):
            text, calls = "", []
            try:
                if self._caller_line is None:
                    self._caller_line = await asyncio.to_thread(self._caller_identity)
                messages = self.memory.messages(self._system_prompt(tools))
                async for item in self.llm.stream(messages, tools, first_token_s=first_token_s):
                    if isinstance(item, ToolCall):
                        calls.append(item)
                    elif isinstance(item, TokenUsage):
                        tokens[0] += item.input_tokens
                        tokens[1] += item.output_tokens
                    else:
                        text += item
                        yield TextDelta(item)
            except ProviderError as exc:
                log.warning("LLM failed: %s", exc)
                reply = ("".join(reply_parts) + text).strip()
                self.memory.add_assistant(reply)
                yield done(reply, error=str(exc))
                return
            reply_parts.append(text)
            if not calls:
                self.memory.add_assistant(text)
                yield done("".join(reply_parts).strip(), ended=ended)
                return
            self.memory.add_assistant(text, calls)
            for call in calls:
                yield ToolStarted(call)
                result = None
                async for event in self._run_tool(call):
                    if isinstance(event, ToolResult):
                        result = event
                    else:
                        yield event
                assert result is not None
                self.memory.add_tool_result(call.id, result.for_llm())
                yield ToolFinished(call, result)
                if call.name == "end_call" and result.ok:
                    ended = True
        yield TextDelta(STEP_LIMIT_REPLY)
        self.memory.add_assistant(STEP_LIMIT_REPLY)
        yield done(("".join(reply_parts) + " " + STEP_LIMIT_REPLY).strip(), ended=ended)

    async def _run_tool(self, call: ToolCall) -> AsyncIterator[Filler | ToolResult]:
        allowed = {t.name for t in self.tools}
        if call.name not in allowed:
            yield ToolResult(name=call.name, arguments=call.arguments, error=f"the tool {call.name!r} is not available")
            return
        if needs_confirmation(self.registry.get(call.name), *self.memory.last_exchange()):
            # A tool with side effects runs on the caller's yes to a question, whichever model
            # called it: an LLM that skipped the question is told to ask it (nothing ran).
            yield ToolResult(name=call.name, arguments=call.arguments, result=CONFIRM_FIRST)
            return
        task = asyncio.create_task(self.registry.execute(call.name, call.arguments, self.ctx))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.filler_after_s)
            tool = self.registry.get(call.name)
            if not done and (tool is None or tool.filler):  # an empty filler: the tool wants silence
                yield Filler(tool.filler if tool else "One moment.")
            yield await task
        finally:
            task.cancel()  # a no-op once done; stops the tool when the turn is abandoned (barge-in)
