"""The OpenAI Realtime API's server events, as Forge's offline server builds them (no I/O).

Shapes follow the GA events of the Realtime API reference and the official SDK's types
(``openai.types.realtime``): a session object, a response with one assistant message item
carrying an ``audio`` content part, and the ``error`` event. Audio is ``audio/pcm`` (PCM16 mono
at 24 kHz) or ``audio/pcmu`` (G.711 μ-law at 8 kHz).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

PCM_RATE = 24000
"""``audio/pcm`` in the Realtime API is 24 kHz PCM16 mono (OpenAI Realtime docs)."""
FORMATS = ("audio/pcm", "audio/pcmu")
MAX_MESSAGE = 1 << 20
"""Bytes in one client event (a second of 24 kHz PCM16 is 64 KB base64)."""


class ClientEventError(ValueError):
    """A client event Forge cannot take; answered with an ``error`` event, the session goes on.

    Args:
        message: what is wrong, for the client.
        code: the error code (``invalid_event``, ``invalid_audio``, ...).
    """

    def __init__(self, message: str, code: str = "invalid_event") -> None:
        super().__init__(message)
        self.code = code


def new_id(prefix: str) -> str:
    """A fresh id like the service's (``sess_…``, ``resp_…``, ``item_…``, ``call_…``)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def default_session() -> dict[str, Any]:
    """A new session object: server VAD, PCM16 at 24 kHz both ways, Forge's offline model and voice."""
    return {
        "type": "realtime", "object": "realtime.session", "id": new_id("sess"), "model": "forge-offline",
        "output_modalities": ["audio"], "instructions": "", "tools": [], "tool_choice": "auto",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": PCM_RATE},
                            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                               "silence_duration_ms": 500, "create_response": True,
                                               "interrupt_response": True},
                            "transcription": {"model": "whisper-base"}},
                  "output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": "joe"}},
    }


def error_event(message: str, code: str, event_id: str | None = None) -> dict[str, Any]:
    """An ``error`` server event (``invalid_request_error``)."""
    return {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                       "event_id": event_id}}


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ClientEventError(f"{name} must be a number from {low:g} to {high:g}")
    return value


@dataclass
class SessionUpdate:
    """What a ``session.update`` asks for, checked (every field None: not asked).

    Attributes:
        instructions / voice: the system prompt, the output voice.
        input_format / output_format: "audio/pcm" or "audio/pcmu".
        turn_detection: False for ``null`` (push-to-talk), True for a dict, None when not given.
        vad_threshold / silence_ms / prefix_ms: the turn detection's numbers.
        semantic: ``semantic_vad`` was asked for (model-based end of turn).
        tools: the declared function tools' names, when ``tools`` was given.
        raw_tools: the ``tools`` list as given (echoed in ``session.updated``).
    """

    instructions: str | None = None
    voice: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    turn_detection: bool | None = None
    vad_threshold: float | None = None
    silence_ms: int | None = None
    prefix_ms: int | None = None
    semantic: bool = False
    tools: tuple[str, ...] | None = None
    raw_tools: list[Any] = field(default_factory=list)


def parse_session_update(session: Any) -> SessionUpdate:
    """Read a ``session.update``'s ``session`` object.

    Raises:
        ClientEventError: not an object, or a field of the wrong type or out of range.
    """
    if not isinstance(session, dict):
        raise ClientEventError("session must be an object")
    out = SessionUpdate()
    if isinstance(session.get("instructions"), str):
        out.instructions = session["instructions"][:20_000]
    audio = session.get("audio") or {}
    if not isinstance(audio, dict):
        raise ClientEventError("session.audio must be an object")
    inp, outp = audio.get("input") or {}, audio.get("output") or {}
    if not isinstance(inp, dict) or not isinstance(outp, dict):
        raise ClientEventError("session.audio.input and .output must be objects")
    for side, target in ((inp, "input_format"), (outp, "output_format")):
        fmt = side.get("format")
        if isinstance(fmt, dict) and fmt.get("type") in FORMATS:
            setattr(out, target, fmt["type"])
    if isinstance(outp.get("voice"), str):
        out.voice = outp["voice"][:64]
    if "turn_detection" in inp:
        detection = inp["turn_detection"]
        if detection is None:
            out.turn_detection = False
        elif isinstance(detection, dict):
            out.turn_detection = True
            out.semantic = detection.get("type") == "semantic_vad"
            out.vad_threshold = _number(detection.get("threshold"), "turn_detection.threshold", 0.0, 1.0)
            silence = _number(detection.get("silence_duration_ms"), "turn_detection.silence_duration_ms", 0, 10_000)
            prefix = _number(detection.get("prefix_padding_ms"), "turn_detection.prefix_padding_ms", 0, 10_000)
            out.silence_ms = int(silence) if silence is not None else None
            out.prefix_ms = int(prefix) if prefix is not None else None
        else:
            raise ClientEventError("turn_detection must be an object or null")
    tools = session.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ClientEventError("tools must be a list")
        out.raw_tools = tools
        out.tools = tuple(str(t["name"]) for t in tools
                          if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str))
    return out


@dataclass
class Response:
    """One response in progress: its id, its assistant item and the transcript so far."""

    id: str = field(default_factory=lambda: new_id("resp"))
    item: str = field(default_factory=lambda: new_id("item"))
    transcript: str = ""

    def ids(self) -> dict[str, Any]:
        """The ids every audio event of the response carries."""
        return {"response_id": self.id, "item_id": self.item, "output_index": 0, "content_index": 0}

    def body(self, status: str, output: list[dict[str, Any]], output_format: str, voice: str) -> dict[str, Any]:
        """The ``response`` object of ``response.created`` / ``response.done``."""
        return {"id": self.id, "object": "realtime.response", "status": status, "output": output,
                "conversation_id": "conv_forge", "output_modalities": ["audio"],
                "audio": {"output": {"format": {"type": output_format}, "voice": voice}},
                "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}}

    def item_object(self, status: str) -> dict[str, Any]:
        """The assistant message item, ``in_progress``, ``completed`` or ``incomplete``."""
        content = [{"type": "output_audio", "transcript": self.transcript.strip()}] if status != "in_progress" else []
        return {"id": self.item, "type": "message", "role": "assistant", "status": status,
                "object": "realtime.item", "content": content}

    def opening(self, previous_item: str | None, output_format: str, voice: str) -> list[dict[str, Any]]:
        """The events that open it: created, output item added, conversation item added, content part added."""
        item = self.item_object("in_progress")
        return [
            {"type": "response.created", "response": self.body("in_progress", [], output_format, voice)},
            {"type": "response.output_item.added", "response_id": self.id, "output_index": 0, "item": item},
            {"type": "conversation.item.added", "previous_item_id": previous_item, "item": item},
            {"type": "response.content_part.added", **self.ids(), "part": {"type": "audio", "transcript": ""}},
        ]

    def closing(self, status: str, output_format: str, voice: str) -> list[dict[str, Any]]:
        """The events that close it with ``status`` ("completed" or "cancelled"), ``response.done`` last."""
        transcript = self.transcript.strip()
        item = self.item_object("completed" if status == "completed" else "incomplete")
        return [
            {"type": "response.output_audio_transcript.done", **self.ids(), "transcript": transcript},
            {"type": "response.output_audio.done", **self.ids()},
            {"type": "response.content_part.done", **self.ids(), "part": {"type": "audio", "transcript": transcript}},
            {"type": "response.output_item.done", "response_id": self.id, "output_index": 0, "item": item},
            {"type": "conversation.item.done", "item": item},
            {"type": "response.done", "response": self.body(status, [item], output_format, voice)},
        ]
