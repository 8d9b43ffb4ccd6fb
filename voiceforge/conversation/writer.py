"""One conversation's turn writer: turns are stored in order, off the audio path, and never dropped.

A slow or locked database holds up only this task, never the loop's audio; the loop queues a
write the moment there is something to keep and goes on. Each turn is written twice: once as
soon as the caller's words are transcribed (``answered`` False: what the caller said survives a
crash during the reply), and again when it is settled (the reply as heard, tool calls, timings),
which brings that same row up to date. A write that fails for a reason that may pass (a locked
database, a lost connection) is tried again with exponential backoff, 0.5 s doubling to 30 s,
until it succeeds; later writes wait behind it, so the order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from voiceforge.records import TurnRecord
from voiceforge.store.db import retry_transient

log = logging.getLogger(__name__)

Write = tuple[Literal["open", "settle", "rekey"], int | None, TurnRecord | int | None]


class TurnWriter:
    """Stores queued turns one at a time, in the order they were queued.

    Args:
        save: writes one turn (the pipeline's ``save``): inserts it, or updates the row named by
            the record's ``turn_id``; returns the row's id. A failure that may pass is tried
            again (``voiceforge.store.db.retry_transient``); any other is logged and that write
            given up.
        name: a label for logs (a call SID, a connection id).
    """

    def __init__(self, save: Callable[[TurnRecord], Awaitable[int]], name: str = "") -> None:
        self._save, self.name = save, name
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._rows: dict[int, int] = {}
        self.stored = 0
        """Settled turns written."""
        self.retries = 0
        """Writes tried again after a failure that may pass."""

    def start(self) -> None:
        """Start the writing task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"store-{self.name}")

    def open(self, key: int, record: TurnRecord) -> None:
        """Queue the first write of turn ``key``: the caller's words, before the reply (``answered`` False)."""
        self._queue.put_nowait(("open", key, record))

    def rekey(self, old: int, new: int) -> None:
        """Turn ``old`` was merged into turn ``new``: ``new``'s writes update ``old``'s row."""
        self._queue.put_nowait(("rekey", old, new))

    def put(self, record: TurnRecord, key: int | None = None) -> None:
        """Queue a settled turn for storage (updating turn ``key``'s row when it was opened)."""
        self._queue.put_nowait(("settle", key, record))

    async def close(self, timeout_s: float = 20.0) -> None:
        """Store what is queued (waiting at most ``timeout_s``; writes still failing go on trying), then stop."""
        await self._queue.put(None)
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            kind, key, payload = item
            if kind == "rekey":
                if key in self._rows:
                    self._rows[payload] = self._rows.pop(key)
                continue
            record = payload
            if key in self._rows:
                record.turn_id = self._rows[key] if kind == "open" else self._rows.pop(key)
            try:
                row = await retry_transient(lambda r=record: self._save(r), f"storing a turn of {self.name}",
                                            on_retry=self._count_retry)
            except Exception:  # noqa: BLE001 - a write that cannot succeed is logged; the call goes on
                log.exception("storing a turn of %s failed", self.name)
                continue
            if kind == "open" and key is not None:
                self._rows[key] = row
            elif kind == "settle":
                self.stored += 1

    def _count_retry(self) -> None:
        self.retries += 1
