"""The port between the conversation loop and a wire (Twilio, browser, ESP32 device, Realtime client).

An adapter (``server/transports/``) turns its wire protocol into :data:`InboundEvent` values
and carries the loop's outbound calls back through a :class:`Transport`. Everything that
crosses the port is typed:

- inbound, what the wire carries: :class:`AudioIn`, :class:`TextIn`, :class:`MarkPlayed`,
  :class:`DtmfIn`, :class:`TalkStart`, :class:`TalkEnd`;
- inbound, what a client asks of the conversation (a Realtime client's ``session.update``,
  ``response.cancel``, ``input_audio_buffer.clear``, a page's "say this"): :class:`Configure`,
  :class:`Interrupt`, :class:`ClearInput`, :class:`Say`, :class:`Remember`, :class:`End`;
- outbound commands: ``send_audio``, ``clear``, ``mark``, ``hang_up``;
- outbound notifications (``notify``), for a page or a client that shows them: the
  :class:`Notification` subclasses below, each with the JSON form the browser protocol sends.

"Played" comes from the far end: a :class:`MarkPlayed` echoes a mark once the audio sent before
it has been heard, never merely because it was sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

from voiceforge.records import TurnRecord


# --- inbound: what the wire carries ----------------------------------------------------------
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


# --- inbound: what a client asks of the conversation -----------------------------------------
ClientToolRunner = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""Runs a tool the client declared on the client's side: (tool name, arguments) → its result.
Raises the tool registry's ``ToolError`` with a message the agent may speak."""


@dataclass(frozen=True)
class Configure:
    """Change how the conversation runs, from the next utterance on; None leaves a setting as it is.

    Attributes:
        vad_threshold: 0.3–0.95, how sure the VAD must be that a frame is speech.
        silence_ms: the silence that ends an utterance (endpointing), ms.
        prefix_ms: audio kept from before the detected start of speech, ms.
        push_to_talk: utterances are bounded by TalkStart/TalkEnd instead of the VAD.
        turn_detector: "model" (end of turn by Smart Turn and the words; a Realtime client's
            ``semantic_vad``) or "silence" (``server_vad``).
        output_rate: the rate (Hz) the far end now wants agent audio at.
        output_encoding: "pcm16" or "ulaw" (G.711 μ-law), the far end's audio encoding.
        voice: a TTS voice overriding the persona's ("" goes back to the persona's).
        instructions: a system prompt overriding the persona's ("" goes back to it).
        client_tools: the tools the client declared and runs itself (names of registered
            tools); with ``run_client_tool`` their calls go to the client.
        run_client_tool: see :data:`ClientToolRunner`.
    """

    vad_threshold: float | None = None
    silence_ms: int | None = None
    prefix_ms: int | None = None
    push_to_talk: bool | None = None
    turn_detector: Literal["model", "silence"] | None = None
    output_rate: int | None = None
    output_encoding: Literal["pcm16", "ulaw"] | None = None
    voice: str | None = None
    instructions: str | None = None
    client_tools: tuple[str, ...] | None = None
    run_client_tool: ClientToolRunner | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Interrupt:
    """Stop the agent now: clear what is audible and drop the answer being thought (``response.cancel``)."""


@dataclass(frozen=True)
class ClearInput:
    """Drop the caller audio held for the utterance in progress (``input_audio_buffer.clear``)."""


@dataclass(frozen=True)
class Say:
    """Speak ``text`` now, word for word (a greeting the client asks for); it is not stored as a turn."""

    text: str


@dataclass(frozen=True)
class Remember:
    """A message of earlier conversation the client replays (a rolled-over Realtime session).

    ``role`` "user" or "assistant" joins the agent's memory; "system" joins its summary.
    """

    role: Literal["user", "assistant", "system"]
    text: str


@dataclass(frozen=True)
class End:
    """End the conversation from this side (stop listening, store what was heard)."""

    reason: str = ""


WireEvent = AudioIn | TextIn | MarkPlayed | DtmfIn | TalkStart | TalkEnd
ControlEvent = Configure | Interrupt | ClearInput | Say | Remember | End
InboundEvent = WireEvent | ControlEvent


# --- outbound notifications ------------------------------------------------------------------
@dataclass(frozen=True)
class Notification:
    """Something the loop tells the transport about; ``type`` names it in the JSON form."""

    type: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """The browser protocol's message: ``{"type": ..., **fields}``."""
        return {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}


State = Literal["listening", "thinking", "speaking"]


@dataclass(frozen=True)
class StateChanged(Notification):
    """The agent is now listening, thinking or speaking."""

    type: ClassVar[str] = "state"
    state: State


@dataclass(frozen=True)
class SpeechStarted(Notification):
    """The caller started speaking (a barge-in, when the agent was being heard)."""

    type: ClassVar[str] = "speech_started"


@dataclass(frozen=True)
class SpeechStopped(Notification):
    """The caller's utterance ended; ``audio_ms`` is its length."""

    type: ClassVar[str] = "speech_stopped"
    audio_ms: int


@dataclass(frozen=True)
class EndOfTurn(Notification):
    """How the end of the caller's turn was decided.

    Attributes:
        complete: the turn was judged finished (answer now) or not (keep listening).
        detector: "silence" (the endpoint) or "model" (an end-of-turn model).
        probability: the model's completion probability, when a model decided.
        waited_ms: the silence before the decision, ms.
    """

    type: ClassVar[str] = "end_of_turn"
    complete: bool
    detector: str
    probability: float | None = None
    waited_ms: float = 0.0


@dataclass(frozen=True)
class TranscriptPartial(Notification):
    """What the caller said so far (a speculative transcript, while they may go on)."""

    type: ClassVar[str] = "transcript_partial"
    text: str


@dataclass(frozen=True)
class Transcript(Notification):
    """The caller's words for turn ``generation``, final."""

    type: ClassVar[str] = "transcript"
    text: str
    generation: int = 0


@dataclass(frozen=True)
class Ignored(Notification):
    """Turn ``generation`` held nothing to answer (noise with no words)."""

    type: ClassVar[str] = "ignored"
    generation: int
    reason: str


@dataclass(frozen=True)
class SentenceStarted(Notification):
    """Sentence ``index`` of turn ``generation`` is about to be spoken; ``filler`` covers a slow tool."""

    type: ClassVar[str] = "sentence"
    text: str
    index: int
    filler: bool = False
    generation: int = 0


@dataclass(frozen=True)
class ToolCalled(Notification):
    """The agent called a tool; it is running."""

    type: ClassVar[str] = "tool_call"
    name: str
    arguments: dict[str, Any]
    generation: int = 0


@dataclass(frozen=True)
class ToolReturned(Notification):
    """A tool call ended with ``result`` or ``error`` after ``duration_ms``."""

    type: ClassVar[str] = "tool_result"
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None
    duration_ms: float = 0.0
    generation: int = 0

    @classmethod
    def of(cls, call: dict[str, Any], generation: int) -> ToolReturned:
        """From a stored tool call dict (name, arguments, result, error, duration_ms)."""
        return cls(call["name"], call["arguments"], call.get("result"), call.get("error"),
                   call.get("duration_ms", 0.0), generation)

    def call(self) -> dict[str, Any]:
        """The tool call as stored: name, arguments, result, error, duration_ms."""
        out = asdict(self)
        out.pop("generation")
        return out


@dataclass(frozen=True)
class TurnFinished(Notification):
    """Turn ``generation`` is over: ``record`` is what was heard, with its timings and cost."""

    type: ClassVar[str] = "turn"
    record: TurnRecord
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        """``{"type": "turn", **record.to_json(), "generation"}``."""
        return {"type": self.type, **self.record.to_json(), "generation": self.generation}


@dataclass(frozen=True)
class TurnFailed(Notification):
    """A stage ("stt", "llm", "tts", "agent") of turn ``generation`` failed; ``message`` is safe to show."""

    type: ClassVar[str] = "error"
    stage: str
    message: str
    generation: int = 0


@dataclass(frozen=True)
class DialogueStateChanged(Notification):
    """The agent's dialogue state: the pending request, its filled and missing slots, and the like."""

    type: ClassVar[str] = "dialogue_state"
    state: dict[str, Any]


class Transport(ABC):
    """One live connection's outbound side, as the conversation loop sees it.

    Attributes:
        output_rate: the rate (Hz) at which ``send_audio`` frames are to be sent: 8000 for
            Twilio, whatever the browser or device stated for the others.
        output_encoding: "pcm16" (PCM16 mono little-endian) or "ulaw" (G.711 μ-law, one byte a
            sample: Twilio's media stream, a Realtime client's ``audio/pcmu``).
        frame_ms: outbound frame length; 20 ms is Twilio's media-stream frame.
        paced: the loop sends frames in real time (so that ``clear`` stops what is queued at
            the far end); False lets a batch client receive the reply as fast as it is made.
        confirms_playback: the far end echoes marks when played; False makes every mark count
            as played when sent (a client that cannot report playback).
    """

    output_rate: int = 16000
    output_encoding: Literal["pcm16", "ulaw"] = "pcm16"
    frame_ms: int = 20
    paced: bool = True
    confirms_playback: bool = True

    @abstractmethod
    async def send_audio(self, frame: bytes, sample_rate: int) -> None:
        """Send one frame of agent audio, ``frame_ms`` long, at ``sample_rate`` Hz in ``output_encoding``."""

    @abstractmethod
    async def clear(self) -> None:
        """Drop agent audio the far end has buffered but not yet played (barge-in)."""

    @abstractmethod
    async def mark(self, name: str) -> None:
        """Ask the far end to echo ``name`` once everything sent before it has played."""

    @abstractmethod
    async def hang_up(self) -> None:
        """End the conversation from the agent's side (end_call). Must return promptly."""

    async def notify(self, event: Notification) -> None:  # noqa: B027 - optional, no-op by default
        """Pass a loop notification on (state, transcript, sentence, tool call, turn, ...).

        Wires with no one to show them (Twilio) ignore them; the browser sends
        ``event.to_json()``.
        """
