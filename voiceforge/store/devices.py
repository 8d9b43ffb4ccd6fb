"""Repository functions for push-to-talk devices and the storyteller's per-child memory.

Devices are registered with a random token that is shown once and kept only as its SHA-256
hash. A child's profile, interests, Chalisa and story progress and interactions are stored
only while a parent's consent is on record, and :func:`forget_child` removes every row about a
child (conversations, turns, tool calls, progress, interactions) and every recording file.
All functions are blocking; async callers run them in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from voiceforge.store.db import Database
from voiceforge.store.models import (
    ChalisaProgress,
    Child,
    Conversation,
    Device,
    Interaction,
    Interest,
    StoryProgress,
    utcnow,
)

DEFAULT_SETTINGS: dict[str, Any] = {
    "voice": None, "volume": 70, "language": "en", "vad_threshold": 0.5, "pre_roll_ms": 250, "post_roll_ms": 600,
}
"""What a device pulls when nothing was set: volume 0–100, pre/post-roll in ms (the firmware's)."""

STORY_STATUSES = ("started", "completed", "favorite")


class DeviceError(ValueError):
    """A device operation that cannot be done (unknown device, bad setting); safe to show."""


def hash_token(token: str) -> str:
    """SHA-256 hex of a device token (what is stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value else None


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


# --- children ----------------------------------------------------------------------------------
def child_dict(child: Child) -> dict[str, Any]:
    """A child's profile as JSON."""
    return {"child_id": child.id, "name": child.name, "dob": _iso(child.dob), "parents": child.parents,
            "preferred_language": child.preferred_language, "timezone": child.timezone,
            "consent": child.consent, "consent_at": _iso(child.consent_at), "version": child.version}


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
                 "mastery": r.mastery, "last_practice": _iso(r.last_practice)} for r in rows]


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
                 "last_heard": _iso(r.last_heard), "position": r.position} for r in rows]


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
        return [{"started_at": _iso(r.started_at), "duration_s": round(r.duration_s, 2), "topic": r.topic,
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


# --- devices -------------------------------------------------------------------------------------
def device_dict(device: Device) -> dict[str, Any]:
    """A device as JSON (never its token)."""
    return {"device_id": device.device_id, "name": device.name, "persona": device.persona,
            "child_id": device.child_id, "token_hint": device.token_hint, "created_at": _iso(device.created_at),
            "revoked": device.revoked_at is not None, "revoked_at": _iso(device.revoked_at),
            "last_seen_at": _iso(device.last_seen_at), "firmware": device.firmware, "status": device.status,
            "settings": {**DEFAULT_SETTINGS, **device.settings}, "settings_version": device.settings_version,
            "conversation_id": device.conversation_id}


def register_device(db: Database, name: str, persona: str, child_id: int | None = None,
                    device_id: str | None = None) -> tuple[dict[str, Any], str]:
    """Register a device; returns (device, its token). The token is not kept: show it once.

    Raises:
        DeviceError: the device id is taken, or the child does not exist.
    """
    token = "dt_" + secrets.token_urlsafe(24)
    device_id = device_id or "dev-" + secrets.token_hex(4)
    with db.db_session() as s:
        if s.scalars(select(Device).where(Device.device_id == device_id)).first() is not None:
            raise DeviceError(f"a device {device_id!r} is already registered")
        if child_id is not None and s.get(Child, child_id) is None:
            raise DeviceError(f"no child {child_id}")
        device = Device(device_id=device_id, name=name, persona=persona, child_id=child_id,
                        token_hash=hash_token(token), token_hint=token[:7] + "…", settings={}, status={})
        s.add(device)
        s.flush()
        return device_dict(device), token


def authenticate(db: Database, token: str | None) -> dict[str, Any] | None:
    """The live (not revoked) device a token belongs to, or None (constant-time hash compare)."""
    if not token:
        return None
    digest = hash_token(token)
    with db.read_session() as s:
        device = s.scalars(select(Device).where(Device.token_hash == digest)).first()
        if device is None or device.revoked_at is not None or not hmac.compare_digest(device.token_hash, digest):
            return None
        return device_dict(device)


def get_device(db: Database, device_id: str) -> dict[str, Any] | None:
    """A device by id, or None."""
    with db.read_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        return device_dict(device) if device else None


def list_devices(db: Database) -> list[dict[str, Any]]:
    """Every device, newest first."""
    with db.read_session() as s:
        return [device_dict(d) for d in s.scalars(select(Device).order_by(Device.id.desc()))]


def revoke_device(db: Database, device_id: str) -> dict[str, Any]:
    """Revoke a device's token at once (its next request is 401).

    Raises:
        DeviceError: no such device.
    """
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        if device is None:
            raise DeviceError(f"no device {device_id!r}")
        device.revoked_at = device.revoked_at or utcnow()
        return device_dict(device)


def heartbeat(db: Database, device_id: str, firmware: str = "", status: dict[str, Any] | None = None) -> None:
    """Record that a device was seen (its firmware version and status: battery, RSSI...)."""
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        if device is not None:
            device.last_seen_at = utcnow()
            if firmware:
                device.firmware = firmware[:32]
            if status is not None:
                device.status = status


def update_settings(db: Database, device_id: str, **changes: Any) -> dict[str, Any]:
    """Change what a device pulls, or its persona or child.

    Settings: voice, volume, language, vad_threshold, pre_roll_ms, post_roll_ms.

    Raises:
        DeviceError: no such device, an unknown setting or a value out of range.
    """
    persona = changes.pop("persona", None)
    child_id = changes.pop("child_id", "keep")
    unknown = set(changes) - set(DEFAULT_SETTINGS)
    if unknown:
        raise DeviceError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    ranges = {"volume": (0, 100), "vad_threshold": (0.3, 0.95), "pre_roll_ms": (0, 1000), "post_roll_ms": (300, 2000)}
    for key, (low, high) in ranges.items():
        if key in changes and not low <= float(changes[key]) <= high:
            raise DeviceError(f"{key} must be between {low} and {high}")
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        if device is None:
            raise DeviceError(f"no device {device_id!r}")
        if changes:
            device.settings = {**device.settings, **changes}
        if persona:
            device.persona = persona
        if child_id != "keep":
            if child_id is not None and s.get(Child, child_id) is None:
                raise DeviceError(f"no child {child_id}")
            device.child_id = child_id
            device.conversation_id = None  # a new child starts a new conversation
        device.settings_version += 1
        return device_dict(device)


def attach_conversation(db: Database, device_id: str, conversation_id: int, child_id: int | None) -> None:
    """Make ``conversation_id`` the device's running conversation, marked with its child."""
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        conversation = s.get(Conversation, conversation_id)
        if device is not None:
            device.conversation_id = conversation_id
        if conversation is not None:
            conversation.child_id = child_id
