"""The sidecar's perimeter: the API key on every route but Twilio's, Origin on websockets.

- HTTP: ``Authorization: Bearer <FORGE_API_KEY>``, compared in constant time; 401 otherwise.
- Websockets: checked before ``accept``. Browsers cannot set headers on a websocket, so the
  key may also come as a subprotocol ``bearer.<key>`` next to ``forge.v1`` (the server then
  accepts ``forge.v1``); an ``Origin`` header, when present, must be in
  ``FORGE_ALLOWED_ORIGINS`` (a page on another site cannot drive the agent through the
  owner's browser). Non-browser clients send no Origin and use the header.

Twilio's routes are checked by signature instead (``routers/twilio.py``); ``/``, ``/health``
and the docs are open.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket

from server.perimeter import CheckedRoute, checked_before_body

log = logging.getLogger("forge.sidecar.auth")

SUBPROTOCOL = "forge.v1"
"""The websocket subprotocol the sidecar accepts when a browser sends its key as one."""

UNAUTHORIZED = "missing or invalid API key: send Authorization: Bearer <FORGE_API_KEY>"


def bearer_key(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (scheme in any case, spaces trimmed), or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of an offered key with the sidecar's."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


@checked_before_body()
async def require_api_key(request: Request) -> str:
    """FastAPI dependency: the request's API key, checked (by the perimeter too, before the body).

    Raises:
        HTTPException: 401 with ``WWW-Authenticate: Bearer`` when missing or wrong.
    """
    given = bearer_key(request.headers.get("authorization"))
    if not key_matches(request.app.state.api_key, given):
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return given or ""


def protected_router(**kwargs: Any) -> APIRouter:
    """An ``APIRouter`` (``kwargs`` passed on) whose every route needs the API key, checked before the body."""
    return APIRouter(route_class=CheckedRoute, dependencies=[Depends(require_api_key)], **kwargs)


def websocket_key(ws: WebSocket) -> tuple[str | None, str | None]:
    """(the key a websocket offers, the subprotocol to accept or None)."""
    given = bearer_key(ws.headers.get("authorization"))
    if given:
        return given, None
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    for proto in offered:
        if proto.startswith("bearer."):
            return proto[len("bearer."):], SUBPROTOCOL if SUBPROTOCOL in offered else None
    return None, None


async def authorize_websocket(ws: WebSocket) -> tuple[bool, str | None]:
    """Check a websocket's Origin and key before ``accept``; close it with 1008 if refused.

    Returns:
        (allowed, the subprotocol to pass to ``accept``).
    """
    origin = ws.headers.get("origin")
    settings = ws.app.state.settings
    if origin is not None and origin.rstrip("/") not in settings.allowed_origins:
        log.warning("refused websocket %s: origin not allowed", ws.url.path)
        await ws.close(code=1008, reason="origin not allowed")
        return False, None
    given, subprotocol = websocket_key(ws)
    if not key_matches(ws.app.state.api_key, given):
        log.warning("refused websocket %s: missing or invalid API key", ws.url.path)
        await ws.close(code=1008, reason="missing or invalid API key")
        return False, None
    return True, subprotocol
