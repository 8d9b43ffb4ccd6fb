"""The `forge` command.

    forge                                         the push-to-talk Realtime assistant (microphone)
    forge --prompts "Hello|Where is my order"     chained text turns (--realtime: through a Realtime session)
    forge assistant --wav in.wav                  the Realtime assistant, speaking files as turns
    forge realtime-server                         Forge's offline OpenAI-Realtime-compatible server
    forge serve-models [--workers N]              the embedded STT, TTS and brain as an OpenAI-compatible API
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
import contextlib
import logging
import sys

from voiceforge.agent.persona import PersonaError
from voiceforge.audio.codecs import AudioFormatError
from voiceforge.config import ConfigError
from voiceforge.providers.base import ProviderError


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
    p.add_argument("-o", "--output", default="say.wav", help="the WAV file to write; - writes it to stdout")
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
    p = sub.add_parser("eval", help="run eval suites (YAML scenarios); exit 1 when a scenario fails")
    p.add_argument("paths", nargs="+", help="suite files, or folders of them (*.yaml, *.yml)")
    p.add_argument("--style", choices=["text", "voice", "phone", "realtime"], default=None,
                   help="override each suite's style")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; within_ms judges the median")
    p.add_argument("--junit", default=None, help="write JUnit XML here")
    p.add_argument("--strict", action="store_true", help="a skipped judge (no LLM configured) fails")
    p.add_argument("--version", type=int, default=None, help="run on this persona version (default: the current)")
    p.add_argument("--versions", default=None, help="comma-separated persona versions to run side by side, e.g. 2,3")
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
    p = sub.add_parser("serve-models", help="the embedded STT, TTS and offline brain behind an OpenAI-compatible "
                       "API, for sidecars that set OPENAI_*_BASE_URL to it")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8767)
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the port, each with its own "
                   "models (about 400 MB each)")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `forge` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(parser, args)
    except (AudioFormatError, ConfigError, PersonaError, FileNotFoundError, ValueError, ProviderError) as exc:
        print(f"forge: {exc}", file=sys.stderr)
        return 2


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from forge import commands

    if args.command in ("say", "transcribe", "talk"):
        return asyncio.run(getattr(commands, args.command)(args))
    if args.command == "db":
        return commands.db(args)
    if args.command == "config":
        return commands.config(args)
    if args.command == "compare":
        return asyncio.run(commands.compare_styles(args))
    if args.command == "eval":
        return asyncio.run(commands.run_evals(args))
    if args.command in ("call-sim", "device-sim"):
        from forge import simulate

        return asyncio.run(simulate.call_sim(args) if args.command == "call-sim" else simulate.device_sim(args))
    if args.command == "serve-models":
        return _serve_models(args)
    if args.command in ("serve", "realtime-server"):
        return _serve(args, ("sidecar",) if args.command == "serve" else ("realtime",))
    if args.command == "up":
        from forge.processes import up

        return up(args)
    if args.command == "assistant" or (args.command is None and not args.prompts):
        from forge.assistant import assistant

        return asyncio.run(assistant(getattr(args, "wav", []), args.persona, args.json, args.save_audio))
    if args.prompts and args.realtime:
        from forge.assistant import prompts

        return asyncio.run(prompts(args.prompts, args.persona, args.json, args.save_audio))
    if args.prompts:
        return asyncio.run(commands.prompts(args))
    parser.print_help()
    return 1


def _serve(args: argparse.Namespace, roles: tuple[str, ...]) -> int:
    """Serve the app factory's ``roles`` (see server/main.py) with uvicorn until Ctrl-C (at once) or
    SIGTERM (after a drain: server/admission.py)."""
    from server.admission import DrainingServer
    from server.main import create_app
    from server.serving import uvicorn_config

    app = create_app(roles=roles)
    config = uvicorn_config(app, args.host, args.port, log_level="info" if args.verbose else "warning")
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run does: Ctrl-C is the way to stop
        DrainingServer(config, app.state).run()
    return 0


def _serve_models(args: argparse.Namespace) -> int:
    """``forge serve-models``: the "models" role in ``--workers`` processes sharing one listening socket.

    The parent binds the port and forks the workers before any model loads (each loads its own);
    SIGTERM or Ctrl-C to the parent reaches every worker, and a worker drains as ``forge serve`` does.
    """
    import multiprocessing
    import os
    import signal

    from server.admission import DrainingServer
    from server.main import create_app
    from server.serving import uvicorn_config

    def serve(sock) -> None:  # noqa: ANN001
        app = create_app(roles=("models",))
        config = uvicorn_config(app, args.host, args.port, log_level="info" if args.verbose else "warning")
        with contextlib.suppress(KeyboardInterrupt):
            DrainingServer(config, app.state).run(sockets=[sock])

    if args.workers <= 1:
        app = create_app(roles=("models",))
        config = uvicorn_config(app, args.host, args.port, log_level="info" if args.verbose else "warning")
        with contextlib.suppress(KeyboardInterrupt):
            DrainingServer(config, app.state).run()
        return 0
    sock = uvicorn_config(create_app(roles=("models",)), args.host, args.port).bind_socket()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=serve, args=(sock,), name=f"forge-models-{i}") for i in range(args.workers)]
    for worker in workers:
        worker.start()

    def forward(sig: int, _frame) -> None:  # noqa: ANN001
        for worker in workers:
            if worker.is_alive() and worker.pid:
                os.kill(worker.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
