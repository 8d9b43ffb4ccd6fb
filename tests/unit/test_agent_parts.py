"""Sentence splitting, memory, the tool registry, spoken-argument parsing, settings."""

import datetime as dt
import json
from typing import Literal

import pytest

from voiceforge.agent.memory import ConversationMemory
from voiceforge.agent.sentences import SentenceSplitter, split_sentences
from voiceforge.config import ConfigError, load_settings
from voiceforge.providers.base import ToolCall
from voiceforge.providers.registry import resolve
from voiceforge.tools import spoken
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry, schema_for

pytestmark = pytest.mark.unit


def test_sentences_stream_out_as_they_complete():
    s = SentenceSplitter()
    assert s.push("Hello there, Dr. Smith is") == []
    assert s.push(" in. Your order shipped!") == ["Hello there, Dr. Smith is in."]
    assert s.push(" It costs $12.50 today") == ["Your order shipped!"]
    assert s.flush() == ["It costs $12.50 today"]


def test_the_first_piece_may_end_at_a_clause_so_speech_starts_sooner():
    s = SentenceSplitter(first_clause_chars=20)
    assert s.push("Customer 3 is Maria") == []
    assert s.push(" Lopez, a gold member since 2021. Her email,") == ["Customer 3 is Maria Lopez,",
                                                                    "a gold member since 2021."]
    assert s.push(" phone and address are on file.") == []  # later sentences end at their full stop
    assert s.flush() == ["Her email, phone and address are on file."]
    # A short lead-in ("Sorry,") or a first sentence that ends before a long-enough clause stays whole.
    s = SentenceSplitter(first_clause_chars=20)
    assert s.push("Sorry, I cannot. I can check orders, or book one. ") == ["Sorry, I cannot.",
                                                                           "I can check orders, or book one."]


def test_split_sentences_whole_text():
    # "Okay?" is under min_chars, so it joins the next sentence rather than becoming a clip of its own
    assert split_sentences("One moment please. Okay? Fine") == ["One moment please.", "Okay? Fine"]


def test_memory_folds_old_turns_at_user_boundaries():
    m = ConversationMemory(max_turns=2)
    for i in range(4):
        m.add_user(f"question {i}")
        call = ToolCall(id=f"c{i}", name="lookup_customer", arguments={})
        m.add_assistant("", [call])
        m.add_tool_result(call.id, "{}")
        m.add_assistant(f"answer {i}")
    msgs = m.messages("SYSTEM")
    assert msgs[0]["role"] == "system" and "question 0" in msgs[0]["content"] and "question 1" in msgs[0]["content"]
    assert [x["content"] for x in msgs if x["role"] == "user"] == ["question 2", "question 3"]
    assert msgs[1]["role"] == "user"  # never starts with an orphaned tool message


def sample_tool(ctx: ToolContext, customer_id: int, mode: Literal["a", "b"] = "a", note: str | None = None) -> dict:
    """Do a thing for a customer.

    Longer text that is not part of the description.

    Args:
        customer_id: the numeric id.
        mode: which mode,
            continued on a second line.
        note: optional note.
    """
    return {"id": customer_id, "mode": mode}


def test_schema_is_derived_from_hints_and_docstring():
    description, schema = schema_for(sample_tool)
    assert description == "Do a thing for a customer."
    assert schema["required"] == ["customer_id"]
    assert schema["properties"]["customer_id"] == {"type": "integer", "description": "the numeric id."}
    assert schema["properties"]["mode"]["enum"] == ["a", "b"]
    assert schema["properties"]["mode"]["description"] == "which mode, continued on a second line."
    assert schema["properties"]["note"]["type"] == "string"


def test_untyped_parameter_is_refused():
    def bad(ctx, x):  # noqa: ANN001
        """Bad."""

    with pytest.raises(TypeError, match="type hint"):
        schema_for(bad)


async def test_registry_validates_coerces_and_injects_faults():
    reg = ToolRegistry()
    reg.add(sample_tool)
    ctx = ToolContext(db=None, settings=None)
    ok = await reg.execute("sample_tool", {"customer_id": "7"}, ctx)
    assert ok.ok and ok.result == {"id": 7, "mode": "a"}
    assert (await reg.execute("sample_tool", {}, ctx)).error == "sample_tool needs: customer_id"
    assert "one of" in (await reg.execute("sample_tool", {"customer_id": 1, "mode": "z"}, ctx)).error
    assert "unknown argument" in (await reg.execute("sample_tool", {"customer_id": 1, "x": 1}, ctx)).error
    assert "no tool" in (await reg.execute("nope", {}, ctx)).error
    reg.set_fault("sample_tool", delay_ms=50, fail="the CRM is down")
    failed = await reg.execute("sample_tool", {"customer_id": 1}, ctx)
    assert failed.error == "the CRM is down" and failed.duration_ms >= 50
    assert json.loads(failed.for_llm()) == {"error": "the CRM is down"}
    reg.set_fault("sample_tool")
    assert (await reg.execute("sample_tool", {"customer_id": 1}, ctx)).ok


async def test_unexpected_exceptions_become_a_generic_error():
    def boom(ctx: ToolContext) -> None:
        """Boom."""
        raise RuntimeError("secret detail")

    def plain(ctx: ToolContext) -> None:
        """Plain."""
        raise ToolError("shown to the model")

    reg = ToolRegistry()
    reg.add(boom)
    reg.add(plain)
    ctx = ToolContext(db=None, settings=None)
    assert (await reg.execute("boom", {}, ctx)).error == "the boom tool failed unexpectedly"
    assert (await reg.execute("plain", {}, ctx)).error == "shown to the model"


@pytest.mark.parametrize(
    "text, expected",
    [("customer 12", 12), ("customer number seven", 7), ("customer forty-two", 42), ("account id 3", 3),
     ("customer twenty one", 21), ("the customer", None)],
)
def test_spoken_numbers(text, expected):
    assert spoken.number_after(text, "customer", "account") == expected


@pytest.mark.parametrize(
    "text, expected",
    [("Can you look up the order history for Alice Johnson?", "Alice Johnson"),
     ("my name is brian smith and my zip is 12345", "Brian Smith"),
     ("Where is my order?", None)],
)
def test_spoken_names(text, expected):
    assert spoken.name_in(text) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [("isabel white", {"name": "Isabel White"}),  # typed in lower case, still a name
     ("it's Sophia Taylor, T A Y L O R", {"name": "Sophia Taylor"}),
     ("number nine", {"customer_id": 9}),
     ("could somebody fix it this week", {}),  # a sentence in lower case names nobody
     ("Friday at 10", {})],
)
def test_an_answer_to_who_is_calling(answer, expected):
    assert spoken.answer_ref(answer) == expected


def test_times_said_by_the_clock_and_names_after_its():
    now = dt.datetime(2026, 11, 23, 13, 0)  # a Monday
    assert spoken.when_in("Wednesday, say 4 o'clock", now) == "2026-11-25T16:00"
    assert spoken.when_in("tomorrow at ten o clock", now) == "2026-11-24T10:00"
    assert spoken.customer_ref("I rang about a refund last week, it's Rachel Harris", {}) == {"name": "Rachel Harris"}
    assert spoken.customer_ref("it's Friday Morning I need", {}) == {}  # days are no names


def test_a_greeting_before_a_request_is_not_what_is_answered():
    from voiceforge.providers.brain import without_preamble

    assert without_preamble("hello, um, so my order never came") == "my order never came"
    assert without_preamble("hi there") == "hi there"  # a greeting alone stays a greeting
    assert without_preamble("yes please") == "yes please"


def test_a_list_item_is_said_with_what_it_is():
    item = {"appointment_id": 4, "service": "repair", "starts_at": "2026-12-16T14:00", "duration_min": 60}
    assert spoken.describe_item(item) == "the repair on Wednesday, December 16 at 2 PM"
    assert spoken.describe_item({"order_id": 3}) is None


def test_spoken_dates():
    now = dt.datetime(2026, 11, 23, 13, 0)  # a Monday
    assert spoken.when_in("tomorrow at 10 am", now) == "2026-11-24T10:00"
    assert spoken.when_in("on Friday at 3", now) == "2026-11-27T15:00"
    assert spoken.when_in("December 3rd at 2:30 pm", now) == "2026-12-03T14:30"
    assert spoken.when_in("January 5th", now) == "2027-01-05T09:00"
    assert spoken.when_in("no time here", now) is None
    # times said in words, as callers say them and Whisper sometimes writes them
    assert spoken.when_in("friday at four pm", now) == "2026-11-27T16:00"
    assert spoken.when_in("tomorrow at four thirty", now) == "2026-11-24T16:30"
    assert spoken.when_in("half past ten on Monday", now) == "2026-11-30T10:30"
    assert spoken.when_in("one more thing about Friday", now) == "2026-11-27T09:00"


def test_settings_name_the_bad_variable():
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        load_settings(openai_base_url="localhost:11434")
    with pytest.raises(ConfigError, match="TWILIO_PHONE_NUMBER"):
        load_settings(twilio_phone_number="12")
    with pytest.raises(ConfigError, match="FORGE_TOOL_DELAY_MS"):
        load_settings(forge_tool_delay_ms=-5)


def test_auto_providers_follow_the_key(monkeypatch):
    offline = load_settings()
    assert [resolve(k, offline) for k in ("stt", "llm", "tts")] == ["whisper", "offline", "piper"]
    keyed = load_settings(openai_api_key="sk-test")
    assert [resolve(k, keyed) for k in ("stt", "llm", "tts")] == ["openai"] * 3
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve("llm", load_settings(llm_provider="openai"))
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        resolve("llm", load_settings(llm_provider="openai", use_azure=True))
    monkeypatch.setenv("PHONE_NUMBER_FROM", "+1 415 555 0100")
    assert load_settings().twilio_phone_number == "+14155550100"


def test_missing_twilio_settings_are_listed():
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER"):
        load_settings().require_twilio()


def test_postgres_urls_get_the_psycopg_driver():
    s = load_settings(database_url="postgres://u:p@localhost/forge")
    assert s.database_url_resolved == "postgresql+psycopg://u:p@localhost/forge"


def test_env_sample_lists_every_setting():
    from pathlib import Path

    from voiceforge.config import Settings

    sample = (Path(__file__).resolve().parents[2] / ".env.sample").read_text()
    listed = {line.split("=", 1)[0] for line in sample.splitlines() if "=" in line and not line.startswith("#")}
    assert {name.upper() for name in Settings.model_fields} <= listed
