"""The offline brain reads requests by meaning, not only by trigger words (real all-MiniLM-L6-v2 vectors).

The phrasings here are neither the tools' declared examples nor the held-out sets in
bench/data/routing_heldout*.tsv, which the bench reports on.
"""

import tempfile
from pathlib import Path

import pytest

from voiceforge.agent.persona import load_persona
from voiceforge.providers import brain as brain_module
from voiceforge.providers import intents
from voiceforge.providers.base import ToolCall
from voiceforge.providers.brain import OfflineBrain
from voiceforge.providers.dialogue import CONFIRM_PREFIX
from voiceforge.tools import build_registry
from voiceforge.tools.business import DECLARATIONS
from voiceforge.tools.declaration import load_declarations

ASK_CUSTOMER = load_declarations(DECLARATIONS)["schedule_appointment"].parameter("customer_id").ask


@pytest.fixture(scope="module")
def tools():
    return build_registry().select(load_persona("customer_service", Path(tempfile.mkdtemp())).tools)


def reply(tools, *turns: str):  # noqa: ANN201
    """The brain's answer to a conversation given as alternating user/assistant texts."""
    messages = [{"role": "system", "content": "You are Ava, a support agent."}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return OfflineBrain()._respond(messages, tools)


def confirmed(tools, utterance: str):  # noqa: ANN201
    """The brain's tool call for ``utterance``, after a yes when it asks to confirm a booking or a text."""
    first = reply(tools, utterance)
    if isinstance(first, str) and first.startswith(CONFIRM_PREFIX):
        return reply(tools, utterance, first, "yes")
    return first


def test_a_paraphrase_no_trigger_matches_reaches_its_tool(tools):
    bare = build_registry().select([t.name for t in tools])
    for t in bare:
        t.examples = []  # the brain as it was: triggers only
    for utterance, tool in [("could someone come over and fix my heater", "schedule_appointment"),
                            ("please inform the people in the office", "notify_telegram")]:
        assert not any(t.matches(utterance) for t in tools), utterance
        assert OfflineBrain().understand(utterance, bare) is None  # triggers alone miss it
        assert OfflineBrain().understand(utterance, tools) == tool
    # Understood, the tool's own rules ask for what it still needs.
    assert reply(tools, "could someone come over and fix my heater") == ASK_CUSTOMER


def test_a_broad_trigger_gives_way_to_a_clearly_closer_meaning(tools):
    # "appointment" fires list_appointments' trigger; the request is a cancellation.
    call = confirmed(tools, "I cannot attend appointment 7 so please remove it")
    assert isinstance(call, ToolCall) and call.name == "cancel_appointment" and call.arguments == {"appointment_id": 7}


def test_callers_words_for_the_business_nouns_are_understood(tools):
    call = reply(tools, "I'd like to know whether my parcel has been sent, I'm customer 3")
    assert isinstance(call, ToolCall) and call.name == "get_order_history" and call.arguments == {"customer_id": 3}
    counted = reply(tools, "what's the number of clients with a platinum tier")
    assert isinstance(counted, ToolCall) and counted.name == "run_sql"
    assert counted.arguments == {"query": "SELECT COUNT(*) AS n FROM customers WHERE tier = 'platinum'"}


def test_an_ambiguous_request_is_asked_back_and_yes_runs_it():
    # Two tools declare the same phrasing, so a request close to it has no margin between them:
    # the brain asks about the first instead of guessing, and "yes" runs the one it asked about.
    tools = build_registry().select(["get_order_history", "list_appointments", "lookup_customer"])
    for t in tools:
        t.examples = ["I have a question about my account with you"] if t.name != "lookup_customer" else []
    offers = {OfflineBrain._clarify(t): t.name for t in tools if t.examples}
    asked = reply(tools, "I have a question about something on my account")
    assert asked in offers
    call = reply(tools, "I have a question about something on my account", asked, "yes, I'm customer 3")
    assert isinstance(call, ToolCall) and call.name == offers[asked] and call.arguments == {"customer_id": 3}
    no = reply(tools, "I have a question about something on my account", asked, "no")
    assert no == "Okay. What would you like me to do?"


def test_small_talk_is_answered_and_lists_are_short_and_spoken(tools):
    assert reply(tools, "What is my name?") == "I don't know your name yet. If you tell me, I can look up your account."
    assert reply(tools, "what's your name") == "I'm Ava, an assistant running on Forge's offline brain."
    can = reply(tools, "What can you do?")
    assert can == "I can check your orders, book or change appointments, or look up your account. What would you like?"
    assert "sql" not in can.lower()
    assert reply(tools, "thank you so much") == "You're welcome. Is there anything else I can do?"
    out_of_scope = reply(tools, "what's the capital of peru")
    assert out_of_scope.startswith("Sorry, I can't help with that here.") and "sql" not in out_of_scope.lower()


def test_the_name_is_known_once_a_tool_found_the_customer(tools):
    messages = [
        {"role": "system", "content": "You are Ava."},
        {"role": "user", "content": "customer number 4 here"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup_customer", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"result": {"customer_id": 4, "name": "Rachel Miller"}}'},
        {"role": "assistant", "content": "I found Rachel Miller."},
        {"role": "user", "content": "remind me, what is my name"},
    ]
    assert OfflineBrain()._respond(messages, tools) == "You're Rachel Miller."


def test_match_scores_are_cosines_and_the_index_is_built_once(tools):
    offered = [t for t in tools if t.examples]
    index = intents.index_for(offered)
    assert intents.index_for(offered) is index
    match = index.match("please cancel the appointment I have")
    assert match.intent == "cancel_appointment" and 0 < match.runner_up < match.score <= 1.0001 and match.confident


def test_warm_up_embeds_every_tools_examples_ahead_of_a_turn():
    from voiceforge.tools import spoken

    registry = build_registry()
    every = registry.select(registry.names())  # the storyteller's opt-in tools too
    intents._indexes.clear()
    intents._example_vectors.clear()
    OfflineBrain().warm_up(every)
    assert {spoken.canonical(e) for t in every for e in t.examples} <= set(intents._example_vectors)
    assert any(t.opt_in and t.examples for t in every)


@pytest.mark.parametrize(("utterance", "name", "arguments"), [
    # the verb decides among the appointment tools, in either order, and not by a look-alike phrase
    ("we won't make our appointment 4, please scrap it", "cancel_appointment", {"appointment_id": 4}),
    ("could you call off the repair visit number 2", "cancel_appointment", {"appointment_id": 2}),
    ("customer 3 here, I want to arrange a cleaning for Friday at 9am", "schedule_appointment", None),
    ("customer 3: could I do appointment 5 at four instead of two", "reschedule_appointment", None),
    ("customer 3 asking, is the electrician still coming on Monday", "list_appointments", {"customer_id": 3}),
    # a caller saying who they are after a greeting
    ("Hello, this is Priya Natarajan calling.", "lookup_customer", {"name": "Priya Natarajan"}),
    ("my name's Omar Haddad", "lookup_customer", {"name": "Omar Haddad"}),
    # who the caller is, said in the same breath as what they want, only names the customer
    ("can you see which bookings I've got, I'm customer 2", "list_appointments", {"customer_id": 2}),
    # a broad trigger ("appointment", "I'm customer 4") yields to a clearly closer meaning of any tool
    ("I'm customer 4 and I'm asking about something I purchased", "get_order_history", {"customer_id": 4}),
    ("how long does an appointment usually last on average", "run_sql",
     {"query": "SELECT ROUND(AVG(duration_min), 1) AS minutes FROM appointments"}),
])
def test_what_a_request_is_for_follows_its_verb(tools, utterance, name, arguments):
    call = confirmed(tools, utterance)
    assert isinstance(call, ToolCall) and call.name == name, call
    if arguments is not None:
        assert call.arguments == arguments


def test_look_alike_phrases_do_not_fire_the_wrong_appointment_tool(tools):
    brain = OfflineBrain()
    assert brain.understand("can I drop off my laptop for a repair tomorrow", tools) != "cancel_appointment"
    assert brain.understand("I might not make my appointment 6 on time", tools) != "schedule_appointment"
    assert brain.understand("what was my biggest order last month", tools) != "run_sql"  # the caller's own
    assert reply(tools, "hello? can you hear me?") == "Yes, I can hear you. How can I help?"


def test_the_linear_head_tells_apart_what_the_nearest_examples_blur(tools, monkeypatch):
    # "visit" is closest to "when's my repair visit" (list); the head has learned that asking
    # for one to be sorted out is booking.
    utterance = "please sort me out a visit for my broken oven"
    monkeypatch.setattr(intents, "HEAD_WEIGHT", 0.0)
    assert OfflineBrain().understand(utterance, tools) == "list_appointments"
    monkeypatch.undo()
    assert OfflineBrain().understand(utterance, tools) == "schedule_appointment"


def test_say_that_again_repeats_the_last_reply_and_never_ends_the_call(tools):
    said = "Your next appointment is on Friday at 10 a.m."
    for ask in ("sorry, could you say that again", "pardon?", "I didn't catch that", "what did you just say"):
        assert OfflineBrain().understand(ask, tools) == "small_talk:repeat", ask
        assert reply(tools, "when is my appointment, I'm customer 2", said, ask) == said
    assert reply(tools, "come again?") == "I haven't said anything yet. How can I help?"
    # a missing parcel, or a verse to practise, is not a request to repeat the last reply
    assert OfflineBrain().understand("I ordered a lamp and didn't get it", tools) == "get_order_history"
    assert brain_module.small_talk_kind("Can we say that verse again?") is None


@pytest.mark.parametrize(("utterance", "name"), [
    ("could you put me down for Thursday at ten, I'm customer 3", "schedule_appointment"),
    ("customer 3 here, Tuesday doesn't work for me anymore, can we do Thursday", "reschedule_appointment"),
    ("who placed the most orders", "run_sql"),
])
def test_common_ways_to_book_move_and_rank_are_understood(tools, utterance, name):
    assert OfflineBrain().understand(utterance, tools) == name


def test_a_tool_that_declares_say_it_again_keeps_it():
    storyteller = build_registry().select(load_persona("hanuman_storyteller", Path(tempfile.mkdtemp())).tools)
    assert OfflineBrain().understand("can you say it again", storyteller) == "teach_hanuman_chalisa"


def test_the_agents_name_only_addresses_it():
    from voiceforge.providers.brain import without_vocative

    assert without_vocative("Hanuman, tell me a story", "Hanuman") == "tell me a story"
    assert without_vocative("thank you Hanuman!", "Hanuman") == "thank you"
    assert without_vocative("tell me about Hanuman", "Hanuman") == "tell me about Hanuman"  # the subject
    assert without_vocative("Hanuman's tail caught fire", "Hanuman") == "Hanuman's tail caught fire"
    assert without_vocative("Hanuman", "Hanuman") == "Hanuman"  # nothing else was said
    assert without_vocative("thanks Ava", None) == "thanks Ava"


def test_a_child_is_understood_by_the_storyteller():
    storyteller = build_registry().select(load_persona("hanuman_storyteller", Path(tempfile.mkdtemp())).tools)
    system = {"role": "system", "content": "You are Hanuman, a gentle storyteller for children."}

    def answer(text: str):  # noqa: ANN202
        return OfflineBrain()._respond([system, {"role": "user", "content": text}], storyteller)

    greeting = answer("hello hanuman")
    assert greeting == "Hi, I'm Hanuman. How can I help you today?", greeting  # not a story
    assert answer("I love you") == "That's very kind of you, thank you! Shall I tell you a story?"
    for text, tool in [("tell me about hanuman", "tell_a_story"),
                       ("tell me the one where he burns the city with his tail", "tell_a_story"),
                       ("can we do the next bit", "teach_hanuman_chalisa"),
                       ("put on the chalisa music", "play_hanuman_chalisa")]:
        call = answer(text)
        assert isinstance(call, ToolCall) and call.name == tool, (text, call)
    assert answer("let's start from the beginning").arguments == {"step_index": 0}
    # thanks after a verse that ends in a question is thanks, not the request before it again
    verse = [system, {"role": "user", "content": "say it again"},
             {"role": "assistant", "content": "Shri Guru charan saroj raj. Can you say it with me?"},
             {"role": "user", "content": "thank you hanuman"}]
    assert OfflineBrain()._respond(verse, storyteller) == "You're welcome. Is there anything else I can do?"
