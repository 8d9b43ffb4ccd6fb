"""One conversation's agent state: memory, tool context and a client's overrides, through verbs.

:class:`voiceforge.turn.pipeline.TurnPipeline` extends it with the turn's stages and storage;
the loop, the Realtime client and the routers change the state only through these verbs, never
through the agent's memory or tool context themselves.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from voiceforge.agent import ToolLoop
from voiceforge.agent.persona import Persona
from voiceforge.agent.tool_loop import CONFIRM_FIRST, needs_confirmation
from voiceforge.store import conversations
from voiceforge.tools import ToolContext, ToolResult
from voiceforge.transport import ClientToolRunner
from voiceforge.turn.deps import TurnDeps, TurnSettings


class ConversationState:
    """One conversation's agent state: its tool loop with memory under a persona, and its tool context.

    The turn pipeline is built on it; adapters reach the state only through these verbs.

    Args:
        deps: what it uses (providers, database, tools, settings).
        persona: the persona (system prompt, tools, voices, phone reply rule).
        channel: "chat", "voice", "phone", "sms", "browser", "device", "api", "cli", ...
        conversation_id: a stored conversation to continue, or None (created on first use).
        caller: the caller's E.164 number on phone and SMS channels (send_sms may text it).
        child_id: the child a storyteller device belongs to (its tools keep the child's progress).
        persist: store turns; False when a parent has not consented (nothing about the child
            is written, the conversation still works).
    """

    def __init__(self, deps: TurnDeps, persona: Persona, channel: str, conversation_id: int | None = None,
                 caller: str | None = None, child_id: int | None = None, persist: bool = True) -> None:
        self.deps, self.persona, self.channel = deps, persona, channel
        self.pinned_version: int | None = None  # a persona version the conversation must keep (not the newest)
        self.conversation_id = conversation_id
        self.child_id, self.persist = child_id, persist
        self._creating = threading.Lock()  # one conversation, however many tasks ask for it at once
        self.voice: str | None = None  # a voice that overrides the persona's (a device's, a client's)
        self._ctx = ToolContext(db=deps.db, business_db=deps.business_db, settings=deps.tool_settings,
                                conversation_id=conversation_id, services=deps.services, caller=caller,
                                child_id=child_id)
        own = list(persona.own_tools)
        if persona.mcp:
            from voiceforge.tools import builtin_names
            from voiceforge.tools.mcp_servers import tools_for

            own += tools_for(persona.mcp, deps.tool_settings, sorted(builtin_names()))
        self.registry = deps.registry.with_tools(own)
        """The tools this conversation may reach: the built-ins and the agent's own (declared, MCP)."""
        self._agent = ToolLoop(deps.providers.llm, self.registry, persona, self._ctx, channel=channel,
                               filler_after_ms=deps.settings.filler_after_ms)
        self._agent.persona_tools = persona.offered(own)

    @property
    def settings(self) -> TurnSettings:
        """The settings this conversation runs under (:class:`voiceforge.turn.deps.TurnSettings`)."""
        return self.deps.settings

    @property
    def stt_rate(self) -> int | None:
        """The rate (Hz) the STT transcribes at natively (None: any)."""
        return self.deps.providers.stt.capabilities.sample_rate

    # --- the conversation's state, through verbs --------------------------------------------------
    @property
    def tools(self) -> list[Any]:
        """The tools the agent may call now (the persona's, or those a client declared)."""
        return self._agent.tools

    @property
    def ended(self) -> bool:
        """end_call ran in this conversation."""
        return bool(self._ctx.state.get("ended"))

    def dialogue_state(self) -> dict[str, str]:
        """What the conversation leaves open, read off the agent's messages.

        See :func:`voiceforge.providers.dialogue.describe` (keys request, waiting_for, tool, customer).
        """
        from voiceforge.providers.dialogue import describe

        return describe(self._agent.memory.messages(""), self.tools)

    @property
    def summary(self) -> str:
        """The rolling summary of turns that left the agent's memory."""
        return self._agent.memory.summary

    @property
    def memory_turns(self) -> int:
        """How many recent turns the agent keeps word for word."""
        return self._agent.memory.max_turns

    def for_child(self, child_id: int | None, persist: bool) -> None:
        """Serve a storyteller device's child (their progress tools); ``persist`` False stores nothing."""
        self.child_id = self._ctx.child_id = child_id
        self.persist = persist

    def configure(self, *, voice: str | None = None, instructions: str | None = None,
                  client_tools: tuple[str, ...] | None = None, run_client_tool: ClientToolRunner | None = None) -> None:
        """Apply a client's settings (a Realtime client's ``session.update``); None leaves a setting as it is.

        Args:
            voice: a TTS voice name; one the TTS does not know, or "", means the persona's.
            instructions: a system prompt instead of the persona's ("": the persona's again).
            client_tools: the registered tools the client declared: only these are offered, and
                with ``run_client_tool`` the client runs them.
            run_client_tool: runs a declared tool on the client's side.
        """
        if voice is not None:
            known = self.deps.providers.tts.capabilities.voices
            self.voice = voice if voice and (not known or voice in known) else None
        if instructions is not None:
            self._agent.instructions = instructions or None
        if client_tools is not None:
            registry = self.registry
            declared = [n for n in client_tools if registry.get(n)]
            if run_client_tool is not None:
                def remote(name: str):  # noqa: ANN202
                    async def run(ctx, **arguments):  # noqa: ANN001, ANN202
                        return await run_client_tool(name, arguments)
                    return run

                self._agent.registry = registry.derive({n: remote(n) for n in declared})
            self._agent.allowed_tools = declared

    def withhold(self, *names: str) -> None:
        """Do not offer these tools in this conversation (the agent neither sees nor runs them)."""
        self._agent.withheld.update(names)

    def remember(self, role: str, text: str) -> None:
        """Add a message of earlier conversation to the agent's memory ("user", "assistant", "system")."""
        memory = self._agent.memory
        if role == "user":
            memory.add_user(text)
        elif role == "assistant":
            memory.add_assistant(text)
        else:
            memory.summary_lines.append(text)

    def restore(self, summary: str, turns: list[tuple[str, str]], tool_calls: list[list[dict[str, Any]]]) -> None:
        """Continue a stored conversation: its summary, its last (user, assistant) turns and their tool calls."""
        self._agent.memory.restore(summary, turns, tool_calls)

    def recent_exchanges(self) -> list[tuple[str, str]]:
        """The (user, assistant) exchanges the agent remembers word for word, oldest first."""
        pairs, user = [], None
        for m in self._agent.memory.messages("")[1:]:
            if m["role"] == "user":
                user = m["content"]
            elif m["role"] == "assistant" and m.get("content") and user is not None:
                pairs.append((user, m["content"]))
                user = None
        return pairs

    def messages(self, system_prompt: str = "") -> list[dict[str, Any]]:
        """The chat the agent would send its LLM now (OpenAI messages, ``system_prompt`` first)."""
        return self._agent.memory.messages(system_prompt)

    def checkpoint(self) -> tuple[int, int]:
        """A mark of the agent's memory now, to :meth:`rollback` to if what follows is never heard."""
        return self._agent.memory.checkpoint()

    def rollback(self, mark: tuple[int, int]) -> None:
        """Forget what was thought since ``mark`` (nobody heard it)."""
        self._agent.memory.rollback(mark)

    def settle(self, heard: str) -> None:
        """The agent's last reply becomes exactly ``heard`` (a barge-in cut it, a cap, an apology)."""
        self._agent.memory.settle(heard)

    async def run_tool(self, name: str, arguments: dict[str, Any],
                       exchange: tuple[str, str] | None = None) -> ToolResult:
        """Run one tool in this conversation's context (a Realtime model's call, the Tools page); never raises.

        ``exchange`` is (what the agent said last, what the caller said since) when a model
        called the tool: a tool declared ``confirm = true`` then runs only on the caller's yes
        to that question, and otherwise returns ``CONFIRM_FIRST`` (nothing ran), as in the
        cascade's tool loop. The Tools page passes none: the person testing means to run it.
        """
        if exchange is not None and needs_confirmation(self.registry.get(name), *exchange):
            return ToolResult(name=name, arguments=arguments, result=CONFIRM_FIRST)
        return await self.registry.execute(name, arguments, self._ctx)

    # --- conversation -------------------------------------------------------------------------
    async def ensure_conversation(self, title: str = "") -> int | None:
        """The stored conversation's id, created now if there is none yet (None when not persisting).

        Safe to call from tasks that run at once (a turn's reply and its storage): the check and
        the insert happen under one lock, so a conversation is created once.
        """
        if self.conversation_id is None and self.persist:
            await asyncio.to_thread(self._create_conversation_once, title)
        return self.conversation_id

    def _create_conversation_once(self, title: str) -> None:
        with self._creating:
            if self.conversation_id is None:
                self.conversation_id = conversations.create_conversation(self.deps.db, self.channel,
                                                                         self.persona.id, title, self.persona.version)
                self._ctx.conversation_id = self.conversation_id
