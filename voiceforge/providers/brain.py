"""The offline brain: a deterministic, tool-aware responder behind the LLM interface.

No local model that ships here can hold a conversation, so offline Forge reads the user's
utterance in two ways: each offered tool's trigger patterns (phrasings that certainly mean the
tool), then, when none fires, sentence embeddings against the example requests each tool and
each kind of small talk declares (voiceforge/providers/intents.py). A confident match extracts the
arguments by rule, calls the tool and phrases its result for the ear; a plausible one is
asked back ("Did you want me to check your orders?"); a question closer in meaning to one of
the persona's facts (voiceforge/agent/knowledge.py, read from the system prompt) than to any
tool is answered from that fact; small talk gets its answer; anything else a short, honest
reply naming a few things it can do. It reads only the message list,
like a real model, so the agent loop treats it exactly like OpenAI. The UI labels it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from voiceforge.agent import knowledge
from voiceforge.providers import intents
from voiceforge.providers.base import LLM, Capabilities, Message, ToolCall
from voiceforge.providers.dialogue import (
    CONFIRM_PREFIX,
    DialogueState,
    affirms,
    does_not_know,
    is_confirmation,
    list_items,
    read_state,
    tool_results,
    without_ack,
)
from voiceforge.tools import slots, spoken
from voiceforge.tools.spoken import identity_in

if TYPE_CHECKING:
    from voiceforge.tools.registry import Tool

_CUSTOMER_KEYS = ("name", "phone")

_THANKS = r"thanks|thank you|cheers"
_GREETING = r"hello|hi|hey|hiya|good (morning|afternoon|evening)"
_SMALL_TALK_PATTERNS = [
    # Small talk is a closed set where a pattern is exact and static embeddings are not ("my"
    # and "your" name sit 0.98 apart), so these are read first.
    ("user_name", re.compile(r"\b(what'?s|what is|say|tell me|do you know|remember)\s+my name\b|\bwho am i\b(?! (talking|speaking))"
                             r"|\bwhat my name is\b"
                             r"|\bdo you know who i am\b", re.I)),
    ("agent_name", re.compile(r"\byour name\b|\bwho are you\b|\bwho am i (talking|speaking)\b|\bwhat are you\b"
                              r"|\bare you (a |an )?(real|human|person|bot|robot|machine|ai)\b", re.I)),
    ("capabilities", re.compile(r"\bwhat (can|do|else can) you (do|help)|\bhow can you help\b|\bwhat are you able\b"
                                r"|\bwhat (services|things) (do|can)\b", re.I)),
    # "Say that again": the last reply, word for word (not "I didn't get it", a missing parcel).
    ("repeat", re.compile(r"\bsay (that|it|this) (again|one more time)\b|\brepeat (yourself|what you (just )?said)\b"
                          r"|\brepeat (that|it|this)(\W+(again|please|for me|one more time))*\W*$"
                          r"|^\W*((sorry|pardon|come again|say again)\W*)+$|\bpardon( me)?\?"
                          r"|\b(didn'?t|did not|couldn'?t|could not) (quite )?(catch (that|it|what you said)\b|hear (that|what you said)\b"
                          r"|hear (you|it)\W*$)|\bwhat did you (just )?say\W*$", re.I)),
    ("how_are_you", re.compile(r"\bhow are you\b|\bhow'?s it going\b", re.I)),
    ("kind_words", re.compile(r"^\W*(i (really )?(love|like) you|you'?re (so |really )?(nice|kind|lovely|my (best )?friend))\W*$",
                              re.I)),
    ("hearing", re.compile(r"\bcan you hear me\b|\bare you (still )?there\b", re.I)),
    # "Hold on a second": the caller needs a moment; never a goodbye, never a request.
    ("wait", re.compile(r"^\W*((ok(ay)?|sorry|um+|uh+)\W+)*(hold on|hang on|wait|one (moment|sec(ond)?)"
                        r"|just a (moment|sec(ond)?|minute)|give me a (moment|sec(ond)?|minute))"
                        r"(\W+(a|one) (sec(ond)?|moment|minute))?(\W+please)?\W*$", re.I)),
    ("thanks", re.compile(rf"\b({_THANKS})\b", re.I)),
    ("greeting", re.compile(rf"^\W*({_GREETING})\b", re.I)),
]
TAG_OFFERS = {
    "orders": "check your orders", "appointments": "book or change appointments",
    "customers": "look up your account", "messages": "send a text", "sql": "answer questions about our records",
    "stories": "tell a story about Hanuman", "chalisa": "teach the Hanuman Chalisa",
}
"""What the brain says it can do, per tool tag, most useful first; a reply names three at most."""
_CLARIFY_PREFIX = "Did you want me to "
_NO = re.compile(r"^\W*(no|nope|not really|nah|wrong)\b", re.I)
_PLAIN_NO = re.compile(r"\W*(no|nope|not really|nah|wrong|no thanks|no thank you|don'?t)\W*", re.I)


_CALLER = re.compile(r"the phone number of customer (\d+) \(([^)]*)\)")
_CALLER_PHONE = re.compile(r"The caller is calling from (\+\d+)")


def _facts(messages: Sequence[Message]) -> dict[str, Any]:
    """Facts from the system prompt and earlier tool results: the identified customer's id and name."""
    known: dict[str, Any] = {}
    system = str(messages[0].get("content") or "") if messages and messages[0].get("role") == "system" else ""
    caller = _CALLER.search(system)  # the caller's own number identified them (voiceforge/agent/tool_loop.py)
    if caller:
        known["customer_id"], known["customer_name"] = int(caller.group(1)), caller.group(2)
    phone = _CALLER_PHONE.search(system)
    if phone:
        known["caller_phone"] = phone.group(1)
    for result in tool_results(messages):
        if result.get("customer_id"):
            known["customer_id"] = result["customer_id"]
            if result.get("name"):
                known["customer_name"] = result["name"]
        if "next_step_index" in result and "index" in result:
            known["chalisa_last"] = result["index"]  # the Chalisa step just taught
    return known


def agent_name(messages: Sequence[Message]) -> str | None:
    """The agent's name from the system prompt's "You are <Name>" (a capitalised word), or None."""
    system = str(messages[0].get("content", "")) if messages and messages[0].get("role") == "system" else ""
    m = re.search(r"\b[Yy]ou are ([A-Z][\w-]+)", system)
    return m.group(1) if m else None


_NOT_ADDRESSED = {"about", "of", "with", "to", "for", "like", "is", "was", "and", "or", "meet", "called", "named",
                  "the", "a", "an", "than", "from", "by", "as"}
"""Words before a name at the end that make it the subject, not the one spoken to ("tell me about Hanuman")."""


def without_vocative(utterance: str, name: str | None) -> str:
    """``utterance`` without the agent's name where it only addresses the agent.

    "Hanuman, tell me a story" → "tell me a story"; "thank you Hanuman" → "thank you"; but not
    "tell me about Hanuman" or "Hanuman's tail". The name carries no request, and left in it
    pulls a storyteller's "hello Hanuman" toward its stories.
    """
    if not name:
        return utterance
    n = re.escape(name)
    out = re.sub(rf"^\W*{n}\b(?!')\W*", "", utterance, flags=re.I)
    m = re.search(rf"(\w+)?\W+{n}\W*$", out, re.I)
    if m and (m.group(1) or "").lower() not in _NOT_ADDRESSED:
        out = out[: m.start()] + (m.group(1) or "")
    return out if out.strip(" ,.!?") else utterance


_PREAMBLE = re.compile(rf"^\W*(?:{_GREETING})\b[\s,.!-]*(?:(?:so|um+|uh+|er+|erm|well|oh)\b[\s,.!-]*)*", re.I)


def without_preamble(utterance: str) -> str:
    """``utterance`` without the greeting (and the fillers after it) it opens with, when a request follows.

    "hi, um, so my oven door won't close" → "my oven door won't close": the greeting is not
    what the caller wants answered. A greeting alone ("hello there") is kept; a yes is never
    taken off ("yes, I'm customer 3" answers a question).
    """
    rest = _PREAMBLE.sub("", utterance, count=1)
    return rest if len(rest.split()) >= 3 and rest != utterance else utterance


_BARE_COURTESY = re.compile(rf"^\W*({_THANKS}|{_GREETING})(\s+(so much|very much|a lot|again|there))?\W*$", re.I)


def _only_small_talk(utterance: str) -> bool:
    """Nothing but courtesy, kind words or a request to repeat: no answer to a question we asked.

    "Thank you" after a verse that ends "Can you say it with me?" must not continue the request
    before it (the child would hear the verse again).
    """
    return bool(_BARE_COURTESY.match(utterance)) or small_talk_kind(utterance) in ("repeat", "kind_words")


def small_talk_kind(utterance: str) -> str | None:
    """The kind of small talk by pattern ("user_name", "agent_name", "capabilities", …), or None."""
    return next((kind for kind, pattern in _SMALL_TALK_PATTERNS if pattern.search(utterance)), None)


def _extract(tool: Tool, utterance: str, plain: str, known: dict[str, Any]) -> dict[str, Any] | str | None:
    """The tool's arguments from the words as spoken, else from their canonical form (or None)."""
    if tool.extract is None:
        return None
    args = tool.extract(utterance, known)
    return tool.extract(plain, known) if args is None and plain != utterance else args


def results_after(messages: Sequence[Message], last: int) -> bool:
    """Whether tool results follow the user's message at ``last`` (the turn is past its request)."""
    return any(m.get("role") == "tool" for m in messages[last + 1 :])


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
        self._call_ids = itertools.count(1)

    def warm_up(self, tools: Sequence[Tool] = ()) -> None:
        """Load the sentence model and embed ``tools``' example phrasings before a turn needs them."""
        intents.warm_up(list(tools), spoken.canonical)

    async def _stream(self, messages: Sequence[Message], tools: Sequence[Tool]) -> AsyncIterator[str | ToolCall]:
        # Off the event loop: reading by meaning runs the sentence model (about 10 ms a lookup),
        # and the loop is pacing every call's 20 ms audio frames meanwhile.
        reply = await asyncio.to_thread(self._respond, messages, tools)
        if isinstance(reply, ToolCall):
            yield reply
            return
        for i, word in enumerate(reply.split(" ")):
            yield word if i == 0 else " " + word

    def _call(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        return ToolCall(id=f"call_offline_{next(self._call_ids)}", name=name, arguments=arguments)

    def _respond(self, messages: Sequence[Message], tools: Sequence[Tool]) -> str | ToolCall:
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            return "Hello! How can I help?"
        last = users[-1]
        utterance = without_preamble(without_vocative(str(messages[last].get("content") or ""), agent_name(messages)))
        by_name = {t.name: t for t in tools}
        known = _facts(messages[:last])
        told = knowledge.parse(str(messages[0].get("content") or "")) if messages[0].get("role") == "system" else []
        if told:
            known["knowledge"] = lambda words: self._knowledge_answer(words, told)
        intent, args = None, None
        state = read_state(messages[: last + 1], tools)
        if state.introduced and not known.get("customer_id"):
            known["introduced"] = state.introduced
        if state.last_list:
            known["last_list"] = state.last_list
        listed = [items for r in tool_results(messages[last + 1 :]) if (items := list_items(r))]
        if listed:
            known["last_list"] = listed[-1]  # a list read this turn: the request may already pick from it
        if state.pending and not _only_small_talk(utterance):
            # An answer to a slot question resumes the request it belongs to ("customer number 4"
            # after "I need a repair on Thursday"), however exactly it would match another tool alone.
            intent, args = self._resume(state, tools, known)
            if intent is None:
                again = self._ask_another_way(state, tools, known, utterance)
                if again is not None:
                    return again
        asked = messages[last - 1] if last > 0 else {}
        question = str(asked.get("content") or "") if asked.get("role") == "assistant" else ""
        if intent is None and question.startswith(_CLARIFY_PREFIX) and len(users) > 1:
            # The answer to "Did you want me to <offer>?": yes runs that tool on the earlier request.
            offered = next((t for t in tools if t.offer and question == self._clarify(t)), None)
            if offered is not None and _NO.match(utterance):
                return "Okay. What would you like me to do?"
            if offered is not None and affirms(utterance) and offered.extract is not None:
                earlier = str(messages[users[-2]].get("content") or "")
                intent, args = offered, offered.extract(earlier + " " + utterance, known)
                if args is None:
                    intent = None
        if intent is None and len(users) > 1 and question.rstrip().endswith("?") and not question.startswith(_CLARIFY_PREFIX) \
                and not _only_small_talk(utterance):
            # An answer to our own question ("Could you tell me your name?") continues the
            # earlier request, so match the two utterances together first.
            earlier = str(messages[users[-2]].get("content") or "")
            intent, args = self._match(earlier + " " + utterance, tools, known)
            if intent is None:
                how, tool, found = self._read_meaning(earlier + " " + utterance, tools, known)
                intent, args = (tool, found) if how == "tool" else (None, None)
            if isinstance(args, str):
                intent, args = None, None
        # A question of the caller's own, not an answer to the agent's (a slot, a yes), may be
        # about the persona's knowledge, unless a trigger certainly names a tool.
        own_request = intent is None and not state.pending
        if intent is None:
            intent, args = self._match(utterance, tools, known)
        if intent is None and results_after(messages, last):
            # A request read by meaning that needed a lookup first ("I'm calling about a delivery,
            # it's Lucas Walker"): after the lookup it is read the same way again, and goes on.
            how, tool, found = self._read_meaning(utterance, tools, known)
            if how == "tool":
                intent, args = tool, found
        certain = intent is not None and (intent.matches_exactly(utterance)
                                          or intent.matches_exactly(spoken.canonical(utterance)))
        if own_request and not certain and not results_after(messages, last):
            fact = self._from_knowledge(utterance, messages, tools, intent)
            if fact is not None:
                return fact
        if is_confirmation(question) and _PLAIN_NO.fullmatch(utterance):
            return "Okay, I won't. What would you like instead?"  # a plain no: nothing runs
        confirmed = is_confirmation(question) and bool(affirms(utterance))
        results = [m for m in messages[last + 1 :] if m.get("role") == "tool"]
        if not results:
            if intent is None:
                return self._by_meaning(utterance, messages, tools, known)
            if isinstance(args, str):
                return self._list_first(intent, args, known, state, by_name) \
                    or self._identify_first(intent, utterance, known, by_name) or args
            return self._plan(intent, args, by_name, fresh_customer=None, confirmed=confirmed, known=known,
                              asked=question)
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
            found = {**known, "customer_name": result.get("name") or known.get("customer_name")}
            return self._plan(intent, args, by_name, fresh_customer=result["customer_id"], confirmed=confirmed,
                              known=found, asked=question)
        if intent is not None and isinstance(args, dict) and done is not None and done != intent.name \
                and done in self._listers(intent, by_name):
            # The list this turn read out, and the request already names one of its items ("cancel
            # my repair"): straight to that item's confirmation, no "which one?" turn.
            return self._plan(intent, args, by_name, fresh_customer=None, confirmed=False,
                              known={**known, **_facts(messages)}, asked=question)
        if intent is not None and isinstance(args, str) and isinstance(result, dict):
            lister = self._lister(intent, args, by_name)
            if done == "lookup_customer" and lister is not None and result.get("customer_id"):
                return self._call(lister, {"customer_id": result["customer_id"]})  # who it is, then their list
            if done is not None and (done == lister or done in self._listers(intent, by_name)):
                return f"{self._phrase(by_name.get(done), result)} {without_ack(args)}"  # the list, then the question
            if done == "lookup_customer" and result.get("customer_id"):
                return f"{self._phrase(by_name.get(done), result)} {without_ack(args)}"  # who it is, then what is missing
        return self._phrase(by_name.get(done or ""), result)

    def _from_knowledge(self, utterance: str, messages: Sequence[Message], tools: Sequence[Tool],
                        intent: Tool | None) -> str | None:
        """The answer from the persona's knowledge, when the question is about it rather than a tool.

        An entry answers when its similarity clears :data:`knowledge.ACCEPT` and beats the
        meaning score of every offered tool (the one a broad trigger picked included): "what time
        do you close" is about the opening hours, "book me in for Tuesday" about a tool.
        """
        system = next((str(m.get("content") or "") for m in messages if m.get("role") == "system"), "")
        known = knowledge.parse(system)
        if not known or _only_small_talk(utterance):
            return None
        hit = knowledge.closest(spoken.canonical(utterance), known)
        if hit is None or hit[1] < knowledge.ACCEPT:
            return None
        scores = self._meaning_scores(utterance, tools)
        rivals = [score for name, score in scores.items() if name not in intents.NOT_TOOLS]
        if intent is not None:
            rivals.append(scores.get(intent.name, 0.0))
        if rivals and max(rivals) >= hit[1]:
            return None
        return hit[0].answer

    def _takes_customer(self, intent: Tool, by_name: dict[str, Tool]) -> bool:
        """Whether ``intent`` needs to know who the caller is (a customer slot, or a list read per customer)."""
        params = intent.declaration.parameters if intent.declaration is not None else ()
        return any(p.slot == "customer" for p in params) or bool(self._listers(intent, by_name))

    def _identify_first(self, intent: Tool, utterance: str, known: dict[str, Any],
                        by_name: dict[str, Tool]) -> ToolCall | None:
        """Look the caller up when they just said who they are and the request still misses something.

        The pending request goes on after the lookup ("I found Brian Anderson … And at what
        time?"); None when the customer is known already, nobody is named (or only by number), or
        nothing can look up.
        """
        who = identity_in(utterance)  # a customer number needs no lookup: the slot takes it as said
        if known.get("customer_id") or not who or "customer_id" in who or "lookup_customer" not in by_name \
                or not self._takes_customer(intent, by_name):
            return None
        return self._call("lookup_customer", who)

    @staticmethod
    def _listers(intent: Tool, by_name: dict[str, Tool]) -> set[str]:
        """The offered tools that list the choices of any of ``intent``'s parameters (``list_with``)."""
        params = intent.declaration.parameters if intent.declaration is not None else ()
        return {str(p.options["list_with"]) for p in params if p.options.get("list_with") in by_name}

    @staticmethod
    def _knowledge_answer(words: str, told: list[knowledge.Entry]) -> str | None:
        """The persona's answer about ``words`` ("your opening hours"), when one is close enough in meaning."""
        hit = knowledge.closest(spoken.canonical(f"what is {words}"), told)  # asked as a question, as entries answer
        return hit[0].answer if hit is not None and hit[1] >= knowledge.ACCEPT else None

    @staticmethod
    def _lister(intent: Tool, question: str, by_name: dict[str, Tool]) -> str | None:
        """The tool that lists the choices for the parameter ``question`` asks about (``list_with``), if offered."""
        if intent.declaration is None:
            return None
        for parameter in intent.declaration.parameters:
            lister = parameter.options.get("list_with")
            if parameter.ask == question and isinstance(lister, str) and lister in by_name:
                return lister
        return None

    def _list_first(self, intent: Tool, question: str, known: dict[str, Any], state: DialogueState,
                    by_name: dict[str, Tool]) -> ToolCall | None:
        """Rather than ask for an appointment number nobody remembers, list the caller's appointments first.

        Runs the parameter's ``list_with`` tool for the customer already known (identified, or
        named in an answer or an introduction: looked up first); None when there is no list to
        read or nobody to read it for.
        """
        lister = self._lister(intent, question, by_name)
        if lister is None or known.get("last_list"):
            return None
        if known.get("customer_id"):
            return self._call(lister, {"customer_id": known["customer_id"]})
        # An answer is read alone ("Hannah Thomas"); a request only by its cues ("I'm customer 2").
        found = [identity_in(text) for text in state.answers.values()]
        found += [spoken.customer_ref(text, {}) for text in state.request]
        who = next((f for f in found if f), known.get("introduced") or {})
        if who.get("customer_id"):
            return self._call(lister, {"customer_id": who["customer_id"]})
        if who and "lookup_customer" in by_name:
            return self._call("lookup_customer", who)
        return None

    def _resume(self, state: DialogueState, tools: Sequence[Tool], known: dict[str, Any]) -> tuple[Any, Any]:
        """The pending request with the latest answer: (tool, arguments or the next question), or (None, None).

        The request's tool is what its first utterance asked for. The latest utterance continues
        it when it fills what was asked (the arguments complete, or the next slot's question
        comes); otherwise it is a new request and is read on its own. An answer to a
        confirmation corrects what it names ("no, Thursday", "make it 3 pm instead").
        """
        first = state.request[0]
        tool = self._request_tool(first, tools, known)
        if tool is None:
            return None, None
        confirming = [answer for question, answer in state.exchanges if is_confirmation(question)]
        filling = [answer for question, answer in state.exchanges if not is_confirmation(question)]
        # The slot that asked reads the answer alone too ("Isabel White", "number 9").
        answering = {**known, "answers": state.answers, "request": first}
        now = self._fill(tool, [first, *filling], confirming, answering)
        if isinstance(now, dict) or not state.exchanges:
            return tool, now
        last_question = state.exchanges[-1][0]
        earlier = {q: a for q, a in state.exchanges[:-1] if not is_confirmation(q)}
        then = self._fill(tool, [first, *filling[:-1]] if not is_confirmation(last_question) else [first, *filling],
                          confirming[:-1] if is_confirmation(last_question) else confirming,
                          {**known, "answers": earlier})
        if isinstance(now, str) and now != then:
            return tool, now
        by_name = {t.name: t for t in tools}
        if isinstance(now, str) and identity_in(state.request[-1]) and self._lister(tool, now, by_name) is not None:
            return tool, now  # who the caller is, in answer to "which appointment": their list comes next
        if isinstance(now, str) and identity_in(state.request[-1]) and self._takes_customer(tool, by_name):
            return tool, now  # who the caller is, said out of order ("Brian Anderson" to "what time?")
        if isinstance(now, str) and not is_confirmation(last_question) and tool.declaration is not None:
            # An answer that fills another slot than the one asked ("Saturday at 11" to "who is
            # calling?") still belongs to the request: keep it, and ask again for what is missing.
            said_now = " ".join([first, *filling])
            said_then = " ".join([first, *filling[:-1]])
            gained = slots.found(tool.declaration, said_now, {**known, "answers": state.answers})
            had = slots.found(tool.declaration, said_then, {**known, "answers": earlier})
            if any(had.get(k) != v for k, v in gained.items()):
                return tool, now
        return None, None

    def _request_tool(self, first: str, tools: Sequence[Tool], known: dict[str, Any]) -> Tool | None:
        """The tool the open request's first utterance asked for (by trigger, else by meaning), or None."""
        tool, _ = self._match(first, tools, known)
        if tool is None:
            how, tool, _ = self._read_meaning(first, tools, known)
            tool = tool if how == "tool" else None
        return tool

    def _ask_another_way(self, state: DialogueState, tools: Sequence[Tool], known: dict[str, Any],
                         utterance: str) -> str | None:
        """The reply to an answer that does not fill the slot asked about, when the request stays open.

        "I don't know" to any slot question asks it again ("That's okay. …"). To "Which
        appointment number is it?" from a caller nobody has identified, "I don't know" or an
        answer naming no number ("my installation") asks who they are: their list can then be
        read out, and the request's own words pick from it. None otherwise (the answer is a new
        request), and when the question was a confirmation or the request's tool cannot be read.
        """
        question = state.exchanges[-1][0] if state.exchanges else ""
        if not question or is_confirmation(question):
            return None
        unsure = does_not_know(utterance)
        tool = self._request_tool(state.request[0], tools, known)
        by_name = {t.name: t for t in tools}
        lister = by_name.get(self._lister(tool, question, by_name) or "") if tool is not None else None
        if lister is not None and lister.declaration is not None and not known.get("customer_id") \
                and not identity_in(utterance) and not spoken.first_number(utterance):
            who = next((p.ask for p in lister.declaration.parameters if p.slot == "customer" and p.ask), None)
            if who:
                return f"That's okay. {without_ack(who)}" if unsure else who
        return f"That's okay. {without_ack(question)}" if unsure else None

    @staticmethod
    def _fill(tool: Tool, said: list[str], corrections: list[str], known: dict[str, Any]) -> Any:
        """The tool's arguments from what was said, then each correction laid over them in turn."""
        text = " ".join(said)
        args = _extract(tool, text, spoken.canonical(text), known)
        if isinstance(args, dict) and tool.declaration is not None:
            for correction in corrections:
                args = slots.correct(tool.declaration, args, correction)
        return args

    @staticmethod
    def _confirmation(tool: Tool, args: dict[str, Any], known: dict[str, Any]) -> str:
        """The question that asks the caller to confirm ``tool`` with ``args`` (see CONFIRM_PREFIX)."""
        details = slots.spoken_arguments(tool.declaration, args, known.get("last_list")) \
            if tool.declaration is not None else ""
        who = known.get("customer_name")
        action = tool.offer or tool.name.replace("_", " ")
        return f"{CONFIRM_PREFIX}{action}" + (f" for {who}" if who else "") + (f": {details}" if details else "") + "?"

    def understand(self, utterance: str, tools: Sequence[Tool], known: dict[str, Any] | None = None,
                   name: str | None = None) -> str | None:
        """What the brain takes ``utterance`` to ask for, on its own, with nothing asked before.

        ``name`` is the agent's (a persona's), dropped where it only addresses the agent.

        Returns:
            A tool name (confident, by trigger or by meaning), ``"clarify:<tool>"`` when it
            would ask whether that tool is meant, ``"small_talk:<kind>"``, or None.
        """
        known = known or {}
        utterance = without_vocative(utterance, name)
        intent, _args = self._match(utterance, tools, known)
        if intent is not None:
            return intent.name
        how, tool, _args = self._read_meaning(utterance, tools, known)
        if how == "tool":
            return tool.name
        if how == "clarify":
            return f"clarify:{tool.name}"
        return f"small_talk:{how}" if how else None

    def _read_meaning(self, utterance: str, tools: Sequence[Tool], known: dict[str, Any]) -> tuple[str | None, Any, Any]:
        """Read an utterance no trigger fired on, by meaning.

        Returns:
            ("tool", tool, args) when the closest meaning is a confident tool; else (small-talk
            kind, None, None) by pattern; else ("clarify", tool, None) when a tool is plausible;
            else (small-talk kind by meaning, or None; None, None).
        """
        kind = small_talk_kind(utterance)
        if kind in ("repeat", "wait"):  # never a tool: "sorry, say that again", "hang on" are near end_call by meaning
            return kind, None, None
        request = spoken.without_identity(utterance)
        if request != utterance:
            # "when's my checkup, I'm Carmen Walker": the request is read without the name, then
            # filled from all of it (the name says who); a name and nothing else is a lookup.
            how, tool, _ = self._read_meaning(request, tools, known)
            args = _extract(tool, utterance, spoken.canonical(utterance), known) if how == "tool" else None
            if how == "tool" and tool.name != "lookup_customer" and args is not None:
                return "tool", tool, args
        match = self._meaning(utterance, tools)
        tool = next((t for t in tools if match is not None and t.name == match.intent), None)
        if tool is not None and match.confident:
            if tool.confirm == "unclear" and tool.offer and match.score < intents.SURE:
                return "clarify", tool, None  # "hang on" is near "goodbye" by meaning: ask, never hang up
            args = _extract(tool, utterance, spoken.canonical(utterance), known)
            if args is not None:
                return "tool", tool, args
        if kind is not None:
            return kind, None, None
        if tool is not None and match.plausible and tool.offer:
            return "clarify", tool, None
        if match is not None and match.confident and match.intent in intents.SMALL_TALK \
                and match.score >= intents.SMALL_TALK_ACCEPT:
            return match.intent, None, None
        return None, None, None

    @staticmethod
    def _meaning_scores(utterance: str, tools: Sequence[Tool]) -> dict[str, float]:
        offered = [t for t in tools if t.examples]
        allowed = {t.name for t in offered} | intents.NOT_TOOLS
        return intents.index_for(offered, spoken.canonical).scores(spoken.canonical(utterance), allowed)

    def _meaning(self, utterance: str, tools: Sequence[Tool]) -> intents.Match | None:
        return intents.best_of(self._meaning_scores(utterance, tools))

    @staticmethod
    def _clarify(tool: Tool) -> str:
        return f"{_CLARIFY_PREFIX}{tool.offer}?"

    def _by_meaning(self, utterance: str, messages: Sequence[Message], tools: Sequence[Tool],
                    known: dict[str, Any]) -> str | ToolCall:
        """No trigger fired: act on the closest intent by meaning, ask about it, or reply."""
        how, tool, args = self._read_meaning(utterance, tools, known)
        if how == "tool":
            if isinstance(args, str):
                return args
            return self._plan(tool, args, {t.name: t for t in tools}, fresh_customer=None, known=known)
        if how == "clarify":
            return self._clarify(tool)
        who = identity_in(utterance) if how is None else {}
        if who.get("name") and len(str(who["name"]).split()) < 2:
            who = {}  # "tell me about Rome" names a subject, not the caller
        if who and "lookup_customer" in {t.name for t in tools} and not known.get("customer_id"):
            return self._call("lookup_customer", who)  # "James Jackson", said first: find their account
        return self._small_talk(utterance, messages, tools, how, known)

    def _match(self, utterance: str, tools: Sequence[Tool], known: dict[str, Any]):  # noqa: ANN202
        kind = small_talk_kind(utterance)
        if kind in ("user_name", "agent_name"):
            return None, None  # "do you know what my name is" asks; the trigger "my name is" would look it up
        plain = spoken.canonical(utterance)
        # Tools whose certain trigger fired come before those whose broad one did, whatever their order.
        exact = [t for t in tools if t.matches_exactly(utterance) or t.matches_exactly(plain)]
        # "Say it again" reaches a tool only by a certain trigger (the storyteller's: practise the verse).
        for tool in exact if kind == "repeat" else exact + [t for t in tools if t not in exact]:
            if tool.extract is None or not (tool.matches(utterance) or tool.matches(plain)):
                continue
            args = _extract(tool, utterance, plain, known)
            if args is None:
                continue
            if tool in exact:
                return tool, args
            # A broad trigger ("appointment", "I'm customer 11") gives way to a clearly closer
            # meaning ("scrap my booking": cancel, not list; "the average length of an
            # appointment": run_sql; "I want to check on a purchase, I'm customer 11": orders).
            scores = self._meaning_scores(utterance, tools)
            best = max(scores, key=scores.get, default=None)
            closer = next((t for t in tools if t.name == best and t is not tool), None)
            if closer is not None and scores[best] >= intents.ACCEPT \
                    and scores[best] - scores.get(tool.name, 0.0) >= intents.MARGIN:
                closer_args = _extract(closer, utterance, plain, known)
                if closer_args is not None:
                    return closer, closer_args
            return tool, args
        return None, None

    def _plan(self, intent: Tool, args: dict[str, Any], by_name: dict[str, Tool], fresh_customer: int | None,
              confirmed: bool = True, known: dict[str, Any] | None = None, asked: str = "") -> ToolCall | str:
        """The tool call for ``intent`` (a customer looked up first when only named), or its confirmation.

        A tool whose declaration says ``confirm = true`` is asked about first (the question names
        what it will do); it runs when the caller's yes answers that very question.
        """
        needs_id = "customer_id" in intent.parameters["properties"] and "customer_id" not in args
        if needs_id and any(k in args for k in _CUSTOMER_KEYS):
            ref = {k: args[k] for k in _CUSTOMER_KEYS if k in args}
            rest = {k: v for k, v in args.items() if k not in _CUSTOMER_KEYS}
            if fresh_customer is not None:
                args = {"customer_id": fresh_customer, **rest}
            elif "lookup_customer" in by_name:
                return self._call("lookup_customer", ref)
        if intent.confirm is True:
            question = self._confirmation(intent, args, known or {})
            if not (confirmed and asked == question):
                return question
        return self._call(intent.name, args)

    @staticmethod
    def _phrase(tool: Tool | None, result: Any) -> str:
        said = tool.phrase(result) if tool is not None and tool.phrase is not None else None
        if said:
            return said
        if isinstance(result, dict) and result.get("summary"):
            return str(result["summary"])
        return "Done."

    @staticmethod
    def _small_talk(utterance: str, messages: Sequence[Message], tools: Sequence[Tool], kind: str | None = None,
                    known: dict[str, Any] | None = None) -> str:
        """Replies to small talk (``kind`` from the intent index, else by pattern), short, for the ear."""
        me = agent_name(messages) or "Forge's assistant"
        if kind is None:
            kind = small_talk_kind(utterance)
        tags = {tag for t in tools for tag in t.tags}
        storyteller = "stories" in tags
        offers = [offer for tag, offer in TAG_OFFERS.items() if tag in tags]
        # a tool an agent declared says what it does through its own offer (it has no known tag)
        offers += [t.offer for t in tools if t.offer and not set(t.tags) & set(TAG_OFFERS) and t.tags != ("calls",)]
        offers = list(dict.fromkeys(offers))[:3]
        listed = f"{offers[0]}, {offers[1]}, or {offers[2]}" if len(offers) > 2 else " or ".join(offers)
        if kind == "greeting":
            return f"Hi, I'm {me}. How can I help you today?"
        if kind == "thanks":
            return "You're welcome. Is there anything else I can do?"
        if kind == "agent_name":
            return f"I'm {me}, an assistant running on Forge's offline brain."
        if kind == "hearing":
            return "Yes, I can hear you. How can I help?"
        if kind == "wait":
            return "Sure, take your time."
        if kind == "repeat":
            said = [m.get("content") for m in messages if m.get("role") == "assistant" and m.get("content")]
            # the last reply, not the question being answered now (messages end with the user's turn)
            return str(said[-1]) if said else "I haven't said anything yet. How can I help?"
        if kind == "kind_words":
            return "That's very kind of you, thank you! " + (
                "Shall I tell you a story?" if storyteller else "How can I help?")
        if kind == "how_are_you":
            return "I'm doing well, thanks for asking. How can I help?"
        if kind == "user_name":
            name = (known or {}).get("customer_name")
            if name:
                return f"You're {name}."
            return "I don't know your name yet. If you tell me, I can look up your account."
        if storyteller:  # a child's storyteller: an invitation, not a menu
            return "Would you like a story about Hanuman, or shall we learn a verse of the Hanuman Chalisa?"
        if kind == "capabilities" and offers:
            return f"I can {listed}. What would you like?"
        if offers:
            return f"Sorry, I can't help with that here. I can {listed}."
        return "Sorry, I can't help with that here. Could you say it another way?"
