"""The port between the conversation loop and a wire (Twilio, browser, ESP32 device, Realtime).

A transport turns its wire protocol into inbound events and carries the loop's outbound calls
back: ``send_audio``, ``clear``, ``mark``, ``hang_up``, and ``notify`` (transcripts and state
for a page that shows them). Adapters live in ``server/transports/``; the loop knows only this
module. "Played" comes from the far end: a :class:`MarkPlayed` echoes a mark once the audio
sent before it has been heard, never merely because it was sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AudioIn:
    """Caller audio: PCM16 mono little-endian at ``sample_rate`` Hz (any chunk length)."""

    pcm16: bytes
    sample_rate: int


@dataclass(frozen=True)
class TextIn:
    """A typed message in a live conversation (the browser's text box)."""

    text: str


@dataclass(frozen=True)
class MarkPlayed:
    """The far end played everything sent before mark ``name`` (or flushed it on a clear)."""

    name: str


@dataclass(frozen=True)
class DtmfIn:
    """A keypad digit (0-9, *, #, A-D)."""

    digit: str


@dataclass(frozen=True)
class TalkStart:
    """Push-to-talk: the button went down (interrupts the agent; audio until TalkEnd is the utterance)."""


@dataclass(frozen=True)
class TalkEnd:
    """Push-to-talk: the button came up; the utterance is complete (the latency clock starts here)."""


InboundEvent = AudioIn | TextIn | MarkPlayed | DtmfIn | TalkStart | TalkEnd


class Transport(ABC):
    """One live connection's outbound side, as the conversation loop sees it.

    Attributes:
        output_rate: the rate (Hz) at which ``send_audio`` frames are to be sent: 8000 for
            Twilio, whatever the browser or device stated for the others.
        frame_ms: outbound frame length; 20 ms is Twilio's media-stream frame.
        paced: the loop sends frames in real time (so that ``clear`` stops what is queued at
            the far end); False lets a batch client receive the reply as fast as it is made.
        confirms_playback: the far end echoes marks when played; False makes every mark count
            as played when sent (a client that cannot report playback).
    """

    output_rate: int = 16000
    frame_ms: int = 20
    paced: bool = True
    confirms_playback: bool = True

    @abstractmethod
    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Send one frame of agent audio: PCM16 mono, ``frame_ms`` long, at ``sample_rate`` Hz."""

    @abstractmethod
    async def clear(self) -> None:
        """Drop agent audio the far end has buffered but not yet played (barge-in)."""

    @abstractmethod
    async def mark(self, name: str) -> None:
        """Ask the far end to echo ``name`` once everything sent before it has played."""

    @abstractmethod
    async def hang_up(self) -> None:
        """End the conversation from the agent's side (end_call). Must return promptly."""

    async def notify(self, event: dict[str, Any]) -> None:  # noqa: B027 - optional, no-op by default
        """Pass a JSON-ready loop event on (state, transcript, sentence, tool call, turn).

        Events: ``{"type": "state", "state": "listening" | "thinking" | "speaking"}``,
        ``{"type": "transcript", "text"}``, ``{"type": "sentence", "text", "index"}``,
        ``{"type": "tool_call", ...}``, ``{"type": "turn", ...TurnResult.to_json()}``, and
        ``{"type": "ignored"}`` for an utterance that held no words.
        Wires with no one to show them (Twilio) ignore them.
        """
