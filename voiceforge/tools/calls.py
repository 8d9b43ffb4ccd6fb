"""end_call: the agent hangs up (phone) or ends the conversation (browser, CLI)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from voiceforge.tools.declaration import load_declarations
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
    """Add end_call to ``registry`` (its phrasings: calls.toml)."""
    registry.add(end_call, load_declarations(Path(__file__).with_suffix(".toml"))["end_call"])
