"""The Twilio Media Streams wire format, as pure functions (no I/O).

Twilio sends JSON text frames: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``
(``sequenceNumber``, ``chunk`` and ``timestamp`` are strings); we send ``media`` (base64
μ-law 8 kHz, no header; 160 bytes = 20 ms), ``mark`` and ``clear``. Source: Twilio docs,
"Media Streams - WebSocket Messages".
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024
"""Inbound messages over this size are refused (a 20 ms media message is about 300 bytes)."""


class MediaStreamError(ValueError):
    """A malformed media-stream message; the stream that sent it is closed with this reason."""


@dataclass
class Connected:
    """The first message: protocol and version."""

    protocol: str = "Call"


@dataclass
class Start:
    """Stream metadata: stream SID, call SID, custom parameters, media format."""

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_format: dict[str, Any] = field(default_factory=dict)


@dataclass
class Media:
    """20 ms (usually) of caller audio: μ-law 8 kHz bytes and Twilio's timestamp in ms."""

    payload: bytes
    timestamp_ms: int = 0
    chunk: int = 0
    track: str = "inbound"


@dataclass
class Dtmf:
    """A keypad digit pressed by the caller."""

    digit: str


@dataclass
class Mark:
    """A mark we sent, echoed back once played (or flushed by a clear)."""

    name: str


@dataclass
class Stop:
    """The stream ended (the call hung up or the stream was stopped)."""


Event = Connected | Start | Media | Dtmf | Mark | Stop


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MediaStreamError(f"{name} is not a number") from None


def parse(text: str | bytes) -> Event | None:
    """Parse one Twilio message.

    Returns:
        The typed event, or None for an event type this version does not know (ignored).

    Raises:
        MediaStreamError: binary or oversized frame, invalid JSON, missing fields, bad base64.
    """
    if isinstance(text, bytes | bytearray):
        raise MediaStreamError("binary frame (Twilio sends JSON text frames)")
    if len(text) > MAX_MESSAGE_BYTES:
        raise MediaStreamError(f"message of {len(text)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        raise MediaStreamError("invalid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise MediaStreamError("message has no event")
    kind = msg["event"]
    try:
        if kind == "connected":
            return Connected(protocol=str(msg.get("protocol", "Call")))
        if kind == "start":
            start = msg["start"]
            return Start(
                stream_sid=str(msg.get("streamSid") or start["streamSid"]),
                call_sid=str(start["callSid"]),
                account_sid=str(start.get("accountSid", "")),
                custom_parameters={str(k): str(v) for k, v in (start.get("customParameters") or {}).items()},
                media_format=dict(start.get("mediaFormat") or {}),
            )
        if kind == "media":
            media = msg["media"]
            try:
                payload = base64.b64decode(media["payload"], validate=True)
            except (binascii.Error, TypeError):
                raise MediaStreamError("media payload is not base64") from None
            return Media(payload=payload, timestamp_ms=_int(media.get("timestamp", 0), "timestamp"),
                         chunk=_int(media.get("chunk", 0), "chunk"), track=str(media.get("track", "inbound")))
        if kind == "dtmf":
            return Dtmf(digit=str(msg["dtmf"]["digit"]))
        if kind == "mark":
            return Mark(name=str(msg["mark"]["name"]))
        if kind == "stop":
            return Stop()
    except (KeyError, TypeError) as exc:
        raise MediaStreamError(f"{kind} message lacks {exc}") from None
    return None


def media_message(stream_sid: str, ulaw: bytes) -> str:
    """Outbound audio: ``{"event": "media", "streamSid", "media": {"payload": base64 μ-law}}``."""
    return json.dumps({"event": "media", "streamSid": stream_sid,
                       "media": {"payload": base64.b64encode(ulaw).decode()}})


def mark_message(stream_sid: str, name: str) -> str:
    """A mark: Twilio echoes it back when the audio sent before it has played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """Clear: Twilio drops the audio it has buffered (barge-in) and echoes pending marks."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})
