"""`forge eval` for real: suites through the turn pipeline on the offline models, typed and spoken
(Piper in, Whisper back), its exit code and JUnit XML read back by junitparser, a fixed clock,
and a judge run by an LLM speaking the OpenAI wire format."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from forge.evals import Runner
from voiceforge.audio.codecs import wrap_wav
from voiceforge.evals import load_suite

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SUITE = """
persona: customer_service
style: {style}
scenarios:
  - name: counts the customers
    turns:
      - {line}
        expect: {{tool: run_sql, reply_matches: "\\\\b40\\\\b"}}
    expect_conversation: {{no_error: true, ended: false}}
  - name: expects the wrong tool
    turns:
      - user: "how many customers are there"
        expect: {{tool: lookup_customer, reply_not_contains: ["40"]}}
"""


def forge_eval(*args: str, data: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {"FORGE_DATA_DIR": str(data), "PATH": "/usr/bin:/bin", "HOME": str(data), **extra}
    return subprocess.run([sys.executable, "-m", "forge", "eval", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_a_failing_scenario_fails_the_run_and_the_junit_says_which(tmp_path):
    from junitparser import Failure, JUnitXml

    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(style="text", line='user: "how many customers are there"'))
    junit = tmp_path / "eval.xml"
    out = forge_eval(str(path), "--junit", str(junit), data=tmp_path / "data")
    assert out.returncode == 1, out.stderr
    assert "PASS  counts the customers" in out.stdout
    assert "FAIL  expects the wrong tool" in out.stdout
    assert "turn 1: reply_not_contains: the reply says '40'" in out.stdout  # the first failing expectation
    assert "[FAIL] tool: expected lookup_customer; ran run_sql" in out.stdout  # every check, in the transcript
    assert "agent: The answer is 40." in out.stdout  # and the transcript
    assert "1 of 2 scenarios passed" in out.stdout
    cases = {case.name: case for suite in JUnitXml.fromfile(str(junit)) for case in suite}
    assert set(cases) == {"counts the customers", "expects the wrong tool"}
    assert cases["counts the customers"].is_passed
    (failure,) = cases["expects the wrong tool"].result
    assert isinstance(failure, Failure) and "reply_not_contains" in failure.message
    assert "[FAIL] tool: expected lookup_customer" in failure.text  # the transcript with every check


def test_every_scenario_passing_exits_zero_and_json_is_one_object_a_suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(style="text", line='user: "how many customers are there"').split("  - name: expects")[0])
    out = forge_eval(str(path), "--json", data=tmp_path / "data")
    assert out.returncode == 0, out.stdout + out.stderr
    (run,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert run["passed"] and run["scenarios"][0]["turns"][0]["tool_calls"][0]["name"] == "run_sql"


def test_a_broken_suite_exits_two_before_anything_runs(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("persona: customer_service\nscenarios: [{name: a, turns: [{user: hi, expect: {tool_called: x}}]}]")
    out = forge_eval(str(path), data=tmp_path / "data")
    assert out.returncode == 2 and "unknown key 'tool_called'" in out.stderr


async def test_the_voice_style_speaks_each_line_and_plays_audio_files(offline_engine, tmp_path, speak):
    pcm, rate = speak("Look up customer number three.")
    (tmp_path / "lookup.wav").write_bytes(wrap_wav(b"\0\0" * (rate // 4) + pcm + b"\0\0" * (rate // 4), rate))
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(style="voice", line='user: "how many customers are there"') + """
  - name: an audio file
    turns:
      - audio: lookup.wav
        expect: {tool: lookup_customer, args: {customer_id: 3}}
""")
    run = await Runner(offline_engine).run(load_suite(path))
    results = {s.name: s for s in run.scenarios}
    assert results["counts the customers"].passed(), results["counts the customers"].failure
    (_, outcome, _), = results["counts the customers"].turns
    assert "customers" in outcome.heard.lower() and outcome.latency_ms and outcome.latency_ms[0] > 0
    assert results["an audio file"].passed(), results["an audio file"].failure
    assert not results["expects the wrong tool"].passed()


async def test_now_fixes_the_clock_and_a_confirmation_is_answered(offline_engine, tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("""
persona: customer_service
now: 2031-03-03T08:00:00
scenarios:
  - name: books tomorrow
    turns:
      - user: "book me a cleaning tomorrow at 10 am, I'm customer 5"
        expect: {tool: schedule_appointment, args: {customer_id: 5, starts_at: "2031-03-04T10:00"}}
""")
    run = await Runner(offline_engine).run(load_suite(path))
    (result,) = run.scenarios
    assert result.passed(), result.failure
    (_, outcome, _), = result.turns
    assert outcome.confirmed and outcome.reply.startswith("Just to confirm, shall I ")
    assert dt.datetime.now(dt.UTC).year != 2031  # the clock is fixed only inside the run


async def test_a_judge_runs_on_an_llm_and_is_skipped_offline(offline_engine, oai, tmp_path):
    from tests.integration.test_openai_providers import keyed
    from voiceforge.engine import Engine

    path = tmp_path / "suite.yaml"
    path.write_text("""
persona: customer_service
scenarios:
  - name: polite
    turns:
      - user: "hello there"
        expect: {judge: "The agent greets the caller and offers help."}
""")
    offline = await Runner(offline_engine).run(load_suite(path))
    (check,) = offline.scenarios[0].checks
    assert check.passed is None and "skipped" in check.detail
    assert offline.passed() and not offline.passed(strict=True)

    server, url = oai
    engine = Engine(keyed(url, database_url=f"sqlite:///{tmp_path / 'j.db'}", stt_provider="whisper",
                          tts_provider="piper"))
    server.chat_script += [{"text": "Hello! How can I help you today?"}, {"text": "FAIL\nIt never offered help."}]
    judged = await Runner(engine).run(load_suite(path))
    (check,) = judged.scenarios[0].checks
    assert check.passed is False and check.detail == "It never offered help."
    asked = server.requests[-1]["json"]["messages"][1]["content"]
    assert "The agent greets the caller" in asked and "Agent: Hello! How can I help you today?" in asked


@pytest.mark.wallclock  # the starter suites hold latency budgets: timed runs stay out of the parallel gate
async def test_the_starter_suites_pass_offline(tmp_path):
    import asyncio

    from forge.processes import local_sidecar
    from voiceforge.config import load_settings

    data = tmp_path / "data"
    # with the sidecar up, as `make run` has it: the pizza shop's order tool calls its demo endpoint
    async with local_sidecar(settings=load_settings(forge_data_dir=data)) as (base, _token, _key):
        out = await asyncio.to_thread(forge_eval, str(ROOT / "evals"), data=data, FORGE_SIDECAR_URL=base)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout and " scenarios passed" in out.stdout


def test_two_persona_versions_side_by_side(tmp_path):
    from voiceforge.agent.persona import save_persona_edits

    data = tmp_path / "data"
    path = tmp_path / "suite.yaml"
    path.write_text("""
persona: customer_service
scenarios:
  - name: opening hours
    turns:
      - user: "what time do you shut on saturdays"
        expect: {reply_matches: "6 pm"}
""")
    save_persona_edits(data, "customer_service", {"facts": ["We are open from 8 am to 8 pm every day."]})  # version 2
    out = forge_eval(str(path), "--versions", "1,2", "--junit", str(tmp_path / "v.xml"), data=data)
    assert out.returncode == 1, out.stdout + out.stderr  # version 2 fails the scenario
    assert "| | version 1 | version 2 |" in out.stdout
    assert "| passed | 1 of 1 | 0 of 1 |" in out.stdout
    assert "Replies that changed: 1" in out.stdout and "v2: “We are open from 8 am to 8 pm every day.”" in out.stdout
    alone = forge_eval(str(path), "--version", "1", "--json", data=data)
    assert alone.returncode == 0 and json.loads(alone.stdout)["version"] == 1


EVERY = """
persona: customer_service
style: text
now: 2031-03-03T08:00:00
scenarios:
  - name: every expectation met
    turns:
      - user: "How many customers are there?"
        expect:
          reply_contains_any: ["forty", "40"]
          reply_not_contains: ["@"]
          reply_matches: "answer is \\\\d+"
          tool: run_sql
          tool_any_of: [run_sql, lookup_customer]
          within_ms: 60000
          judge: "The agent answers with a number."
      - user: "Please book me a cleaning tomorrow at 10 am. I'm customer 5."
        expect: {tool: schedule_appointment, args: {customer_id: "5", starts_at: "2031-03-04T10:00"}}
    expect_conversation: {no_error: true, ended: false}
  - name: every expectation missed
    turns:
      - user: "How many customers are there?"
        expect:
          reply_contains_any: ["goodbye"]
          reply_not_contains: ["40"]
          reply_matches: "^Sorry"
          tool: lookup_customer
          tool_any_of: [end_call]
          args: {customer_id: 99}
          no_tool: true
          within_ms: 0
    expect_conversation: {no_error: false, ended: true}
  - name: talks over a long answer
    turns:
      - user: "Tell me a joke about the weather."
      - user: "Wait, how many customers are there?"
        barge_in_after_ms: 1200
        expect: {tool: run_sql}
"""


@pytest.mark.parametrize("style", ["text", "voice",
                                   # live lines are timed in real time: out of the parallel gate's CPU contention
                                   pytest.param("phone", marks=pytest.mark.wallclock),
                                   pytest.param("realtime", marks=pytest.mark.wallclock)])
async def test_every_expectation_passes_and_fails_in_every_style(style, offline_engine, tmp_path, monkeypatch):
    """One suite through each style (the clock fixed by now: in this process and in the servers the
    run starts): every expectation is met in one scenario and missed in the other (the judge is
    skipped: no LLM); a confirmation is answered; on a live line the caller talks over an answer."""
    monkeypatch.setenv("FORGE_DATA_DIR", str(offline_engine.settings.forge_data_dir))
    from voiceforge.config import get_settings

    get_settings.cache_clear()
    path = tmp_path / "every.yaml"
    path.write_text(EVERY)
    try:
        run = await Runner(offline_engine).run(load_suite(path), style=style)
    finally:
        get_settings.cache_clear()
    met, missed, barge = run.scenarios
    assert met.error is None and missed.error is None, (met.error, missed.error)
    assert {c.expectation: c.passed for c in met.checks} == {
        "reply_contains_any": True, "reply_not_contains": True, "reply_matches": True, "tool": True,
        "tool_any_of": True, "args": True, "within_ms": True, "judge": None, "no_error": True, "ended": True,
    }, [(c.expectation, c.passed, c.detail) for c in met.checks]
    assert met.passed() and not met.passed(strict=True)
    assert [c.expectation for c in missed.checks if c.passed is not False] == [], \
        [(c.expectation, c.passed, c.detail) for c in missed.checks]
    assert len(missed.checks) == 10
    (_, booked, _) = met.turns[1]
    assert booked.confirmed and booked.reply.startswith("Just to confirm, shall I ")  # the caller said yes
    assert barge.passed(), barge.failure
    (_, joke, _), (_, question, _) = barge.turns
    assert "customers" in question.heard.lower()
    if style in ("phone", "realtime"):  # a live line: the question was spoken over the answer
        assert joke.interrupted and not question.interrupted
        assert all(o.latency_ms and 0 < o.latency_ms[0] < 10_000 for _, o, _ in met.turns)  # the caller's clock
