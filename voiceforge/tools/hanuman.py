"""The Hanuman storyteller's tools, with the seed's JSON contracts exactly.

- ``teach_hanuman_chalisa(persona, step_index)`` → persona, index, total, title, text,
  translation, engage, next_step_index: one step of the Chalisa (two opening dohas, forty
  verses, the closing doha: 43 steps, 0-based), resuming where the child left off.
- ``tell_a_story(persona, topic)`` → persona, topic, story, available_topics: one of the three
  stories, in the telling for the child's age, the least recently heard when no topic fits.
- ``play_hanuman_chalisa(persona, path)`` → persona, path, audio_chunks, sample_rate: a
  recitation from the audio folder (synthesized once with the TTS and cached), which the turn
  pipeline plays after the reply.

Data: ``prompts/hanuman/chalisa.json`` (Tulsidas, public domain; the translations are Forge's)
and ``prompts/hanuman/stories.json`` (three short original stories). Progress, interests and
story history go to the child's memory (only with a parent's consent).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import re
from pathlib import Path
from typing import Any

from voiceforge.audio.codecs import AudioFormatError, unwrap_wav, wrap_wav
from voiceforge.config import ROOT
from voiceforge.store import children
from voiceforge.tools import spoken
from voiceforge.tools.registry import ToolContext, ToolError, ToolRegistry

DATA = ROOT / "prompts" / "hanuman"
YOUNG_UNTIL = 7
"""Children younger than this (years) hear the short telling of a story."""
CHUNK_MS = 100
"""``audio_chunks`` counts chunks of this many ms, the size the pipeline streams."""


@functools.cache
def chalisa() -> list[dict[str, str]]:
    """The 43 steps of the Chalisa: title, text, translation, engage."""
    return json.loads((DATA / "chalisa.json").read_text())["verses"]


@functools.cache
def stories() -> list[dict[str, Any]]:
    """The stories: topic, keywords, and a young and an older telling."""
    return json.loads((DATA / "stories.json").read_text())["stories"]


def _age(ctx: ToolContext) -> int | None:
    if ctx.child_id is None:
        return None
    child = children.get_child(ctx.db, ctx.child_id)
    if not child or not child["dob"]:
        return None
    born, today = dt.date.fromisoformat(child["dob"]), dt.date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def teach_hanuman_chalisa(ctx: ToolContext, persona: str = "Hanuman", step_index: int | None = None) -> dict[str, Any]:
    """Teach the Hanuman Chalisa one verse at a time, with what it means and a question for the child.

    Leave step_index out to continue where the child left off.

    Args:
        persona: the storyteller's name.
        step_index: the step to teach, 0 to 42 (0 and 1 are the opening dohas, 2 is verse 1).
    """
    steps = chalisa()
    if step_index is None:
        step_index = ctx.state.get("chalisa_next")
        if step_index is None and ctx.child_id is not None:
            done = [v["verse_index"] for v in children.verse_progress(ctx.db, ctx.child_id)]
            step_index = max(done) + 1 if done else 0
        step_index = (step_index or 0) % len(steps)
    if not 0 <= step_index < len(steps):
        raise ToolError(f"step_index must be between 0 and {len(steps) - 1}")
    step = steps[step_index]
    # Asking for the step just taught again is practice: an attempt, and mastery goes up by one.
    practised = ctx.state.get("chalisa_last") == step_index
    ctx.state["chalisa_last"] = step_index
    if ctx.child_id is not None:
        children.record_verse(ctx.db, ctx.child_id, step_index, attempted=practised, mastery_delta=int(practised))
        children.bump_interest(ctx.db, ctx.child_id, "chalisa", 0.5)
    ctx.state["chalisa_next"] = step_index + 1 if step_index + 1 < len(steps) else 0
    return {"persona": persona, "index": step_index, "total": len(steps), "title": step["title"],
            "text": step["text"], "translation": step["translation"], "engage": step["engage"],
            "next_step_index": step_index + 1 if step_index + 1 < len(steps) else None}


def _match_story(topic: str | None) -> dict[str, Any] | None:
    if not topic:
        return None
    wanted = topic.lower()
    for story in stories():
        if story["topic"].lower() in wanted or wanted in story["topic"].lower():
            return story
    scored = [(sum(1 for k in story["keywords"] if re.search(rf"\b{re.escape(k)}\b", wanted)), story)
              for story in stories()]
    best = max(scored, key=lambda pair: pair[0])
    return best[1] if best[0] > 0 else None


def tell_a_story(ctx: ToolContext, persona: str = "Hanuman", topic: str | None = None) -> dict[str, Any]:
    """Tell a short, kind story about Hanuman, fitting the child's age; ask what they want if unsure.

    Args:
        persona: the storyteller's name.
        topic: what the story should be about (Leap to Lanka, Sanjeevani Mountain, Ring of Devotion), or empty.
    """
    chosen = _match_story(topic)
    if chosen is None:  # no topic, or one we have no story for: the one heard least recently
        heard = {s["topic"]: s["last_heard"] or "" for s in children.story_progress(ctx.db, ctx.child_id)} \
            if ctx.child_id is not None else {}
        recent = ctx.state.get("stories_told", [])
        chosen = min(stories(), key=lambda s: (s["topic"] in recent, heard.get(s["topic"], ""),
                                              stories().index(s)))
    age = _age(ctx)
    telling = chosen["young"] if age is None or age < YOUNG_UNTIL else chosen["older"]
    ctx.state["stories_told"] = [*ctx.state.get("stories_told", []), chosen["topic"]][-3:]
    if ctx.child_id is not None:
        children.record_story(ctx.db, ctx.child_id, chosen["topic"], "completed")
        children.bump_interest(ctx.db, ctx.child_id, chosen["keywords"][0])
    return {"persona": persona, "topic": chosen["topic"], "story": telling,
            "available_topics": [s["topic"] for s in stories()]}


def audio_root(ctx: ToolContext) -> Path:
    """The folder recitations are kept in: ``<data dir>/audio``."""
    return Path(ctx.settings.forge_data_dir) / "audio"


def resolve_audio(root: Path, path: str) -> Path:
    """``path`` inside ``root``: a recitation Forge knows, never anything outside the folder.

    Raises:
        ToolError: an absolute path, a ``..``, or a name that is not a recitation.
    """
    if not re.fullmatch(r"chalisa/(full|step-\d{2})\.wav", path or ""):
        raise ToolError("path must be chalisa/full.wav or chalisa/step-NN.wav (a step from 00 to 42)")
    target = (root / path).resolve()
    if root.resolve() not in target.parents:
        raise ToolError("path must stay inside the audio folder")
    if path.startswith("chalisa/step-") and int(path[13:15]) >= len(chalisa()):
        raise ToolError(f"there are {len(chalisa())} steps, 00 to {len(chalisa()) - 1:02d}")
    return target


async def _recitation(ctx: ToolContext, path: str, target: Path) -> tuple[bytes, int]:
    """The recitation's PCM16 and rate, synthesized with the TTS the first time and cached."""
    try:
        return unwrap_wav(await asyncio.to_thread(target.read_bytes))
    except (OSError, AudioFormatError):
        pass  # not made yet, or a broken cache file: made (again) below
    tts = ctx.services.get("tts")
    tts = tts() if callable(tts) else tts
    if tts is None:
        raise ToolError("no voice is available to recite the Chalisa")
    steps = chalisa()
    texts = [s["text"] for s in steps] if path.endswith("full.wav") else [steps[int(path[13:15])]["text"]]
    pcm = b"".join([await tts.synthesize(text) for text in texts])
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(target.write_bytes, wrap_wav(pcm, tts.sample_rate))
    return pcm, tts.sample_rate


async def play_hanuman_chalisa(ctx: ToolContext, persona: str = "Hanuman",
                               path: str = "chalisa/full.wav") -> dict[str, Any]:
    """Play a recitation of the Hanuman Chalisa (the whole of it, or one step) to the child.

    Args:
        persona: the storyteller's name.
        path: chalisa/full.wav for all of it, or chalisa/step-NN.wav for one step (00 to 42).
    """
    target = resolve_audio(audio_root(ctx), path)
    pcm, rate = await _recitation(ctx, path, target)
    ctx.playback.append((f"Recitation: Hanuman Chalisa ({path})", pcm, rate))
    chunk = rate * CHUNK_MS // 1000 * 2
    return {"persona": persona, "path": path, "audio_chunks": -(-len(pcm) // chunk), "sample_rate": rate}


# --- the offline brain: natural phrasings → tool calls ----------------------------------------------
def _extract_teach(utterance: str, known: dict[str, Any]) -> dict[str, Any]:
    text = utterance.lower()
    if re.search(r"\b(beginning|start over|from the start)\b", text):
        return {"step_index": 0}
    if re.search(r"\b(again|repeat|one more time|practi[cs]e (it|that))\b", text) and "chalisa_last" in known:
        return {"step_index": known["chalisa_last"]}
    verse = spoken.number_after(text, "verse", "line", "chaupai")
    if verse is not None and 1 <= verse <= 40:
        return {"step_index": verse + 1}
    if re.search(r"\b(closing|last) (doha|verse)\b", text):
        return {"step_index": len(chalisa()) - 1}
    return {}


def _extract_story(utterance: str, known: dict[str, Any]) -> dict[str, Any]:
    story = _match_story(utterance)
    return {"topic": story["topic"]} if story else {}


def _extract_play(utterance: str, known: dict[str, Any]) -> dict[str, Any]:
    verse = spoken.number_after(utterance.lower(), "verse", "line")
    return {"path": f"chalisa/step-{verse + 1:02d}.wav"} if verse is not None and 1 <= verse <= 40 else {}


def _phrase_teach(result: dict[str, Any]) -> str:
    return f"{result['title']}. {result['text']} It means: {result['translation']} {result['engage']}"


def _phrase_story(result: dict[str, Any]) -> str:
    return result["story"]


def _phrase_play(result: dict[str, Any]) -> str:
    return "Here is the Hanuman Chalisa. Listen along!"


def register(registry: ToolRegistry) -> None:
    """Add the storyteller's tools (play before teach before story: the offline brain takes the first match)."""
    registry.add(
        play_hanuman_chalisa,
        triggers=[r"\b(sing|play|recit|chant|hear|listen to|put on)\w*\b.*\b(chalisa|prayer|song|hymn|verse|music)\b",
                  r"\b(chalisa|prayer|song|hymn)\b.*\b(sing|play|recite|chant)\b"],
        extract=_extract_play, phrase=_phrase_play, filler="Let me warm up my voice.", tags=("chalisa",),
        opt_in=True, offer="play the Hanuman Chalisa",
        examples=["play the chalisa", "sing the hanuman chalisa for me", "can I hear the prayer",
                  "put on the hanuman song", "recite the whole chalisa"],
    )
    registry.add(
        teach_hanuman_chalisa,
        triggers=[r"\b(learn|teach|practi[cs]|memori[sz]|study|studi)\w*", r"\b(say it|that verse) again\b",
                  r"\b(next|another|first|last|new)\s+(verse|line|part|bit|doha|chaupai)\b",
                  r"\b(start|begin|go)\b.*\b(from the|back to the|over from the)\s+(beginning|start)\b",
                  r"\b(verse|doha|chaupai|chalisa)\b"],
        extract=_extract_teach, phrase=_phrase_teach, tags=("chalisa",), opt_in=True,
        offer="learn a verse of the Chalisa",
        examples=["teach me the chalisa", "I want to learn the next verse", "help me practise the prayer",
                  "can we learn a new line", "repeat that verse", "let's memorise the chalisa",
                  "help me remember the words of the prayer", "how does the next part go", "what are the words"],
    )
    registry.add(
        tell_a_story,
        triggers=[r"\bstor(y|ies)\b", r"\btell me (about|more)\b", r"\bwhat happened\b", r"\bonce upon\b",
                  r"\b(lanka|sanjeevani|sanjivani|mountain|herb|necklace|pearls?|ring|ocean)\b",
                  r"\bhow did hanuman\b", r"\b(jump|jumped|leap|leapt|fly|flew)\b", r"\babout hanuman\b",
                  r"\bthe one (where|about|with|when)\b"],  # a child naming a story they know
        extract=_extract_story, phrase=_phrase_story, tags=("stories",), opt_in=True,
        offer="tell you a story about Hanuman",
        examples=["tell me a story", "I want a hanuman story", "how did hanuman cross the ocean",
                  "tell me about the flying monkey god", "what did hanuman do when he was little",
                  "a bedtime story please", "tell me the one where he carries the mountain",
                  "how did hanuman find sita", "what happened to his tail in lanka"],
    )
