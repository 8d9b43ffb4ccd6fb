"""Adapters from each wire to the conversation loop's transport port (voiceforge/transport.py)."""

from __future__ import annotations

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState


async def close(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close the socket if it is still open: the far end then stops waiting for our close frame
    (the websockets client waits up to 10 s for it; Starlette does not close on return)."""
    if ws.application_state is WebSocketState.CONNECTED:
        try:
            await ws.close(code=code, reason=reason)
        except (WebSocketDisconnect, RuntimeError, OSError):  # the far end left first (uvicorn's ClientDisconnected)
            pass


async def send(ws: WebSocket, data: str | bytes) -> None:
    """Send a text or binary message; nothing once the socket is closed (the receive side ends the loop)."""
    if ws.application_state is not WebSocketState.CONNECTED:
        return
    try:
        if isinstance(data, bytes):
            await ws.send_bytes(data)
        else:
            await ws.send_text(data)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
