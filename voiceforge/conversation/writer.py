"""One conversation's turn writer: finished turns are stored in order, off the audio path.

A slow or locked database holds up only this task, never the loop's audio; the loop queues a
turn the moment it is settled and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from voiceforge.records import TurnRecord

log = logging.getLogger(__name__)


class TurnWriter:
    """Stores queued turns one at a time, in the order they were queued.

    Args:
        save: writes one turn (the pipeline's ``save``); its exceptions are logged, not raised.
        name: a label for logs (a call SID, a connection id).
    """

    def __init__(self, save: Callable[[TurnRecord], Awaitable[int]], name: str = "") -> None:
        self._save, self.name = save, name
        self._queue: asyncio.Queue[TurnRecord | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.stored = 0

    def start(self) -> None:
        """Start the writing task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"store-{self.name}")

    def put(self, record: TurnRecord) -> None:
        """Queue a settled turn for storage."""
        self._queue.put_nowait(record)

    async def close(self, timeout_s: float = 20.0) -> None:
        """Store what is queued (waiting at most ``timeout_s``), then stop."""
        await self._queue.put(None)
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def _run(self) -> None:
        while (record := await self._queue.get()) is not None:
            try:
                await self._save(record)
                self.stored += 1
            except Exception:  # noqa: BLE001 - a failed write is logged; the call goes on
                log.exception("storing a turn of %s failed", self.name)
