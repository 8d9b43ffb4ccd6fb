"""Load on the phone path: concurrent simulated calls, and the codec + VAD path alone.

Part 1 starts `forge serve` in its own process (offline providers, models loaded), then runs
1, 2, 4, 8 and 16 concurrent simulated Twilio calls against it, each with two caller turns.
It prints voice-to-voice latency as the caller hears it (last caller frame sent → first agent
frame received, so endpointing included) at p50 and p95, the sidecar's event-loop lag p99
(from /api/metrics) and its CPU (from /proc, % of one core).

Part 2 runs N streams in this process through what every inbound 20 ms frame costs before any
model runs: Twilio JSON parse, base64, μ-law decode, resampling to 16 kHz, framing and VAD, at
real-time pace. It prints event-loop lag p99 and CPU per stream.

Part 3 (``--attack 8``) runs the same calls without and then with an attack: two texters
sending the worst run_sql requests back to back (a four-way cross join that runs to its
deadline, and a printf bomb the authorizer refuses) and 200 authenticated sockets that never
say a word (each reopened when the first-message deadline closes it).

It ends with the capacity: the most concurrent calls whose p95 stays within 1.5 s, per core.

Run: .venv/bin/python bench/load.py [--calls 1,2,4,8,16] [--streams 25,50,100,200] [--attack 8]
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from server.loopwatch import LagMonitor  # noqa: E402
from tests.conftest import _piper  # noqa: E402
from tests.support.fakes import FakeSTT, RecordingTransport, ScriptedLLM, ToneTTS  # noqa: E402
from voiceforge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from voiceforge.audio.resample import resample  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.conversation import ConversationLoop  # noqa: E402
from voiceforge.engine import Engine  # noqa: E402
from voiceforge.store.db import Database  # noqa: E402
from voiceforge.telephony import media  # noqa: E402
from voiceforge.telephony.simulator import simulate_call  # noqa: E402

TURNS = ["How many customers are there?", "Look up customer number three."]
TICK = os.sysconf("SC_CLK_TCK")


def pct(values, p):  # noqa: ANN001, ANN201
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def calls_round(base: str, token: str, key: str, pid: int, n: int) -> dict:
    utterances = [_piper(t) for t in TURNS]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        await http.get(base + "/api/metrics")
        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        lag_start = time.perf_counter()
        results = await asyncio.gather(*[simulate_call(base, token, utterances, api_key=key, timeout_s=300)
                                         for _ in range(n)])
        cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
        lag = (await http.get(base + "/api/metrics")).json()["loop_lag"]
    latencies = [t["latency_ms"] for r in results for t in r["turns"] if t["latency_ms"] is not None]
    answered = sum(1 for r in results for t in r["turns"] if t["reply"])
    return {"calls": n, "turns": len(latencies), "answered": answered, "p50": statistics.median(latencies),
            "p95": pct(latencies, 95), "lag_p99": lag["p99_ms"], "cpu_pct": 100 * cpu / wall,
            "wall_s": time.perf_counter() - lag_start}


@contextlib.asynccontextmanager
async def sidecar(**extra: str):  # noqa: ANN201
    """``forge serve`` in its own process with models loaded (``extra`` environment added); yields
    (base URL, Twilio token, API key, pid)."""
    folder = Path(tempfile.mkdtemp())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base, token, key = f"http://127.0.0.1:{port}", secrets.token_hex(8), secrets.token_hex(16)
    env = {**os.environ, "PUBLIC_BASE_URL": base, "TWILIO_AUTH_TOKEN": token, "FORGE_API_KEY": key,
           "FORGE_DATA_DIR": str(folder), "FORGE_RATE_CALLS_PER_MIN": "10000",
           "FORGE_MAX_UNAUTHENTICATED_PER_ADDRESS": "1000",  # every bench client shares 127.0.0.1
           "FORGE_MAX_LOAD": "0", **extra}  # measure past the admission threshold
    proc = subprocess.Popen([sys.executable, "-m", "forge", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    if (await http.get(base + "/ready")).status_code == 200:
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.3)
        yield base, token, key, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


HEADER = f"{'calls':>5} {'turns':>5} {'answered':>8} {'v2v p50':>8} {'v2v p95':>8} {'lag p99':>8} {'CPU':>6}"


def row(r: dict) -> str:
    return (f"{r['calls']:>5} {r['turns']:>5} {r['answered']:>8} {r['p50']:>6.0f}ms {r['p95']:>6.0f}ms "
            f"{r['lag_p99']:>6.1f}ms {r['cpu_pct']:>5.0f}%")


P95_TARGET_MS = 1500.0
"""The capacity bar: voice-to-voice p95 at the caller within 1.5 s."""


async def part_one(sizes: list[int], model_workers: int = 0) -> int:
    """Print the concurrency table and the capacity line; returns the capacity (calls within the bar).

    ``model_workers``: 0 runs the models in the sidecar's process; N puts them on a ``forge
    serve-models --workers N`` host on this machine (the sidecar's STT, LLM and TTS over HTTP).
    """
    if model_workers:
        from forge.processes import local_model_host

        async with local_model_host(settings=load_settings(forge_data_dir=Path(tempfile.mkdtemp())),
                                    workers=model_workers) as (url, _, host_key):
            return await _sweep(sizes, f"models on a serve-models host with {model_workers} workers",
                                OPENAI_API_KEY=host_key, OPENAI_BASE_URL=url, STT_PROVIDER="openai",
                                LLM_PROVIDER="openai", TTS_PROVIDER="openai")
    return await _sweep(sizes, "models in the sidecar's process")


async def _sweep(sizes: list[int], where: str, **extra: str) -> int:
    async with sidecar(**extra) as (base, token, key, pid):
        print(f"concurrent calls (2 caller turns each), offline providers, {where}, sidecar in its own process "
              "(admission off: FORGE_MAX_LOAD=0)")
        print(HEADER)
        within = 0
        for n in sizes:
            result = await calls_round(base, token, key, pid, n)
            print(row(result), flush=True)
            if result["p95"] <= P95_TARGET_MS and result["answered"] == result["turns"]:
                within = max(within, n)
        cores = os.cpu_count() or 1
        print(f"capacity: {within} concurrent calls with voice-to-voice p95 <= {P95_TARGET_MS:.0f} ms at the caller, "
              f"on {cores} cores ({where}): {within / cores:.1f} calls per core")
    return within


WORST_SQL = [
    "run the sql query select count(*) from orders a, orders b, orders c, orders d",  # runs to its deadline
    "run the sql query select length(printf('%.*c', 2000000000, 'x'))",  # refused by the authorizer
]


async def texter(base: str, token: str, number: str, stop: asyncio.Event, answered: list[float],
                 refused: list[int]) -> None:
    """One sender texting the worst run_sql requests back to back (each signed, each a new MessageSid)."""
    from voiceforge.telephony.security import sign

    url = base + "/twilio/sms"
    async with httpx.AsyncClient(timeout=60) as http:
        n = 0
        while not stop.is_set():
            form = {"From": number, "To": "+15005550006", "Body": WORST_SQL[n % len(WORST_SQL)],
                    "MessageSid": "SM" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32}
            started = time.perf_counter()
            r = await http.post(url, data=form, headers={"X-Twilio-Signature": sign(token, url, form)})
            if r.status_code == 200 and "<Message>" in r.text:
                answered.append(time.perf_counter() - started)
            else:
                refused.append(1)  # stored, not answered: over the sender's texts a minute
            n += 1


async def idle_sockets(base: str, key: str, n: int, stop: asyncio.Event, opened: list[int]) -> None:
    """Hold ``n`` authenticated /ws sockets that never send; reopen each one the sidecar closes."""
    import websockets

    url = base.replace("http://", "ws://") + "/ws"

    async def hold() -> None:
        while not stop.is_set():
            try:
                async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                    opened.append(1)
                    await ws.wait_closed()  # the first-message deadline closes it
            except (OSError, websockets.WebSocketException):
                await asyncio.sleep(0.5)

    await asyncio.gather(*(hold() for _ in range(n)))


async def part_attack(n_calls: int, n_sockets: int) -> None:
    """The same calls with and without an attack: two texters of the worst run_sql and idle sockets."""
    async with sidecar() as (base, token, key, pid):
        print(f"{n_calls} concurrent calls, without and with an attack: 2 texters sending the worst run_sql "
              f"back to back, {n_sockets} authenticated sockets held open without a word")
        print(f"{'':>8} {HEADER} {'texts answered / not':>21} {'sockets opened':>15}")
        await calls_round(base, token, key, pid, 1)  # warm
        print(f"{'calm':>8} {row(await calls_round(base, token, key, pid, n_calls))}", flush=True)
        stop, answered, refused, opened = asyncio.Event(), [], [], []
        attackers = [asyncio.create_task(texter(base, token, f"+1555000000{i + 1}", stop, answered, refused))
                     for i in range(2)]  # customers' numbers: run_sql is theirs to use
        attackers.append(asyncio.create_task(idle_sockets(base, key, n_sockets, stop, opened)))
        await asyncio.sleep(3)
        result = await calls_round(base, token, key, pid, n_calls)
        stop.set()
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        sms = f"{len(answered)} (p50 {statistics.median(answered):.1f} s) / {len(refused)}" if answered else "0"
        print(f"{'attacked':>8} {row(result)} {sms:>21} {len(opened):>15}", flush=True)


async def one_stream(loop: ConversationLoop, frames: list[str], seconds: float) -> None:
    clock = time.perf_counter()
    end = clock + seconds
    i = 0
    while clock < end:
        event = media.parse(frames[i % len(frames)])
        await loop.on_audio(ulaw_to_pcm16(event.payload), 8000)
        i += 1
        clock += 0.02
        await asyncio.sleep(max(0.0, clock - time.perf_counter()))


async def part_two(sizes: list[int], seconds: float = 8.0) -> None:
    pcm, rate = _piper("Could you tell me where my order is? I placed it last week.")
    ulaw = pcm16_to_ulaw(resample(pcm, rate, 8000)) + b"\xff" * 8000  # speech, then a second of silence
    frames = [json.dumps({"event": "media", "streamSid": "MZ", "media": {
        "track": "inbound", "chunk": "1", "timestamp": "20", "payload": base64.b64encode(ulaw[i : i + 160]).decode()}})
        for i in range(0, len(ulaw) - 159, 160)]
    db = Database(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    db.migrate()
    engine = Engine(load_settings(), stt=FakeSTT(default=""), llm=ScriptedLLM(), tts=ToneTTS(), db=db)
    print(f"\ncodec + VAD only: {seconds:.0f} s of real-time 20 ms frames per stream "
          "(JSON, base64, μ-law, 8→16 kHz, framing, webrtcvad)")
    tight_loop(frames)
    print(f"{'streams':>7} {'lag p99':>8} {'CPU':>6} {'CPU/stream':>11} {'µs/frame':>9}")
    for n in sizes:
        loops = [ConversationLoop(engine.pipeline("friendly_guide"), RecordingTransport(8000), greet=False)
                 for _ in range(n)]
        monitor = LagMonitor(interval_ms=10)
        monitor.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*[one_stream(loop, frames[k % len(frames):] + frames[: k % len(frames)], seconds)
                               for k, loop in enumerate(loops)])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await monitor.stop()
        for loop in loops:
            await loop.stop()
        per_frame_us = cpu / (n * seconds / 0.02) * 1e6
        print(f"{n:>7} {monitor.percentile(99):>6.1f}ms {100 * cpu / wall:>5.0f}% {100 * cpu / wall / n:>9.2f}% "
              f"{per_frame_us:>9.1f}", flush=True)


def tight_loop(frames: list[str], n: int = 20000) -> None:
    """The same inbound work per frame with no scheduling: comparable with a codec benchmark."""
    from voiceforge.audio.framing import FrameBuffer, frame_bytes
    from voiceforge.audio.resample import StreamResampler
    from voiceforge.audio.vad import UtteranceSegmenter

    resampler, buffer, segmenter = StreamResampler(8000, 16000), FrameBuffer(frame_bytes(16000, 20)), UtteranceSegmenter()
    start = time.perf_counter()
    for i in range(n):
        event = media.parse(frames[i % len(frames)])
        for frame in buffer.push(resampler.process(ulaw_to_pcm16(event.payload))):
            segmenter.push(frame)
    inbound = (time.perf_counter() - start) / n * 1e6
    out_resampler, pcm = StreamResampler(22050, 8000), b"\x00\x01" * 441
    start = time.perf_counter()
    for _ in range(n):
        media.media_message("MZ", pcm16_to_ulaw(out_resampler.process(pcm)))
    outbound = (time.perf_counter() - start) / n * 1e6
    print(f"tight loop, per 20 ms frame: inbound {inbound:.1f} µs (parse → VAD), "
          f"outbound {outbound:.1f} µs (22.05 kHz → 8 kHz μ-law JSON)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="1,2,4,8,16")
    parser.add_argument("--model-workers", type=int, default=0,
                        help="put the models on a forge serve-models host with this many workers")
    parser.add_argument("--streams", default="25,50,100,200")
    parser.add_argument("--attack", type=int, default=0, metavar="CALLS",
                        help="instead: CALLS concurrent calls without and with an attack (worst run_sql, idle sockets)")
    parser.add_argument("--idle-sockets", type=int, default=200)
    args = parser.parse_args()
    if args.attack:
        asyncio.run(part_attack(args.attack, args.idle_sockets))
        return
    if args.calls:
        asyncio.run(part_one([int(x) for x in args.calls.split(",")], args.model_workers))
    if args.streams:
        asyncio.run(part_two([int(x) for x in args.streams.split(",")]))


if __name__ == "__main__":
    main()
