"""A demo order endpoint for the shipped pizza-shop agent (prompts/pizza_shop.toml).

It stands in for a shop's own order system, so the agent's declared HTTP tool has something
real to call: ``POST /demo/pizza/orders`` with ``{"pizza", "size", "quantity"}`` answers the
order number, the total (USD) and when it is ready. It keeps nothing: point the tool's ``url``
at your own backend to build on it. Like every sidecar route it needs the API key.
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, Field

from server.auth import protected_router

router = protected_router(tags=["demo"])

PRICES = {  # USD by size: small, medium, large (the agent's menu tool says the same)
    "margherita": (9, 12, 15), "pepperoni": (10, 13, 16), "funghi": (10, 13, 16), "diavola": (11, 14, 17),
    "marinara": (8, 10, 12), "quattro formaggi": (11, 14, 17),
}
SIZES = ("small", "medium", "large")


class PizzaOrder(BaseModel):
    """One line of pizza: which, what size, how many (1-20)."""

    pizza: Literal["margherita", "pepperoni", "funghi", "diavola", "marinara", "quattro formaggi"]
    size: Literal["small", "medium", "large"] = "medium"
    quantity: int = Field(default=1, ge=1, le=20)


@router.post("/demo/pizza/orders", status_code=201)
def place_pizza_order(order: PizzaOrder) -> dict:
    """Take an order: ``{"order_number", "pizza", "size", "quantity", "total", "ready_in_minutes"}`` (422 on a bad one)."""
    total = PRICES[order.pizza][SIZES.index(order.size)] * order.quantity
    return {"order_number": f"{secrets.randbelow(9000) + 1000}", "pizza": order.pizza, "size": order.size,
            "quantity": order.quantity, "total": total, "ready_in_minutes": 20 + 5 * (order.quantity - 1)}
