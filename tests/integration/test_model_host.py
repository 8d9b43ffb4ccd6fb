"""`forge serve-models`: the embedded models behind an OpenAI-compatible API, read by the official
openai SDK, and a sidecar whose STT, LLM and TTS are all that host (real processes on loopback)."""

from __future__ import annotations

import json

import openai
import pytest

from voiceforge.audio.codecs import wrap_wav
from voiceforge.scoring import wer

pytestmark = [pytest.mark.integration, pytest.mark.wallclock]

RUN_SQL = {"type": "function", "function": {
    "name": "run_sql", "description": "Run one read-only SELECT over the mock tables",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}
FLIGHTS = {"type": "function", "function": {
    "name": "find_flight", "description": "Find a flight to a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city",
                                                             "examples": ["Paris", "Lisbon"]}},
                   "required": ["city"]}}}


async def test_the_openai_sdk_reads_the_model_host(tmp_path, speak):
    from forge.processes import local_model_host
    from voiceforge.config import load_settings

    settings = load_settings(forge_data_dir=tmp_path / "data")
    pcm, rate = speak("Please look up the orders for customer Isabel White.")
    async with local_model_host(settings=settings, workers=2) as host:
        base, _, key = host
        client = openai.AsyncOpenAI(api_key=key, base_url=base, max_retries=0)
        heard = await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wrap_wav(pcm, rate)))
        assert wer("Please look up the orders for customer Isabel White.", heard.text) <= 0.2, heard.text
        spoken = await client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.",
                                                  response_format="pcm")
        assert 0.4 < len(spoken.content) / 2 / 24000 < 3  # 16-bit mono at 24 kHz, as OpenAI's pcm

        # The brain keeps nothing between requests: the pending request is read from the messages.
        messages = [{"role": "system", "content": "You are Ava, a customer-service assistant."},
                    {"role": "user", "content": "how many customers are there"}]
        first = await client.chat.completions.create(model="forge-brain", messages=messages, tools=[RUN_SQL])
        (call,) = first.choices[0].message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "run_sql"
        assert "count" in json.loads(call.function.arguments)["query"].lower()
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"result": {
                         "columns": ["n"], "rows": [[40]], "summary": "The answer is 40."}})}]
        stream = await client.chat.completions.create(model="forge-brain", messages=messages, tools=[RUN_SQL],
                                                      stream=True, stream_options={"include_usage": True})
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert "40" in text

        # A tool the host has never seen is routed by its schema: a value where its examples put one.
        unknown = await client.chat.completions.create(
            model="forge-brain", tools=[FLIGHTS],
            messages=[{"role": "user", "content": "find me a flight to Lisbon"}])
        (flight,) = unknown.choices[0].message.tool_calls
        assert flight.function.name == "find_flight" and json.loads(flight.function.arguments) == {"city": "Lisbon"}

        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(api_key="wrong", base_url=base, max_retries=0).models.list()


async def test_a_sidecar_whose_models_are_all_on_the_model_host(tmp_path, speak):
    from forge.processes import local_model_host
    from voiceforge.config import load_settings
    from voiceforge.engine import Engine

    settings = load_settings(forge_data_dir=tmp_path / "models")
    async with local_model_host(settings=settings) as host:
        base, _, key = host
        sidecar = Engine(load_settings(
            forge_data_dir=tmp_path / "sidecar", database_url=f"sqlite:///{tmp_path / 'sidecar.db'}",
            openai_api_key=key, openai_base_url=base, stt_provider="openai", llm_provider="openai",
            tts_provider="openai", forge_failover=False))
        sidecar.ensure_mock_data()
        labels = sidecar.provider_labels()
        assert all(labels[k].startswith("openai") for k in ("stt", "llm", "tts")), labels
        pcm, rate = speak("How many customers are there?")
        turn = await sidecar.pipeline("customer_service", channel="api", persist=False).voice_turn(pcm, rate)
    assert turn.error is None and turn.user_text.lower().startswith("how many customers")
    assert [c["name"] for c in turn.tool_calls] == ["run_sql"] and turn.reply == "The answer is 40."
    assert turn.sample_rate == 24000 and len(turn.audio) / 2 / 24000 > 0.5  # spoken by the host's Piper
