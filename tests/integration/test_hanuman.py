"""The storyteller's tools: the seed's contracts, progress across sessions, stories, the recitation."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import wer
from voiceforge.config import load_settings
from voiceforge.engine import Engine
from voiceforge.providers.brain import OfflineBrain
from voiceforge.store import children
from voiceforge.store.db import Database
from voiceforge.tools import ToolContext
from voiceforge.tools.hanuman import chalisa, stories

pytestmark = pytest.mark.integration
PERSONA = "hanuman_storyteller"


@pytest.fixture
def engine(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'h.db'}")
    db.migrate()
    return Engine(load_settings(forge_data_dir=tmp_path), db=db, llm=OfflineBrain())


def child(engine: Engine, years: float | None, consent: bool = True) -> int:
    dob = None if years is None else dt.date.today() - dt.timedelta(days=int(years * 365.25))
    return children.create_child(engine.db, "Arjun", dob=dob, consent=consent)["child_id"]


def pipeline(engine: Engine, child_id: int | None):  # noqa: ANN201
    return engine.pipeline(PERSONA, channel="device", child_id=child_id)


async def test_the_tools_keep_the_seeds_contracts(engine):
    registry, ctx = engine.registry, ToolContext(db=engine.db, settings=engine.settings, services=engine.services)
    taught = await registry.execute("teach_hanuman_chalisa", {"persona": "Hanuman", "step_index": 2}, ctx)
    assert set(taught.result) == {"persona", "index", "total", "title", "text", "translation", "engage",
                                  "next_step_index"}
    assert (taught.result["index"], taught.result["total"], taught.result["next_step_index"]) == (2, 43, 3)
    assert taught.result["text"].startswith("Jai Hanuman gyan gun sagar")
    story = await registry.execute("tell_a_story", {"persona": "Hanuman", "topic": "the magic mountain"}, ctx)
    assert set(story.result) == {"persona", "topic", "story", "available_topics"}
    assert story.result["topic"] == "Sanjeevani Mountain" and len(story.result["available_topics"]) == 3
    played = await registry.execute("play_hanuman_chalisa", {"persona": "Hanuman", "path": "chalisa/step-02.wav"}, ctx)
    assert set(played.result) == {"persona", "path", "audio_chunks", "sample_rate"}, played.error
    assert played.result["sample_rate"] == 22050 and played.result["audio_chunks"] > 20
    assert (engine.settings.forge_data_dir / "audio" / "chalisa" / "step-02.wav").stat().st_size > 50_000  # cached
    last = await registry.execute("teach_hanuman_chalisa", {"step_index": 42}, ctx)
    assert last.result["next_step_index"] is None and last.result["title"] == "Closing doha"
    for bad in ("../api_key", "/etc/passwd", "chalisa/step-43.wav", "chalisa/../../x.wav", "chalisa/full.mp3"):
        refused = await registry.execute("play_hanuman_chalisa", {"path": bad}, ctx)
        assert refused.error and "path" in refused.error or "steps" in refused.error, bad
    assert (await registry.execute("teach_hanuman_chalisa", {"step_index": 43}, ctx)).error


async def test_learning_resumes_where_the_child_left_off_across_sessions(engine):
    cid = child(engine, 8)
    first = pipeline(engine, cid)
    a = await first.text_turn("Can we learn the Hanuman Chalisa?")
    b = await first.text_turn("Let's do the next verse.")
    assert [t["arguments"] for t in a.tool_calls + b.tool_calls] == [{}, {}]
    assert [t["result"]["index"] for t in a.tool_calls + b.tool_calls] == [0, 1]
    later = pipeline(engine, cid)  # another press, another day: a new session
    c = await later.text_turn("Can we keep learning?")
    assert c.tool_calls[0]["result"]["index"] == 2 and "Jai Hanuman" in c.reply
    assert [v["verse_index"] for v in children.verse_progress(engine.db, cid)] == [0, 1, 2]
    assert children.interests(engine.db, cid)[0]["tag"] == "chalisa"
    again = await later.text_turn("Can we say that verse again?")  # practice: an attempt, mastery up
    assert again.tool_calls[0]["arguments"] == {"step_index": 2}, again.reply
    practised = children.verse_progress(engine.db, cid)[2]
    assert (practised["exposure_count"], practised["attempts"], practised["mastery"]) == (2, 1, 1)


async def test_stories_fit_the_childs_age_and_do_not_repeat(engine):
    small, big = child(engine, 5), child(engine, 9)
    young = await pipeline(engine, small).text_turn("Tell me a story about the ocean jump")
    older = await pipeline(engine, big).text_turn("Tell me a story about the ocean jump")
    lanka = next(s for s in stories() if s["topic"] == "Leap to Lanka")
    assert young.tool_calls[0]["result"]["story"] == lanka["young"]
    assert older.tool_calls[0]["result"]["story"] == lanka["older"]
    kid = pipeline(engine, small)
    told = [(await kid.text_turn("Tell me another story!")).tool_calls[0]["result"]["topic"] for _ in range(2)]
    assert len({"Leap to Lanka", *told}) == 3  # the two not heard yet, in turn
    heard = {s["topic"]: s["times_heard"] for s in children.story_progress(engine.db, small)}
    assert heard == {"Leap to Lanka": 1, **{t: 1 for t in told}}


async def test_nothing_is_remembered_without_consent(engine):
    cid = child(engine, 6, consent=False)
    result = await pipeline(engine, cid).text_turn("Teach me the chalisa")
    assert result.tool_calls[0]["result"]["index"] == 0
    assert children.verse_progress(engine.db, cid) == [] and children.interests(engine.db, cid) == []


CHILD_PHRASINGS = [
    ("tell me about Hanuman", "tell_a_story"),
    ("how did Hanuman get across the sea to Lanka?", "tell_a_story"),
    ("I want to hear about the magic mountain", "tell_a_story"),
    ("what's the one with the pearls", "tell_a_story"),
    ("can we learn the next verse", "teach_hanuman_chalisa"),
    ("let's practise the prayer", "teach_hanuman_chalisa"),
    ("teach me verse five", "teach_hanuman_chalisa"),
    ("start the chalisa from the beginning", "teach_hanuman_chalisa"),
    ("sing the chalisa", "play_hanuman_chalisa"),
    ("can you play the hanuman chalisa song for me", "play_hanuman_chalisa"),
    ("bye bye Hanuman", "end_call"),
]


@pytest.mark.parametrize("phrase, tool", CHILD_PHRASINGS)
async def test_the_offline_brain_understands_children(engine, phrase, tool):
    # Routing is the question here: the whole recitation need not be synthesized each time.
    engine.registry.set_fault("play_hanuman_chalisa", fail="not played in this test")
    result = await pipeline(engine, None).text_turn(phrase)
    assert [c["name"] for c in result.tool_calls] == [tool], (phrase, result.reply)


async def test_verse_numbers_and_the_beginning_are_understood(engine):
    assert (await pipeline(engine, None).text_turn("teach me verse five")).tool_calls[0]["result"]["title"] == "Verse 5"
    start = await pipeline(engine, None).text_turn("start the chalisa from the beginning")
    assert start.tool_calls[0]["result"]["index"] == 0


async def test_a_spoken_request_plays_the_recitation_after_the_reply(engine, speak):
    engine.warm_up()
    pcm, rate = speak("Can you sing verse one of the Chalisa for me?")
    result = await pipeline(engine, None).voice_turn(pcm, rate)
    assert result.tool_calls[0]["name"] == "play_hanuman_chalisa", result.user_text
    assert result.tool_calls[0]["arguments"] == {"path": "chalisa/step-02.wav"}
    recitation = result.tool_calls[0]["result"]["audio_chunks"] * 0.1  # seconds
    assert len(result.audio) / 2 / result.sample_rate > recitation  # the reply, then the recitation
    assert wer("Can you sing verse one of the Chalisa for me?", result.user_text) <= 0.25
    assert chalisa()[2]["title"] == "Verse 1"
