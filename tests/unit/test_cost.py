"""Prices, computed by hand from the table in voiceforge/cost.py."""

from __future__ import annotations

import pytest

from voiceforge.cost import PriceTable, Usage, format_usd, twilio_bills

pytestmark = pytest.mark.unit


def test_a_cloud_turn_priced_per_stage():
    table = PriceTable()
    usage = Usage(stt_audio_s=90, llm_input_tokens=1200, llm_output_tokens=300, tts_characters=1000)
    cost = table.turn(usage, "openai-stt:gpt-4o-mini-transcribe", "openai-llm:gpt-4o-mini", "openai-tts:tts-1")
    assert cost.stt == pytest.approx(1.5 * 0.003)  # 1.5 minutes at $0.003 a minute
    assert cost.llm == pytest.approx(1200 * 0.15e-6 + 300 * 0.60e-6)
    assert cost.tts == pytest.approx(1000 * 15e-6)  # $15 per million characters
    assert cost.total == pytest.approx(0.0045 + 0.00036 + 0.015)
    assert cost.to_json()["total"] == pytest.approx(0.01986)


def test_local_providers_are_free_and_an_unknown_model_is_not_silently_free():
    table = PriceTable()
    usage = Usage(stt_audio_s=60, llm_input_tokens=500, tts_characters=300)
    assert table.turn(usage, "whisper:", "offline:", "piper:").total == 0
    cost = table.turn(usage, "whisper:", "openai-llm:llama3.2", "piper:")
    assert cost.total == 0 and cost.unpriced == ["openai-llm:llama3.2"]
    assert format_usd(0) == "$0 (local)" and format_usd(None) == "no price"


def test_overrides_and_telephony():
    table = PriceTable('{"openai-llm:llama3.2": {"per_1m_input_tokens": 1, "per_1m_output_tokens": 2},'
                       ' "twilio:voice": {"per_minute": 0.02}}')
    cost = table.turn(Usage(llm_input_tokens=1_000_000, llm_output_tokens=500_000), "whisper:",
                      "openai-llm:llama3.2", "piper:")
    assert cost.total == pytest.approx(2.0)
    assert table.call(61) == pytest.approx(2 * 0.02)  # billed per started minute
    assert table.call(0) == 0 and table.sms(3) == pytest.approx(3 * 0.0083)
    with pytest.raises(ValueError, match="FORGE_PRICES"):
        PriceTable("{not json")
    with pytest.raises(ValueError, match="object of numbers"):
        PriceTable({"x": {"per_minute": "cheap"}})


def test_spent_prices_only_what_twilio_carried():
    prices = PriceTable()
    spent = prices.spent(0.002, [30.0, 61.0], 2)  # two billed calls: 1 and 2 started minutes
    assert spent.calls == pytest.approx(3 * 0.014) and spent.sms == pytest.approx(2 * 0.0083)
    assert spent.total == pytest.approx(0.002 + 3 * 0.014 + 2 * 0.0083)
    assert prices.spent(0.0).total == 0.0 and format_usd(prices.spent(0.0).total) == "$0 (local)"
    assert twilio_bills("AC" + "1" * 32, "AC" + "1" * 32)
    assert not twilio_bills("AC" + "0" * 32, "AC" + "1" * 32)  # a simulator's webhook
    assert not twilio_bills("AC" + "0" * 32, None)  # no Twilio account configured: nothing is billed


def test_a_failed_turn_is_counted_and_left_out_of_the_percentiles():
    from forge.compare import StyleRun

    run = StyleRun("phone", turns=[
        {"v2v_ms": 600.0, "cost_usd": 0.0, "user_s": 2.0, "agent_s": 2.0},
        {"v2v_ms": 9000.0, "error": "LLM timed out", "cost_usd": 0.0, "user_s": 2.0, "agent_s": 1.0},
        {"v2v_ms": 800.0, "cost_usd": 0.0, "user_s": 2.0, "agent_s": 2.0}])
    summary = run.summary()
    assert summary["failed"] == 1 and summary["turns"] == 3
    assert summary["v2v_p50_ms"] == 700.0 and summary["v2v_p95_ms"] <= 800.0
    assert summary["cost_per_turn_usd"] == 0.0  # a simulated call: no Twilio minutes


def test_wer_counts_a_word_error_not_a_spelling_of_the_same_words():
    from voiceforge.scoring import wer

    assert wer("Where is my order? It has not arrived yet.", "Where's my order? It hasn't arrived yet.") == 0
    assert wer("I need four at 3 p.m.", "I need 4 at three PM") == 0
    assert wer("Let us not go.", "Let's not go.") == 0
    # a possessive is not "is", and a real substitution still counts
    assert wer("Laura is here", "Laura's here") == 2 / 3
    assert wer("Can you look up the customer named Laura Garcia?",
               "Can you look up the customer name for Garcia?") == 2 / 9
