"""A request survives the turns it takes: the offline brain resumes what the caller asked for once
a slot question is answered, and a new request replaces it.

The phrasings here are neither in bench/data/dialogues_*.txt (what bench/dialogues.py reports) nor
in the tools' declared examples.
"""

from __future__ import annotations

import datetime as dt

import pytest

from voiceforge.engine import Engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(offline_engine):
    return offline_engine


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


async def test_a_booking_is_filled_over_three_turns_and_confirmed(engine):
    calls = await talk(engine, "Could I arrange a repair visit?", "customer 6", "Thursday at 2 pm", "yes please")
    assert calls[0] == calls[1] == calls[2] == []  # who, when, then the confirmation
    (booked,) = calls[3]
    assert booked["name"] == "schedule_appointment", booked
    assert booked["arguments"]["customer_id"] == 6 and booked["arguments"]["service"] == "repair"
    when = dt.datetime.fromisoformat(booked["arguments"]["starts_at"])
    assert (when.strftime("%A"), when.hour) == ("Thursday", 14)


async def test_a_new_request_replaces_the_pending_one(engine):
    calls = await talk(engine, "Where's my order?", "Actually, how many customers are there?")
    assert [c["name"] for c in calls[1]] == ["run_sql"]


async def test_a_correction_changes_only_what_it_names_and_is_confirmed_again(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    first = await pipeline.text_turn("Customer 9 here, please book me a cleaning on Tuesday at 10 am")
    assert first.reply.startswith("Just to confirm") and "Tuesday" in first.reply and "10 AM" in first.reply
    second = await pipeline.text_turn("no, Wednesday")
    assert not second.tool_calls and "Wednesday" in second.reply and "10 AM" in second.reply  # the time stays
    third = await pipeline.text_turn("hmm, make it 4 pm instead")
    assert not third.tool_calls and "Wednesday" in third.reply and "4 PM" in third.reply  # the day stays
    booked = (await pipeline.text_turn("yes"))
    (call,) = booked.tool_calls
    when = dt.datetime.fromisoformat(call["arguments"]["starts_at"])
    assert call["name"] == "schedule_appointment" and (when.strftime("%A"), when.hour) == ("Wednesday", 16)


async def test_a_plain_no_runs_nothing(engine):
    calls = await talk(engine, "please cancel appointment 6", "no")
    assert calls == [[], []]


async def test_an_unclear_request_never_ends_the_call(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    held = await pipeline.text_turn("hold on a second")
    assert not held.tool_calls and not held.ended and held.reply == "Sure, take your time.", held.reply  # waits
    unsure = await pipeline.text_turn("alright then, we're all set I guess")  # near a goodbye, not surely one
    assert not unsure.tool_calls and not unsure.ended and unsure.reply.endswith("?"), unsure.reply  # asked
    bye = await pipeline.text_turn("thanks, goodbye")
    assert [c["name"] for c in bye.tool_calls] == ["end_call"]


async def test_a_caller_is_known_by_their_own_number(engine):
    calls = await talk(engine, "what have I got booked with you?", caller="+15550000002")
    assert [(c["name"], c["arguments"]) for c in calls[0]] == [("list_appointments", {"customer_id": 2})]


async def test_a_booking_is_picked_from_the_list_read_out(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    asked = await pipeline.text_turn("I'd like to call off one of my visits")
    assert asked.reply == "Which appointment number is it?"
    listed = await pipeline.text_turn("this is Hannah Thomas")  # nobody remembers an appointment number
    assert [c["name"] for c in listed.tool_calls] == ["lookup_customer", "list_appointments"]
    assert listed.reply.endswith("Which appointment number is it?") and "2 upcoming appointments" in listed.reply
    second = listed.tool_calls[1]["result"]["appointments"][1]["appointment_id"]
    confirm = await pipeline.text_turn("the second one")
    assert confirm.reply.startswith("Just to confirm") and f"appointment {second}" in confirm.reply
    done = await pipeline.text_turn("yes")
    assert [(c["name"], c["arguments"]) for c in done.tool_calls] == [("cancel_appointment", {"appointment_id": second})]


async def test_a_request_that_names_its_item_goes_straight_to_confirming_it(engine):
    """"Cancel the installation" names the item of the list read out: no "which one?" turn, and
    the confirmation says what it is."""
    pipeline = engine.pipeline("customer_service", channel="api")
    assert (await pipeline.text_turn("I need to cancel the installation I booked")).reply == "Which appointment number is it?"
    listed = await pipeline.text_turn("customer number 3")
    assert [c["name"] for c in listed.tool_calls] == ["list_appointments"]
    installation = [a for a in listed.tool_calls[0]["result"]["appointments"] if a["service"] == "installation"]
    assert len(installation) == 1 and len(listed.tool_calls[0]["result"]["appointments"]) > 1
    number = installation[0]["appointment_id"]
    assert listed.reply.startswith("Just to confirm"), listed.reply
    assert f"appointment {number}, the installation on " in listed.reply
    done = await pipeline.text_turn("yes")
    assert [(c["name"], c["arguments"]) for c in done.tool_calls] == [("cancel_appointment", {"appointment_id": number})]


async def test_a_time_said_before_the_name_is_kept_until_the_name_comes(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    await pipeline.text_turn("I need a repair visit")
    timed = await pipeline.text_turn("Saturday at 11 would suit me")  # a time, when asked who is calling
    assert not timed.tool_calls and "name" in timed.reply, timed.reply
    named = await pipeline.text_turn("Grace Wilson")
    assert [(c["name"], c["arguments"]) for c in named.tool_calls] == [("lookup_customer", {"name": "Grace Wilson"})]
    assert named.reply.startswith("Just to confirm") and "Grace Wilson" in named.reply, named.reply
    (booked,) = (await pipeline.text_turn("yes")).tool_calls
    when = dt.datetime.fromisoformat(booked["arguments"]["starts_at"])
    assert booked["name"] == "schedule_appointment" and booked["arguments"]["customer_id"] == 12
    assert booked["arguments"]["service"] == "repair" and (when.strftime("%A"), when.hour) == ("Saturday", 11)


async def test_a_name_answering_which_appointment_lists_them_and_the_request_goes_on(engine):
    """Who the caller is, said to "which appointment?": their list is read, the request's own
    words pick the item, and the next question is the new time's."""
    pipeline = engine.pipeline("customer_service", channel="api")
    await pipeline.text_turn("can I shift my repair to another day")
    listed = await pipeline.text_turn("Daniel Thomas")
    assert [c["name"] for c in listed.tool_calls] == ["lookup_customer", "list_appointments"]
    assert listed.reply.endswith("What new day and time would you like?"), listed.reply
    repair = [a["appointment_id"] for a in listed.tool_calls[1]["result"]["appointments"] if a["service"] == "repair"]
    confirm = await pipeline.text_turn("Friday at 4 pm")
    assert confirm.reply.startswith("Just to confirm") and f"appointment {repair[0]}" in confirm.reply, confirm.reply
    (moved,) = (await pipeline.text_turn("yes")).tool_calls
    when = dt.datetime.fromisoformat(moved["arguments"]["starts_at"])
    assert moved["name"] == "reschedule_appointment" and moved["arguments"]["appointment_id"] == repair[0]
    assert (when.strftime("%A"), when.hour) == ("Friday", 16)


async def test_i_dont_know_keeps_the_request_and_asks_another_way(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    await pipeline.text_turn("could you check on something I bought")
    unsure = await pipeline.text_turn("I've forgotten my customer number")
    assert not unsure.tool_calls and unsure.reply.startswith("That's okay.") and unsure.reply.endswith("?"), unsure.reply
    named = await pipeline.text_turn("Rachel Harris")
    assert [c["name"] for c in named.tool_calls] == ["lookup_customer", "get_order_history"], named.tool_calls
    assert named.tool_calls[1]["arguments"] == {"customer_id": 30}


async def test_i_dont_know_the_appointment_number_asks_who_is_calling(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    await pipeline.text_turn("I'd like to move an appointment")
    unsure = await pipeline.text_turn("no idea, sorry")
    assert unsure.reply == "That's okay. Could you tell me your name or your customer number?", unsure.reply
    listed = await pipeline.text_turn("Carmen Walker")
    assert [c["name"] for c in listed.tool_calls] == ["lookup_customer", "list_appointments"], listed.tool_calls


async def test_a_full_name_said_on_its_own_finds_the_account(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    found = await pipeline.text_turn("Sophia White")
    assert [(c["name"], c["arguments"]) for c in found.tool_calls] == [("lookup_customer", {"name": "Sophia White"})]
    subject = await engine.pipeline("customer_service", channel="api").text_turn("tell me about Rome")
    assert not subject.tool_calls, subject.tool_calls  # a subject, not a caller


async def test_a_caller_with_one_appointment_is_not_asked_which(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    await pipeline.text_turn("I have to call off my appointment")
    listed = await pipeline.text_turn("James Jackson")
    (only,) = listed.tool_calls[-1]["result"]["appointments"]
    assert listed.reply.startswith("Just to confirm"), listed.reply
    assert f"appointment {only['appointment_id']}, the {only['service']} on " in listed.reply


async def test_a_request_read_by_meaning_goes_on_after_the_lookup_it_needed(engine):
    found = await engine.pipeline("customer_service", channel="api").text_turn(
        "I'm phoning about a parcel that hasn't come, it's Victor Miller")
    assert [(c["name"], c["arguments"]) for c in found.tool_calls] == [
        ("lookup_customer", {"name": "Victor Miller"}), ("get_order_history", {"customer_id": 17})]


async def test_a_service_named_instead_of_appointment_is_moved(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    asked = await pipeline.text_turn("Carmen Walker here, could I shift my checkup")
    assert [c["name"] for c in asked.tool_calls] == ["lookup_customer", "list_appointments"], asked.tool_calls
    assert asked.reply.endswith("What new day and time would you like?"), asked.reply


async def test_a_name_and_a_request_in_one_breath_are_both_heard(engine):
    said = await engine.pipeline("customer_service", channel="api").text_turn(
        "Grace Wilson speaking, has my stuff been posted yet")
    assert [(c["name"], c["arguments"]) for c in said.tool_calls] == [
        ("lookup_customer", {"name": "Grace Wilson"}), ("get_order_history", {"customer_id": 12})]


async def test_a_service_named_to_which_appointment_asks_who_is_calling(engine):
    pipeline = engine.pipeline("customer_service", channel="api")
    await pipeline.text_turn("I want to cancel a booking")
    who = await pipeline.text_turn("the cleaning one")
    assert not who.tool_calls and who.reply == "Sure. Could you tell me your name or your customer number?", who.reply
    confirm = await pipeline.text_turn("Sophia White")
    assert [c["name"] for c in confirm.tool_calls] == ["lookup_customer", "list_appointments"]
    assert confirm.reply.startswith("Just to confirm") and "appointment 20" in confirm.reply, confirm.reply


async def test_text_me_what_the_agent_knows_sends_that(engine):
    pipeline = engine.pipeline("customer_service", channel="api", caller="+15550000019")
    confirm = await pipeline.text_turn("could you text me your delivery costs")
    assert confirm.reply.startswith("Just to confirm") and "Delivery is free over 50 dollars" in confirm.reply, confirm.reply
    assert "+15550000019" in confirm.reply


async def test_the_state_survives_a_reconnect_and_is_described(engine):
    """A device or phone conversation that resumes (Engine.resume, as a reconnecting device does)
    keeps its open request: the state is rebuilt from the stored turns, and described for the pages."""
    first = engine.pipeline("customer_service", channel="device")
    await first.text_turn("Could someone come round to fix my boiler on Friday?")
    request = "Could someone come round to fix my boiler on Friday?"
    assert first.dialogue_state() == {"request": request, "waiting_for": "who is calling (a name or customer number)"}
    again = engine.resume(first.conversation_id, channel="device")
    assert again.dialogue_state() == first.dialogue_state()
    assert (await again.text_turn("customer 6")).tool_calls == []
    assert again.dialogue_state() == {"request": request, "waiting_for": "the time of day"}
    assert (await again.text_turn("at 10 in the morning")).tool_calls == []
    assert again.dialogue_state() == {"request": request, "waiting_for": "a yes or no"}
    (booked,) = (await again.text_turn("yes")).tool_calls
    assert booked["name"] == "schedule_appointment", booked
    assert booked["arguments"]["customer_id"] == 6 and booked["arguments"]["service"] == "repair"
    assert again.dialogue_state() == {}  # nothing left open


async def test_a_spoken_phone_dialogue_keeps_its_request_through_identification_correction_and_confirmation(
        tmp_path, speak):
    """The same dialogue state on the phone path: Piper speaks each caller turn, the call runs over
    the media stream (μ-law 8 kHz), Whisper transcribes, and the stored turns show the booking made
    only after the confirmation, with the corrected day; an out-of-scope question runs no tool."""
    from server.main import create_app
    from tests.support.servers import free_port, serve
    from voiceforge.config import load_settings
    from voiceforge.store import calls
    from voiceforge.store.db import get_database
    from voiceforge.telephony.simulator import simulate_call

    port = free_port()
    settings = load_settings(public_base_url=f"http://127.0.0.1:{port}", twilio_auth_token="dialogue-token",
                             forge_api_key="dialogue-key", forge_data_dir=tmp_path,
                             database_url=f"sqlite:///{tmp_path / 'forge.db'}")
    said = ["Could I arrange a repair visit?", "Customer number six.", "Thursday at two in the afternoon.",
            "No, Friday.", "Yes, please.", "What's the weather going to be tomorrow?"]
    with serve(create_app(settings), port=port) as base:
        result = await simulate_call(base, "dialogue-token", [speak(s) for s in said], api_key="dialogue-key",
                                     timeout_s=240)
    turns = calls.get_call(get_database(settings.database_url_resolved), result["call_sid"])["turns"]
    assert len(turns) == len(said), [t["user_text"] for t in turns]
    tools = [[c["name"] for c in t["tool_calls"]] for t in turns]
    assert tools[:4] == [[], [], [], []], list(zip([t["user_text"] for t in turns], tools, strict=True))
    assert turns[3]["assistant_text"].startswith("Just to confirm") and "Friday" in turns[3]["assistant_text"]
    (booked,) = turns[4]["tool_calls"]
    when = dt.datetime.fromisoformat(booked["arguments"]["starts_at"])
    assert booked["name"] == "schedule_appointment" and booked["arguments"]["customer_id"] == 6
    assert (when.strftime("%A"), when.hour) == ("Friday", 14)  # the day corrected, the time kept
    refusal = turns[5]["assistant_text"]
    assert tools[5] == [] and "can't" in refusal and "I can " in refusal, refusal  # honest, and says what it can do
