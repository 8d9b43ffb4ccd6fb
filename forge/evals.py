"""Running eval suites (``voiceforge.evals``) against a persona in a style, for `forge eval` and CI.

Each scenario is a new conversation, in one of four styles:

- ``text``: typed lines through the turn pipeline (``Engine.pipeline``);
- ``voice``: each line spoken by Piper (or the suite's audio file) and sent as one utterance, as
  Compare's batch style does;
- ``phone``: one simulated Twilio call per scenario (``voiceforge.telephony.simulator``) against a
  sidecar started for the run: μ-law 8 kHz in real time, per-turn ``silence_ms`` and
  ``barge_in_after_ms``, latency on the caller's clock;
- ``realtime``: one Realtime session per scenario (OpenAI's with a key, else Forge's offline
  server started for the run), audio streamed in real time, the service's VAD ending turns,
  ``barge_in_after_ms`` timed from the first audio delta of the answer talked over.

A turn that expects a tool whose declaration asks for confirmation gets the caller's "yes" when
the agent asks, inside the same turn (on a call, where lines are played as scripted, a "yes"
follows every such turn). ``--repeat N`` runs each scenario N times; ``within_ms`` then judges
the median. ``now:`` fixes the clock of this process for the run and, through ``FORGE_NOW``, of
the sidecar or Realtime server it starts.

JUnit XML (``--junit``): one ``testsuite`` per suite file, one ``testcase`` per scenario; a
failing expectation is a ``failure`` with the transcript, a run that broke an ``error``, and a
skipped judge (no LLM configured) a ``skipped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiceforge import clock
from voiceforge.evals import (
    STYLES,
    Check,
    ScenarioResult,
    Suite,
    SuiteError,
    TurnOutcome,
    TurnSpec,
    check_conversation,
    check_turn,
    judge_messages,
    judge_verdict,
)
from voiceforge.providers.dialogue import is_confirmation

FIRST_REPLY_MARKS = ("first_frame_sent", "first_audio_delta", "tts_first_audio", "first_sentence", "turn_done")
"""A turn's first agent output, in order of preference: audio on the wire, synthesized audio, reply text."""
YES = "Yes, please."


@dataclass
class SuiteRun:
    """One suite file's results under one persona and style."""

    suite: Suite
    persona: str
    style: str
    scenarios: list[ScenarioResult] = field(default_factory=list)
    version: int | None = None
    """The persona version the suite ran on."""

    def passed(self, strict: bool = False) -> bool:
        """Every scenario passed."""
        return all(s.passed(strict) for s in self.scenarios)


def expected_tools(turn: TurnSpec) -> set[str]:
    """The tools a turn expects (``tool``, or ``tool_any_of``)."""
    return {turn.expect["tool"]} if "tool" in turn.expect else set(turn.expect.get("tool_any_of") or ())


def awaits_yes(turn: TurnSpec, reply: str, tool_calls: list[dict[str, Any]]) -> bool:
    """Whether the agent asked to confirm instead of running the tool the turn expects."""
    wanted = expected_tools(turn)
    return bool(wanted) and is_confirmation(reply) and not wanted & {c["name"] for c in tool_calls}


def first_reply_ms(timings: dict[str, float]) -> float | None:
    """A turn's latency for ``within_ms``: ms from the end of the caller's input to the first agent output."""
    return next((float(timings[m]) for m in FIRST_REPLY_MARKS if m in timings), None)


class Runner:
    """Runs suites on one engine (models loaded once for every suite)."""

    def __init__(self, engine: Any, repeat: int = 1) -> None:
        """``engine``: a :class:`voiceforge.engine.Engine`; ``repeat``: runs per scenario (1 or more)."""
        if repeat < 1:
            raise ValueError("repeat must be 1 or more")
        self.engine, self.repeat = engine, repeat
        self._speech: dict[str, tuple[bytes, int]] = {}
        self._line: Any = None  # the phone style's sidecar (URL, token, key), or the realtime style's service
        self._version: int | None = None  # the persona version a run is pinned to (None: the current one)
        self._warm: bool | None = None  # None: nothing loaded yet; False: the brain; True: the speech models too

    async def run(self, suite: Suite, persona: str | None = None, style: str | None = None,
                  progress: Callable[[str], None] | None = None, version: int | None = None) -> SuiteRun:
        """Every scenario of ``suite`` (``persona``, ``style`` and ``version`` override the file's).

        Raises:
            SuiteError: an unknown style, persona or version, or a version other than the
                current one in a style whose agent runs in another process.
        """
        from voiceforge.agent.persona import PersonaError
        from voiceforge.agent.versions import VersionError

        style = style or suite.style
        persona = persona or suite.persona
        version = version or suite.version
        if style not in STYLES:
            raise SuiteError(f"{suite.path}: style {style!r} is not one of {', '.join(STYLES)}")
        try:
            current = self.engine.persona(persona).version
            loaded = self.engine.persona(persona, version).version
        except (PersonaError, VersionError) as exc:
            raise SuiteError(f"{suite.path}: {exc}") from None
        if style in ("phone", "realtime") and loaded != current:
            raise SuiteError(f"{suite.path}: the {style} style runs the current version of {persona} ({current}); "
                             f"version {version} runs in the text and voice styles")
        self._version = version
        speech = style == "voice"  # the other styles' speech models run in the sidecar or the Realtime server
        if self._warm is None or (speech and not self._warm):  # loaded before the first timed turn, not in it
            await asyncio.to_thread(self.engine.warm_up, speech)
            self._warm = speech or bool(self._warm)
        run = SuiteRun(suite, persona, style, version=loaded)
        fixed = {"FORGE_NOW": suite.now.isoformat()} if suite.now else {}  # the servers' own clock
        async with contextlib.AsyncExitStack() as stack:
            if style == "phone":
                from forge.processes import local_sidecar

                self._line = await stack.enter_async_context(local_sidecar(settings=self.engine.settings, **fixed))
            elif style == "realtime":
                from forge.compare import realtime_service

                self._line = await stack.enter_async_context(realtime_service(self.engine, **fixed))
            stack.enter_context(clock.frozen(suite.now) if suite.now else contextlib.nullcontext())
            for scenario in suite.scenarios:
                if progress:
                    progress(scenario.name)
                run.scenarios.append(await self._scenario(scenario, persona, style))
        return run

    async def _scenario(self, scenario: Any, persona: str, style: str) -> ScenarioResult:
        result = ScenarioResult(scenario.name)
        started = time.perf_counter()
        outcomes: list[list[TurnOutcome]] = [[] for _ in scenario.turns]
        ended = False
        try:
            for _ in range(self.repeat):
                if style == "phone":
                    ended = await self._call(scenario, persona, outcomes)
                elif style == "realtime":
                    ended = await self._session(scenario, persona, outcomes)
                else:
                    pipeline = self.engine.pipeline(persona, channel="eval", persist=False,
                                                    persona_version=self._version)
                    for number, turn in enumerate(scenario.turns):
                        outcomes[number].append(await self._turn(pipeline, turn, style))
                        if pipeline.ended:
                            break
                    ended = pipeline.ended
        except Exception as exc:  # noqa: BLE001 - a broken run is the scenario's error, the suite goes on
            result.error = f"the run broke: {type(exc).__name__}: {exc}"
        for spec, runs in zip(scenario.turns, outcomes, strict=True):
            if not runs:
                if result.error is None:
                    result.turns.append((spec, TurnOutcome("", ""), [Check("turn", False, "never reached: the "
                                                                                 "call ended before it")]))
                continue
            merged = TurnOutcome(heard=runs[0].heard, reply=runs[0].reply, tool_calls=runs[0].tool_calls,
                                 latency_ms=[v for r in runs for v in r.latency_ms],
                                 error=next((r.error for r in runs if r.error), None), confirmed=runs[0].confirmed,
                                 interrupted=runs[0].interrupted, timings_ms=runs[0].timings_ms,
                                 cost_usd=sum(r.cost_usd for r in runs) / len(runs))
            checks = check_turn(spec.expect, merged)
            if "judge" in spec.expect:
                checks.append(await self._judge(spec.expect["judge"], scenario.turns, outcomes))
            result.turns.append((spec, merged, checks))
        result.conversation = check_conversation(scenario.expect_conversation,
                                                 [o for runs in outcomes for o in runs], ended)
        result.seconds = time.perf_counter() - started
        return result

    async def _turn(self, pipeline: Any, turn: TurnSpec, style: str) -> TurnOutcome:
        record = await self._say(pipeline, turn, style, turn.user)
        outcome = TurnOutcome(heard=record.user_text, reply=record.reply, tool_calls=list(record.tool_calls),
                              error=record.error, interrupted=record.interrupted, timings_ms=dict(record.timings_ms),
                              cost_usd=record.cost_usd)
        if (latency := first_reply_ms(record.timings_ms)) is not None:
            outcome.latency_ms.append(latency)
        if awaits_yes(turn, record.reply, record.tool_calls):
            yes = await self._say(pipeline, turn, style, YES)  # the caller confirms, as the agent asked
            outcome.add_confirmation(yes.reply, yes.tool_calls, yes.error, yes.cost_usd)
        return outcome

    async def _say(self, pipeline: Any, turn: TurnSpec, style: str, words: str | None) -> Any:
        if style == "text" and words is not None and (turn.audio is None or words == YES):
            return await pipeline.text_turn(words)
        pcm, rate = await self._audio(turn, words)
        return await pipeline.voice_turn(pcm, rate, speak=True)

    async def _audio(self, turn: TurnSpec, words: str | None) -> tuple[bytes, int]:
        """The turn's audio file, or ``words`` spoken by Piper: (PCM16 mono, Hz)."""
        if turn.audio is not None and words != YES:
            from voiceforge.audio.decode import decode_audio

            return await asyncio.to_thread(decode_audio, turn.audio.read_bytes(), self.engine.settings.forge_max_turn_s)
        return await self._spoken(words or "")


    async def _call(self, scenario: Any, persona: str, outcomes: list[list[TurnOutcome]]) -> bool:
        """One simulated phone call of the scenario; appends each turn's outcome; whether the agent hung up."""
        from voiceforge.telephony.simulator import simulate_call

        base, token, key = self._line
        confirming = {t.name for t in self.engine.pipeline(persona, channel="eval", persist=False).tools
                      if t.confirm is True}  # the agent asks before these run
        lines: list[tuple[int, tuple[bytes, int], dict[str, int | None]]] = []
        for number, turn in enumerate(scenario.turns):
            each: dict[str, int | None] = {}
            if turn.silence_ms:
                each["silence_ms"] = turn.silence_ms
            if turn.barge_in_after_ms is not None:
                each["barge_in_ms"] = turn.barge_in_after_ms
            lines.append((number, await self._audio(turn, turn.user), each))
            if expected_tools(turn) & confirming:
                lines.append((number, await self._spoken(YES), {}))  # played as scripted: the yes follows
        call = await simulate_call(base, token, [audio for _, audio, _ in lines], persona, api_key=key,
                                   each=[each for _, _, each in lines])
        merged: dict[int, TurnOutcome] = {}
        for (number, _, _), row in zip(lines, call["turns"], strict=False):
            calls = [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in row.get("tool_calls") or []]
            if number in merged:  # the caller's yes to a confirmation
                merged[number].add_confirmation(row["reply"], calls, row.get("error"), float(row.get("cost_usd") or 0.0))
                continue
            merged[number] = TurnOutcome(heard=row["transcript"], reply=row["reply"], tool_calls=calls,
                                         latency_ms=[row["latency_ms"]] if row.get("latency_ms") is not None else [],
                                         error=row.get("error"), interrupted=bool(row.get("interrupted")),
                                         timings_ms=row.get("timings_ms") or {}, cost_usd=float(row.get("cost_usd") or 0.0))
        for number, outcome in merged.items():
            outcomes[number].append(outcome)
        return any(c["name"] == "end_call" for o in merged.values() for c in o.tool_calls)

    async def _session(self, scenario: Any, persona: str, outcomes: list[list[TurnOutcome]]) -> bool:
        """One Realtime session of the scenario; appends each turn's outcome; whether the agent ended it.

        A turn whose next turn has ``barge_in_after_ms`` is not waited for: silence follows it
        until the answer's first audio, then that long, then the next line is spoken over it.
        """
        from forge.compare import RealtimeLine, realtime_session

        async with realtime_session(self.engine, persona, "eval", self._line) as client:
            line = RealtimeLine(client)
            spoken: list[int] = []  # turns said whose answers are not collected yet
            for number, turn in enumerate(scenario.turns):
                await line.say(*await self._audio(turn, turn.user),
                               silence_ms=0 if turn.barge_in_after_ms is not None else turn.silence_ms)
                spoken.append(number)
                following = scenario.turns[number + 1] if number + 1 < len(scenario.turns) else None
                if following is not None and following.barge_in_after_ms is not None:
                    answering = asyncio.Event()

                    async def heard(event: Any, answering: asyncio.Event = answering) -> None:
                        if event.type == "response.output_audio.delta":
                            answering.set()

                    client.on_event = heard
                    await line.quiet_until(asyncio.wait_for(answering.wait(), 60))
                    client.on_event = None
                    await line.quiet_until(asyncio.sleep(following.barge_in_after_ms / 1000))
                    continue  # the next line talks over this answer
                for waiting in spoken:
                    said = await line.quiet_until(client.next_turn(timeout_s=90))
                    outcome = TurnOutcome(heard=said.user_text, reply=said.reply, tool_calls=list(said.tool_calls),
                                          error=said.error, interrupted=said.interrupted,
                                          timings_ms=dict(said.timings_ms),
                                          cost_usd=float((said.cost or {}).get("total", 0.0)))
                    if (latency := said.timings_ms.get("first_audio_delta")) is not None:
                        outcome.latency_ms.append(float(latency))
                    if awaits_yes(scenario.turns[waiting], said.reply, said.tool_calls):
                        await line.say(*await self._spoken(YES))
                        yes = await line.quiet_until(client.next_turn(timeout_s=90))
                        outcome.add_confirmation(yes.reply, yes.tool_calls, yes.error,
                                                 float((yes.cost or {}).get("total", 0.0)))
                    outcomes[waiting].append(outcome)
                spoken.clear()
                if client.ended:
                    return True
        return False

    async def _spoken(self, text: str) -> tuple[bytes, int]:
        """``text`` in Piper's voice with 0.3 s of silence either side (each line synthesized once)."""
        if text not in self._speech:
            from voiceforge.providers.local import PiperTTS

            piper = PiperTTS()
            pcm = await piper.synthesize(text)
            pad = b"\0\0" * int(piper.sample_rate * 0.3)
            self._speech[text] = (pad + pcm + pad, piper.sample_rate)
        return self._speech[text]

    async def _judge(self, rubric: str, turns: list[TurnSpec], outcomes: list[list[TurnOutcome]]) -> Check:
        """The configured LLM grades the scenario's transcript so far; skipped on the offline brain."""
        llm = self.engine.providers.llm
        if getattr(llm, "capabilities", None) is not None and llm.capabilities.offline:
            return Check("judge", None, "skipped: no LLM is configured (the offline brain does not judge)")
        transcript: list[tuple[str, str]] = []
        for spec, runs in zip(turns, outcomes, strict=False):
            if runs:
                transcript += [("Caller", runs[0].heard or spec.label), ("Agent", runs[0].reply)]
        answer = ""
        async for piece in llm.stream(judge_messages(rubric, transcript), []):
            if isinstance(piece, str):
                answer += piece
        return judge_verdict(answer)


def transcript_lines(result: ScenarioResult) -> list[str]:
    """The scenario as people read it: each line, what was heard, the reply, the tools and the checks."""
    lines: list[str] = []
    for number, (spec, outcome, checks) in enumerate(result.turns, start=1):
        lines.append(f"  {number}. caller: {spec.label}" + (f"  (heard: {outcome.heard})"
                                                             if outcome.heard and outcome.heard != spec.user else ""))
        if outcome.confirmed:
            lines.append(f"     caller: {YES}  (the agent asked to confirm)")
        lines.append(f"     agent: {outcome.reply}" + ("  (interrupted)" if outcome.interrupted else ""))
        for call in outcome.tool_calls:
            lines.append(f"     tool: {call['name']}({call.get('arguments')})")
        if outcome.latency_ms:
            lines.append(f"     first reply: {statistics.median(outcome.latency_ms):,.0f} ms")
        for check in checks:
            mark = {True: "ok", False: "FAIL", None: "skipped"}[check.passed]
            lines.append(f"     [{mark}] {check.expectation}" + (f": {check.detail}" if check.detail else ""))
    for check in result.conversation:
        mark = {True: "ok", False: "FAIL", None: "skipped"}[check.passed]
        lines.append(f"  [{mark}] conversation {check.expectation}" + (f": {check.detail}" if check.detail else ""))
    return lines


def to_json(run: SuiteRun, strict: bool = False) -> dict[str, Any]:
    """One suite run as a JSON-ready dict (``forge eval --json`` prints one a line)."""
    return {
        "suite": str(run.suite.path), "persona": run.persona, "version": run.version, "style": run.style,
        "passed": run.passed(strict),
        "scenarios": [{
            "name": s.name, "passed": s.passed(strict), "failure": s.failure, "seconds": round(s.seconds, 2),
            "turns": [{"user": spec.label, "heard": o.heard, "reply": o.reply, "confirmed": o.confirmed,
                       "interrupted": o.interrupted,
                       "tool_calls": [{"name": c["name"], "arguments": c.get("arguments")} for c in o.tool_calls],
                       "latency_ms": o.latency_ms, "error": o.error, "timings_ms": o.timings_ms,
                       "cost_usd": o.cost_usd,
                       "checks": [{"expectation": c.expectation, "passed": c.passed, "detail": c.detail}
                                  for c in checks]}
                      for spec, o, checks in s.turns],
            "conversation": [{"expectation": c.expectation, "passed": c.passed, "detail": c.detail}
                             for c in s.conversation],
        } for s in run.scenarios],
    }


def write_junit(runs: list[SuiteRun], path: Path, strict: bool = False) -> None:
    """JUnit XML of ``runs`` at ``path`` (written with junitparser, read by CI systems)."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

    xml = JUnitXml("forge eval")
    for run in runs:
        suite = TestSuite(f"{run.suite.path.stem} ({run.persona} version {run.version}, {run.style})")
        for result in run.scenarios:
            case = TestCase(result.name, classname=f"{run.suite.path.stem}.{run.style}", time=round(result.seconds, 3))
            transcript = "\n".join(transcript_lines(result))
            if result.error:
                case.result = [Error(result.error)]
            elif not result.passed(strict):
                failure = Failure(result.failure or "a judge was skipped (--strict)")
                failure.text = transcript
                case.result = [failure]
            elif any(c.passed is None for c in result.checks):
                case.result = [Skipped("a judge was skipped: no LLM is configured")]
            case.system_out = transcript
            suite.add_testcase(case)
        xml.add_testsuite(suite)
    xml.write(str(path), pretty=True)


def compare_versions(runs: list[dict[str, Any]]) -> list[str]:
    """The same suite run on several persona versions (each :func:`to_json`'s dict), side by side,
    as Markdown lines: per version the scenarios passed, first-reply p50/p95 over every timed
    turn and cost per conversation (scenario); then each turn whose reply differs."""
    from voiceforge.cost import format_usd
    from voiceforge.scoring import percentile

    lines = ["| | " + " | ".join(f"version {r['version']}" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def turns(run: dict[str, Any]) -> list[dict[str, Any]]:
        return [t for s in run["scenarios"] for t in s["turns"]]

    row("passed", [f"{sum(s['passed'] for s in r['scenarios'])} of {len(r['scenarios'])}" for r in runs])
    timed = [[v for t in turns(r) for v in t["latency_ms"]] for r in runs]
    row("first reply p50 / p95 ms", [f"{percentile(t, 50):,.0f} / {percentile(t, 95):,.0f}" if t else "—"
                                     for t in timed])
    row("cost per conversation", [format_usd(sum(t["cost_usd"] for t in turns(r)) / max(1, len(r["scenarios"])))
                                  for r in runs])
    changed = []
    for scenarios in zip(*(r["scenarios"] for r in runs), strict=True):
        for number, said in enumerate(zip(*(s["turns"] for s in scenarios), strict=False), start=1):
            replies = [t["reply"] for t in said]
            if len(set(replies)) > 1:
                changed.append(f"- {scenarios[0]['name']}, turn {number}: " + " → ".join(
                    f"v{r['version']}: “{reply}”" for r, reply in zip(runs, replies, strict=True)))
    return [*lines, "", f"Replies that changed: {len(changed)}", *changed]


MAX_KEPT_RUNS = 200
"""Eval runs kept in the data folder; the oldest go first."""


def save_run(data_dir: Path, runs: list[SuiteRun], strict: bool = False) -> Path:
    """Keep one eval run (a suite on one or more versions) as ``<data dir>/eval-runs/<UTC time>.json``.

    Written atomically (a temporary file renamed into place); beyond :data:`MAX_KEPT_RUNS` the
    oldest are removed. Returns the file.
    """
    import datetime as dt
    import json
    import os
    import tempfile

    folder = data_dir / "eval-runs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC)
    payload = {"started_at": stamp.isoformat(timespec="seconds"), "suite": str(runs[0].suite.path),
               "persona": runs[0].persona, "style": runs[0].style, "runs": [to_json(r, strict) for r in runs]}
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(payload, out, default=str)
        out.flush()
        os.fsync(out.fileno())
    path = folder / f"{stamp:%Y%m%dT%H%M%S%fZ}.json"
    os.replace(temporary, path)
    for old in sorted(folder.glob("*.json"))[:-MAX_KEPT_RUNS]:
        old.unlink(missing_ok=True)
    return path


def past_runs(data_dir: Path) -> list[dict[str, Any]]:
    """The kept eval runs, newest first, each the saved JSON plus its ``path``."""
    import json

    out = []
    for path in sorted((data_dir / "eval-runs").glob("*.json"), reverse=True):
        try:
            out.append({**json.loads(path.read_text(encoding="utf-8")), "path": str(path)})
        except (OSError, ValueError):
            continue  # a file being replaced right now, or not one of ours
    return out
