"""Whether this sidecar takes a new call or session: draining, and load-aware admission.

**Load** (0-1) is the larger of two shares, sampled every second over the last 5 s:

- this process's CPU time over the machine's (``time.process_time`` against wall time × cores);
- the speech-to-text queue's fill: utterances waiting for or in the embedded STT
  (:data:`voiceforge.telemetry.STT_QUEUE`) over ``FORGE_STT_QUEUE_FULL``.

Past ``FORGE_MAX_LOAD`` (LiveKit Agents' default worker threshold, 0.7:
https://docs.livekit.io/agents/worker/options/#load_threshold) new calls are refused and
``/ready`` answers 503, so a load balancer sends them elsewhere; calls in progress go on.

**Draining** (:class:`DrainingServer`): the first SIGTERM starts it: ``/ready`` answers 503, new
calls are refused, live conversations may finish for ``FORGE_DRAIN_S`` (default the longest call,
``FORGE_MAX_CALL_S``), then each hears its persona's wrap-up and is hung up, and the process
exits. A second SIGTERM, or Ctrl-C, stops at once.

A refused Twilio call gets TwiML: a ``<Redirect>`` to ``FORGE_DRAIN_REDIRECT_URL`` when set, else
a sentence asking to call back and ``<Hangup/>``
(https://www.twilio.com/docs/voice/twiml/redirect). A refused websocket is closed with 1013,
"try again later" (RFC 6455, section 7.4.1).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from typing import Any

import uvicorn

from server.loopwatch import Sampler
from voiceforge import telemetry

log = logging.getLogger("forge.sidecar.admission")
TRY_AGAIN_LATER = 1013
"""Websocket close code for a refused session (RFC 6455 7.4.1 "Try Again Later")."""
BUSY_SENTENCE = "Sorry, we can't take your call right now. Please call again in a few minutes."


class LoadMonitor(Sampler):
    """This process's load (0-1), sampled every ``interval_s`` over the last ``window`` samples."""

    task_name = "load-monitor"

    def __init__(self, stt_queue_full: int = 4, interval_s: float = 1.0, window: int = 5) -> None:
        self.stt_queue_full = stt_queue_full
        self.interval_s = interval_s
        self.cpu: collections.deque[float] = collections.deque(maxlen=window)
        self.cores = os.cpu_count() or 1

    async def _run(self) -> None:
        wall, used = time.monotonic(), time.process_time()
        while True:
            await asyncio.sleep(self.interval_s)
            now, cpu = time.monotonic(), time.process_time()
            self.cpu.append(min(1.0, (cpu - used) / max(1e-6, (now - wall) * self.cores)))
            wall, used = now, cpu

    def cpu_share(self) -> float:
        """Mean CPU share of the machine over the window (0-1)."""
        return sum(self.cpu) / len(self.cpu) if self.cpu else 0.0

    def stt_share(self) -> float:
        """The STT queue's fill (0-1)."""
        return min(1.0, telemetry.stt_queue_depth() / self.stt_queue_full)

    def load(self) -> float:
        """The larger of the CPU share and the STT queue's fill (0-1)."""
        return max(self.cpu_share(), self.stt_share())


def refusal(state: Any) -> str | None:
    """Why this sidecar takes no new call now ("draining", "overloaded (load 0.82)"), or None."""
    if getattr(state, "draining", False):
        return "draining"
    monitor = getattr(state, "load", None)
    limit = state.settings.forge_max_load
    if monitor is not None and limit > 0 and (load := monitor.load()) >= limit:
        return f"overloaded (load {load:.2f} of {limit:.2f})"
    return None


async def drain(state: Any) -> None:
    """Stop taking calls, let live ones finish up to the drain limit, then wrap up the rest.

    The wrap-up is the persona's (:attr:`voiceforge.agent.persona.Persona.wrap_up`), spoken by the
    conversation's own loop; conversations that do not close 30 s after it are closed.
    """
    state.draining = True
    if (cluster := getattr(state, "cluster", None)) is not None:
        cluster.changed()  # the other instances see it at once
    settings = state.settings
    limit = settings.forge_drain_s if settings.forge_drain_s is not None else settings.forge_max_call_s
    connections = state.connections
    log.warning("draining: %d live conversation(s) may go on for up to %.0f s", len(connections.live()), limit)
    if not await connections.wait_empty(limit or 0):
        for conn in connections.live():
            if conn.loop is not None:
                await conn.loop.wrap_up()
        await connections.wait_empty(30)
    await connections.close_all()
    log.warning("drained")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM as a drain (:func:`drain`) before the usual shutdown."""

    def __init__(self, config: uvicorn.Config, state: Any) -> None:
        super().__init__(config)
        self.state = state  # the app's state: connections and settings once the lifespan has run
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: Any = None) -> None:  # noqa: D102 - uvicorn's
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:  # noqa: D102 - uvicorn's signal handler
        state = self.state
        if sig != signal.SIGTERM or self._draining or self._loop is None or state is None \
                or not hasattr(state, "connections"):
            super().handle_exit(sig, frame)
            return
        self._draining = True
        state.draining = True  # at once: /ready and the webhooks see it before the task runs

        async def drain_then_exit() -> None:
            try:
                await drain(state)
            finally:
                self.should_exit = True  # uvicorn's shutdown; drained, the process exits 0

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(drain_then_exit(), name="drain"))
