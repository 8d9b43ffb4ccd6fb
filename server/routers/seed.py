"""The seed "General Voice Agent Backend" API surface, as aliases of Forge's own routes.

``/tools/understanding/speech-to-text``, ``/tools/response/text-to-speech`` and
``/tools/conversation/start|process`` are the same handlers as ``/voice/*`` and
``/conversation/*``; ``/ws/status`` lists the live websocket conversations and
``/ws/disconnect/{id}`` ends one. (``/webhooks/twilio/*`` lives with the Twilio routes.)
"""

from __future__ import annotations

from fastapi import HTTPException, Path, Request
from fastapi.responses import Response

from server.auth import protected_router
from server.routers import voice

router = protected_router(tags=["seed API"])
router.post("/tools/understanding/speech-to-text")(voice.speech_to_text)
router.post("/tools/response/text-to-speech", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}}})(voice.text_to_speech)
router.post("/tools/conversation/start")(voice.conversation_start)
router.post("/tools/conversation/process")(voice.conversation_process)


@router.get("/ws/status")
def ws_status(request: Request) -> dict:
    """The live websocket conversations of this process (id, kind, persona, age, turns), and its sockets.

    ``active`` counts conversations; ``sockets_open`` every open websocket, ``sockets_silent``
    those accepted that have not sent a message yet (closed after ``FORGE_FIRST_MESSAGE_S``).
    """
    live = request.app.state.connections.status()
    return {"active": len(live), "connections": live, **request.app.state.perimeter.status()}


@router.post("/ws/disconnect/{connection_id}")
async def ws_disconnect(request: Request, connection_id: str = Path(max_length=32, pattern=r"^[0-9a-f]+$")) -> dict:
    """End one live conversation (what it said so far stays stored)."""
    conn = request.app.state.connections.get(connection_id)
    if conn is None:
        raise HTTPException(404, f"no live connection {connection_id}")
    await conn.close()
    return {"disconnected": connection_id}
