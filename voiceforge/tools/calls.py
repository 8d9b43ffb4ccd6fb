"""end_call: the agent hangs up (phone) or ends the conversation (browser, CLI)."""

from __future__ import annotations

import inspect
from typing import Any

from voiceforge.tools.registry import ToolContext, ToolRegistry


async def end_call(ctx: ToolContext, reason: str = "the caller said goodbye") -> dict[str, Any]:
    """End the call after saying goodbye. Use when the caller is done or asks to hang up.

    Args:
        reason: why the call ends, for the record.
    """
    ctx.state["ended"] = reason
    if ctx.on_end_call is not None:
        outcome = ctx.on_end_call(reason)
        if inspect.isawaitable(outcome):
            await outcome
    return {"ended": True, "summary": "Thanks for calling. Goodbye!"}


def register(registry: ToolRegistry) -> None:
    """Add end_call to ``registry``."""
    registry.add(
        end_call,
        triggers=[r"\b(good ?bye|bye|hang up|end (the )?call|that'?s all)\b"],
        extract=lambda utterance, known: {"reason": "the caller said goodbye"},
        tags=("calls",),
        offer="end the call",
        examples=["goodbye", "bye for now", "hang up", "that's all, thank you", "I'm all set, bye",
                  "nothing else, see you", "end the call", "we're done",
                  "alright, talk to you later", "that will be all", "I have to go now, bye",
                  "please disconnect the call", "okay that's everything, cheers",
                  "have a nice day, bye", "no, that's all, have a good evening",
                  "I'll leave it there", "that'll do for now, thanks"],
    )
