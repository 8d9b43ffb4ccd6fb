"""A small MCP server built with the official SDK, for the agent-builder tests.

Run as a script it serves stdio (``python -m tests.support.mcp_menu``), or streamable HTTP on
``--port``; :data:`server` is the same server, for ``MCPServer.streamable_http_app()``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

server = MCPServer("menu")
PRICES = {"margherita": 12.5, "pepperoni": 14.0}


@server.tool()
def price_of(pizza: Annotated[str, Field(description="the pizza's name", examples=["margherita", "pepperoni"])],
             size: Literal["small", "medium", "large"] = "medium",
             quantity: Annotated[int, Field(ge=1, le=10)] = 1) -> dict:
    """The price of a pizza on the menu, in dollars."""
    if pizza.lower() not in PRICES:
        raise ToolError(f"there is no {pizza} on the menu")  # its message reaches the client
    each = PRICES[pizza.lower()] + (2 if size == "large" else 0)
    return {"pizza": pizza.lower(), "size": size, "quantity": quantity, "price": each * quantity}


@server.tool()
def wipe_menu() -> str:
    """Delete the whole menu (never allowed to an agent)."""
    PRICES.clear()
    return "wiped"


if __name__ == "__main__":
    if "--port" in sys.argv:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[sys.argv.index("--port") + 1]))
    else:
        server.run("stdio")
