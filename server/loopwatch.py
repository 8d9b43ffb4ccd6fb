"""Event-loop lag: how late a 10 ms timer fires, sampled continuously.

A blocking call anywhere on the loop (a database query, a model run, a slow file read) shows up
as lag; every live call on the sidecar stutters by that much. The sidecar runs one monitor and
reports its percentiles at ``/api/metrics``; ``bench/load.py`` reads them under load.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time


class Sampler:
    """A background task on the running loop that a subclass's ``_run`` fills with samples."""

    task_name = "sampler"
    _task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start sampling on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class LagMonitor(Sampler):
    """Samples event-loop lag every ``interval_ms`` into a ring of the last ``keep`` samples (ms)."""

    task_name = "loop-lag-monitor"

    def __init__(self, interval_ms: float = 10.0, keep: int = 6000) -> None:
        self.interval_s = interval_ms / 1000
        self.samples: collections.deque[float] = collections.deque(maxlen=keep)

    def reset(self) -> None:
        """Forget the samples so far (start a measurement window)."""
        self.samples.clear()

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, (time.perf_counter() - before - self.interval_s) * 1000))

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of lag in ms (0 when nothing was sampled)."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict[str, float]:
        """{"samples", "p50_ms", "p99_ms", "max_ms"} over the kept samples."""
        return {"samples": len(self.samples), "p50_ms": round(self.percentile(50), 2),
                "p99_ms": round(self.percentile(99), 2), "max_ms": round(max(self.samples, default=0.0), 2)}
