"""Evals: scenario suites in YAML, and the expectations a conversation's turns are checked against.

A suite file (one per file, usually under ``evals/``)::

    persona: customer_service        # a persona id
    style: text                      # text | voice | phone | realtime
    now: 2026-12-07T10:00:00         # optional: the clock for tools and relative dates
    scenarios:
      - name: order status after identification
        turns:
          - user: "where's my parcel"          # or audio: a file, relative to the suite file
            expect:
              reply_contains_any: ["name", "customer number"]
              no_tool: true
          - user: "customer 7"
            expect: {tool: get_order_history, args: {customer_id: 7}, within_ms: 1500}
        expect_conversation: {no_error: true, ended: false}

Turn expectations (:data:`TURN_KEYS`): ``reply_contains_any``, ``reply_not_contains``,
``reply_matches`` (a regular expression), all case-insensitive on the reply as heard; ``tool``
(that tool ran in the turn, after its confirmation when it asks one), ``tool_any_of``, ``args``
(a subset of the tool's arguments; numbers and numeric strings compare as numbers),
``no_tool``, ``within_ms`` (first agent audio after the caller's last voiced frame; text
style: the first reply text after the text was sent; with repeats, the median) and ``judge``
(a rubric in words for the configured LLM; skipped offline, never passed). Live styles also take
``silence_ms`` (silence the caller sends before the line) and ``barge_in_after_ms`` (the caller
speaks this long after the previous answer's first audio). Conversation expectations:
``no_error`` (no turn stored an error) and ``ended`` (the agent ended the call).

Loading checks everything before anything runs: a typo in a key is an error with its place
(file, scenario, turn), not an expectation silently skipped.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLES = ("text", "voice", "phone", "realtime")
"""Eval styles: typed text, batch voice (Compare's batch), a simulated phone call, a Realtime session."""
TURN_KEYS = {"reply_contains_any", "reply_not_contains", "reply_matches", "tool", "tool_any_of", "args",
             "no_tool", "within_ms", "judge"}
CONVERSATION_KEYS = {"no_error", "ended"}
MAX_SUITE_BYTES = 1_000_000
"""The largest suite file read, bytes."""
MAX_TURNS = 50
"""Turns in one scenario at most."""


class SuiteError(ValueError):
    """A suite file that cannot be run; the message names the file and the place in it."""


@dataclass
class TurnSpec:
    """One caller turn: what is said (``user``) or played (``audio``), and what must happen."""

    user: str | None = None
    audio: Path | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    silence_ms: int = 0
    barge_in_after_ms: int | None = None

    @property
    def label(self) -> str:
        """The line as the transcript shows it."""
        return self.user if self.user is not None else f"[audio {self.audio.name if self.audio else ''}]"


@dataclass
class Scenario:
    """A named conversation: its turns and the expectations on the whole."""

    name: str
    turns: list[TurnSpec]
    expect_conversation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    """One suite file."""

    path: Path
    persona: str
    style: str
    scenarios: list[Scenario]
    now: dt.datetime | None = None
    version: int | None = None


def load_suite(path: Path) -> Suite:
    """Read and check a suite file.

    Raises:
        SuiteError: not YAML, too large, or any key, type or value the format does not allow
            (the message says where).
    """
    import yaml

    where = str(path)
    try:
        if path.stat().st_size > MAX_SUITE_BYTES:
            raise SuiteError(f"{where}: larger than {MAX_SUITE_BYTES:,} bytes")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteError(f"{where}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{where}: not YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite is a mapping with persona, style and scenarios")
    _only(raw, {"persona", "style", "scenarios", "now", "version"}, where)
    persona = raw.get("persona")
    if not isinstance(persona, str) or not persona.strip():
        raise SuiteError(f"{where}: persona must name a persona (customer_service, ...)")
    style = raw.get("style", "text")
    if style not in STYLES:
        raise SuiteError(f"{where}: style must be one of {', '.join(STYLES)}, not {style!r}")
    now = raw.get("now")
    if now is not None:
        try:
            now = now if isinstance(now, dt.datetime) else dt.datetime.fromisoformat(str(now))
        except ValueError:
            raise SuiteError(f"{where}: now must be an ISO 8601 date and time, like 2026-12-07T10:00:00") from None
    version = raw.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise SuiteError(f"{where}: version must be a version number (1 or more)")
    scenarios = raw.get("scenarios")
    if not isinstance(scenarios, list) or not scenarios:
        raise SuiteError(f"{where}: scenarios must be a non-empty list")
    out = [_scenario(s, f"{where}: scenario {i + 1}", path.parent) for i, s in enumerate(scenarios)]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SuiteError(f"{where}: two scenarios are named {next(n for n in names if names.count(n) > 1)!r}")
    return Suite(path=path, persona=persona.strip(), style=style, scenarios=out, now=now, version=version)


def _only(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _scenario(raw: Any, where: str, folder: Path) -> Scenario:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a scenario is a mapping with name and turns")
    _only(raw, {"name", "turns", "expect_conversation"}, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(f"{where}: name must be a non-empty string")
    where = f"{where} ({name})"
    turns = raw.get("turns")
    if not isinstance(turns, list) or not turns or len(turns) > MAX_TURNS:
        raise SuiteError(f"{where}: turns must be a list of 1 to {MAX_TURNS} turns")
    conversation = raw.get("expect_conversation") or {}
    if not isinstance(conversation, dict):
        raise SuiteError(f"{where}: expect_conversation must be a mapping")
    _only(conversation, CONVERSATION_KEYS, f"{where}: expect_conversation")
    for key, value in conversation.items():
        if not isinstance(value, bool):
            raise SuiteError(f"{where}: expect_conversation.{key} must be true or false")
    return Scenario(name.strip(), [_turn(t, f"{where}: turn {i + 1}", folder) for i, t in enumerate(turns)],
                    conversation)


def _strings(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SuiteError(f"{where}: {key} must be a string or a list of strings")
    return value


def _turn(raw: Any, where: str, folder: Path) -> TurnSpec:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a turn is a mapping with user (or audio) and expect")
    _only(raw, {"user", "audio", "expect", "silence_ms", "barge_in_after_ms"}, where)
    user, audio = raw.get("user"), raw.get("audio")
    if (user is None) == (audio is None):
        raise SuiteError(f"{where}: give user (words) or audio (a file), one of them")
    if user is not None and (not isinstance(user, str) or not user.strip()):
        raise SuiteError(f"{where}: user must be a non-empty string")
    path = None
    if audio is not None:
        if not isinstance(audio, str):
            raise SuiteError(f"{where}: audio must be a file path")
        path = (folder / audio).resolve()
        if not path.is_file():
            raise SuiteError(f"{where}: no audio file {path}")
    expect = raw.get("expect") or {}
    if not isinstance(expect, dict):
        raise SuiteError(f"{where}: expect must be a mapping")
    _only(expect, TURN_KEYS, f"{where}: expect")
    for key in ("reply_contains_any", "reply_not_contains", "tool_any_of"):
        if key in expect:
            expect[key] = _strings(expect[key], key, where)
    for key in ("tool", "judge", "reply_matches"):
        if key in expect and (not isinstance(expect[key], str) or not expect[key].strip()):
            raise SuiteError(f"{where}: {key} must be a non-empty string")
    if "reply_matches" in expect:
        try:
            re.compile(expect["reply_matches"])
        except re.error as exc:
            raise SuiteError(f"{where}: reply_matches is not a regular expression ({exc})") from None
    if "args" in expect and not isinstance(expect["args"], dict):
        raise SuiteError(f"{where}: args must be a mapping of argument names to values")
    if "no_tool" in expect and not isinstance(expect["no_tool"], bool):
        raise SuiteError(f"{where}: no_tool must be true or false")
    timing = {k: raw.get(k) for k in ("silence_ms", "barge_in_after_ms")} | {"within_ms": expect.get("within_ms")}
    for key, value in timing.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise SuiteError(f"{where}: {key} must be a number of milliseconds")
    return TurnSpec(user=user.strip() if user else None, audio=path, expect=expect,
                    silence_ms=int(raw.get("silence_ms") or 0),
                    barge_in_after_ms=None if raw.get("barge_in_after_ms") is None else int(raw["barge_in_after_ms"]))


# --- results ---------------------------------------------------------------------------------------
@dataclass
class TurnOutcome:
    """What one caller turn produced (every repeat of it).

    Attributes:
        heard: what the agent understood (the transcript, or the typed text).
        reply: what the caller heard.
        tool_calls: ``{"name", "arguments", ...}`` per tool that ran in the turn (a confirmation's
            yes included, see ``confirmed``).
        latency_ms: one figure per repeat (see the module docstring), None when nothing was said.
        error: the error the turn stored, if any.
        confirmed: the runner answered the agent's confirmation question with "yes" in this turn.
        interrupted: the caller talked over the reply (a live style's ``barge_in_after_ms`` on the next turn).
        timings_ms: the turn's stage marks (the first repeat's), for the transcript.
        cost_usd: what the providers would bill for the turn (the mean over repeats), USD.
    """

    heard: str
    reply: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    error: str | None = None
    confirmed: bool = False
    interrupted: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0

    def add_confirmation(self, reply: str, tool_calls: list[dict[str, Any]], error: str | None,
                         cost_usd: float) -> None:
        """Fold in the turn the caller's "yes" to the agent's confirmation question produced."""
        self.reply = f"{self.reply} {reply}".strip()
        self.tool_calls = [*self.tool_calls, *tool_calls]
        self.error = self.error or error
        self.cost_usd += cost_usd
        self.confirmed = True


@dataclass
class Check:
    """One expectation's verdict: ``passed`` True, False, or None (skipped: a judge with no LLM)."""

    expectation: str
    passed: bool | None
    detail: str = ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def same_value(want: Any, got: Any) -> bool:
    """``args`` equality: numbers and numeric strings as numbers, strings case-insensitive, else ==.

    True and false equal only themselves, not 1 and 0.
    """
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    a, b = _number(want), _number(got)
    if a is not None and b is not None:
        return a == b
    if isinstance(want, str) and isinstance(got, str):
        return want.strip().lower() == got.strip().lower()
    return want == got


def check_turn(expect: dict[str, Any], outcome: TurnOutcome) -> list[Check]:
    """The turn's expectations (except ``judge``, which :func:`judge_turn` runs) against what happened."""
    out: list[Check] = []
    reply = outcome.reply.lower()
    names = [c["name"] for c in outcome.tool_calls]
    if "reply_contains_any" in expect:
        wanted = expect["reply_contains_any"]
        hit = next((w for w in wanted if w.lower() in reply), None)
        out.append(Check("reply_contains_any", hit is not None,
                         f"found {hit!r}" if hit else f"none of {wanted} in the reply"))
    if "reply_not_contains" in expect:
        found = [w for w in expect["reply_not_contains"] if w.lower() in reply]
        out.append(Check("reply_not_contains", not found, f"the reply says {found[0]!r}" if found else ""))
    if "reply_matches" in expect:
        ok = re.search(expect["reply_matches"], outcome.reply, re.I) is not None
        out.append(Check("reply_matches", ok, "" if ok else f"/{expect['reply_matches']}/ does not match the reply"))
    if expect.get("no_tool"):
        out.append(Check("no_tool", not names, f"ran {', '.join(names)}" if names else ""))
    expected = {key: [expect["tool"]] if key == "tool" else expect[key]
                for key in ("tool", "tool_any_of") if key in expect}
    for key, wanted in expected.items():
        matching = [c for c in outcome.tool_calls if c["name"] in wanted]
        out.append(Check(key, bool(matching), f"ran {matching[0]['name']}" if matching else
                         f"expected {' or '.join(wanted)}; ran {', '.join(names) or 'no tool'}"))
    # ``args`` is checked against the calls of the expected tool (``tool`` first), else against every call.
    wanted = next(iter(expected.values()), None)
    candidates = [c for c in outcome.tool_calls if wanted is None or c["name"] in wanted]
    if "args" in expect:
        want = expect["args"]

        def fits(call: dict[str, Any]) -> bool:
            args = call.get("arguments") or {}
            return all(k in args and same_value(v, args[k]) for k, v in want.items())

        good = next((c for c in candidates if fits(c)), None)
        seen = "; ".join(f"{c['name']}({c.get('arguments')})" for c in candidates) or "no tool call"
        out.append(Check("args", good is not None, f"expected {want}; got {seen}" if good is None else ""))
    if "within_ms" in expect:
        budget = float(expect["within_ms"])
        if not outcome.latency_ms:
            out.append(Check("within_ms", False, "no agent audio or reply was timed"))
        else:
            median = statistics.median(outcome.latency_ms)
            out.append(Check("within_ms", median <= budget,
                             f"{median:,.0f} ms (median of {len(outcome.latency_ms)}) against {budget:,.0f} ms"))
    return out


def check_conversation(expect: dict[str, Any], outcomes: list[TurnOutcome], ended: bool) -> list[Check]:
    """``no_error`` and ``ended`` over a whole scenario."""
    out: list[Check] = []
    if "no_error" in expect:
        errors = [o.error for o in outcomes if o.error]
        ok = not errors if expect["no_error"] else bool(errors)
        out.append(Check("no_error", ok, f"a turn stored: {errors[0]}" if errors else ""))
    if "ended" in expect:
        out.append(Check("ended", ended == expect["ended"],
                         "" if ended == expect["ended"] else ("the agent ended the call" if ended else
                                                               "the agent did not end the call")))
    return out


JUDGE_PROMPT = (
    "You grade one turn of a voice agent's conversation against a rubric. Read the transcript, then "
    "answer with PASS or FAIL on the first line and one sentence of reason on the second."
)


def judge_messages(rubric: str, transcript: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The chat messages that ask an LLM to grade ``transcript`` ((speaker, words) pairs) by ``rubric``."""
    lines = "\n".join(f"{who}: {words}" for who, words in transcript)
    return [{"role": "system", "content": JUDGE_PROMPT},
            {"role": "user", "content": f"Rubric: {rubric}\n\nTranscript:\n{lines}"}]


def judge_verdict(answer: str) -> Check:
    """An LLM judge's answer as a check: PASS or FAIL first (anything else fails, with the answer)."""
    first, _, rest = answer.strip().partition("\n")
    word = first.strip().split(" ")[0].strip(".:").upper() if first.strip() else ""
    if word in ("PASS", "FAIL"):
        return Check("judge", word == "PASS", rest.strip() or first.strip())
    return Check("judge", False, f"the judge did not answer PASS or FAIL: {answer.strip()[:200]!r}")


@dataclass
class ScenarioResult:
    """One scenario's run: each turn's outcome and checks, and the conversation's checks."""

    name: str
    turns: list[tuple[TurnSpec, TurnOutcome, list[Check]]] = field(default_factory=list)
    conversation: list[Check] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def checks(self) -> list[Check]:
        """Every check of the scenario, turn by turn, then the conversation's."""
        return [c for _, _, checks in self.turns for c in checks] + self.conversation

    def passed(self, strict: bool = False) -> bool:
        """No check failed and the run did not break (``strict``: a skipped judge fails too)."""
        return self.error is None and all(c.passed is True or (c.passed is None and not strict) for c in self.checks)

    @property
    def failure(self) -> str | None:
        """The first failing expectation, as "turn N: expectation: detail" (None when none failed)."""
        if self.error:
            return self.error
        for number, (_, _, checks) in enumerate(self.turns, start=1):
            bad = next((c for c in checks if c.passed is False), None)
            if bad is not None:
                return f"turn {number}: {bad.expectation}: {bad.detail}"
        bad = next((c for c in self.conversation if c.passed is False), None)
        return f"conversation: {bad.expectation}: {bad.detail}" if bad else None
