"""Repository functions for the storyteller's per-child memory.

A child's profile, interests, Chalisa and story progress and interactions are stored only while
a parent's consent is on record, and :func:`forget_child` removes every row about a child
(conversations, turns, tool calls, progress, interactions) and every recording file. All
functions are blocking; async callers run them in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from voiceforge.store.db import Database
from voiceforge.store.devices import DeviceError
from voiceforge.store.models import (
    ChalisaProgress,
    Child,
    Conversation,
    Device,
    Interaction,
    Interest,
    StoryProgress,
    iso,
    utcnow,
)

STORY_STATUSES = ("started", "completed", "favorite")


def child_dict(child: Child) -> dict[str, Any]:
    """A child's profile as JSON."""
    return {"child_id": child.id, "name": child.name, "dob": iso(child.dob), "parents": child.parents,
            "preferred_language": child.preferred_language, "timezone": child.timezone,
            "consent": child.consent, "consent_at": iso(child.consent_at), "version": child.version}


def create_child(db: Database, name: str, dob: dt.date | None = None, parents: str = "",
                 preferred_language: str = "en", timezone: str = "UTC", consent: bool = False) -> dict[str, Any]:
    """Store a child's profile; returns it."""
    with db.db_session() as s:
        child = Child(name=name, dob=dob, parents=parents, preferred_language=preferred_language,
                      timezone=timezone, consent=consent, consent_at=utcnow() if consent else None)
        s.add(child)
        s.flush()
        return child_dict(child)


def get_child(db: Database, child_id: int) -> dict[str, Any] | None:
    """A child's profile, or None."""
    with db.read_session() as s:
        child = s.get(Child, child_id)
        return child_dict(child) if child else None


def list_children(db: Database) -> list[dict[str, Any]]:
    """Every child's profile, by id."""
    with db.read_session() as s:
        return [child_dict(c) for c in s.scalars(select(Child).order_by(Child.id))]


def update_child(db: Database, child_id: int, **fields: Any) -> dict[str, Any]:
    """Change a profile (name, dob, parents, preferred_language, timezone, consent).

    Withdrawing consent stops storage from then on; it does not delete (that is
    :func:`forget_child`).

    Raises:
        DeviceError: no such child, or an unknown field.
    """
    allowed = {"name", "dob", "parents", "preferred_language", "timezone", "consent"}
    if set(fields) - allowed:
        raise DeviceError(f"unknown profile field(s): {', '.join(sorted(set(fields) - allowed))}")
    with db.db_session() as s:
        child = s.get(Child, child_id)
        if child is None:
            raise DeviceError(f"no child {child_id}")
        for key, value in fields.items():
            setattr(child, key, value)
        if "consent" in fields:
            child.consent_at = utcnow() if fields["consent"] else None
        child.version += 1
        return child_dict(child)


def consented(db: Database, child_id: int | None) -> bool:
    """True when ``child_id`` names a child whose parent consented to storage."""
    if child_id is None:
        return False
    with db.read_session() as s:
        child = s.get(Child, child_id)
        return bool(child and child.consent)


def forget_child(db: Database, child_id: int, recordings: Path | None = None) -> dict[str, int]:
    """Right to deletion: remove everything about a child, recordings included.

    Deletes the child's conversations (their turns and tool calls cascade), progress,
    interests, interactions and profile; devices keep working, unassigned. Recording folders
    of the deleted conversations under ``recordings`` are removed from disk first.

    Returns:
        How many conversations and recording folders were removed.
    """
    with db.db_session() as s:
        conversation_ids = list(s.scalars(select(Conversation.id).where(Conversation.child_id == child_id)))
        device_conversations = list(s.scalars(select(Device.conversation_id).where(Device.child_id == child_id)))
    folders = 0
    if recordings is not None:
        for cid in set(conversation_ids) | {c for c in device_conversations if c}:
            folder = recordings / str(cid)
            if folder.exists():
                shutil.rmtree(folder)
                folders += 1
    with db.db_session() as s:
        for model in (Interest, ChalisaProgress, StoryProgress, Interaction, Conversation):
            s.execute(delete(model).where(model.child_id == child_id))
        for device in s.scalars(select(Device).where(Device.child_id == child_id)):
            device.child_id = None
            device.conversation_id = None
        s.execute(delete(Child).where(Child.id == child_id))
    return {"conversations": len(conversation_ids), "recording_folders": folders}


def bump_interest(db: Database, child_id: int, tag: str, by: float = 1.0) -> None:
    """Raise a child's interest in ``tag`` (created at ``by``); nothing without consent."""
    tag = tag.strip().lower()[:40]
    if not tag or not consented(db, child_id):
        return
    with db.db_session() as s:
        row = s.scalars(select(Interest).where(Interest.child_id == child_id, Interest.tag == tag)).one_or_none()
        if row is None:
            s.add(Interest(child_id=child_id, tag=tag, weight=by))
        else:
            row.weight += by
            row.updated_at = utcnow()
        child = s.get(Child, child_id)
        child.version += 1


def interests(db: Database, child_id: int) -> list[dict[str, Any]]:
    """A child's interests, strongest first: tag and weight."""
    with db.read_session() as s:
        rows = s.scalars(select(Interest).where(Interest.child_id == child_id).order_by(Interest.weight.desc()))
        return [{"tag": r.tag, "weight": round(r.weight, 2)} for r in rows]


# --- progress ------------------------------------------------------------------------------------
def verse_progress(db: Database, child_id: int) -> list[dict[str, Any]]:
    """A child's Chalisa progress, verse by verse."""
    with db.read_session() as s:
        rows = s.scalars(select(ChalisaProgress).where(ChalisaProgress.child_id == child_id)
                         .order_by(ChalisaProgress.verse_index))
        return [{"verse_index": r.verse_index, "exposure_count": r.exposure_count, "attempts": r.attempts,
                 "mastery": r.mastery, "last_practice": iso(r.last_practice)} for r in rows]


def record_verse(db: Database, child_id: int, verse_index: int, attempted: bool = False,
                 mastery_delta: int = 0) -> dict[str, Any] | None:
    """Count one exposure (and an attempt) of a verse; mastery stays within 0–5. None without consent."""
    if not consented(db, child_id):
        return None
    with db.db_session() as s:
        row = s.scalars(select(ChalisaProgress).where(ChalisaProgress.child_id == child_id,
                                                      ChalisaProgress.verse_index == verse_index)).one_or_none()
        if row is None:
            row = ChalisaProgress(child_id=child_id, verse_index=verse_index, exposure_count=0, attempts=0, mastery=0)
            s.add(row)
        row.exposure_count += 1
        row.attempts += int(attempted)
        row.mastery = max(0, min(5, row.mastery + mastery_delta))
        row.last_practice = utcnow()
        s.get(Child, child_id).version += 1
        return {"verse_index": verse_index, "exposure_count": row.exposure_count, "mastery": row.mastery}


def story_progress(db: Database, child_id: int) -> list[dict[str, Any]]:
    """The stories a child has heard, most recent first."""
    with db.read_session() as s:
        rows = s.scalars(select(StoryProgress).where(StoryProgress.child_id == child_id)
                         .order_by(StoryProgress.last_heard.desc()))
        return [{"topic": r.topic, "status": r.status, "times_heard": r.times_heard,
                 "last_heard": iso(r.last_heard), "position": r.position} for r in rows]


def record_story(db: Database, child_id: int, topic: str, status: str = "completed",
                 position: int = 0) -> dict[str, Any] | None:
    """Record that a child heard a story (status started, completed or favorite). None without consent.

    Raises:
        DeviceError: an unknown status.
    """
    if status not in STORY_STATUSES:
        raise DeviceError(f"story status must be one of {', '.join(STORY_STATUSES)}")
    if not consented(db, child_id):
        return None
    with db.db_session() as s:
        row = s.scalars(select(StoryProgress).where(StoryProgress.child_id == child_id,
                                                    StoryProgress.topic == topic)).one_or_none()
        if row is None:
            row = StoryProgress(child_id=child_id, topic=topic, times_heard=0, status=status)
            s.add(row)
        row.times_heard += 1
        if row.status != "favorite":
            row.status = status
        row.last_heard = utcnow()
        row.position = position
        s.get(Child, child_id).version += 1
        return {"topic": topic, "status": row.status, "times_heard": row.times_heard}


def log_interaction(db: Database, child_id: int, device_id: str | None, started_at: dt.datetime,
                    duration_s: float, topic: str = "", notes: str = "") -> None:
    """Log one press-to-reply exchange; nothing without consent."""
    if not consented(db, child_id):
        return
    with db.db_session() as s:
        s.add(Interaction(child_id=child_id, device_id=device_id, started_at=started_at, duration_s=duration_s,
                          topic=topic[:60], notes=notes))


def interactions(db: Database, child_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """A child's recent interactions, newest first."""
    with db.read_session() as s:
        rows = s.scalars(select(Interaction).where(Interaction.child_id == child_id)
                         .order_by(Interaction.started_at.desc()).limit(limit))
        return [{"started_at": iso(r.started_at), "duration_s": round(r.duration_s, 2), "topic": r.topic,
                 "device_id": r.device_id, "notes": r.notes} for r in rows]


def context(db: Database, child_id: int | None) -> tuple[dict[str, Any], str]:
    """What a device caches about its child, and its ETag (changes whenever any of it changes).

    Returns:
        ({"child": profile or None, "interests": [...], "verses_mastered", "next_verse",
        "stories_heard": [...]}, a quoted ETag string).
    """
    if child_id is None:
        body: dict[str, Any] = {"child": None, "interests": [], "verses_mastered": 0, "next_verse": 1,
                                "stories_heard": []}
        return body, '"none"'
    child = get_child(db, child_id)
    if child is None:
        return context(db, None)
    verses = verse_progress(db, child_id)
    body = {"child": {k: child[k] for k in ("child_id", "name", "dob", "preferred_language", "timezone")},
            "interests": interests(db, child_id)[:8],
            "verses_mastered": sum(1 for v in verses if v["mastery"] >= 4),
            "next_verse": max((v["verse_index"] for v in verses), default=0) + 1,
            "stories_heard": [s["topic"] for s in story_progress(db, child_id)]}
    return body, f'"c{child_id}-v{child["version"]}"'


