"""The storyteller's per-child memory and a conversation's rolling summary, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.brain import OfflineBrain
from voiceforge.records import TurnRecord
from voiceforge.store import children, conversations
from voiceforge.store import devices as store

pytestmark = pytest.mark.integration


def test_progress_interests_and_context_freshness(database):
    child = children.create_child(database, "Arjun", dob=dt.date(2019, 4, 2), consent=True)
    cid = child["child_id"]
    _, etag = children.context(database, cid)
    children.record_verse(database, cid, 1)
    children.record_verse(database, cid, 1, attempted=True, mastery_delta=3)
    children.record_verse(database, cid, 2, mastery_delta=9)  # capped at 5
    assert [(v["verse_index"], v["exposure_count"], v["mastery"]) for v in children.verse_progress(database, cid)] == [
        (1, 2, 3), (2, 1, 5)]
    children.record_story(database, cid, "Leap to Lanka", "started", position=2)
    children.record_story(database, cid, "Leap to Lanka", "completed")
    assert children.story_progress(database, cid)[0] | {"last_heard": None} == {
        "topic": "Leap to Lanka", "status": "completed", "times_heard": 2, "last_heard": None, "position": 0}
    with pytest.raises(store.DeviceError):
        children.record_story(database, cid, "Leap to Lanka", "skimmed")
    for tag in ("monkeys", "space", "monkeys"):
        children.bump_interest(database, cid, tag)
    assert children.interests(database, cid) == [{"tag": "monkeys", "weight": 2.0}, {"tag": "space", "weight": 1.0}]
    body, fresh = children.context(database, cid)
    assert fresh != etag and body["next_verse"] == 3 and body["verses_mastered"] == 1
    assert body["stories_heard"] == ["Leap to Lanka"] and body["interests"][0]["tag"] == "monkeys"


def test_nothing_is_kept_without_consent(database):
    cid = children.create_child(database, "Meera")["child_id"]
    assert children.record_verse(database, cid, 1) is None
    assert children.record_story(database, cid, "Ring of Devotion") is None
    children.bump_interest(database, cid, "music")
    children.log_interaction(database, cid, "dev-1", dt.datetime.now(dt.UTC), 4.2, "chat")
    assert (children.verse_progress(database, cid), children.story_progress(database, cid), children.interests(database, cid),
            children.interactions(database, cid)) == ([], [], [], [])


def test_forgetting_a_child_removes_every_row_and_file(database, tmp_path):
    cid = children.create_child(database, "Kabir", consent=True)["child_id"]
    other = children.create_child(database, "Zoya", consent=True)["child_id"]
    for child in (cid, other):
        children.record_verse(database, child, 1)
        children.record_story(database, child, "Sanjeevani Mountain")
        children.bump_interest(database, child, "mountains")
        children.log_interaction(database, child, "dev-1", dt.datetime.now(dt.UTC), 3.0, "story")
    device, _ = store.register_device(database, "bedroom", "hanuman_storyteller", child_id=cid)
    conv = conversations.create_conversation(database, "device", "hanuman_storyteller")
    store.attach_conversation(database, device["device_id"], conv, cid)
    recordings = tmp_path / "recordings"
    conversations.save_turn(database, conv, TurnRecord("hello", "namaste", user_audio=(b"\x00\x01" * 800, 16000),
                                                       audio=b"\x00\x02" * 800, sample_rate=16000), recordings)
    assert any((recordings / str(conv)).iterdir())
    removed = children.forget_child(database, cid, recordings)
    assert removed == {"conversations": 1, "recording_folders": 1}
    assert not (recordings / str(conv)).exists()
    with database.engine.connect() as c:
        for table, column in (("child_profiles", "id"), ("interests", "child_id"), ("chalisa_progress", "child_id"),
                              ("story_progress", "child_id"), ("interactions", "child_id"), ("conversations", "child_id")):
            assert c.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {column} = :c"), {"c": cid}).scalar() == 0, table
        assert c.execute(text("SELECT COUNT(*) FROM turns WHERE conversation_id = :c"), {"c": conv}).scalar() == 0
    assert store.get_device(database, device["device_id"])["child_id"] is None
    assert children.verse_progress(database, other) and children.interactions(database, other)  # the other child is intact


def test_device_tokens_are_hashed_and_revocable(database):
    device, token = store.register_device(database, "kitchen", "hanuman_storyteller")
    with database.engine.connect() as c:
        stored = c.execute(text("SELECT token_hash FROM devices")).scalar()
    assert token not in stored and stored == store.hash_token(token)
    assert store.authenticate(database, token)["device_id"] == device["device_id"]
    assert store.authenticate(database, token + "x") is None
    store.revoke_device(database, device["device_id"])
    assert store.authenticate(database, token) is None
    with pytest.raises(store.DeviceError):
        store.register_device(database, "again", "hanuman_storyteller", device_id=device["device_id"])


async def test_a_resumed_conversation_keeps_its_last_turns_and_a_rolling_summary(database):
    engine = Engine(load_settings(), db=database, llm=OfflineBrain())
    pipeline = engine.pipeline("friendly_guide", channel="device")
    for i in range(11):
        await pipeline.text_turn(f"Hello number {i}")
    conversation_id = pipeline.conversation_id
    stored = conversations.history(database, conversation_id, last=8)
    assert [u for u, _ in stored.turns] == [f"Hello number {i}" for i in range(3, 11)]
    assert "Hello number 0" in stored.summary and "Hello number 2" in stored.summary
    resumed = engine.resume(conversation_id, channel="device")
    messages = resumed.messages("SYSTEM")
    assert "Hello number 0" in messages[0]["content"]  # the summary, in the system message
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == [f"Hello number {i}" for i in range(3, 11)]


async def test_a_resumed_conversation_keeps_what_its_tools_found(database):
    """The customer a tool identified before the conversation was resumed is still known after it."""
    from voiceforge.store import business, mockdata

    engine = Engine(load_settings(), db=database, llm=OfflineBrain())
    mockdata.generate(database, 40)
    first = engine.pipeline("customer_service", channel="api")
    await first.text_turn("What appointments does customer 3 have?")
    resumed = engine.resume(first.conversation_id, channel="api")
    answer = await resumed.text_turn("Do I have any appointments?")
    assert [c["name"] for c in answer.tool_calls] == ["list_appointments"], answer.reply
    assert answer.tool_calls[0]["arguments"] == {"customer_id": 3}
    name = business.find_customers(database, customer_id=3)[0]["name"]
    assert answer.reply.startswith(name)
    cold = await engine.pipeline("customer_service", channel="api").text_turn("Do I have any appointments?")
    assert not cold.tool_calls and "customer number" in cold.reply  # without that context it must ask


def test_the_migrations_match_the_models(database):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from voiceforge.store.models import Base

    with database.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
