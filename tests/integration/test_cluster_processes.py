"""Sidecars as separate processes on one database and one Redis: one dies with kill -9 mid-call,
and the other closes the dead one's call as failed once its heartbeat expires, while its own call
goes on. The callers are written from Twilio's media-stream documentation."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from forge.processes import local_sidecar
from tests.support.twilio_caller import TwilioCaller
from voiceforge.audio.resample import resample
from voiceforge.config import load_settings

pytestmark = [pytest.mark.integration]
HEARTBEAT_S, TTL_S = 0.5, 2.0


async def test_a_killed_sidecars_calls_are_marked_failed_within_the_ttl(tmp_path, redis_url, speak):
    settings = load_settings(forge_data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'forge.db'}")
    common = {"REDIS_URL": redis_url, "FORGE_HEARTBEAT_S": str(HEARTBEAT_S), "FORGE_INSTANCE_TTL_S": str(TTL_S)}
    pcm, rate = speak("How many customers are there?")
    async with local_sidecar(settings=settings, FORGE_INSTANCE="doomed", **common) as doomed, \
            local_sidecar(settings=settings, FORGE_INSTANCE="survivor", **common) as survivor:
        lost, kept = TwilioCaller(doomed[0], doomed[1]), TwilioCaller(survivor[0], survivor[1])
        await asyncio.gather(lost.dial(), kept.dial())
        assert await lost.heard_after(0, 30) > 1.0 and await kept.heard_after(0, 30) > 1.0
        async with httpx.AsyncClient(base_url=survivor[0], headers={"Authorization": f"Bearer {survivor[2]}"},
                                     timeout=10) as api:
            for _ in range(50):  # both calls linked to their streams (stored by each owner)
                calls = {c["call_sid"]: c for c in (await api.get("/api/calls")).json()}
                if all(calls.get(c.call_sid, {}).get("stream_sid") for c in (lost, kept)):
                    break
                await asyncio.sleep(0.2)
            listed = {c["call_sid"]: c["instance"] for c in (await api.get("/ws/status")).json()["everywhere"]}
            assert listed == {lost.call_sid: "doomed", kept.call_sid: "survivor"}

            doomed.process.kill()  # kill -9: no drain, no goodbye, no clean leave
            killed = time.monotonic()
            while time.monotonic() - killed < TTL_S + 10:
                call = (await api.get(f"/api/calls/{lost.call_sid}")).json()
                if call["status"] == "failed":
                    break
                await asyncio.sleep(0.2)
            took = time.monotonic() - killed
            assert call["status"] == "failed" and "doomed" in call["end_reason"], call
            assert took <= TTL_S + 3 * HEARTBEAT_S + 3, took  # within the TTL and a sweep, with slack for load

            # The survivor's own call is untouched, and still answers.
            assert (await api.get(f"/api/calls/{kept.call_sid}")).json()["status"] == "in-progress"
            asked = time.perf_counter()
            await kept.send_audio(resample(pcm, rate, 8000) + bytes(16000))
            assert await kept.heard_after(asked, 60) > 0.5
            status = (await api.get("/ws/status")).json()
            assert [i["instance"] for i in status["instances"]] == ["survivor"]
            assert [c["call_sid"] for c in status["everywhere"]] == [kept.call_sid]
            await kept.hang_up()
