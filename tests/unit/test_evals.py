"""Eval suites: the file format is checked before anything runs, and every expectation passes and
fails where it should (the checks on made-up outcomes; tests/integration/test_evals.py runs suites)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from voiceforge.evals import (
    ScenarioResult,
    SuiteError,
    TurnOutcome,
    check_conversation,
    check_turn,
    judge_verdict,
    load_suite,
    same_value,
)

pytestmark = pytest.mark.unit


def suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_a_suite_loads_with_its_clock_and_audio(tmp_path):
    (tmp_path / "hello.wav").write_bytes(b"RIFF")
    loaded = load_suite(suite(tmp_path, """
persona: customer_service
style: voice
now: 2030-01-01T09:30:00
scenarios:
  - name: one
    turns:
      - user: "hello"
        expect: {reply_contains_any: hi, no_tool: true}
      - audio: hello.wav
        silence_ms: 300
        expect: {tool_any_of: [run_sql, lookup_customer], args: {customer_id: "3"}, within_ms: 900}
    expect_conversation: {no_error: true, ended: false}
"""))
    assert loaded.style == "voice" and loaded.now == dt.datetime(2030, 1, 1, 9, 30)
    first, second = loaded.scenarios[0].turns
    assert first.expect["reply_contains_any"] == ["hi"]  # a single string is a list of one
    assert second.audio == (tmp_path / "hello.wav").resolve() and second.silence_ms == 300


@pytest.mark.parametrize(("text", "message"), [
    ("persona: p\nscenarios: []", "scenarios must be a non-empty list"),
    ("persona: p\nstyle: fax\nscenarios: [{name: a, turns: [{user: hi}]}]", "style must be one of"),
    ("persona: p\nscenarios: [{name: a, turns: [{user: hi, expect: {tools: x}}]}]", "unknown key 'tools'"),
    ("persona: p\nscenarios: [{name: a, turns: [{user: hi, audio: x.wav}]}]", "one of them"),
    ("persona: p\nscenarios: [{name: a, turns: [{audio: missing.wav}]}]", "no audio file"),
    ("persona: p\nscenarios: [{name: a, turns: [{user: hi, expect: {reply_matches: '('}}]}]", "not a regular"),
    ("persona: p\nscenarios: [{name: a, turns: [{user: hi, expect: {within_ms: fast}}]}]", "milliseconds"),
    ("persona: p\nscenarios: [{name: a, turns: [{user: hi}]}, {name: a, turns: [{user: hi}]}]", "two scenarios"),
    ("persona: p\nnow: yesterday\nscenarios: [{name: a, turns: [{user: hi}]}]", "ISO 8601"),
    ("persona: p\nscenarios: [{name: a, turns: [{user: hi}], expect_conversation: {ended: maybe}}]", "true or false"),
    ("- just a list", "a suite is a mapping"),
    ("persona: [unclosed", "not YAML"),
])
def test_a_bad_suite_is_refused_with_where(tmp_path, text, message):
    with pytest.raises(SuiteError, match=message) as caught:
        load_suite(suite(tmp_path, text))
    assert str(tmp_path / "s.yaml") in str(caught.value)


ORDER = TurnOutcome(heard="customer 7", reply="Ethan Lee has 2 orders. The latest is a kettle.",
                    tool_calls=[{"name": "get_order_history", "arguments": {"customer_id": 7}}], latency_ms=[80.0, 120.0])


@pytest.mark.parametrize(("expect", "passed"), [
    ({"reply_contains_any": ["KETTLE", "toaster"]}, True),
    ({"reply_contains_any": ["toaster"]}, False),
    ({"reply_not_contains": ["@", "password"]}, True),
    ({"reply_not_contains": ["orders"]}, False),
    ({"reply_matches": r"has \d+ orders"}, True),
    ({"reply_matches": r"^Sorry"}, False),
    ({"tool": "get_order_history"}, True),
    ({"tool": "lookup_customer"}, False),
    ({"tool_any_of": ["lookup_customer", "get_order_history"]}, True),
    ({"tool_any_of": ["run_sql"]}, False),
    ({"tool": "get_order_history", "args": {"customer_id": "7"}}, True),  # numeric strings compare as numbers
    ({"args": {"customer_id": 8}}, False),
    ({"args": {"limit": 5}}, False),  # an argument that was not given
    ({"no_tool": True}, False),
    ({"within_ms": 100}, True),  # the median of 80 and 120
    ({"within_ms": 99}, False),
])
def test_each_expectation_passes_and_fails(expect, passed):
    checks = check_turn(expect, ORDER)
    assert [c.passed for c in checks] == [passed] * len(checks), checks
    assert passed or all(c.detail for c in checks)  # a failure says why


def test_no_tool_passes_on_a_plain_reply_and_within_fails_when_nothing_was_timed():
    plain = TurnOutcome(heard="hello", reply="Hi, how can I help?")
    assert [c.passed for c in check_turn({"no_tool": True, "within_ms": 500}, plain)] == [True, False]


def test_conversation_expectations():
    broken = [ORDER, TurnOutcome("x", "Sorry, something went wrong.", error="openai-llm: HTTP 500")]
    assert [c.passed for c in check_conversation({"no_error": True, "ended": False}, broken, ended=False)] == [False, True]
    assert [c.passed for c in check_conversation({"no_error": True, "ended": True}, [ORDER], ended=False)] == [True, False]


def test_a_judge_verdict_and_how_a_skipped_judge_counts():
    assert judge_verdict("PASS\nIt asked for the customer number.").passed is True
    assert judge_verdict("FAIL: it read out an email address").passed is False
    assert judge_verdict("I think it was fine").passed is False  # neither word: not a pass
    from voiceforge.evals import Check, TurnSpec

    result = ScenarioResult("s", turns=[(TurnSpec(user="hi"), ORDER, [Check("judge", None, "skipped")])])
    assert result.passed() and not result.passed(strict=True)


def test_same_value():
    assert same_value(7, "7") and same_value("Repair", "repair") and same_value(1.5, "1.50")
    assert not same_value(7, "seven") and not same_value(True, 1)
