"""Tools the agent can call: the registry and the built-in tools."""

import functools

from voiceforge.tools.registry import Fault, Tool, ToolContext, ToolError, ToolRegistry, ToolResult


def build_registry(default_delay_ms: int = 0) -> ToolRegistry:
    """A registry with every built-in tool registered."""
    from voiceforge.tools import business, calls, hanuman, messaging, sql

    registry = ToolRegistry(default_delay_ms=default_delay_ms)
    sql.register(registry)  # before business: "how many orders ..." is a query, not a lookup
    messaging.register(registry)  # before business: an SMS may mention orders or appointments
    business.register(registry)
    calls.register(registry)
    hanuman.register(registry)  # opt-in: only personas that name them (the storyteller)
    return registry


@functools.cache
def builtin_names() -> frozenset[str]:
    """The built-in tools' names (a tool an agent declares may not take one)."""
    return frozenset(build_registry().names())


__all__ = ["Fault", "Tool", "ToolContext", "ToolError", "ToolRegistry", "ToolResult", "build_registry",
           "builtin_names"]
