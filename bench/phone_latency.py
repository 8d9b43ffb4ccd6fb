"""Phone latency over the call simulator with the offline providers.

Prints median and p95 of end-of-caller-speech → first agent media frame as the caller hears
it, and the sidecar's own split of the same interval, measured from the last voiced frame:
endpointing (the silence the VAD waits for), STT, agent, TTS to first audio, and the wire
(resampling, framing, pacing); then the barge-in reaction time.
Run: .venv/bin/python bench/phone_latency.py [--concurrent 1,4] [--stagger-ms 0]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.main import create_app  # noqa: E402
from tests.conftest import _piper  # noqa: E402
from tests.support.servers import free_port, serve  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.telephony.simulator import simulate_call  # noqa: E402

TOKEN = "bench-token"
KEY = "bench-key"
TURNS = ["How many customers are there?", "Look up customer number three.", "What is the order history for customer number two?"]


def pct(values, p):  # noqa: ANN001, ANN201
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run(base: str, concurrent: int, stagger_ms: int = 0) -> None:
    rows, barge = [], []
    rounds = 3 if concurrent == 1 else 2

    async def call(i: int) -> dict:
        await asyncio.sleep(i * stagger_ms / 1000)
        return await simulate_call(base, TOKEN, [_piper(t) for t in TURNS], api_key=KEY)

    for _ in range(rounds):
        results = await asyncio.gather(*[call(i) for i in range(concurrent)])
        rows += [t for result in results for t in result["turns"] if t["latency_ms"]]
        if concurrent == 1:
            b = await simulate_call(base, TOKEN, [_piper("What appointments does customer number two have?"),
                                                  _piper("Wait, stop please.")], barge_in_ms=1500, api_key=KEY)
            barge += [t["barge_in_clear_ms"] for t in b["turns"] if t["barge_in_clear_ms"] is not None]
    total = [r["latency_ms"] for r in rows]
    t = [r["timings_ms"] for r in rows]
    split = {
        "sidecar total": [x["first_frame_sent"] for x in t],
        "endpointing": [x["endpointing_ms"] for x in t],
        "stt": [x["stt_final"] - x["endpointing_ms"] for x in t],
        "agent": [x["first_sentence"] - x["stt_final"] for x in t],
        "tts_first_audio": [x["tts_first_audio"] - x["first_sentence"] for x in t],
        "wire": [x["first_frame_sent"] - x["tts_first_audio"] for x in t],
    }
    started = f", started {stagger_ms} ms apart" if stagger_ms and concurrent > 1 else ", started together"
    print(f"{concurrent} concurrent call{'s' if concurrent > 1 else ''}{started if concurrent > 1 else ''}, turns: {len(rows)}, "
          f"speculative STT used on {sum(1 for x in t if x.get('stt_speculative'))}")
    print(f"speech end -> first agent frame: median {statistics.median(total):.0f} ms, p95 {pct(total, 95):.0f} ms")
    for name, values in split.items():
        print(f"  {name:>16}: median {statistics.median(values):.0f} ms, p95 {pct(values, 95):.0f} ms")
    if barge:
        print(f"barge-in (speech onset -> clear): median {statistics.median(barge):.0f} ms, max {max(barge):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", default="1,4", help="simultaneous calls per run, comma-separated")
    parser.add_argument("--stagger-ms", type=int, default=0,
                        help="start the concurrent calls this far apart (0: together, so every turn ends at the same "
                             "moment and queues on the one Whisper: the worst case)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(load_settings(public_base_url=base, twilio_auth_token=TOKEN, forge_data_dir=folder,
                                   database_url=f"sqlite:///{folder / 'b.db'}", forge_api_key=KEY))
    with serve(app, port=port):
        app.state.engine.warm_up()
        for concurrent in [int(n) for n in args.concurrent.split(",")]:
            asyncio.run(run(base, concurrent, args.stagger_ms))


main()
