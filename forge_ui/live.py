"""The Live page's controller: one hands-free conversation over WebRTC, run for a Streamlit page.

streamlit-webrtc's aiortc threads feed the WebRTC transport (server/transports/webrtc.py); the
conversation runs on the app's background event loop; the page polls :meth:`LivePageController.transcript`
and the state from its own thread. Nothing here calls Streamlit, so it is tested without a page.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from typing import Any

from server.transports.webrtc import OUTPUT_RATE, WebRtcTransport
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine
from voiceforge.transport import (
    Configure,
    DtmfIn,
    End,
    Ignored,
    Notification,
    SentenceStarted,
    SpeechStarted,
    StateChanged,
    TextIn,
    ToolReturned,
    Transcript,
    TurnFinished,
)

log = logging.getLogger("forge.live")

FEED_LIMIT = 400
"""Loop events kept for the page (oldest dropped first)."""

__all__ = ["FEED_LIMIT", "OUTPUT_RATE", "LivePageController"]


class LivePageController:
    """One live conversation on the Live page: transport, loop and the page's feed.

    Args:
        engine: Forge's engine.
        loop: the asyncio loop to run the conversation on (the app's background loop).
        persona_id: the persona (None: the default).
        voice: a TTS voice overriding the persona's (None: the persona's).
        vad_threshold: 0.3–0.95, how sure the VAD must be that a frame is speech.
        silence_ms: the silence that ends an utterance (endpointing), ms.
        backend: "cascade" (the conversation loop: STT → LLM → TTS) or "realtime" (speech-to-speech
            over a Realtime session: OpenAI when configured, else Forge's offline server at
            ``FORGE_REALTIME_URL``; the service does its own turn detection).

    Raises:
        PersonaError: no such persona.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, persona_id: str | None = None, *,
                 voice: str | None = None, vad_threshold: float = 0.5, silence_ms: int | None = None,
                 backend: str = "cascade") -> None:
        if backend not in ("cascade", "realtime"):
            raise ValueError(f"unknown backend {backend!r}: cascade or realtime")
        self.engine, self.loop, self.backend = engine, loop, backend
        self.voice = voice
        self.pipeline = engine.pipeline(persona_id, channel="browser")
        self.vad_threshold, self.silence_ms = vad_threshold, silence_ms
        self.transport = WebRtcTransport(loop, on_event=self._on_event)
        self.state = "connecting"
        self.started_at = time.time()
        self.error: str | None = None
        self.closed = False
        self._feed: collections.deque[tuple[float, Notification]] = collections.deque(maxlen=FEED_LIMIT)
        self._feed_lock = threading.Lock()
        self._task: asyncio.Future | None = None

    def start(self) -> None:
        """Start the conversation on the loop (the greeting plays once the peer connects).

        The cascade's speech models are loaded first (blocking, once per process), so that the
        first utterance's STT time is transcription, not model loading.
        """
        if self.backend == "cascade":
            self.engine.warm_up()
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self.loop)

    async def _run(self) -> None:
        name = f"live-{id(self):x}"
        try:
            if self.backend == "realtime":
                from realtime.bridge import RealtimeBridge

                # The service speaks in its own voices: the pipeline keeps the persona's.
                bridge = RealtimeBridge(self.engine, self.transport, self.pipeline.persona.id, None, name,
                                        audio_format="audio/pcm", channel="browser", voice=self.voice,
                                        pipeline=self.pipeline, vad_threshold=self.vad_threshold,
                                        silence_ms=self.silence_ms)
                await bridge.run(self.transport.events())
                return
            self.pipeline.configure(voice=self.voice or "")
            conversation = ConversationLoop(self.pipeline, self.transport, name=name)
            conversation.configure_vad(threshold=self.vad_threshold, silence_ms=self.silence_ms)
            await conversation.run(self.transport.events())
        except Exception as exc:  # noqa: BLE001 - shown on the page, the app goes on
            log.exception("live conversation failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed = True
            self.state = "ended"

    def configure(self, vad_threshold: float | None = None, silence_ms: int | None = None,
                  turn_detector: str | None = None) -> None:
        """Change the VAD sensitivity (0.3–0.95), the end-of-turn detector ("model" or "silence") and
        the silence endpoint (ms) from the next utterance."""
        if self.backend == "cascade" and not self.closed:
            self.transport.post(Configure(vad_threshold=vad_threshold, silence_ms=silence_ms,
                                          turn_detector=turn_detector))

    def press(self, key: str) -> None:
        """A keypad key (0-9, *, #), as a phone caller's DTMF."""
        if not self.closed:
            self.transport.post(DtmfIn(key))

    def say(self, text: str) -> None:
        """A typed message in the live conversation."""
        self.transport.post(TextIn(text))

    def stop(self, timeout: float = 20.0) -> None:
        """End the conversation: store what was heard, then return (at most ``timeout`` s)."""
        if self.closed and self._task is None:
            return
        self.transport.post(End("stopped on the page"))
        if self._task is not None:
            with contextlib.suppress(Exception):
                self._task.result(timeout)
        self.closed = True

    @property
    def conversation_id(self) -> int | None:
        """The stored conversation's id (None until its first turn is stored)."""
        return self.pipeline.conversation_id

    def _on_event(self, event: Notification) -> None:
        if isinstance(event, StateChanged):
            self.state = event.state
        with self._feed_lock:
            self._feed.append((time.time(), event))

    def feed(self) -> list[tuple[float, Notification]]:
        """The loop's notifications so far (oldest first), each with the Unix time (s) it came."""
        with self._feed_lock:
            return list(self._feed)

    def transcript(self) -> list[dict[str, Any]]:
        """The conversation as the page shows it: one entry per utterance and per reply.

        Entries: ``{"role": "user", "text", "partial", "generation"}`` (``partial`` while the user
        is still speaking or being transcribed, ``generation`` None until then) and ``{"role": "agent", "text", "generation",
        "interrupted", "tool_calls", "timings_ms", "done"}``.
        """
        entries: list[dict[str, Any]] = []
        agents: dict[int, dict[str, Any]] = {}
        pending_user: dict[str, Any] | None = None
        for _, event in self.feed():
            if isinstance(event, SpeechStarted):
                if pending_user is None:
                    pending_user = {"role": "user", "text": "…", "partial": True, "generation": None}
                    entries.append(pending_user)
            elif isinstance(event, Transcript):
                if pending_user is not None:
                    pending_user.update(text=event.text, partial=False, generation=event.generation)
                    pending_user = None
                else:
                    entries.append({"role": "user", "text": event.text, "partial": False,
                                    "generation": event.generation})
            elif isinstance(event, Ignored) and pending_user is not None:
                entries.remove(pending_user)
                pending_user = None
            elif isinstance(event, SentenceStarted | ToolReturned | TurnFinished):
                agent = agents.get(event.generation)
                if agent is None:
                    agent = {"role": "agent", "text": "", "generation": event.generation, "interrupted": False,
                             "tool_calls": [], "timings_ms": {}, "done": False, "sentences": []}
                    agents[event.generation] = agent
                    # A reply goes before the user's later words (speech over a greeting whose
                    # transcript came after it), so the page reads in the order things were said.
                    later = next((i for i, e in enumerate(entries) if e["role"] == "user"
                                  and (e["generation"] is None or e["generation"] > event.generation)), len(entries))
                    entries.insert(later, agent)
                if isinstance(event, SentenceStarted):
                    agent["sentences"].append(event.text)
                    agent["text"] = " ".join(agent["sentences"])
                elif isinstance(event, ToolReturned):
                    agent["tool_calls"].append({**event.call(), "generation": event.generation})
                else:
                    record = event.record
                    agent.update(interrupted=record.interrupted, timings_ms=record.timings_ms or {}, done=True,
                                 error=record.error, cost=record.cost, usage=record.usage.to_json())
                    if record.interrupted:
                        agent["heard"] = record.reply
        return entries
