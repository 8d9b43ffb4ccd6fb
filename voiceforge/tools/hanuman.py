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

from voiceforge import clock
from voiceforge.audio.codecs import AudioFormatError, unwrap_wav, wrap_wav
from voiceforge.config import ROOT
from voiceforge.store import children
from voiceforge.tools import slots, spoken
from voiceforge.tools.declaration import load_declarations
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
    born, today = dt.date.fromisoformat(child["dob"]), clock.now().date()
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
def _read_step(utterance: str, known: dict[str, Any], parameter: Any = None) -> dict[str, Any]:
    """The Chalisa step a child asks to learn (the ``chalisa_step`` slot): {} means the next one."""
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


def _read_story(utterance: str, known: dict[str, Any], parameter: Any = None) -> dict[str, Any]:
    """The story a child names (the ``story_topic`` slot): {} means any."""
    story = _match_story(utterance)
    return {"topic": story["topic"]} if story else {}


def _read_recording(utterance: str, known: dict[str, Any], parameter: Any = None) -> dict[str, Any]:
    """The verse's recording a child asks to hear (the ``chalisa_recording`` slot): {} means the whole."""
    verse = spoken.number_after(utterance.lower(), "verse", "line")
    return {"path": f"chalisa/step-{verse + 1:02d}.wav"} if verse is not None and 1 <= verse <= 40 else {}


def register(registry: ToolRegistry) -> None:
    """Add the storyteller's tools, in hanuman.toml's order.

    Play comes before teach before story: the offline brain takes the first match. They are
    opt-in, for the personas that name them.
    """
    slots.register_reader("chalisa_step", _read_step)
    slots.register_reader("story_topic", _read_story)
    slots.register_reader("chalisa_recording", _read_recording)
    functions = {f.__name__: f for f in (play_hanuman_chalisa, teach_hanuman_chalisa, tell_a_story)}
    for name, declaration in load_declarations(Path(__file__).with_suffix(".toml")).items():
        registry.add(functions[name], declaration)
