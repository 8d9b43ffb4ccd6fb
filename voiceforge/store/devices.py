"""Repository functions for push-to-talk devices.

Devices are registered with a random token that is shown once and kept only as its SHA-256
hash; a revoked device's token is refused. The child a device belongs to and what is kept about
them are in :mod:`voiceforge.store.children`. All functions are blocking; async callers run them
in a worker thread.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select

from voiceforge.store.db import Database
from voiceforge.store.models import Child, Conversation, Device, iso, utcnow

DEFAULT_SETTINGS: dict[str, Any] = {
    "voice": None, "volume": 70, "language": "en", "vad_threshold": 0.5, "pre_roll_ms": 250, "post_roll_ms": 600,
}
"""What a device pulls when nothing was set: volume 0–100, pre/post-roll in ms (the firmware's)."""


class DeviceError(ValueError):
    """A device operation that cannot be done (unknown device, bad setting); safe to show."""


SIMULATOR_DEVICE = "simulator"
"""The device id the app's simulated presses use: one row, reused, its token renewed per press."""


def hash_token(token: str) -> str:
    """SHA-256 hex of a device token (what is stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def device_dict(device: Device) -> dict[str, Any]:
    """A device as JSON (never its token)."""
    return {"device_id": device.device_id, "name": device.name, "persona": device.persona,
            "child_id": device.child_id, "token_hint": device.token_hint, "created_at": iso(device.created_at),
            "revoked": device.revoked_at is not None, "revoked_at": iso(device.revoked_at),
            "last_seen_at": iso(device.last_seen_at), "firmware": device.firmware, "status": device.status,
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


def rotate_token(db: Database, device_id: str) -> tuple[dict[str, Any], str]:
    """Give a device a new token (the old one stops working) and lift a revocation; (device, token).

    For pairing a device again, and for the app's reusable simulator device, which gets a fresh
    token for every simulated press. The token is not kept: use or show it once.

    Raises:
        DeviceError: no such device.
    """
    token = "dt_" + secrets.token_urlsafe(24)
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        if device is None:
            raise DeviceError(f"no device {device_id!r}")
        device.token_hash, device.token_hint, device.revoked_at = hash_token(token), token[:7] + "…", None
        return device_dict(device), token


def delete_device(db: Database, device_id: str) -> bool:
    """Delete a device for good (its token with it); False when there was none.

    Its conversations stay (with their child); only the device's row goes.
    """
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        if device is None:
            return False
        s.delete(device)
        return True


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

    Settings: voice, volume, language, vad_threshold, pre_roll_ms, post_roll_ms; None puts one
    back to its default. ``persona`` None keeps the persona; ``child_id`` None detaches the child.

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
        if changes.get(key) is not None and not low <= float(changes[key]) <= high:
            raise DeviceError(f"{key} must be between {low} and {high}")
    with db.db_session() as s:
        device = s.scalars(select(Device).where(Device.device_id == device_id)).first()
        if device is None:
            raise DeviceError(f"no device {device_id!r}")
        if changes:
            merged = {**device.settings, **changes}
            device.settings = {k: v for k, v in merged.items() if v is not None}  # None: back to the default
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
