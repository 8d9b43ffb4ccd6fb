"""The `forge` subcommands that run Forge's core in this process: turns, speech, the database, settings, compare.

Each takes the parsed arguments and returns the exit code; :mod:`forge.cli` dispatches to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from voiceforge.audio.codecs import wrap_wav
from voiceforge.audio.decode import decode_audio
from voiceforge.config import get_settings


def print_turn(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str), flush=True)
        return
    if result.get("transcript"):
        print(f"you   > {result['transcript']}")
    for call in result.get("tool_calls", []):
        outcome = f"error: {call['error']}" if call.get("error") else json.dumps(call.get("result"), default=str)[:300]
        print(f"tool  > {call['name']}({json.dumps(call['arguments'])}) -> {outcome}")
    print(f"agent > {result.get('reply', '')}")
    timings = result.get("timings_ms") or {}
    if timings:
        print("        " + "  ".join(f"{k}={v:.0f}ms" for k, v in timings.items()))
    cost = result.get("cost") or {}
    if cost:
        from voiceforge.cost import format_usd

        usage = "  ".join(f"{k}={v}" for k, v in (result.get("usage") or {}).items())
        print(f"cost  > {format_usd(cost.get('total', 0.0))}" + (f"  ({usage})" if usage else "")
              + (f"  no price for {', '.join(cost['unpriced'])}" if cost.get("unpriced") else ""))
    if result.get("error"):
        print(f"error > {result['error']}")
    if result.get("audio_path"):
        print(f"audio > {result['audio_path']}")
    print(flush=True)


def _engine():  # noqa: ANN202
    from voiceforge.engine import Engine

    engine = Engine()
    engine.ensure_mock_data()
    return engine


async def prompts(args: argparse.Namespace) -> int:
    engine = _engine()
    pipeline = engine.pipeline(args.persona, channel="cli")
    for text in [p.strip() for p in args.prompts.split("|") if p.strip()]:
        result = await pipeline.text_turn(text)
        print_turn(result.to_json(), args.json)
        if result.ended:
            break
    return 0


async def say(args: argparse.Namespace) -> int:
    from voiceforge.engine import Engine

    if not args.text.strip():
        raise ValueError("there is no text to say: forge say \"Hello there\"")
    engine = Engine()
    pcm, rate = await engine.synthesize(args.text)
    to_stdout = args.output == "-"  # `forge say "Hi" -o - | aplay`: the WAV on stdout, the summary on stderr
    if to_stdout:
        sys.stdout.buffer.write(wrap_wav(pcm, rate))
        sys.stdout.buffer.flush()
    else:
        await asyncio.to_thread(Path(args.output).write_bytes, wrap_wav(pcm, rate))
    out = {"text": args.text, "audio_path": "-" if to_stdout else str(args.output), "sample_rate": rate,
           "duration_ms": round(len(pcm) / 2 / rate * 1000)}
    where = "stdout" if to_stdout else args.output
    print(json.dumps(out) if args.json else f"wrote {where} ({out['duration_ms']} ms at {rate} Hz)",
          file=sys.stderr if to_stdout else sys.stdout)
    return 0


async def transcribe(args: argparse.Namespace) -> int:
    from voiceforge.engine import Engine

    pcm, rate = await asyncio.to_thread(decode_audio, await asyncio.to_thread(Path(args.input).read_bytes))
    transcript = await Engine().stt.transcribe(pcm, rate)
    out = {"transcript": transcript.text, "timings_ms": {"stt_ms": round(transcript.elapsed_ms, 1)},
           "audio_ms": round(transcript.audio_ms)}
    print(json.dumps(out) if args.json else transcript.text)
    return 0


async def talk(args: argparse.Namespace) -> int:
    data = await asyncio.to_thread(Path(args.input).read_bytes)
    audio = await asyncio.to_thread(decode_audio, data)  # reject bad input before anything is loaded or stored
    engine = _engine()
    pipeline = engine.pipeline(args.persona, channel="voice")  # an unknown persona fails before models load
    load_ms = await asyncio.to_thread(engine.warm_up)
    result = await pipeline.voice_turn(*audio, speak=True)
    result.timings_ms["model_load_ms"] = round(load_ms, 1)
    if args.output and result.audio:
        await asyncio.to_thread(Path(args.output).write_bytes, result.reply_wav())
        result.audio_path = str(args.output)
    print_turn(result.to_json(), args.json)
    return 0


def db(args: argparse.Namespace) -> int:
    from voiceforge.store import mockdata
    from voiceforge.store.db import business_database, get_database

    settings = get_settings()
    db = get_database(settings.database_url_resolved)
    business = business_database(settings.business_database_url_resolved, db)
    if args.action == "init":
        _, path = settings.ensure_api_key()
        print(f"API key for the sidecar: {path or 'FORGE_API_KEY'} (send it as Authorization: Bearer <key>)")
    if args.action == "reset":
        db.reset()
        if business is not db:
            business.reset()
    with business.exclusive("seed"):  # sidecars starting together seed an empty database once
        if args.action in ("seed", "reset") or (args.action == "init" and business.is_empty()):
            counts = mockdata.generate(business, args.customers or settings.forge_mock_customers, seed=args.seed)
            print(f"{business.describe()}: seeded {counts}")
        elif args.action == "init":
            print(f"{business.describe()}: migrated, data kept")
    if args.action == "export":
        print(mockdata.export_json(business, settings.forge_data_dir / "exports"))
    return 0


def config(args: argparse.Namespace) -> int:
    """`forge config`: every setting's effective value and source; unknown .env keys named; exit 0."""
    from voiceforge.config import effective_settings, unknown_env_keys

    rows = effective_settings(get_settings())
    unknown = unknown_env_keys()
    if getattr(args, "json", False):
        print(json.dumps({"settings": [{"name": n, "value": v, "source": s} for n, v, s in rows],
                          "unknown_in_env_file": unknown}))
        return 0
    width = max(len(n) for n, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value or '—':<48}  {source}")
    for name in unknown:
        print(f"warning: {name} in .env is not a Forge setting (see .env.sample); it is ignored", file=sys.stderr)
    return 0


def suite_files(paths: list[str]) -> list[Path]:
    """The suite files named by ``paths``: files as given, folders as their ``*.yaml``/``*.yml`` (sorted).

    Raises:
        FileNotFoundError: a path that does not exist, or a folder with no suite in it.
    """
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not found:
                raise FileNotFoundError(f"no suite (*.yaml) in {path}")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such suite file or folder: {path}")
    return out


async def run_evals(args: argparse.Namespace) -> int:
    """`forge eval`: each scenario's result (the failing expectation and the transcript when it fails);
    exit 0 only when every scenario of every suite passed, 1 otherwise, 2 when a suite cannot run."""
    from forge.evals import Runner, compare_versions, save_run, to_json, transcript_lines, write_junit
    from voiceforge.engine import Engine
    from voiceforge.evals import load_suite

    suites = [load_suite(path) for path in suite_files(args.paths)]  # every file checked before any runs
    engine = Engine()
    engine.ensure_mock_data()
    runner = Runner(engine, repeat=args.repeat)
    as_json = getattr(args, "json", False)
    runs = []
    numbers: list[int] = []
    if args.versions:
        try:
            numbers = [int(v) for v in args.versions.split(",")]
        except ValueError:
            raise ValueError("--versions takes version numbers, like 2,3") from None
        for suite in suites:
            side = [await runner.run(suite, getattr(args, "persona", None), args.style, version=n) for n in numbers]
            runs += side
            print(f"{suite.path} ({side[0].persona}, {side[0].style})")
            print("\n".join(compare_versions([to_json(r, args.strict) for r in side])))
    for suite in suites if not args.versions else []:
        run = await runner.run(suite, getattr(args, "persona", None), args.style, version=args.version)
        runs.append(run)
        if as_json:
            print(json.dumps(to_json(run, args.strict), default=str))
            continue
        print(f"{suite.path} ({run.persona} version {run.version}, {run.style})")
        for result in run.scenarios:
            ok = result.passed(args.strict)
            skipped = any(c.passed is None for c in result.checks)
            print(f"  {'PASS' if ok else 'FAIL'}  {result.name}  ({result.seconds:.1f} s)"
                  + ("  [a judge was skipped]" if skipped and ok else ""))
            if not ok:
                print(f"        {result.failure}")
                print("\n".join("      " + line for line in transcript_lines(result)))
    if args.junit:
        write_junit(runs, Path(args.junit), args.strict)
    group = len(numbers) or 1  # one saved run per suite, with each version it ran on
    for start in range(0, len(runs), group):  # kept for the Evals page
        save_run(engine.settings.forge_data_dir, runs[start : start + group], args.strict)
    total = sum(len(r.scenarios) for r in runs)
    passed = sum(s.passed(args.strict) for r in runs for s in r.scenarios)
    if not as_json:
        print(f"{passed} of {total} scenarios passed")
    return 0 if passed == total else 1


async def compare_styles(args: argparse.Namespace) -> int:
    """`forge compare`: a table (or one JSON object per style with ``--json``); exit 1 if a style failed."""
    from forge.compare import STYLES, compare, default_utterances_async, load_utterances, table
    from voiceforge.cost import format_usd
    from voiceforge.engine import Engine

    styles = [s.strip() for s in args.styles.split(",")] if args.styles else None
    unknown = [s for s in styles or [] if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown style {unknown[0]!r}: one of {', '.join(STYLES)}")
    engine = Engine()
    engine.ensure_mock_data()
    if args.utterances:
        utterances = await asyncio.to_thread(load_utterances, Path(args.utterances), engine.settings.forge_max_turn_s)
    else:
        utterances = await default_utterances_async()
    as_json = getattr(args, "json", False)

    def progress(style: str, done: int, total: int) -> None:
        if not as_json:
            print(f"  {STYLES[style]}: {done}/{total}", file=sys.stderr, flush=True)

    runs = await compare(engine, utterances, getattr(args, "persona", None), styles, progress)
    rows = table(runs)
    if as_json:
        for run, row in zip(runs, rows, strict=True):
            print(json.dumps({**row, "utterances": run.turns}, default=str))
        return 1 if any(r["error"] for r in rows) else 0

    def ms(value: float | None) -> str:
        return f"{value:.0f}" if value is not None else "—"

    print(f"\n{len(utterances)} utterances; voice-to-voice from the last voiced frame to the first agent audio\n")
    print(f"{'style':<36} {'p50 ms':>7} {'p95 ms':>7} {'WER':>5} {'cost/turn':>11} {'cost/min':>11}  stages (median ms)")
    for row in rows:
        if row["error"]:
            print(f"{row['label']:<36} failed: {row['error']}")
            continue
        stages = " ".join(f"{k}={v:.0f}" for k, v in row["stages_ms"].items())
        wer = f"{row['wer']:.2f}" if row["wer"] is not None else "—"
        failed = f"  ({row['failed']} failed turns, not in the percentiles)" if row["failed"] else ""
        print(f"{row['label']:<36} {ms(row['v2v_p50_ms']):>7} {ms(row['v2v_p95_ms']):>7} {wer:>5} "
              f"{format_usd(row['cost_per_turn_usd']):>11} {format_usd(row['cost_per_minute_usd']):>11}  {stages}{failed}")
    return 1 if any(r["error"] for r in rows) else 0
