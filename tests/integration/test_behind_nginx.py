"""Twenty simulated phone calls at once through Debian's nginx (deploy/nginx/forge.conf) to two
`forge serve` processes on one database and one Redis: the calls spread over both sidecars, and
every turn is stored exactly once, on its own call. The callers follow Twilio's media-stream docs."""

from __future__ import annotations

import asyncio
import time

import pytest

from forge.processes import free_port, local_sidecar
from tests.conftest import wer
from tests.support.nginx import nginx
from tests.support.twilio_caller import TwilioCaller
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings
from voiceforge.store import calls as call_store
from voiceforge.store.db import get_database

pytestmark = [pytest.mark.integration]
CALLS = 20
SENTENCES = ["How many customers are there?", "What is the order history for customer number two?",
             "Please look up customer number three."]


async def test_twenty_calls_across_two_sidecars_behind_nginx_store_each_turn_once(tmp_path, redis_url, speak):
    url = f"sqlite:///{tmp_path / 'forge.db'}"
    settings = load_settings(forge_data_dir=tmp_path, database_url=url, twilio_auth_token="nginx-token")
    public = f"http://127.0.0.1:{free_port()}"  # nginx's: Twilio signs it, and the stream URL names it
    common = {"REDIS_URL": redis_url, "PUBLIC_BASE_URL": public, "FORGE_TRUSTED_PROXIES": "127.0.0.1"}
    audio = [resample(*speak(s), 8000) + bytes(16000) for s in SENTENCES]
    async with local_sidecar(settings=settings, FORGE_INSTANCE="one", **common) as one, \
            local_sidecar(settings=settings, FORGE_INSTANCE="two", **common) as two:
        upstreams = [one[0].removeprefix("http://"), two[0].removeprefix("http://")]
        with nginx(upstreams, tmp_path / "nginx", port=int(public.rsplit(":", 1)[1])) as front:
            assert front == public

            async def call(i: int) -> TwilioCaller:
                caller = TwilioCaller(public, "nginx-token", caller=f"+1555123{i:04d}")
                await caller.dial()  # the webhook and the stream, each through nginx
                assert await caller.heard_after(0, 120) > 0.5, f"call {i}: no greeting"
                asked = time.perf_counter()
                await caller.send_audio(audio[i % len(SENTENCES)])
                assert await caller.heard_after(asked, 180) > 0.5, f"call {i}: no answer"
                await caller.hang_up()
                return caller

            callers = await asyncio.gather(*(call(i) for i in range(CALLS)))

    db = get_database(url)
    stored = {c["call_sid"]: c for c in call_store.list_calls(db, limit=100)}
    assert len(stored) == CALLS
    owners = [stored[c.call_sid]["owner"] for c in callers]
    assert set(owners) == {"one", "two"}, owners  # nginx spread the calls over both sidecars
    for i, caller in enumerate(callers):
        call = call_store.get_call(db, caller.call_sid)
        assert call["status"] == "completed", call
        assert len(call["turns"]) == 1, call["turns"]  # stored once, not lost, not twice
        turn = call["turns"][0]
        assert wer(SENTENCES[i % len(SENTENCES)], turn["user_text"]) <= 0.35 and turn["assistant_text"], turn


async def test_sigterm_on_one_sidecar_finishes_its_call_while_new_calls_go_to_the_other(tmp_path, redis_url, speak):
    import signal

    import httpx

    url = f"sqlite:///{tmp_path / 'forge.db'}"
    settings = load_settings(forge_data_dir=tmp_path, database_url=url, twilio_auth_token="nginx-token")
    public = f"http://127.0.0.1:{free_port()}"
    common = {"REDIS_URL": redis_url, "PUBLIC_BASE_URL": public, "FORGE_TRUSTED_PROXIES": "127.0.0.1",
              "FORGE_REFUSE_WITH_503": "true", "FORGE_DRAIN_S": "60"}
    question = resample(*speak(SENTENCES[0]), 8000) + bytes(16000)
    async with local_sidecar(settings=settings, FORGE_INSTANCE="leaving", **common) as leaving, \
            local_sidecar(settings=settings, FORGE_INSTANCE="staying", **common) as staying:
        upstreams = [leaving[0].removeprefix("http://"), staying[0].removeprefix("http://")]
        with nginx(upstreams, tmp_path / "nginx", port=int(public.rsplit(":", 1)[1])):
            held = TwilioCaller(public, "nginx-token")
            await held.dial(webhook_via=leaving[0], stream_via=leaving[0])  # a call on the one that will leave
            assert await held.heard_after(0, 60) > 0.5
            leaving.process.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(timeout=5) as http:
                for _ in range(50):
                    if (await http.get(leaving[0] + "/ready")).status_code == 503:
                        break
                    await asyncio.sleep(0.1)

            async def new_call(i: int) -> TwilioCaller:
                caller = TwilioCaller(public, "nginx-token", caller=f"+1555987{i:04d}")
                await caller.dial()  # through nginx, which may pick the draining sidecar first
                assert await caller.heard_after(0, 60) > 0.5, f"new call {i} was not answered"
                return caller

            fresh = await asyncio.gather(*(new_call(i) for i in range(4)))
            asked = time.perf_counter()
            await held.send_audio(question)  # the call in progress goes on, on the draining sidecar
            assert await held.heard_after(asked, 60) > 0.5
            await held.hang_up()
            assert await asyncio.wait_for(leaving.process.wait(), 30) == 0  # its last call ended: it exits
            for caller in fresh:
                await caller.hang_up()

    db = get_database(url)
    kept = call_store.get_call(db, held.call_sid)
    assert kept["status"] == "completed" and kept["owner"] == "leaving" and len(kept["turns"]) == 1, kept
    for caller in fresh:
        call = call_store.get_call(db, caller.call_sid)
        assert call["owner"] == "staying" and call["status"] == "completed", call  # none refused, none busy
