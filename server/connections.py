"""The live websocket conversations of this sidecar process, for ``/ws/status`` and disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voiceforge.conversation import ConversationLoop


@dataclass
class Connection:
    """One live conversation: its id, wire, persona, start time, how to end it, and a phone call's SID."""

    id: str
    kind: str
    persona: str
    close: Callable[[], Awaitable[None]]
    started: float = field(default_factory=time.time)
    loop: ConversationLoop | None = None
    call_sid: str | None = None

    def status(self) -> dict[str, Any]:
        """JSON: id, kind, persona, call SID (phone), seconds open, conversation id, turns stored so far."""
        return {"id": self.id, "kind": self.kind, "persona": self.persona, "call_sid": self.call_sid,
                "open_s": round(time.time() - self.started, 1),
                "conversation_id": self.loop.conversation_id if self.loop is not None else None,
                "turns_stored": self.loop.turns_stored if self.loop is not None else 0}


class Connections:
    """Live conversations by id (browser sockets, phone streams, devices)."""

    def __init__(self) -> None:
        self._live: dict[str, Connection] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self.on_change: Callable[[], None] | None = None
        """Called when a conversation starts or ends (the cluster publishes its registry then)."""

    def add(self, kind: str, persona: str, close: Callable[[], Awaitable[None]],
            loop: ConversationLoop | None = None, call_sid: str | None = None) -> Connection:
        """Register a conversation; returns it with a fresh id."""
        conn = Connection(secrets.token_hex(8), kind, persona, close, loop=loop, call_sid=call_sid)
        self._live[conn.id] = conn
        self._empty.clear()
        if self.on_change is not None:
            self.on_change()
        return conn

    def remove(self, conn_id: str) -> None:
        """Forget a conversation that ended."""
        if self._live.pop(conn_id, None) is not None and self.on_change is not None:
            self.on_change()
        if not self._live:
            self._empty.set()

    async def wait_empty(self, timeout_s: float) -> bool:
        """Wait until no conversation is live, at most ``timeout_s``; True when none is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout_s)
        return not self._live

    def live(self) -> list[Connection]:
        """The live conversations."""
        return list(self._live.values())

    def get(self, conn_id: str) -> Connection | None:
        """A live conversation by id, or None."""
        return self._live.get(conn_id)

    def status(self) -> list[dict[str, Any]]:
        """Every live conversation's status."""
        return [c.status() for c in self._live.values()]

    async def close_all(self) -> None:
        """End every live conversation (shutdown)."""
        await asyncio.gather(*(c.close() for c in list(self._live.values())), return_exceptions=True)
