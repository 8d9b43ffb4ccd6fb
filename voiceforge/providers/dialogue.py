"""Dialogue state, rebuilt from a conversation's messages alone: the request still being filled.

A caller's request often takes several turns: "I need to see someone on Thursday about a
repair" → "Could you tell me your name or your customer number?" → "customer number 4". The
agent's slot questions (each tool parameter's ``ask`` in its declaration) mark those turns: the
utterances the agent answered with a slot question, up to the caller's latest, are one request
(:func:`open_request`). Nothing here is kept between turns, so the state survives a restart, a
resumed conversation and a stateless chat endpoint: it is read off the message list each turn,
as a model would read it.

What the state holds (:class:`DialogueState`): the pending request's words, the questions asked
and their answers (the last is what the agent waits for), how the caller introduced themselves,
and the last list a tool returned. Who a tool identified is read by the brain's facts from the
same tool results (:func:`tool_results`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voiceforge.tools.spoken import identity_in

if TYPE_CHECKING:
    from voiceforge.providers.base import Message
    from voiceforge.tools.registry import Tool


CONFIRM_PREFIX = "Just to confirm, shall I "
"""How the agent's confirmation of a tool with side effects begins (``confirm`` in its declaration)."""


_YES = re.compile(r"^\W*((perfect|great|lovely|brilliant|good|fine|fab(ulous)?|excellent|wonderful|cool|oh|um+|uh+)\W+)*"
                  r"(yes|yeah|yep|yup|sure|please|correct|right|exactly|that'?s (right|it|fine|good|great|perfect)"
                  r"|uh-huh|ok(ay)?|go ahead|sounds (good|great|fine|perfect)|that (works|would be (great|perfect|fine))"
                  r"|perfect|great|lovely|brilliant|fine|absolutely|definitely|of course|do it|book it)\b(?!\W*(but|not)\b)",
                  re.I)


def affirms(utterance: str) -> bool:
    """Whether the caller's ``utterance`` begins with a yes.

    "yes please", "sure", "perfect, yes", "sounds good"; not a yes taken back ("fine, but not Friday").
    """
    return bool(_YES.match(utterance))


def is_confirmation(text: str) -> bool:
    """Whether the agent's ``text`` asks the caller to confirm a tool call."""
    return text.startswith(CONFIRM_PREFIX)


def slot_questions(tools: Sequence[Tool]) -> set[str]:
    """Every question the tools' declared parameters ask when their slot finds nothing (or half of it)."""
    params = [p for t in tools if t.declaration is not None for p in t.declaration.parameters]
    return {q for p in params for q in (p.ask, p.options.get("ask_time")) if isinstance(q, str) and q}


def asked(text: str, questions: set[str]) -> str | None:
    """The slot question the agent's ``text`` asks, or None.

    All of the text, or its end (a list read out, then "Which appointment number is it?"); a
    confirmation is its own question.
    """
    if text in questions or is_confirmation(text):
        return text
    return next((q for q in questions if text.endswith(" " + q) or text.endswith(" " + without_ack(q))), None)


_ACK = re.compile(r"^(sure|okay|ok|right|great|thanks)[.,!]\s+", re.I)


def without_ack(question: str) -> str:
    """A slot question without its leading acknowledgement ("Sure. Could you …" → "Could you …")."""
    return _ACK.sub("", question)


_DONT_KNOW = re.compile(r"\b(don'?t|do not|can'?t|cannot|couldn'?t) (know|remember|recall|find|think of)\b"
                        r"|\bnot sure\b|\bno idea\b|\b(forgot|forgotten)\b", re.I)


def does_not_know(answer: str) -> bool:
    """Whether the caller's ``answer`` says they cannot give what was asked ("I don't know my number")."""
    return bool(_DONT_KNOW.search(answer))


@dataclass
class DialogueState:
    """What the conversation so far leaves open (see the module docstring).

    Attributes:
        request: the caller's utterances of the request still being filled, oldest first (the
            last is the latest utterance); one utterance when nothing was pending.
        answers: each slot question asked during the open request → the caller's answer to it.
        exchanges: (the agent's question, the caller's answer) of the open request, in order,
            confirmations included.
        introduced: how the caller named themselves before the open request ("this is James
            Jackson": {"name": ...}), when no tool has identified them yet; {} otherwise.
        last_list: the items of the last list a tool returned (appointments, orders), oldest first.
    """

    request: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    exchanges: list[tuple[str, str]] = field(default_factory=list)
    introduced: dict[str, Any] = field(default_factory=dict)
    last_list: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """A request began earlier and the agent asked for something it needs."""
        return len(self.request) > 1


def open_request(messages: Sequence[Message], questions: set[str]) -> list[str]:
    """The caller's utterances of the request still open, oldest first, ending with the latest.

    Walks back from the last user message while the message before each user message is the
    agent's slot question (one of ``questions``) or a confirmation: each such question means the
    utterance before it is part of the same request. Any other reply closes the request.
    """
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        return []
    chain = [users[-1]]
    for index in reversed(users[:-1]):
        between = messages[index + 1 : chain[0]]
        said = [str(m.get("content") or "").strip() for m in between if m.get("role") == "assistant"]
        # The request goes on while the agent's last words before this answer were its question
        # (a lookup may have run in between); a reply that is no question closes it.
        if not said or asked(said[-1], questions) is None:
            break
        chain.insert(0, index)
    return [str(messages[i].get("content") or "") for i in chain]


def read_state(messages: Sequence[Message], tools: Sequence[Tool]) -> DialogueState:
    """The dialogue state of ``messages`` (the latest user message last, or tool results after it)."""
    questions = slot_questions(tools)
    state = DialogueState(request=open_request(messages, questions))
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    for index in users[len(users) - len(state.request) + 1:]:  # the open request's answers
        before = messages[index - 1]
        question = asked(str(before.get("content") or "").strip(), questions) if before.get("role") == "assistant" else None
        if question is not None:
            answer = str(messages[index].get("content") or "")
            state.exchanges.append((question, answer))
            if question in questions:
                state.answers[question] = answer
    for index in users[: len(users) - len(state.request)]:  # before the open request
        named = identity_in(str(messages[index].get("content") or ""))
        if named:
            state.introduced = named
    for result in tool_results(messages):
        if result.get("customer_id"):
            state.introduced = {}  # a tool identified the customer (the brain's facts hold who)
        items = list_items(result)
        if items is not None:
            state.last_list = items
    return state


def list_items(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The items of a list a tool returned (its first value that is a list of objects), or None."""
    return next((v for v in result.values() if isinstance(v, list) and v and isinstance(v[0], dict)), None)


def tool_results(messages: Sequence[Message]) -> Iterator[dict[str, Any]]:
    """The ``result`` of each tool message that returned a JSON object, oldest first (errors skipped)."""
    for m in messages:
        if m.get("role") != "tool":
            continue
        try:
            result = json.loads(m.get("content") or "{}").get("result")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(result, dict):
            yield result


def describe(messages: Sequence[Message], tools: Sequence[Tool]) -> dict[str, str]:
    """The dialogue state after the agent's latest reply, for people ({} when nothing is open).

    Keys (each only when known): ``request`` (the caller's first words of the open request),
    ``waiting_for`` (what the agent's last question asks for: the parameter's declared ``label``
    or its name, "the time of day" after a day alone, or "a yes or no"), ``tool`` (the tool that question belongs to, when only one
    tool asks it) and ``customer``
    ("Name (customer N)", the last customer a tool identified).
    """
    out: dict[str, str] = {}
    for result in tool_results(messages):
        if result.get("customer_id") and result.get("name"):
            out["customer"] = f"{result['name']} (customer {result['customer_id']})"
    said = [i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("content")]
    if not said:
        return out
    last = str(messages[said[-1]].get("content") or "").strip()
    questions = slot_questions(tools)
    question = asked(last, questions)
    if question is None:
        return out
    request = open_request(messages[: said[-1]], questions)
    if request:
        out["request"] = request[0]
    if is_confirmation(question):
        out["waiting_for"] = "a yes or no"
        return out
    asking = [(tool, param) for tool in tools if tool.declaration is not None
              for param in tool.declaration.parameters if question in (param.ask, param.options.get("ask_time"))]
    if asking:
        tool, param = asking[0]
        what = str(param.options.get("label") or param.name.replace("_", " "))
        out["waiting_for"] = what if question == param.ask else "the time of day"
        if len({t.name for t, _ in asking}) == 1:  # several tools ask "who are you?": the request tells which
            out["tool"] = tool.name
    return out
