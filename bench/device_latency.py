"""Push-to-talk latency: button release → first byte of reply audio, offline providers.

A sidecar on loopback, a registered device, and the device simulator pressing and speaking
Piper utterances over the websocket (16 kHz) and over chunked HTTP (44.1 kHz). Prints p50/p95
and the sidecar's own split (STT, agent, TTS, wire) from each turn's stored timings.
Run: .venv/bin/python bench/device_latency.py
"""

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from server.main import create_app  # noqa: E402
from tests.conftest import _piper  # noqa: E402
from tests.support.servers import free_port, serve  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402
from voiceforge.devices.simulator import simulate_device, simulate_http_press  # noqa: E402
from voiceforge.store import conversations  # noqa: E402

KEY = "bench-key"
PRESSES = ["How many customers are there?", "Look up customer number three.",
           "What is the order history for customer number two?", "Hello, who are you?"]


def pct(values, p):  # noqa: ANN001, ANN201
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run(base: str, app) -> None:  # noqa: ANN001
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as http:
        r = await http.post("/api/devices", json={"name": "bench", "persona": "friendly_guide"})
        device_id, token = r.json()["device_id"], r.json()["token"]
    ws_latency, http_latency = [], []
    for _ in range(3):
        result = await simulate_device(base, token, [_piper(t) for t in PRESSES])
        ws_latency += [t["latency_ms"] for t in result["turns"] if t["latency_ms"] is not None]
        for text in PRESSES[:2]:
            pcm, rate = _piper(text)
            one = await simulate_http_press(base, token, pcm, rate, rate=44100)
            http_latency.append(one["latency_ms"])
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as http:
        conversation_id = (await http.get(f"/api/devices/{device_id}")).json()["conversation_id"]
    timings = [t["timings_ms"] for t in conversations.turns_of(app.state.engine.db, conversation_id)
               if "first_frame_sent" in t["timings_ms"]]
    print("release → first reply audio byte, offline providers (Whisper base, offline brain, Piper)")
    for name, values in (("websocket, 16 kHz", ws_latency), ("chunked HTTP, 44.1 kHz", http_latency)):
        print(f"  {name:>22}: n={len(values)}  p50 {statistics.median(values):.0f} ms  p95 {pct(values, 95):.0f} ms")
    split = {
        "STT": [t["stt_final"] for t in timings],
        "agent": [t["first_sentence"] - t["stt_final"] for t in timings],
        "TTS first audio": [t["tts_first_audio"] - t["first_sentence"] for t in timings],
        "wire": [t["first_frame_sent"] - t["tts_first_audio"] for t in timings],
    }
    for name, values in split.items():
        print(f"  {name:>22}: p50 {statistics.median(values):.0f} ms  p95 {pct(values, 95):.0f} ms")


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    app = create_app(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'b.db'}",
                                   forge_api_key=KEY))
    with serve(app, port=free_port()) as base:
        app.state.engine.warm_up()
        asyncio.run(run(base, app))


main()
