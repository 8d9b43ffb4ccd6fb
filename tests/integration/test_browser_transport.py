"""The browser websocket in live mode, over a real socket on loopback, on the offline providers.

Piper speaks the user's side into the "microphone" in real time; the agent's reply audio that
comes back is transcribed by Whisper. Then a barge-in: the user talks over the second sentence
of a reply, the page gets ``clear`` at once, and only the sentence it had played is stored.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.main import create_app
from tests.conftest import wer
from tests.support.browser_client import connect
from tests.support.servers import free_port, serve
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings
from voiceforge.providers.local import WhisperSTT
from voiceforge.store import business

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]
KEY = "browser-live-test-key"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-live")
    port = free_port()
    app = create_app(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'b.db'}",
                                   forge_api_key=KEY))
    with serve(app, port=port) as base:
        app.state.engine.warm_up()
        yield base, app


def mic(speak, text: str) -> bytes:
    pcm, rate = speak(text)
    return resample(pcm, rate, 16000)


def onset_s(pcm16k: bytes) -> float:
    """Where speech starts in a 16 kHz clip: the first 20 ms frame above -40 dBFS, s."""
    import numpy as np

    x = np.frombuffer(pcm16k, "<i2").astype(np.float64) / 32768
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    loud = np.nonzero(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-12) > -40)[0]
    return float(loud[0]) * 0.02 if len(loud) else 0.0


async def stored(base: str, conversation_id: int) -> list[dict]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        r = await http.get(f"{base}/api/conversations/{conversation_id}")
        assert r.status_code == 200, r.text
        return r.json()["turns"]


async def test_a_spoken_two_turn_conversation_then_a_barge_in(sidecar, speak):
    base, app = sidecar
    judge = WhisperSTT(app.state.engine.settings.forge_cache_dir, window_s=30)
    customer = business.find_customers(app.state.engine.db, customer_id=3)[0]
    busy = next(c for c in range(1, 41) if len(business.scheduled_appointments(app.state.engine.db, c)[1]) >= 1)
    async with connect(base, KEY, persona="customer_service", output_rate=24000) as page:
        greeting = await page.wait_for(lambda e: e["type"] == "state" and e["state"] == "speaking")
        await page.wait_for(lambda e: e["type"] == "state" and e["state"] == "listening" and e["_at"] > greeting["_at"])

        requests = ["How many customers are there?", "Look up customer number three."]
        for i, request in enumerate(requests):
            _, spoke_until = await page.say(mic(speak, request))
            turn = await page.wait_for(lambda e, n=i + 1: e["type"] == "turn" and len(page.heard.turns()) >= n)
            turn = page.heard.turns()[i]
            assert wer(request, turn["transcript"]) <= 0.2, turn
            assert not turn["interrupted"] and turn["timings_ms"]["playback_confirmed"] > 0
            gen = turn["generation"]
            # the reply came back as audio at the rate the page asked for, and says what the turn says
            heard = (await judge.transcribe(bytes(page.heard.audio[gen]), 24000)).text
            assert wer(turn["reply"], heard) <= 0.25, (turn["reply"], heard)
            assert page.heard.first_audio_at[gen] - spoke_until < 6.0
        assert page.heard.turns()[0]["reply"] == "The answer is 40."
        assert customer["name"] in page.heard.turns()[1]["reply"]

        await page.say(mic(speak, f"What appointments does customer number {busy} have?"))
        second = await page.wait_for(lambda e: e["type"] == "sentence" and e["index"] == 1
                                     and e["generation"] > page.heard.turns()[-1]["generation"])
        gen = second["generation"]
        await page.wait_for(lambda e: f"{gen}:0" in page.heard.marks_echoed, 30)  # the first sentence played
        await asyncio.sleep(0.6)  # well into the second sentence
        spoke_from, _ = await page.say(mic(speak, "Wait, stop please."))
        assert page.heard.clears, "no clear after the user talked over the agent"
        # Speech over the agent interrupts once it has lasted FORGE_MIN_INTERRUPTION_MS (300; a cough
        # never does), and the clear follows within 300 ms of that moment.
        qualified_ms = 1000 * onset_s(mic(speak, "Wait, stop please.")) + 300
        clear_ms = (page.heard.clears[0] - spoke_from) * 1000
        # (Where speech starts is read off the clip at -40 dBFS; the VAD may hear it up to ~100 ms earlier.)
        assert qualified_ms - 120 <= clear_ms <= qualified_ms + 300, (clear_ms, qualified_ms)
        assert page.heard.last_audio_at[gen] <= page.heard.clears[0] + 0.05  # nothing of it after the clear
        cut = await page.wait_for(lambda e: e["type"] == "turn" and e["generation"] == gen)
        assert cut["interrupted"] and cut["reply"] == first_sentence_of(page, gen)
        await page.wait_for(lambda e: e["type"] == "turn" and e["generation"] > gen, 30)
        conversation_id = cut["conversation_id"]
    await asyncio.sleep(0.5)  # the writer stores after the socket closes
    turns = await stored(base, conversation_id)
    assert [t["interrupted"] for t in turns] == [False, False, True, False]
    assert turns[2]["assistant_text"] == first_sentence_of(page, gen)
    assert turns[2]["tool_calls"][0]["name"] == "list_appointments"
    assert wer("Wait, stop please.", turns[3]["user_text"]) <= 0.34


def first_sentence_of(page, generation: int) -> str:  # noqa: ANN001
    """The first sentence of ``generation``: what had played when the user barged in."""
    return next(e["text"] for e in page.heard.events
                if e["type"] == "sentence" and e["generation"] == generation and e["index"] == 0)
