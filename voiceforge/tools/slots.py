"""Slots: how a spoken request fills a declared tool's parameters, and how its result is said.

A parameter's ``slot`` names a reader; the reader looks at the utterance (and the facts known
from earlier tool results) and returns the arguments it found, a question to ask back, or None.
:func:`extract` runs a declaration's readers in order and stops at the first missing parameter
that has a question; the offline brain calls it for every tool, built-in or declared, so a new
tool gets the same behaviour from its declaration alone.

Readers every declaration can use:

- ``customer``: who the caller is: ``customer_id``, or ``name`` / ``phone`` to look up first;
  ``facts = false`` ignores the customer already identified. The caller's answer to its own
  ``ask`` (``known["answers"]``) is read alone first ("number 9", "Isabel White").
- ``datetime``: a day and time, as ISO 8601 local time; ``after = "word"`` reads only what
  follows the word; ``ask_time = "question"`` asks it when only a day was said.
- ``number``: a number said after one of the words in ``after`` ("appointment seven"); with
  ``list_key``, also an item of the list a tool just returned ("the first one", "the repair"),
  and with ``list_with`` (a tool's name) the brain reads that list out before asking;
  ``anywhere = true`` takes the first number said when none follows those words.
- ``value``: one of ``values`` said as whole words ("large", "hawaiian"); else the words that
  stand where a value stands in the tool's example requests (``contexts``: patterns with one
  group, made by :mod:`voiceforge.tools.declared`); else, unless ``closed``, the caller's short
  answer to this slot's own question.
- ``phone``: an E.164 number. ``message``: the text of a message ("... saying I'm late"), or
  what the agent knows about what the caller asks to be sent ("text me your opening hours";
  ``known["knowledge"]``, a callable from words to an answer or None).
- ``choice``: one of ``choices`` named as a whole word (hyphens dropped: "check-up" → "checkup"),
  or a word of ``aliases`` (a table of word → choice: ``fix = "repair"``), each perhaps
  inflected; else, with ``phrasings`` (a table of choice → example phrasings), the choice the request
  is clearly closest to in meaning ("my boiler's making a banging sound": repair).
- ``pattern``: the first group of the regular expression ``pattern``, with ``remove`` characters dropped.
- ``constant``: always ``value``.

A tool whose arguments need its own reading (run_sql's question to SELECT, the Chalisa's
verses) registers a named reader with :func:`register_reader`; its declaration names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from voiceforge.tools import spoken
from voiceforge.tools.declaration import ParameterDeclaration, ToolDeclaration

Found = dict[str, Any] | str | None
"""What a reader returns: the arguments it found, a question to ask back, or None."""
Reader = Callable[[str, dict[str, Any], ParameterDeclaration], Found]
"""``(utterance, known facts, the parameter) -> Found``."""
Phraser = Callable[[Any], str]
"""A tool's result → what the agent says."""

READERS: dict[str, Reader] = {}
PHRASERS: dict[str, Phraser] = {}


def register_reader(name: str, reader: Reader) -> None:
    """Make ``reader`` available to declarations as ``slot = "<name>"``."""
    READERS[name] = reader


def register_phraser(name: str, phraser: Phraser) -> None:
    """Make ``phraser`` available to declarations as ``say_with = "<name>"``."""
    PHRASERS[name] = phraser


def _customer(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    facts = {k: v for k, v in known.items() if k != "answers"} if p.options.get("facts", True) else {}
    answers = known.get("answers") or {}
    # The caller's answer to this slot's own question is read alone first; then any other answer
    # of the open request that is nothing but a name or number (people answer out of order).
    for question in [p.ask, *reversed(list(answers))]:
        if question not in answers:
            continue
        # its own question's answer is read loosely ("isabel white", "nine"); another's only when
        # it clearly names someone ("my installation" to "which appointment?" names nobody)
        named = spoken.answer_ref(answers[question]) if question == p.ask else spoken.identity_in(answers[question])
        if named.get("name") and str(named["name"]).lower() == str(facts.get("customer_name", "")).lower():
            break  # the one a tool has already identified: no second lookup
        if named:
            facts["answer"] = answers[question]
            break
    return spoken.customer_ref(text, facts) or None


def _datetime(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    after = p.options.get("after")
    said = text.split(after, 1)[-1] if isinstance(after, str) else text
    when = spoken.when_in(said)
    if when and p.options.get("ask_time") and not spoken.time_in(said):
        return p.options["ask_time"]  # a day but no time: ask, rather than book 9 am unasked
    return {p.name: when} if when else None


def _number(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    value = spoken.number_after(text, *p.options.get("after", []))
    if value is None and p.options.get("anywhere"):
        said = (known.get("answers") or {}).get(p.ask) if p.ask else None
        value = spoken.first_number(said) if said else None
        value = spoken.first_number(text) if value is None else value
    if value is None and p.options.get("list_key") and known.get("last_list"):
        # "the first one", "the repair": an item of the list the agent just read out
        said = (known.get("answers") or {}).get(p.ask) or text
        value = spoken.item_in(said, known["last_list"], p.options["list_key"])
        if value is None and said is not text:
            value = spoken.item_in(text, known["last_list"], p.options["list_key"])
        usable = [i for i in known["last_list"] if isinstance(i, dict) and p.options["list_key"] in i]
        if value is None and len(usable) == 1:
            value = usable[0][p.options["list_key"]]  # one item read out: that is the one (the confirmation names it)
    return {p.name: value} if value is not None else None


_ANSWER_FILLER = re.compile(r"^(?:(?:um+|uh+|er+|well|oh|so|yes|yeah|ok(?:ay)?|it'?s|it is|that'?s|that is|i'?d like|"
                            r"i would like|i want|make it|let'?s do|let'?s go with|go with|the|an?|just)\b[\s,]*)+", re.I)
_ANSWER_TAIL = re.compile(r"[\s,]*\b(?:please|thanks|thank you|one)?[\s.!?]*$", re.I)


NOT_VALUES = frozenset(
    "a an the my your our their his her its this that these those some any one two no of for to in on at with and or "
    "please me you i we it is are be do have has get got can could would like want need".split())
"""Words that are never a parameter's value ("a cake" names no flavour)."""


def short_answer(answer: str, max_words: int = 4) -> str | None:
    """A short answer without its filler ("um, the lemon one please" → "lemon"), or None when it is long."""
    said = _ANSWER_TAIL.sub("", _ANSWER_FILLER.sub("", answer.strip())).strip(" .,!?")
    return said if said and len(said.split()) <= max_words else None


def _value(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    values = [str(v) for v in p.options.get("values", [])]
    answer = (known.get("answers") or {}).get(p.ask) if p.ask else None
    for said in ([answer] if answer else []) + [text]:
        for value in sorted(values, key=len, reverse=True):
            if re.search(rf"\b{re.escape(value)}(?:s|es)?\b", said, re.I):  # "two margheritas"
                return {p.name: value}
    closed = bool(p.options.get("closed"))
    for pattern in [] if closed else p.options.get("contexts", []):
        for m in re.finditer(pattern, text, re.I):
            found = short_answer(m.group(1))
            if found and found.lower() not in NOT_VALUES:
                return {p.name: found}
    if answer and not closed and (found := short_answer(answer)):
        return {p.name: found}
    return None


def _phone(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    phone = spoken.phone_in(text)
    if not phone and known.get("caller_phone") and re.search(r"\b(me|my (own )?(phone|number|mobile|cell))\b", text, re.I):
        phone = known["caller_phone"]  # "text me": the number the caller is calling from
    return {p.name: phone} if phone else None


def message_text(text: str) -> str | None:
    """The words of a message in a request ("text me saying I'll be late" → "I'll be late"), capitalised."""
    without_numbers = re.sub(r"\+?\d[\d\s().-]{6,}\d", " ", text)
    m = re.search(r"\b(?:saying|that says|that|with the message|message)\s*[:,]?\s*(.+)$", without_numbers, re.I)
    body = m.group(1).strip().strip('"') if m else None
    return body[0].upper() + body[1:] if body else None


_WHAT_TO_SEND = re.compile(r"\b(?:text|sms|message|send)\b.*?\b(?:with|about|of)?\s*((?:the|your|our)\s+[\w' -]+?)"
                           r"(?:\s+(?:please|thanks))?\W*$", re.I)


def _message(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    body = message_text(text)
    answer = known.get("knowledge")
    if not body and callable(answer):
        # "text me your opening hours": what the agent knows about that is the message
        asked_for = _WHAT_TO_SEND.search(str(known.get("request") or text))
        body = answer(asked_for.group(1)) if asked_for else None
    return {p.name: body} if body else None


_INFLECTION = r"(?:s|es|ed|d|ing|er|ers)?"
"""Endings a choice or alias word may carry as said ("clean" → "cleaned", "repair" → "repairing")."""


def _said(word: str, text: str) -> bool:
    """Whether ``word`` (one or more words) is said in ``text``, its last word perhaps inflected."""
    stem = re.sub(r"(?<=\w{4})(ing|ation|e)$", "", word) if " " not in word else word
    return bool(re.search(rf"\b({re.escape(word)}|{re.escape(stem)}{_INFLECTION})\b", text, re.I))


CHOICE_ACCEPT = 0.33
"""Mean cosine (all-MiniLM-L6-v2) of a request's two closest examples of a choice at which the
choice is taken by meaning ("my boiler's making a banging sound": a repair); below it the
parameter's default stands. Chosen on bench/data/dialogues_dev.txt's problem reports (0.35-0.50
for the intended choice) against requests naming no service ("book an appointment" 0.31)."""
CHOICE_MARGIN = 0.05
"""How far the best choice must lead the next to be taken by meaning."""


def choice_by_meaning(text: str, examples: dict[str, list[str]]) -> str | None:
    """The choice whose example phrasings ``text`` is closest to in meaning, when clearly so; else None.

    Each choice scores the mean cosine of its two closest examples (the offline brain's sentence
    model, :mod:`voiceforge.providers.intents`); the best must reach :data:`CHOICE_ACCEPT` and
    lead the next by :data:`CHOICE_MARGIN`.
    """
    from voiceforge.providers import intents

    labels = [choice for choice, said in examples.items() for _ in said]
    phrasings = [text for said in examples.values() for text in said]
    if not phrasings:
        return None
    sims = intents.example_vectors(phrasings) @ intents.utterance_vector(text)
    by_choice: dict[str, list[float]] = {}
    for label, sim in zip(labels, sims.tolist(), strict=True):
        by_choice.setdefault(label, []).append(sim)
    scores = sorted(((sum(sorted(v)[-2:]) / len(sorted(v)[-2:]), c) for c, v in by_choice.items()), reverse=True)
    best, runner_up = scores[0], scores[1][0] if len(scores) > 1 else 0.0
    return best[1] if best[0] >= CHOICE_ACCEPT and best[0] - runner_up >= CHOICE_MARGIN else None


def _choice(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    for choice in p.options.get("choices", []):
        if _said(choice, text):
            return {p.name: choice.replace("-", "")}
    for word, choice in p.options.get("aliases", {}).items():  # "fix" means a repair
        if _said(word, text):
            return {p.name: choice}
    phrasings = p.options.get("phrasings")
    request = str(known.get("request") or text)  # the request's own words, not the answers after them
    if isinstance(phrasings, dict) and request.strip():
        chosen = choice_by_meaning(request, phrasings)
        if chosen is not None:
            return {p.name: chosen.replace("-", "")}
    return None


def _pattern(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    m = re.search(p.options["pattern"], text, re.I)
    if m is None:
        return None
    value = m.group(1)
    for char in p.options.get("remove", ""):
        value = value.replace(char, "")
    return {p.name: value}


def _constant(text: str, known: dict[str, Any], p: ParameterDeclaration) -> Found:
    return {p.name: p.options.get("value")}


for _name, _reader in (("customer", _customer), ("datetime", _datetime), ("number", _number), ("phone", _phone),
                       ("message", _message), ("choice", _choice), ("pattern", _pattern), ("constant", _constant),
                       ("value", _value)):
    register_reader(_name, _reader)


def extract(declaration: ToolDeclaration, utterance: str, known: dict[str, Any]) -> Found:
    """The tool's arguments from an utterance, by its declared slots, in order.

    A parameter no slot fills takes its ``default``; without one, its ``ask`` is returned as
    the question; a required parameter with neither means the utterance is not for this tool.

    Returns:
        The arguments (a customer slot may give ``name`` or ``phone`` to look up first), a
        question to ask back, or None.

    Raises:
        KeyError: a slot names no registered reader.
    """
    args: dict[str, Any] = {}
    for parameter in declaration.parameters:
        if parameter.slot is None:
            continue
        found = READERS[parameter.slot](utterance, known, parameter)
        if isinstance(found, str):
            return found
        if found:
            args.update(found)
        elif parameter.default is not None:
            args[parameter.name] = parameter.default
        elif parameter.ask:
            return parameter.ask
        elif parameter.required:
            return None
    return args


def found(declaration: ToolDeclaration, utterance: str, known: dict[str, Any]) -> dict[str, Any]:
    """Every argument the utterance fills by the declared slots, whatever is still missing (no defaults).

    Unlike :func:`extract` it does not stop at the first missing parameter: "Saturday at 11",
    said when the agent asked who is calling, fills the time although the customer is unknown.
    """
    args: dict[str, Any] = {}
    for parameter in declaration.parameters:
        if parameter.slot is not None and parameter.slot != "constant":
            got = READERS[parameter.slot](utterance, known, parameter)
            if isinstance(got, dict):
                args.update(got)
    return args


def correct(declaration: ToolDeclaration, args: dict[str, Any], correction: str) -> dict[str, Any]:
    """``args`` with what ``correction`` names instead ("no, Thursday", "make it 3 pm instead").

    Each declared slot reads the correction alone; what it finds replaces the argument. A day
    or a time alone changes only that part of a date and time. Customer slots are not
    corrected here (who the caller is does not change by "no").
    """
    out = dict(args)
    for parameter in declaration.parameters:
        if parameter.slot in (None, "customer", "constant"):
            continue
        if parameter.slot == "datetime" and parameter.name in out:
            changed = spoken.change_when(str(out[parameter.name]), correction)
            if changed:
                out[parameter.name] = changed
            continue
        found = READERS[parameter.slot](correction, {}, parameter)
        if isinstance(found, dict) and found:
            out.update(found)
    return out


def spoken_arguments(declaration: ToolDeclaration, args: dict[str, Any],
                     items: list[dict[str, Any]] | None = None) -> str:
    """The arguments as a confirmation says them: "cleaning, on Friday, December 11 at 10 AM".

    A number picked from ``items`` (the list a tool just read out; ``list_key`` in the slot)
    is said with what it is: "appointment 4, the repair on Wednesday, December 16 at 2 PM".
    """
    parts = []
    for parameter in declaration.parameters:
        value = args.get(parameter.name)
        if value is None or parameter.slot in ("customer", "constant"):
            continue
        if parameter.slot == "datetime":
            parts.append("on " + spoken.say_when(str(value)))
        elif parameter.slot == "number":
            key = parameter.options.get("list_key")
            item = next((i for i in items or () if key and str(i.get(key)) == str(value)), None)
            described = spoken.describe_item(item) if item else None
            parts.append(f"{parameter.name.split('_')[0]} {value}" + (f", {described}" if described else ""))
        elif parameter.slot == "phone":
            parts.append(f"to {value}")
        elif parameter.slot == "message":
            parts.append(f'saying "{value}"')
        else:
            parts.append(str(value))
    return ", ".join(parts)


def phrase(declaration: ToolDeclaration, result: Any) -> str | None:
    """The tool's result for the ear by its ``say`` template or ``say_with`` phraser; None when it declares neither.

    Raises:
        KeyError: ``say_with`` names no registered phraser.
    """
    if declaration.say_with:
        return PHRASERS[declaration.say_with](result)
    if declaration.say is not None:
        try:
            return declaration.say.format(**result) if isinstance(result, dict) else declaration.say
        except (KeyError, IndexError, ValueError):
            return None
    return None
