"""A conversation's clock: a silent caller is reprompted, then let go; a long call is wrapped up.

The loop reports activity (the caller speaking, the agent thinking or speaking) and asks at each
tick what is due. Silence is counted only while nobody speaks and no turn is in flight, so a
slow tool or a long story never counts as the caller's silence. The numbers follow the anchors'
defaults: LiveKit Agents' user-away timeout (15 s there, 8 s here: a phone caller who hears
nothing for 8 s has usually left), Bolna's hang-up after silence.
"""

from __future__ import annotations

from typing import Literal

Due = Literal["reprompt", "goodbye", "wrap_up"]

WRAP_UP_GRACE_S = 20.0
"""At the maximum duration, a reply in progress may finish for up to this long before the wrap-up
cuts in, s."""


class CallLimits:
    """Idle reprompts and the maximum duration of one conversation.

    Args:
        idle_s: caller silence before a reprompt, s (0: never).
        reprompts: reprompts before the goodbye (0: the goodbye comes first).
        max_call_s: the longest conversation, s (0: no limit).
        now: the start, in the clock the loop passes (``time.monotonic()``), s.
    """

    def __init__(self, idle_s: float, reprompts: int, max_call_s: float, now: float) -> None:
        self.idle_s, self.reprompts, self.max_call_s = idle_s, reprompts, max_call_s
        self.started = self._quiet_since = now
        self.reprompted = 0
        self.ended = False

    def start(self, now: float) -> None:
        """The conversation starts now (its greeting is being said)."""
        self.started = self._quiet_since = now

    def busy(self, now: float) -> None:
        """The agent is thinking or speaking, or the caller is speaking: silence starts again later."""
        self._quiet_since = now

    def caller_spoke(self, now: float) -> None:
        """The caller said something (or pressed a key): they are here; reprompts start over."""
        self._quiet_since = now
        self.reprompted = 0

    def due(self, now: float, busy: bool) -> Due | None:
        """What the loop should say now, if anything; after a goodbye or wrap-up, nothing more.

        Args:
            now: the loop's clock, s.
            busy: a turn is in flight or the caller is speaking.
        """
        if self.ended:
            return None
        if self.max_call_s and now - self.started >= self.max_call_s and (
                not busy or now - self.started >= self.max_call_s + WRAP_UP_GRACE_S):
            self.ended = True
            return "wrap_up"
        if busy:
            self._quiet_since = now
            return None
        if self.idle_s and now - self._quiet_since >= self.idle_s:
            self._quiet_since = now
            if self.reprompted >= self.reprompts:
                self.ended = True
                return "goodbye"
            self.reprompted += 1
            return "reprompt"
        return None
