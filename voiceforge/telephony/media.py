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

MAX_CONTAINERS = 32
"""JSON objects and arrays allowed in one message (Twilio's `start` has about six); counted
before parsing, so deep nesting never reaches the JSON parser."""

MAX_PAYLOAD_BYTES = 8000
"""μ-law bytes allowed in one media message: 1 s at 8 kHz (Twilio sends 20 ms, 160 bytes)."""


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
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and len(value) > 20):
        raise MediaStreamError(f"{name} is not a number")
    try:
        return int(value)
    except ValueError:
        raise MediaStreamError(f"{name} is not a number") from None


def _object(msg: dict[str, Any], key: str, kind: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise MediaStreamError(f"{kind} message lacks '{key}'")
    return value


def _text(obj: dict[str, Any], key: str, kind: str, required: bool = True, limit: int = 256) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool) or len(str(value)) > limit:
        raise MediaStreamError(f"{kind} message lacks '{key}'")
    return str(value)


def parse(text: str | bytes) -> Event | None:
    """Parse one Twilio message.

    Returns:
        The typed event, or None for an event type this version does not know (ignored, as
        Twilio may add events).

    Raises:
        MediaStreamError: binary, oversized or too deeply nested frame, invalid JSON, a field
            missing or of the wrong type, bad base64. Nothing else escapes.
    """
    if isinstance(text, bytes | bytearray):
        raise MediaStreamError("binary frame (Twilio sends JSON text frames)")
    if not isinstance(text, str):
        raise MediaStreamError("not a text frame")
    if len(text) > MAX_MESSAGE_BYTES:
        raise MediaStreamError(f"message of {len(text)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if text.count("{") + text.count("[") > MAX_CONTAINERS:
        raise MediaStreamError(f"message nests more than {MAX_CONTAINERS} objects")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer over Python's 4,300 digits
        raise MediaStreamError("invalid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise MediaStreamError("message has no event")
    kind = msg["event"]
    if kind == "media":
        media = _object(msg, "media", kind)
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise MediaStreamError("media message lacks 'payload'")
        if len(payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
            raise MediaStreamError(f"media payload exceeds {MAX_PAYLOAD_BYTES} bytes")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise MediaStreamError("media payload is not base64") from None
        track = media.get("track", "inbound")
        return Media(payload=audio, timestamp_ms=_int(media.get("timestamp", 0), "timestamp"),
                     chunk=_int(media.get("chunk", 0), "chunk"), track=track if isinstance(track, str) else "?")
    if kind == "connected":
        protocol = msg.get("protocol", "Call")
        return Connected(protocol=protocol if isinstance(protocol, str) else "?")
    if kind == "start":
        start = _object(msg, "start", kind)
        params = start.get("customParameters") or {}
        fmt = start.get("mediaFormat") or {}
        if not isinstance(params, dict) or not isinstance(fmt, dict):
            raise MediaStreamError("start message has malformed customParameters or mediaFormat")
        return Start(
            stream_sid=str(msg.get("streamSid") or _text(start, "streamSid", kind)),
            call_sid=_text(start, "callSid", kind),
            account_sid=_text(start, "accountSid", kind, required=False),
            custom_parameters={str(k)[:64]: str(v)[:512] for k, v in params.items()},
            media_format=fmt,
        )
    if kind == "dtmf":
        return Dtmf(digit=_text(_object(msg, "dtmf", kind), "digit", kind, limit=2))
    if kind == "mark":
        return Mark(name=_text(_object(msg, "mark", kind), "name", kind))
    if kind == "stop":
        return Stop()
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
