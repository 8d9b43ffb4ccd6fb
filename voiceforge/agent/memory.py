"""Conversation memory: recent turns verbatim, older turns folded into a short summary."""

from __future__ import annotations

from voiceforge.providers.base import Message, ToolCall


class ConversationMemory:
    """The chat history an agent sends to its LLM.

    The last ``max_turns`` user turns (with their assistant replies and tool messages) are
    kept verbatim; older turns are summarized into one line each in the system message, cut
    only at user-message boundaries so a tool call is never separated from its result.
    """

    def __init__(self, max_turns: int = 8, summary_chars: int = 1200) -> None:
        self.max_turns = max_turns
        self.summary_chars = summary_chars
        self._messages: list[Message] = []
        self.summary_lines: list[str] = []

    def add_user(self, text: str) -> None:
        """Append the user's utterance and fold turns beyond ``max_turns`` into the summary."""
        self._messages.append({"role": "user", "content": text})
        users = [i for i, m in enumerate(self._messages) if m["role"] == "user"]
        while len(users) > self.max_turns:
            cut = users[1]
            self._fold(self._messages[:cut])
            del self._messages[:cut]
            users = [i for i, m in enumerate(self._messages) if m["role"] == "user"]

    def add_assistant(self, text: str, tool_calls: list[ToolCall] | None = None) -> None:
        """Append an assistant message (text and/or tool calls)."""
        message: Message = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = [c.to_message() for c in tool_calls]
        self._messages.append(message)

    def add_tool_result(self, call_id: str, content: str) -> None:
        """Append a tool message answering ``call_id``."""
        self._messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    @property
    def summary(self) -> str:
        """The rolling summary of folded turns (what is persisted with the conversation)."""
        return " ".join(self.summary_lines)[-self.summary_chars :]

    def restore(self, summary: str, turns: list[tuple[str, str]],
                tool_calls: list[list[dict]] | None = None) -> None:
        """Rebuild from a stored conversation: its summary, then its recent (user, assistant) turns.

        ``tool_calls[i]`` (name, arguments, result, error) are replayed as turn i's tool call and
        tool result messages, so what a tool found (a customer's id) stays in the context. Only
        the last ``max_turns`` are kept verbatim; older ones given here are folded in.
        """
        import json

        self._messages.clear()
        self.summary_lines = [summary] if summary else []
        for i, (user, assistant) in enumerate(turns):
            self.add_user(user)
            calls = (tool_calls or [])[i] if tool_calls and i < len(tool_calls) else []
            if calls:
                ids = [f"call_r{i}_{k}" for k in range(len(calls))]
                self.add_assistant("", [ToolCall(id=cid, name=c["name"], arguments=dict(c.get("arguments") or {}))
                                        for cid, c in zip(ids, calls, strict=True)])
                for cid, c in zip(ids, calls, strict=True):
                    payload = {"error": c["error"]} if c.get("error") else {"result": c.get("result")}
                    self.add_tool_result(cid, json.dumps(payload, default=str))
            self.add_assistant(assistant)

    def checkpoint(self) -> tuple[int, int]:
        """A mark to :meth:`rollback` to: (message count, summary line count)."""
        return len(self._messages), len(self.summary_lines)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Forget everything added since ``mark`` (a turn abandoned before anyone heard it).

        A fold since the mark cannot be undone; then only the messages after it are dropped.
        """
        messages, lines = mark
        if len(self.summary_lines) == lines:
            del self._messages[messages:]

    def settle(self, heard: str) -> None:
        """Make the last reply what the user heard (after a barge-in cut it short).

        The final assistant text becomes ``heard`` (possibly ""); a tool call left without its
        result gets an "interrupted" result, so the history stays valid for chat-completions
        APIs, which need every tool call answered.
        """
        last = self._messages[-1] if self._messages else None
        if last is not None and last["role"] == "assistant" and not last.get("tool_calls"):
            last["content"] = heard
            return
        answered = {m.get("tool_call_id") for m in self._messages if m["role"] == "tool"}
        pending = [m for m in self._messages if m["role"] == "assistant"][-1:]
        for message in pending:
            for call in message.get("tool_calls") or ():
                if call["id"] not in answered:
                    self.add_tool_result(call["id"], '{"error": "interrupted by the user"}')
        self._messages.append({"role": "assistant", "content": heard})

    def last_exchange(self) -> tuple[str, str]:
        """(What the agent said last before the caller's latest utterance, that utterance); "" where none."""
        users = [i for i, m in enumerate(self._messages) if m["role"] == "user"]
        if not users:
            return "", ""
        said = str(self._messages[users[-1]].get("content") or "")
        before = next((str(m.get("content")) for m in reversed(self._messages[:users[-1]])
                       if m["role"] == "assistant" and m.get("content")), "")
        return before, said

    def messages(self, system_prompt: str) -> list[Message]:
        """The system message (with any summary) followed by the recent messages."""
        system = system_prompt
        if self.summary_lines:
            summary = " ".join(self.summary_lines)[-self.summary_chars :]
            system += "\n\nEarlier in this conversation: " + summary
        return [{"role": "system", "content": system}, *self._messages]

    def _fold(self, messages: list[Message]) -> None:
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        replies = [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")]
        tools = [tc["function"]["name"] for m in messages for tc in m.get("tool_calls") or ()]
        line = f"The user said: {_clip(user)}."
        if tools:
            line += f" Tools used: {', '.join(tools)}."
        if replies:
            line += f" You answered: {_clip(replies[-1])}."
        self.summary_lines.append(line)

    def __len__(self) -> int:
        return len(self._messages)


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"
