"""The `forge` command.

    forge                                         the push-to-talk Realtime assistant (microphone)
    forge --prompts "Hello|Where is my order"     chained text turns (--realtime: through a Realtime session)
    forge assistant --wav in.wav                  the Realtime assistant, speaking files as turns
    forge realtime-server                         Forge's offline OpenAI-Realtime-compatible server
    forge say TEXT -o out.wav                     text to speech
    forge transcribe in.wav                       speech to text
    forge talk in.wav -o reply.wav                one spoken turn: transcript, reply, audio, timings
    forge db init|seed|reset|export               the database
    forge call-sim caller.wav [...]               a simulated Twilio call on loopback
    forge device-sim child.wav [...]              a simulated push-to-talk device (ESP32 protocol)
    forge compare [--utterances DIR]              batch vs phone streaming vs speech-to-speech
    forge config                                  the effective settings and where each came from
    forge serve                                   the sidecar API
    forge up                                      the sidecar and the Streamlit app (make run)

``--json`` prints one JSON object per turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from voiceforge.agent.persona import PersonaError
from voiceforge.audio.codecs import AudioFormatError, wrap_wav
from voiceforge.audio.decode import decode_audio
from voiceforge.config import ROOT, ConfigError, get_settings
from voiceforge.providers.base import ProviderError


def _print_turn(result: dict[str, Any], as_json: bool) -> None:
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


async def _prompts(args: argparse.Namespace) -> int:
    engine = _engine()
    pipeline = engine.pipeline(args.persona, channel="cli")
    for text in [p.strip() for p in args.prompts.split("|") if p.strip()]:
        result = await pipeline.text_turn(text)
        _print_turn(result.to_json(), args.json)
        if result.ended:
            break
    return 0


async def _say(args: argparse.Namespace) -> int:
    from voiceforge.engine import Engine

    if not args.text.strip():
        raise ValueError("there is no text to say: forge say \"Hello there\"")
    engine = Engine()
    pcm, rate = await engine.synthesize(args.text)
    await asyncio.to_thread(Path(args.output).write_bytes, wrap_wav(pcm, rate))
    out = {"text": args.text, "audio_path": str(args.output), "sample_rate": rate,
           "duration_ms": round(len(pcm) / 2 / rate * 1000)}
    print(json.dumps(out) if args.json else f"wrote {args.output} ({out['duration_ms']} ms at {rate} Hz)")
    return 0


async def _transcribe(args: argparse.Namespace) -> int:
    from voiceforge.engine import Engine

    pcm, rate = await asyncio.to_thread(decode_audio, await asyncio.to_thread(Path(args.input).read_bytes))
    transcript = await Engine().stt.transcribe(pcm, rate)
    out = {"transcript": transcript.text, "timings_ms": {"stt_ms": round(transcript.elapsed_ms, 1)},
           "audio_ms": round(transcript.audio_ms)}
    print(json.dumps(out) if args.json else transcript.text)
    return 0


async def _talk(args: argparse.Namespace) -> int:
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
    _print_turn(result.to_json(), args.json)
    return 0


def _db(args: argparse.Namespace) -> int:
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
    if args.action in ("seed", "reset") or (args.action == "init" and business.is_empty()):
        counts = mockdata.generate(business, args.customers or settings.forge_mock_customers, seed=args.seed)
        print(f"{business.describe()}: seeded {counts}")
    elif args.action == "init":
        print(f"{business.describe()}: migrated, data kept")
    if args.action == "export":
        print(mockdata.export_json(business, settings.forge_data_dir / "exports"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `forge`."""
    parser = argparse.ArgumentParser(prog="forge", description="Forge, the voice-agent workbench.")
    parser.add_argument("--prompts", help='text turns separated by "|", e.g. "Hello|Where is my order"')
    parser.add_argument("--persona", default=None, help="persona id (see prompts/)")
    parser.add_argument("--json", action="store_true", help="one JSON object per turn")
    parser.add_argument("--realtime", action="store_true", help="run --prompts through a Realtime session")
    parser.add_argument("--wav", action="append", default=[], help="with no prompts: speak this WAV to the Realtime "
                        "assistant as one turn (repeatable) instead of the microphone")
    parser.add_argument("--save-audio", default=None, help="with --realtime: a folder for the replies as WAV")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        p.add_argument("--persona", default=argparse.SUPPRESS)

    p = sub.add_parser("say", help="text to speech")
    p.add_argument("text")
    p.add_argument("-o", "--output", default="say.wav")
    common(p)
    p = sub.add_parser("transcribe", help="speech to text")
    p.add_argument("input")
    common(p)
    p = sub.add_parser("talk", help="one spoken turn: WAV in, reply WAV out")
    p.add_argument("input")
    p.add_argument("-o", "--output", default=None)
    common(p)
    p = sub.add_parser("db", help="database: init (migrate, seed if empty), seed, reset, export")
    p.add_argument("action", choices=["init", "seed", "reset", "export"])
    p.add_argument("--customers", type=int, default=None)
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("call-sim", help="simulate a Twilio call on loopback")
    p.add_argument("wavs", nargs="+")
    p.add_argument("--url", default=None, help="a running sidecar (default: start one on a free port)")
    p.add_argument("--barge-in-ms", type=int, default=None)
    p.add_argument("--save-audio", default=None)
    common(p)
    p = sub.add_parser("config", help="the effective settings, where each came from (secrets masked)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    p = sub.add_parser("compare", help="the three prototype styles on the same utterances: latency, accuracy, cost")
    p.add_argument("--utterances", default=None, help="a folder of recordings (x.wav with x.txt holding what it "
                   "says, or a references.tsv); default: the shipped set spoken by Piper")
    p.add_argument("--styles", default=None, help="comma-separated: batch,phone,speech-to-speech (default: all)")
    common(p)
    p = sub.add_parser("device-sim", help="simulate a push-to-talk device (the ESP32's protocol)")
    p.add_argument("wavs", nargs="+", help="one WAV per press")
    p.add_argument("--url", default=None, help="a running sidecar (default: start one and register a device)")
    p.add_argument("--token", default=None, help="the device token (with --url)")
    p.add_argument("--rate", type=int, choices=[16000, 44100], default=16000, help="the device's rate, Hz")
    p.add_argument("--http", action="store_true", help="one chunked HTTP POST per press instead of the websocket")
    p.add_argument("--save-audio", default=None, help="folder for the replies as WAV")
    common(p)
    p = sub.add_parser("assistant", help="the push-to-talk Realtime assistant (microphone, or --wav files)")
    p.add_argument("--wav", action="append", default=argparse.SUPPRESS, help="a WAV to speak as one turn (repeatable)")
    p.add_argument("--save-audio", default=argparse.SUPPRESS)
    common(p)
    p = sub.add_parser("realtime-server", help="Forge's offline OpenAI-Realtime-compatible server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p = sub.add_parser("serve", help="run the sidecar API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p = sub.add_parser("up", help="run the sidecar and the Streamlit app together (Ctrl-C stops both)")
    p.add_argument("--sidecar-port", type=int, default=8765)
    p.add_argument("--app-port", type=int, default=8501)
    p.add_argument("--bind", default="127.0.0.1", help="the address the app and sidecar listen on (0.0.0.0 in a "
                   "container; the default keeps them on this machine)")
    p.add_argument("--realtime-port", type=int, default=8766,
                   help="Forge's offline Realtime-compatible server (the Live page's speech-to-speech backend)")
    return parser


def _config(args: argparse.Namespace) -> int:
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


async def _compare(args: argparse.Namespace) -> int:
    """`forge compare`: a table (or one JSON object per style with ``--json``); exit 1 if a style failed."""
    from voiceforge.compare import STYLES, compare, default_utterances_async, load_utterances, table
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
        print(f"{row['label']:<36} {ms(row['v2v_p50_ms']):>7} {ms(row['v2v_p95_ms']):>7} {wer:>5} "
              f"{format_usd(row['cost_per_turn_usd']):>11} {format_usd(row['cost_per_minute_usd']):>11}  {stages}")
    return 1 if any(r["error"] for r in rows) else 0


def _up(args: argparse.Namespace) -> int:
    """Run the sidecar, Streamlit and the offline Realtime server as child processes; one Ctrl-C stops all.

    Each child runs in its own process group, so the terminal's Ctrl-C reaches only this process, which
    then asks each child once (SIGINT), waits, and kills what is left after 15 s.
    """
    import os
    import signal
    import subprocess
    import time

    settings = get_settings()
    sidecar_url = f"http://127.0.0.1:{args.sidecar_port}"
    env = {**os.environ, "FORGE_SIDECAR_URL": sidecar_url}
    if not settings.openai_configured:  # speech-to-speech then runs on Forge's own Realtime server
        env["FORGE_REALTIME_URL"] = f"ws://127.0.0.1:{args.realtime_port}/v1"
    children = [
        subprocess.Popen([sys.executable, "-m", "voiceforge.cli", "serve", "--host", args.bind,
                          "--port", str(args.sidecar_port)], env=env, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                          "--server.address", args.bind, "--server.port", str(args.app_port),
                          "--browser.gatherUsageStats", "false"], env=env, cwd=ROOT, start_new_session=True),
    ]
    if not settings.openai_configured:
        children.append(subprocess.Popen([sys.executable, "-m", "voiceforge.cli", "realtime-server", "--host",
                                          "127.0.0.1", "--port", str(args.realtime_port)], env=env,
                                         start_new_session=True))
    print(f"Forge: app on http://127.0.0.1:{args.app_port}, sidecar on {sidecar_url} (Ctrl-C stops them)\n"
          f"API key: {settings.api_key_path if not settings.forge_api_key else 'FORGE_API_KEY'}", flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(c.poll() is None for c in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print("Forge stopped.", flush=True)
    return 0 if stopping else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `forge` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "say":
            return asyncio.run(_say(args))
        if args.command == "transcribe":
            return asyncio.run(_transcribe(args))
        if args.command == "talk":
            return asyncio.run(_talk(args))
        if args.command == "db":
            return _db(args)
        if args.command == "config":
            return _config(args)
        if args.command == "compare":
            return asyncio.run(_compare(args))
        if args.command == "call-sim":
            from voiceforge.telephony.simulator import run_cli

            return asyncio.run(run_cli(args))
        if args.command == "device-sim":
            from voiceforge.devices.simulator import run_cli as device_sim

            return asyncio.run(device_sim(args))
        if args.command == "serve":
            import uvicorn

            # Started by module path: the core does not import the sidecar.
            uvicorn.run("server.main:create_app", factory=True, host=args.host, port=args.port,
                        ws_max_size=1 << 20, log_level="info" if args.verbose else "warning")
            return 0
        if args.command == "up":
            return _up(args)
        if args.command == "realtime-server":
            import uvicorn

            uvicorn.run("realtime.server:create_app", factory=True, host=args.host, port=args.port,
                        ws_max_size=1 << 20, log_level="info" if args.verbose else "warning")
            return 0
        if args.command == "assistant" or (args.command is None and not args.prompts):
            from realtime.cli import assistant

            return asyncio.run(assistant(getattr(args, "wav", []), args.persona, args.json, args.save_audio))
        if args.prompts and args.realtime:
            from realtime.cli import prompts

            return asyncio.run(prompts(args.prompts, args.persona, args.json, args.save_audio))
        if args.prompts:
            return asyncio.run(_prompts(args))
    except (AudioFormatError, ConfigError, PersonaError, FileNotFoundError, ValueError, ProviderError) as exc:
        print(f"forge: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
