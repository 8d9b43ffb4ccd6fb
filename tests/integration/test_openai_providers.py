"""The OpenAI providers through the official openai SDK against a local OpenAI-wire server."""

import pytest

from tests.conftest import wer
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers import ProviderStatusError, TokenUsage, ToolCall, build_llm, build_stt, build_tts
from voiceforge.providers.openai_ import OpenAILLM, OpenAISTT, OpenAITTS
from voiceforge.providers.registry import resolve
from voiceforge.tools import build_registry

pytestmark = pytest.mark.integration


def keyed(url, **extra):
    """Settings for the OpenAI providers themselves (failover off: these tests see their errors)."""
    return load_settings(openai_api_key="sk-test-not-real", openai_base_url=url, forge_failover=False, **extra)


async def test_transcription_request_is_multipart_wav(oai, speak):
    server, url = oai
    stt = build_stt(keyed(url, openai_stt_model="gpt-4o-mini-transcribe"), prompt_words=["Hanuman"])
    assert isinstance(stt, OpenAISTT)
    pcm, rate = speak("Please cancel appointment number four.")
    transcript = await stt.transcribe(pcm, rate)
    assert wer("Please cancel appointment number four.", transcript.text) <= 0.2
    req = server.requests[-1]
    assert req["path"] == "/v1/audio/transcriptions"
    assert req["headers"]["authorization"] == "Bearer sk-test-not-real"
    assert req["headers"]["content-type"].startswith("multipart/form-data")
    assert req["form"]["model"] == "gpt-4o-mini-transcribe"
    assert req["form"]["prompt"] == "Vocabulary: Hanuman."
    assert req["filename"] == "utterance.wav" and req["content_type"] == "audio/wav"
    assert req["bytes"] == len(pcm) + 44  # PCM16 in a 44-byte WAV header


async def test_chat_stream_joins_tool_call_fragments(oai):
    server, url = oai
    llm = build_llm(keyed(url, openai_llm_model="gpt-4o-mini"))
    assert isinstance(llm, OpenAILLM)
    server.chat_script.append({"tool_calls": [("lookup_customer", {"name": "Alice Johnson", "zip_code": "12345"}),
                                              ("list_appointments", {"customer_id": 3})]})
    registry = build_registry()
    tools = registry.select(["lookup_customer", "list_appointments"])
    items = [x async for x in llm.stream([{"role": "user", "content": "hi"}], tools)]
    assert items == [
        ToolCall(id="call_0", name="lookup_customer", arguments={"name": "Alice Johnson", "zip_code": "12345"}),
        ToolCall(id="call_1", name="list_appointments", arguments={"customer_id": 3}),
        TokenUsage(input_tokens=1, output_tokens=1),  # the usage chunk, last
    ]
    body = server.requests[-1]["json"]
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in body["tools"]] == ["list_appointments", "lookup_customer"]
    lookup = next(t for t in body["tools"] if t["function"]["name"] == "lookup_customer")
    assert lookup["type"] == "function"
    assert lookup["function"]["parameters"]["properties"]["customer_id"]["type"] == "integer"


async def test_speech_request_asks_for_pcm_and_streams_whole_samples(oai):
    server, url = oai
    tts = build_tts(keyed(url, openai_tts_model="gpt-4o-mini-tts"), voice="coral")
    assert isinstance(tts, OpenAITTS) and tts.sample_rate == 24000
    chunks = [c async for c in tts.stream("Your order has shipped.")]
    assert len(chunks) > 1 and all(len(c) % 2 == 0 for c in chunks)
    assert sum(map(len, chunks)) / 2 / 24000 > 0.8  # about 1.5 s of speech
    assert server.requests[-1]["json"] == {"input": "Your order has shipped.", "model": "gpt-4o-mini-tts",
                                           "voice": "coral", "response_format": "pcm"}


async def test_retryable_status_is_retried_once_then_translated(oai):
    server, url = oai
    llm = build_llm(keyed(url))
    server.fail_next[:] = [503]
    server.chat_script.append({"text": "Hello again."})
    assert "".join([x async for x in llm.stream([{"role": "user", "content": "hi"}])
                    if isinstance(x, str)]) == "Hello again."
    server.fail_next[:] = [429, 429]
    with pytest.raises(ProviderStatusError) as info:
        _ = [x async for x in llm.stream([{"role": "user", "content": "hi"}])]
    assert info.value.status == 429 and info.value.retryable
    server.fail_next[:] = [401]
    with pytest.raises(ProviderStatusError) as info:
        _ = [x async for x in llm.stream([{"role": "user", "content": "hi"}])]
    assert not info.value.retryable
    assert [r.get("failed") for r in server.requests if "failed" in r] == [503, 429, 429, 401]


async def test_agent_loop_runs_tools_with_openai_llm(oai, tmp_path):
    server, url = oai
    settings = keyed(url, database_url=f"sqlite:///{tmp_path / 'f.db'}", stt_provider="whisper", tts_provider="piper")
    engine = Engine(settings)
    from voiceforge.store import mockdata

    mockdata.generate(engine.db, 10)
    server.chat_script += [{"tool_calls": [("get_order_history", {"customer_id": 2})]}, {"text": "You have orders."}]
    pipeline = engine.pipeline("customer_service")
    result = await pipeline.text_turn("What did I order? I'm customer 2.")
    assert result.reply == "You have orders."
    assert result.tool_calls[0]["name"] == "get_order_history" and result.tool_calls[0]["result"]["customer_id"] == 2
    second = server.requests[-1]["json"]["messages"]
    assert second[0]["role"] == "system" and "Ava" in second[0]["content"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "get_order_history"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_0"
    assert '"orders"' in second[-1]["content"]


async def test_llm_outage_gives_a_spoken_apology_and_a_stored_error(oai, tmp_path):
    server, url = oai
    settings = keyed(url, database_url=f"sqlite:///{tmp_path / 'f.db'}", tts_provider="piper")
    engine = Engine(settings)
    server.fail_next[:] = [500, 500]
    result = await engine.pipeline().text_turn("hello", speak=True)
    assert result.error == "openai-llm: HTTP 500"
    assert result.reply.startswith("Sorry") and result.audio and len(result.audio) > 20000
    from voiceforge.store.models import Turn

    with engine.db.read_session() as s:
        assert s.get(Turn, result.turn_id).error == "openai-llm: HTTP 500"


def test_azure_settings_build_an_azure_client():
    import openai

    from voiceforge.providers.openai_ import make_client

    settings = load_settings(use_azure=True, azure_openai_endpoint="https://example-resource.openai.azure.com",
                             azure_openai_api_key="k", azure_openai_deployment="gpt4o-dep")
    assert isinstance(make_client(settings), openai.AsyncAzureOpenAI)
    assert build_llm(settings).model == "gpt4o-dep"


async def test_the_personas_voice_reaches_the_tts(oai, tmp_path):
    server, url = oai
    settings = keyed(url, database_url=f"sqlite:///{tmp_path / 'f.db'}", llm_provider="offline",
                     tts_provider="openai", openai_tts_voice="alloy")
    engine = Engine(settings)
    for persona, voice in (("friendly_guide", "coral"), ("calm_concierge", "sage"), ("customer_service", "alloy")):
        await engine.pipeline(persona).text_turn("Hello", speak=True)
        spoken = [r["json"] for r in server.requests if r["path"] == "/v1/audio/speech"]
        assert spoken[-1]["voice"] == voice, (persona, spoken[-1])
    assert engine.tts.pick_voice("not-a-voice") == "alloy"  # an unknown name falls back to the default


async def test_a_turn_is_priced_from_the_tokens_the_server_reported(oai, tmp_path):
    """Hand-computed: gpt-4o-mini at $0.15 / $0.60 per million tokens in / out (voiceforge/cost.py),
    1,200 + 300 tokens over two steps (a tool call, then the answer) = 1,200 * 0.15e-6 + 300 * 0.6e-6."""
    from voiceforge.store import conversations

    server, url = oai
    settings = keyed(url, openai_llm_model="gpt-4o-mini", forge_data_dir=tmp_path,
                     database_url=f"sqlite:///{tmp_path / 'cost.db'}", stt_provider="whisper", tts_provider="piper")
    engine = Engine(settings)
    engine.ensure_mock_data()
    server.chat_script += [
        {"tool_calls": [("run_sql", {"query": "SELECT COUNT(*) FROM customers"})], "usage": {"prompt_tokens": 700, "completion_tokens": 100}},
        {"text": "There are 40 customers.", "usage": {"prompt_tokens": 500, "completion_tokens": 200}},
    ]
    result = await engine.pipeline("customer_service").text_turn("How many customers are there?")
    assert result.usage.llm_input_tokens == 1200 and result.usage.llm_output_tokens == 300
    expected = 1200 * 0.15 / 1e6 + 300 * 0.60 / 1e6
    assert result.cost["llm"] == pytest.approx(expected) and result.cost["total"] == pytest.approx(expected)
    stored = conversations.get_conversation(engine.db, result.conversation_id)["turns"][0]
    assert stored["cost_usd"] == pytest.approx(0.00036)
    assert stored["usage"] == {"llm_input_tokens": 1200, "llm_output_tokens": 300}


async def test_a_keyless_local_server_serves_all_three_stages(oai, speak, tmp_path):
    """OPENAI_BASE_URL alone (how Ollama and llama.cpp servers are used) selects the OpenAI providers."""
    from voiceforge.providers.openai_ import NO_KEY, list_models

    server, url = oai
    settings = load_settings(openai_base_url=url, openai_llm_model="llama3.2:3b", forge_data_dir=tmp_path,
                             database_url=f"sqlite:///{tmp_path / 'k.db'}")
    assert not settings.openai_api_key and [resolve(k, settings) for k in ("stt", "llm", "tts")] == [
        "openai", "openai", "openai"]
    engine = Engine(settings)
    engine.ensure_mock_data()
    server.chat_script.append({"text": "There are 40 customers."})
    pcm, rate = speak("How many customers are there?")
    result = await engine.pipeline("customer_service").voice_turn(pcm, rate)
    assert wer("How many customers are there?", result.user_text) <= 0.2 and result.reply == "There are 40 customers."
    assert result.audio and result.sample_rate == 24000
    paths = [r["path"] for r in server.requests]
    assert paths == ["/v1/audio/transcriptions", "/v1/chat/completions", "/v1/audio/speech"]
    assert {r["headers"]["authorization"] for r in server.requests} == {f"Bearer {NO_KEY}"}
    assert server.requests[1]["json"]["model"] == "llama3.2:3b"
    assert list_models(settings, "llm") == ["kokoro", "llama3.2:3b", "whisper-small"]


async def test_each_stage_may_point_at_its_own_server(oai, tmp_path):
    from tests.support.openai_server import OpenAIServer
    from tests.support.servers import serve

    server, url = oai
    other = OpenAIServer(load_settings().forge_cache_dir)
    with serve(other.app) as other_base:
        settings = load_settings(openai_llm_base_url=other_base + "/v1", forge_data_dir=tmp_path,
                                 database_url=f"sqlite:///{tmp_path / 's.db'}")
        assert [resolve(k, settings) for k in ("stt", "llm", "tts")] == ["whisper", "openai", "piper"]
        engine = Engine(settings)
        engine.ensure_mock_data()
        other.chat_script.append({"text": "Hello from the other server."})
        result = await engine.pipeline("customer_service").text_turn("Hi there")
    assert result.reply == "Hello from the other server."
    assert [r["path"] for r in other.requests] == ["/v1/chat/completions"] and server.requests == []


async def test_an_llm_that_books_before_the_caller_says_yes_is_told_to_ask_first(oai, tmp_path):
    """schedule_appointment is declared ``confirm = true``: called by an LLM (through the official
    SDK) before any yes, it runs nothing and tells the model to ask; after the caller's yes, it runs."""
    server, url = oai
    engine = Engine(keyed(url, database_url=f"sqlite:///{tmp_path / 'f.db'}"))
    engine.ensure_mock_data()
    booking = {"customer_id": 6, "service": "repair", "starts_at": "2030-01-10T14:00:00"}
    server.chat_script += [{"tool_calls": [("schedule_appointment", booking)]},
                           {"text": "Just to confirm, a repair on January 10 at 2 PM?"},
                           {"tool_calls": [("schedule_appointment", booking)]}, {"text": "You're booked."}]
    pipeline = engine.pipeline("customer_service")
    asked = await pipeline.text_turn("Book me a repair on January 10 at 2 pm, I'm customer 6.")
    (held,) = asked.tool_calls
    assert held["result"]["needs_confirmation"] and held["result"]["done"] is False, held
    told = server.requests[-1]["json"]["messages"][-1]
    assert told["role"] == "tool" and "needs_confirmation" in told["content"]
    from voiceforge.store.models import Appointment

    def booked() -> int:
        with engine.business_db.read_session() as s:
            return s.query(Appointment).filter(Appointment.customer_id == 6,
                                               Appointment.status == "scheduled").count()

    before = booked()
    assert asked.reply == "Just to confirm, a repair on January 10 at 2 PM?"
    done = await pipeline.text_turn("Yes, please.")
    (ran,) = done.tool_calls
    assert ran["name"] == "schedule_appointment" and ran["result"].get("appointment_id"), ran
    assert booked() == before + 1 and done.reply == "You're booked."
