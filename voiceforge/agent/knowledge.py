"""A persona's knowledge: facts and question–answer pairs, put where every brain can read them.

A persona file may carry

.. code-block:: toml

    facts = ["We are open from 9 am to 6 pm, Monday to Saturday."]
    faq = [{question = "Do you deliver?", answer = "Yes, within five miles of the shop."}]

Both reach the agent inside its system prompt, under :data:`HEADER`, one entry a line
(``- <fact>`` or ``- Q: <question> A: <answer>``). An LLM reads them as context; Forge's
offline brain reads the same lines back (:func:`parse`) and answers a question whose meaning
is close enough to an entry (:func:`closest`, the sentence model the brain routes tools with).
Because the knowledge travels in the messages, a brain behind a stateless chat endpoint has it too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = "What you know (answer questions from these; when the answer is not here, say that you do not know):"
"""The line that opens the knowledge section of a system prompt."""
ACCEPT = 0.35
"""Cosine similarity (all-MiniLM-L6-v2) at which a question is answered from an entry, when it
is also closer to that entry than to every offered tool's examples.

Chosen on the development sets (``python bench/knowledge.py --tune``): questions about the
customer-service persona's knowledge (bench/data/knowledge_dev.tsv) against its 409 tool,
small-talk and out-of-scope requests (the same file and routing_dev.tsv). 0.35 answered 16 of
23 and none of the 409; 0.40–0.50 answered 15–14; letting a fact win against a tool up to 0.05
ahead of it answered no more and took one tool request."""
MAX_ENTRIES = 200
"""Entries read from one prompt; more is a document, which wants real retrieval, not a prompt."""
MAX_CHARS = 600
"""Characters in one fact or answer (it is spoken whole)."""
_QA = re.compile(r"^Q:\s*(?P<q>.+?)\s+A:\s*(?P<a>.+)$")


class KnowledgeError(ValueError):
    """A persona's facts or FAQ are not a list of strings and question/answer pairs."""


@dataclass(frozen=True)
class Entry:
    """One thing the agent knows.

    Attributes:
        answer: what the agent says (the fact itself, or the FAQ answer).
        question: the FAQ question, None for a plain fact.
    """

    answer: str
    question: str | None = None

    @property
    def keys(self) -> list[str]:
        """What a caller's question is compared with: the FAQ question and its answer, or the fact."""
        return [self.question, self.answer] if self.question else [self.answer]


def entries(facts: object, faq: object) -> list[Entry]:
    """A persona file's ``facts`` (strings) and ``faq`` (tables with ``question`` and ``answer``) as entries.

    Raises:
        KnowledgeError: a wrong shape, an empty or over-long (``MAX_CHARS``) text, or more
            than ``MAX_ENTRIES`` entries.
    """
    out: list[Entry] = []
    if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
        raise KnowledgeError("facts must be a list of strings")
    if not isinstance(faq, list) or not all(isinstance(p, dict) for p in faq):
        raise KnowledgeError("faq must be a list of tables with a question and an answer")
    for fact in facts:
        out.append(Entry(_clean(fact, "a fact")))
    for pair in faq:
        out.append(Entry(_clean(pair.get("answer"), "an FAQ answer"), _clean(pair.get("question"), "an FAQ question")))
    if len(out) > MAX_ENTRIES:
        raise KnowledgeError(f"{len(out)} facts and FAQ pairs: at most {MAX_ENTRIES}")
    return out


def _clean(text: object, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise KnowledgeError(f"{what} must be a non-empty string")
    flat = " ".join(text.split())
    if len(flat) > MAX_CHARS:
        raise KnowledgeError(f"{what} is {len(flat)} characters: at most {MAX_CHARS} (it is spoken whole)")
    return flat


def from_lines(facts: str, faq: str) -> tuple[list[str], list[dict[str, str]]]:
    """A settings form's text: facts one a line, FAQ pairs one a line as ``question | answer``.

    Returns:
        (facts, faq) in the persona file's shapes; blank lines are skipped.

    Raises:
        KnowledgeError: an FAQ line without ``|``, or either side of it empty.
    """
    fact_list = [line.strip() for line in facts.splitlines() if line.strip()]
    pairs = []
    for number, line in enumerate(faq.splitlines(), start=1):
        if not line.strip():
            continue
        question, bar, answer = line.partition("|")
        if not bar or not question.strip() or not answer.strip():
            raise KnowledgeError(f"FAQ line {number} must read 'question | answer': {line.strip()[:80]!r}")
        pairs.append({"question": question.strip(), "answer": answer.strip()})
    return fact_list, pairs


def to_lines(known: Sequence[Entry]) -> tuple[str, str]:
    """The inverse of :func:`from_lines`: (facts one a line, FAQ pairs one a line)."""
    return ("\n".join(e.answer for e in known if not e.question),
            "\n".join(f"{e.question} | {e.answer}" for e in known if e.question))


def render(known: Sequence[Entry]) -> str:
    """The knowledge section of a system prompt ("" when there is nothing to know)."""
    if not known:
        return ""
    lines = [f"- Q: {e.question} A: {e.answer}" if e.question else f"- {e.answer}" for e in known]
    return "\n".join([HEADER, *lines])


def parse(prompt: str) -> list[Entry]:
    """The entries :func:`render` wrote into ``prompt`` (none when it has no knowledge section)."""
    _, found, section = prompt.partition(HEADER)
    if not found:
        return []
    out: list[Entry] = []
    for line in section.splitlines()[1:]:
        if not line.startswith("- "):
            break
        text = line[2:].strip()
        qa = _QA.match(text)
        out.append(Entry(qa["a"], qa["q"]) if qa else Entry(text))
        if len(out) >= MAX_ENTRIES:
            break
    return out


def closest(utterance: str, known: Sequence[Entry]) -> tuple[Entry, float] | None:
    """The entry closest in meaning to ``utterance`` and its cosine similarity (None without entries).

    Raises:
        voiceforge.providers.intents.ModelUnavailable: the sentence model is not installed.
    """
    from voiceforge.providers import intents

    if not known or not utterance.strip():
        return None
    keys = [(i, key) for i, entry in enumerate(known) for key in entry.keys]
    vectors = intents.example_vectors([key for _, key in keys])  # each embedded once per process
    sims = vectors @ intents.utterance_vector(utterance)
    best = int(sims.argmax())
    return known[keys[best][0]], float(sims[best])
