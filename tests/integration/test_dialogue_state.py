"""A request survives the turns it takes: the offline brain resumes what the caller asked for once
a slot question is answered, and a new request replaces it.

The phrasings here are neither in bench/data/dialogues_*.txt (what bench/dialogues.py reports) nor
in the tools' declared examples.
"""

from __future__ import annotations

import datetime as dt

import pytest

from voiceforge.config import load_settings
from voiceforge.engine import Engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dialogue")
    eng = Engine(load_settings(forge_data_dir=folder, database_url=f"sqlite:///{folder / 'd.db'}"))
    eng.ensure_mock_data()
    return eng


async def talk(engine: Engine, *turns: str, caller: str | None = None) -> list[list[dict]]:
    """Each caller turn as typed text in one new conversation; the tool calls of each turn."""
    pipeline = engine.pipeline("customer_service", channel="api", caller=caller)
    return [(await pipeline.text_turn(text)).tool_calls for text in turns]


async def test_an_identification_answer_resumes_the_request(engine):
    calls = await talk(engine, "Is my delivery on its way yet?", "my customer number is 12")
    assert calls[0] == []  # asked who is calling
    assert [(c["name"], c["arguments"]) for c in calls[1]] == [("get_order_history", {"customer_id": 12})]


async def test_a_name_is_looked_up_and_then_the_request_runs(engine):
    calls = await talk(engine, "I'd like to go over my bookings", "this is Grace Wilson")
    assert [c["name"] for c in calls[1]] == ["lookup_customer", "list_appointments"]
    assert calls[1][1]["arguments"] == {"customer_id": 12}


async def test_a_booking_is_filled_over_three_turns(engine):
    calls = await talk(engine, "Could I arrange a repair visit?", "customer 6", "Thursday at 2 pm")
    assert calls[0] == [] and calls[1] == []  # who, then when
    (booked,) = calls[2]
    assert booked["name"] == "schedule_appointment", booked
    assert booked["arguments"]["customer_id"] == 6 and booked["arguments"]["service"] == "repair"
    when = dt.datetime.fromisoformat(booked["arguments"]["starts_at"])
    assert (when.strftime("%A"), when.hour) == ("Thursday", 14)


async def test_a_new_request_replaces_the_pending_one(engine):
    calls = await talk(engine, "Where's my order?", "Actually, how many customers are there?")
    assert [c["name"] for c in calls[1]] == ["run_sql"]
