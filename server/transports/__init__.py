"""Adapters from each wire to the conversation loop's transport port (voiceforge/transport.py)."""

from __future__ import annotations

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState


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
