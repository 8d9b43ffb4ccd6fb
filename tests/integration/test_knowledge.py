"""A persona's knowledge: the offline brain answers questions about its facts by meaning, leaves
tool requests to the tools, says plainly what it does not know, and an LLM gets the same facts.

None of the questions here is in bench/data/knowledge_*.tsv (what bench/knowledge.py reports,
with the misses: a question that shares its words with a tool's requests, such as "till when can
I drop by on a Saturday", still goes to the tool).
"""

from __future__ import annotations

import pytest

from voiceforge.agent import knowledge
from voiceforge.agent.persona import PersonaError, reset_persona, save_persona_edits
from voiceforge.engine import Engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(offline_engine):
    return offline_engine


async def ask(engine: Engine, text: str, persona: str = "customer_service"):  # noqa: ANN201
    return await engine.pipeline(persona, channel="api", persist=False).text_turn(text)


async def test_questions_about_the_shop_are_answered_from_its_facts(engine):
    hours = await ask(engine, "What time do you shut on Saturdays?")
    assert hours.reply == "We are open from 9 am to 6 pm, Monday to Saturday, and closed on Sundays." and not hours.tool_calls
    abroad = await ask(engine, "Will you post an order to Spain?")
    assert "ship to most of Europe" in abroad.reply and not abroad.tool_calls


async def test_tool_requests_and_unknowns_are_not_answered_from_facts(engine):
    order = await ask(engine, "Where has my delivery got to?")  # "delivery" is in two facts
    assert order.reply == "Sure. Could you tell me your name or your customer number?", order.reply
    booking = await ask(engine, "Book me in for a checkup on Saturday at 10, I'm customer 3.")
    assert booking.reply.startswith("Just to confirm, shall I "), booking.reply
    weather = await ask(engine, "Is it going to rain this afternoon?")
    assert weather.reply.startswith("Sorry, I can't help with that here.") and not weather.tool_calls
    assert not any(e.answer in weather.reply for e in engine.persona("customer_service").knowledge)


async def test_a_persona_without_facts_admits_it_does_not_know(engine):
    reply = await ask(engine, "What time do you shut on Saturdays?", persona="calm_concierge")
    assert not reply.tool_calls and "9 am" not in reply.reply


async def test_edited_facts_apply_to_the_next_conversation(engine):
    data = engine.settings.forge_data_dir
    facts, faq = knowledge.from_lines("", "Is there parking? | Yes, free parking behind the shop for an hour.")
    save_persona_edits(data, "customer_service", {"facts": facts, "faq": faq})
    try:
        parking = await ask(engine, "Is there somewhere to park?")
        assert parking.reply == "Yes, free parking behind the shop for an hour.", parking.reply
        hours = await ask(engine, "What time do you shut on Saturdays?")
        assert "9 am" not in hours.reply  # the edit replaced the shipped facts
    finally:
        reset_persona(data, "customer_service")
    with pytest.raises(PersonaError, match="at most 600"):
        save_persona_edits(data, "customer_service", {"facts": ["x" * 601]})
    with pytest.raises(knowledge.KnowledgeError, match="question \\| answer"):
        knowledge.from_lines("", "Is there parking? Yes.")


async def test_an_llm_gets_the_facts_in_its_system_prompt(oai, tmp_path):
    from tests.integration.test_openai_providers import keyed

    server, url = oai
    engine = Engine(keyed(url, database_url=f"sqlite:///{tmp_path / 'f.db'}", stt_provider="whisper",
                          tts_provider="piper"))
    server.chat_script.append({"text": "We close at 6 pm."})
    await engine.pipeline("customer_service").text_turn("When do you close?")
    system = server.requests[-1]["json"]["messages"][0]["content"]
    assert knowledge.HEADER in system
    assert "- We are open from 9 am to 6 pm, Monday to Saturday, and closed on Sundays." in system
    assert "- Q: Do you ship abroad? A: Yes, we ship to most of Europe and North America" in system
    assert [e.answer for e in knowledge.parse(system)] == [e.answer for e in engine.persona("customer_service").knowledge]
