"""Speech-to-speech latency over Forge's offline Realtime server, next to the cascade's.

The same Piper utterances are spoken in real time, then silence, and the clock runs from the last
voiced sample sent to the first agent audio received:
- over the Realtime API's events through the official `openai` SDK (server VAD) to the offline
  Realtime server: first ``response.output_audio.delta``;
- over the sidecar's browser websocket (live mode, the cascade over the same loop): first frame.
Run: .venv/bin/python bench/realtime_latency.py
"""

import asyncio
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai  # noqa: E402

from server.main import create_app  # noqa: E402
from tests.conftest import _piper  # noqa: E402
from tests.support.browser_client import connect  # noqa: E402
from tests.support.servers import free_port, serve  # noqa: E402
from voiceforge.audio.resample import resample  # noqa: E402
from voiceforge.config import load_settings  # noqa: E402

KEY = "bench-key"
UTTERANCES = ["How many customers are there?", "Look up customer number three.",
              "What is the order history for customer number two?", "Hello, who are you?"] * 3


def pct(values, p):  # noqa: ANN001, ANN201
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def realtime_round(url: str) -> list[float]:
    client = openai.AsyncOpenAI(api_key=KEY, websocket_base_url=url)
    out = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        for text in UTTERANCES:
            pcm, rate = _piper(text)
            speech = resample(pcm, rate, 24000)
            clock = time.perf_counter()
            for i in range(0, len(speech), 960):  # 20 ms, in real time
                await conn.input_audio_buffer.append(audio=base64.b64encode(speech[i : i + 960]).decode())
                clock += 0.02
                await asyncio.sleep(max(0.0, clock - time.perf_counter()))
            spoke_until = time.perf_counter()

            async def silence() -> None:
                nonlocal clock
                while True:
                    await conn.input_audio_buffer.append(audio=base64.b64encode(b"\x00" * 960).decode())
                    clock += 0.02
                    await asyncio.sleep(max(0.0, clock - time.perf_counter()))

            filler = asyncio.create_task(silence())
            first = None
            async for event in conn:
                if event.type == "response.output_audio.delta" and first is None:
                    first = time.perf_counter()
                if event.type == "response.done":
                    break
            filler.cancel()
            out.append((first - spoke_until) * 1000)
    return out


async def cascade_round(base: str) -> list[float]:
    out = []
    async with connect(base, KEY, persona="customer_service", output_rate=24000) as page:
        await page.wait_for(lambda e: e["type"] == "state" and e["state"] == "speaking")
        await page.wait_for(lambda e: e["type"] == "turn" or (e["type"] == "state" and e["state"] == "listening"))
        for i, text in enumerate(UTTERANCES):
            pcm, rate = _piper(text)
            _, spoke_until = await page.say(resample(pcm, rate, 16000))
            turn = await page.wait_for(lambda e, n=i + 1: e["type"] == "turn" and len(page.heard.turns()) >= n)
            turn = page.heard.turns()[i]
            out.append((page.heard.first_audio_at[turn["generation"]] - spoke_until) * 1000)
            await asyncio.sleep(0.5)
    return out


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    settings = load_settings(forge_api_key=KEY, forge_data_dir=folder, database_url=f"sqlite:///{folder / 'b.db'}")
    rt, car = create_app(settings, roles=("realtime",)), create_app(settings)
    with serve(rt, port=free_port()) as rt_base, serve(car, port=free_port()) as car_base:
        rt.state.engine.warm_up()
        car.state.engine.warm_up()
        realtime = asyncio.run(realtime_round(rt_base.replace("http://", "ws://") + "/v1"))
        cascade = asyncio.run(cascade_round(car_base))
    print("end of user speech → first agent audio, offline providers, utterances spoken in real time")
    for name, values in (("speech-to-speech (Realtime API events, offline server)", realtime),
                         ("cascade (browser websocket, same loop)", cascade)):
        print(f"  {name:>56}: n={len(values)}  p50 {statistics.median(values):.0f} ms  p95 {pct(values, 95):.0f} ms")


main()
