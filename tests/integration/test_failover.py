"""Per-stage failover through the official openai SDK: a server that refuses, one that never
answers, one that returns 500; the turn completes on the embedded provider and says so."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers import failover
from voiceforge.store import conversations
from voiceforge.turn import APOLOGIES

pytestmark = pytest.mark.integration


def engine_for(tmp_path, url: str, **extra) -> Engine:  # noqa: ANN001
    engine = Engine(load_settings(openai_base_url=url, forge_data_dir=tmp_path,
                                  database_url=f"sqlite:///{tmp_path / 'f.db'}", **extra))
    engine.ensure_mock_data()
    return engine


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens: connection refused


async def test_a_refusing_server_fails_over_on_every_stage_and_the_turn_says_so(tmp_path, speak):
    engine = engine_for(tmp_path, closed_port_url())
    pcm, rate = speak("How many customers are there?")
    result = await engine.pipeline("customer_service").voice_turn(pcm, rate)
    assert result.reply == "The answer is 40." and result.audio
    assert all(f"{stage} " in result.error for stage in ("STT", "LLM", "TTS")), result.error  # what failed
    assert [(f["stage"], f["served_by"]) for f in result.failover] == [
        ("stt", "whisper"), ("llm", "offline"), ("tts", "piper")]
    assert all("cannot connect" in f["reason"] for f in result.failover)
    stored = conversations.get_conversation(engine.db, result.conversation_id)["turns"][0]
    assert [f["stage"] for f in stored["providers"]["failover"]] == ["stt", "llm", "tts"]
    assert result.sample_rate == 24000  # Piper's audio at the configured TTS's rate


async def test_a_server_that_never_answers_fails_over_within_the_budget(tmp_path):
    with socket.socket() as hole:  # accepts connections (kernel backlog), never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/v1"
        engine = engine_for(tmp_path, url, forge_failover_after_s=1.5)
        started = time.perf_counter()
        result = await engine.pipeline("customer_service").text_turn("How many customers are there?")
        elapsed = time.perf_counter() - started
    assert result.reply == "The answer is 40." and elapsed < 6, elapsed
    assert result.failover[0]["stage"] == "llm" and "1.5 s" in result.failover[0]["reason"]


async def test_500s_fail_over_once_and_the_circuit_holds_until_a_probe_succeeds(oai, tmp_path):
    server, url = oai
    engine = engine_for(tmp_path, url, stt_provider="whisper", tts_provider="piper")
    server.fail_next[:] = [500] * 100
    pipeline = engine.pipeline("customer_service")
    first = await pipeline.text_turn("How many customers are there?")  # two LLM steps (a tool, then the answer)
    assert first.reply == "The answer is 40." and "HTTP 500" in first.failover[0]["reason"]
    assert len(server.requests) == 2  # the first step: one attempt and the SDK's one retry; the follow-up
    assert "LLM" in first.error and "HTTP 500" in first.error  # after the tool went straight to the brain
    second = await pipeline.text_turn("How many customers are there?")
    assert len(server.requests) == 2  # the circuit is open: no call reaches the dead server
    assert second.reply == "The answer is 40." and second.failover[0]["reason"] == failover.CIRCUIT_OPEN
    assert second.error is None  # nothing failed in this turn: it was served by the brain from the start
    breaker = engine.llm.breaker
    breaker._next_probe = 0.0  # a probe is due: the next call starts one in the background
    await pipeline.text_turn("How many customers are there?")
    await asyncio.wait_for(breaker._probing, 10)
    assert breaker.open and breaker.probes == 1 and len(server.requests) == 4  # still failing: still open
    assert breaker._interval == 2 * failover.PROBE_FIRST_S  # the next probe waits twice as long
    server.fail_next.clear()
    server.chat_script[:] = [{"text": "OK."}, {"text": "Back online."}]  # the probe's answer, then the turn's
    breaker._next_probe = 0.0
    await pipeline.text_turn("Are you there?")
    await asyncio.wait_for(breaker._probing, 10)
    assert not breaker.open
    result = await pipeline.text_turn("Are you there?")
    assert result.reply == "Back online." and result.failover == [] and result.error is None


async def test_with_failover_off_a_dead_server_gets_the_apology(tmp_path):
    engine = engine_for(tmp_path, closed_port_url(), forge_failover=False, stt_provider="whisper",
                        tts_provider="piper")
    result = await engine.pipeline("customer_service").text_turn("How many customers are there?")
    assert result.reply == APOLOGIES["llm"] and "cannot connect" in result.error and result.failover == []


def test_warm_up_readies_the_embedded_fallbacks_before_any_failure(tmp_path):
    from voiceforge.providers import intents

    engine = engine_for(tmp_path, closed_port_url())
    assert engine.llm._fallback is None and engine.stt._fallback is None  # nothing failed yet
    intents._indexes.clear()
    engine.warm_up()
    assert engine.llm._fallback.name == "offline" and engine.stt._fallback.name == "whisper"
    assert engine.tts._fallback.name == "piper"
    assert intents._indexes  # the brain's example vectors and head are ready for the first failover
