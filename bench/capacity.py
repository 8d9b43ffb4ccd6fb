"""What the multi-instance path adds, measured apart: a remote model host per turn, Redis per call.

Part 1 runs the same spoken turns (Piper speaks them; each is a new conversation) through the
turn pipeline twice: with the embedded models in this process, and with STT, LLM and TTS all on
a ``forge serve-models`` host on loopback (the official openai SDK over HTTP, as a sidecar would
use one). It prints the median of each stage mark (ms after the end of the caller's speech:
STT done, LLM first token, TTS first audio) and the difference: what one network hop and the
host's HTTP handling add per turn. On one machine the host competes with this process for the
same two cores, so a real deployment (host on its own machine) adds the network and less CPU.

Part 2 times a call's stream-token round trip (issue at the webhook, consume at the stream) in
this process and through Debian's redis-server on loopback: what sharing calls across sidecars
adds per call.

Concurrency per sidecar (voice-to-voice p95 by concurrent calls, timed at the caller) is
``bench/load.py``; calls per core are its largest concurrency within 1.5 s p95 over this
machine's cores.

Run: .venv/bin/python bench/capacity.py [--turns 8] [--tokens 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voiceforge.config import load_settings  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402

REQUESTS = ["How many customers are there?", "Where is my order? I'm customer four.",
            "What time do you close on Saturday?", "Can you look up customer number seven?"]
MARKS = [("stt_final", "STT done"), ("llm_first_token", "LLM first token"), ("tts_first_audio", "TTS first audio")]


def speech(text: str) -> tuple[bytes, int]:
    """Piper's rendering of ``text`` (PCM16, Hz)."""
    from voiceforge.providers.local import load_piper

    voice = load_piper()
    return b"".join(c.audio_int16_bytes for c in voice.synthesize(text)), voice.config.sample_rate


async def turns(engine: Engine, n: int) -> dict[str, float]:
    """Median of each stage mark over ``n`` spoken turns (after one warm-up turn)."""
    clips = [speech(t) for t in REQUESTS]
    await engine.pipeline("customer_service", channel="api", persist=False).voice_turn(*clips[0])
    seen: dict[str, list[float]] = {m: [] for m, _ in MARKS}
    for i in range(n):
        record = await engine.pipeline("customer_service", channel="api", persist=False).voice_turn(*clips[i % 4])
        for mark, _ in MARKS:
            if mark in record.timings_ms:
                seen[mark].append(record.timings_ms[mark])
    return {m: statistics.median(v) for m, v in seen.items() if v}


async def part_one(n: int) -> None:
    from forge.processes import local_model_host

    folder = Path(tempfile.mkdtemp(prefix="forge-capacity-"))
    local = Engine(load_settings(forge_data_dir=folder / "local", database_url=f"sqlite:///{folder / 'l.db'}"))
    local.ensure_mock_data()
    local.warm_up()
    here = await turns(local, n)
    async with local_model_host(settings=load_settings(forge_data_dir=folder / "host")) as host:
        base, _, key = host
        remote = Engine(load_settings(
            forge_data_dir=folder / "remote", database_url=f"sqlite:///{folder / 'r.db'}", openai_api_key=key,
            openai_base_url=base, stt_provider="openai", llm_provider="openai", tts_provider="openai",
            forge_failover=False))
        remote.ensure_mock_data()
        there = await turns(remote, n)
    print(f"## A remote model host per turn ({n} spoken turns each, medians, ms after the end of speech)\n")
    print("| stage mark | models in this process | models on a forge serve-models host | added |")
    print("| --- | ---: | ---: | ---: |")
    for mark, label in MARKS:
        if mark in here and mark in there:
            print(f"| {label} | {here[mark]:.0f} | {there[mark]:.0f} | {there[mark] - here[mark]:+.0f} |")
    print()


async def part_two(n: int) -> None:
    from voiceforge.telephony.security import SharedStreamTokens, StreamTokens

    local = StreamTokens()
    started = time.perf_counter()
    for i in range(n):
        local.consume(local.issue(f"CA{i}", {"persona": "customer_service"}), f"CA{i}")
    here_us = (time.perf_counter() - started) / n * 1e6
    server = shutil.which("redis-server")
    if not server:
        print("redis-server not installed: part 2 skipped (apt-get install redis-server)")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        import redis.asyncio as aioredis

        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        shared = SharedStreamTokens(client)
        took = []
        for i in range(n):
            t0 = time.perf_counter()
            token = await shared.issue(f"CA{i}", {"persona": "customer_service"})
            assert await shared.consume(token, f"CA{i}") is not None
            took.append((time.perf_counter() - t0) * 1e6)
        await client.aclose()
    finally:
        proc.terminate()
        proc.wait(5)
    print(f"## A call's stream token, issued at the webhook and spent at the stream ({n} calls)\n")
    print("| store | per call, µs (median) | p99 |")
    print("| --- | ---: | ---: |")
    print(f"| this process | {here_us:.1f} | |")
    ordered = sorted(took)
    print(f"| Redis on loopback | {statistics.median(took):.0f} | {ordered[int(0.99 * (len(ordered) - 1))]:.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(part_one(args.turns))
    asyncio.run(part_two(args.tokens))


if __name__ == "__main__":
    main()
