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

Part 3 times a call's webhook (signed, as Twilio sends it) straight to a `forge serve` and
through Debian's nginx configured by deploy/nginx/forge.conf: what the load balancer adds per call.

First it runs ``bench/load.py``'s sweep: concurrent simulated calls on one ``forge serve``,
voice-to-voice timed at the caller; the capacity is the largest concurrency within 1.5 s p95,
printed per core. Several sidecars on this 2-core machine would only share its cores, so their
capacity is printed as a projection from these figures, and labelled as one.

Run: .venv/bin/python bench/capacity.py [--turns 8] [--tokens 2000] [--webhooks 300] [--calls 1,2,3,4,6,8]
     [--only calls|models|tokens|nginx]
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


async def part_three(n: int) -> None:
    """A call's webhook straight to a sidecar and through Debian's nginx (deploy/nginx/forge.conf)."""
    import httpx
    from twilio.request_validator import RequestValidator

    from forge.processes import free_port, local_sidecar
    from tests.support.nginx import nginx

    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        print("nginx not installed: part 3 skipped (apt-get install nginx)")
        return
    folder = Path(tempfile.mkdtemp())
    settings = load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'forge.db'}",
                             twilio_auth_token="capacity-token")
    public = f"http://127.0.0.1:{free_port()}"
    extra = {"PUBLIC_BASE_URL": public, "FORGE_TRUSTED_PROXIES": "127.0.0.1", "FORGE_MAX_LOAD": "0",
             "FORGE_MAX_UNAUTHENTICATED_PER_ADDRESS": "100000"}
    validator = RequestValidator("capacity-token")

    async def webhooks(base: str, tag: str) -> list[float]:
        took = []
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(n):
                form = {"CallSid": f"CA{tag}{i:030d}"[:34], "AccountSid": "AC" + "0" * 32, "From": "+15551230001",
                        "To": "+15005550006", "CallStatus": "ringing", "Direction": "inbound"}
                signature = validator.compute_signature(public + "/twilio/voice", form)
                t0 = time.perf_counter()
                reply = await http.post(base + "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
                took.append((time.perf_counter() - t0) * 1000)
                reply.raise_for_status()
        return took

    async with local_sidecar(settings=settings, **extra) as sidecar:
        with nginx([sidecar[0].removeprefix("http://")], folder / "nginx", port=int(public.rsplit(":", 1)[1])):
            await webhooks(sidecar[0], "w")  # warm both paths
            direct = await webhooks(sidecar[0], "d")
            proxied = await webhooks(public, "p")
    print(f"## A call's webhook (signed POST /twilio/voice, {n} calls each), sidecar and nginx on loopback\n")
    print("| path | median, ms | p99, ms |")
    print("| --- | ---: | ---: |")
    for name, took in (("straight to the sidecar", direct), ("through nginx", proxied)):
        ordered = sorted(took)
        print(f"| {name} | {statistics.median(took):.2f} | {ordered[int(0.99 * (len(ordered) - 1))]:.2f} |")
    print(f"\nnginx adds {statistics.median(proxied) - statistics.median(direct):+.2f} ms per webhook (median).\n")


async def part_calls(sizes: list[int]) -> int:
    """bench/load.py's sweep: the most concurrent calls one sidecar holds within 1.5 s p95 at the caller."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import load

    print("## Concurrent calls on one sidecar, timed at the caller\n")
    return await load.part_one(sizes)


def projection(per_sidecar: int, cores: int) -> None:
    """What N sidecars would hold, each on its own machine like this one: a projection, not a measurement."""
    print("\n## Projection (not measured here: this machine has one sidecar's worth of cores)\n")
    print(f"Each sidecar on its own {cores}-core machine holds {per_sidecar} calls within the bar; N sidecars behind "
          f"nginx on one Redis and one PostgreSQL hold about N x {per_sidecar}, less what the shared path adds per "
          "call (parts 2 and 3: a stream token in Redis and a webhook through nginx, each under a millisecond here) "
          "and per turn (part 1: a model host's hop, nothing measurable on loopback).")
    for n in (2, 4, 8):
        print(f"- {n} sidecars: about {n * per_sidecar} concurrent calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--webhooks", type=int, default=300)
    parser.add_argument("--calls", default="1,2,3,4,6,8", help="concurrency sweep for the calls-per-core figure")
    parser.add_argument("--only", choices=["calls", "models", "tokens", "nginx"], default=None)
    args = parser.parse_args()
    if args.only in (None, "calls"):
        import os

        within = asyncio.run(part_calls([int(x) for x in args.calls.split(",")]))
        projection(within, os.cpu_count() or 1)
    if args.only in (None, "models"):
        asyncio.run(part_one(args.turns))
    if args.only in (None, "tokens"):
        asyncio.run(part_two(args.tokens))
    if args.only in (None, "nginx"):
        asyncio.run(part_three(args.webhooks))


if __name__ == "__main__":
    main()
