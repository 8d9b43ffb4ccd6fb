"""Keypad digits (DTMF) as words the agent understands.

Twilio sends one ``dtmf`` message per key (``{"event": "dtmf", "dtmf": {"digit": "1"}}``, see
Twilio's Media Streams WebSocket messages); a caller typing a customer number sends several.
Keys are collected until ``#``, until the persona maps the keys so far and no longer mapping
begins with them, or until :data:`INTER_DIGIT_S` passes without a key (Twilio's <Gather> ends
on ``#`` and on a timeout the same way). The keys then become one utterance: the persona's
meaning for them (``[keypad]`` in its file, ``"1" = "I want to check my order"``) or
"I pressed 42 on the keypad.", which the offline brain and an LLM read like speech.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

INTER_DIGIT_S = 2.0
"""Keys more than this far apart are separate entries, s."""


def keypad_text(keys: str, meanings: dict[str, str]) -> str:
    """What the caller means by ``keys`` (digits, ``*``; ``#`` already removed)."""
    return meanings.get(keys) or f"I pressed {keys} on the keypad."


class Keypad:
    """Collects keys into entries and hands each entry on as text.

    Args:
        meanings: the persona's keypad map (keys without the trailing ``#``).
        send: called with an entry's text (the loop answers it as an utterance).
        inter_digit_s: see :data:`INTER_DIGIT_S`.
    """

    def __init__(self, meanings: dict[str, str], send: Callable[[str], Awaitable[None]],
                 inter_digit_s: float = INTER_DIGIT_S) -> None:
        self.meanings, self._send, self.inter_digit_s = meanings, send, inter_digit_s
        self._keys = ""
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task] = set()

    async def press(self, key: str) -> None:
        """One key (``0``–``9``, ``*``, ``#``); an entry is sent when it is complete."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if key == "#":
            await self.flush()
            return
        self._keys += key
        if self._keys in self.meanings and not any(
                other != self._keys and other.startswith(self._keys) for other in self.meanings):
            await self.flush()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.inter_digit_s, self._flush_later)

    def _flush_later(self) -> None:
        task = asyncio.ensure_future(self.flush())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Send the keys collected so far as one entry (nothing when there are none)."""
        keys, self._keys = self._keys, ""
        if keys:
            await self._send(keypad_text(keys, self.meanings))

    def close(self) -> None:
        """Drop a waiting entry (the call ended)."""
        if self._timer is not None:
            self._timer.cancel()
        self._keys = ""
