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
from server.cluster import ControlError, control, conversations_of
from server.routers import voice

router = protected_router(tags=["seed API"])
router.post("/tools/understanding/speech-to-text")(voice.speech_to_text)
router.post("/tools/response/text-to-speech", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}}})(voice.text_to_speech)
router.post("/tools/conversation/start")(voice.conversation_start)
router.post("/tools/conversation/process")(voice.conversation_process)


@router.get("/ws/status")
async def ws_status(request: Request) -> dict:
    """The live websocket conversations of this process (id, kind, persona, call SID, age, turns), and its sockets.

    ``active`` counts conversations; ``sockets_open`` every open websocket, ``sockets_silent``
    those accepted that have not sent a message yet (closed after ``FORGE_FIRST_MESSAGE_S``).
    With REDIS_URL, ``instances`` lists every live sidecar (name, load, draining, conversations)
    and ``everywhere`` every instance's conversations, each with its ``instance``; without,
    ``everywhere`` is this process's.
    """
    state = request.app.state
    live = state.connections.status()
    instance = state.settings.instance
    beats = await state.cluster.instances() if state.cluster is not None else \
        [{"instance": instance, "draining": state.draining, "live": live}]
    instances = [{k: v for k, v in beat.items() if k != "live"} | {"active": len(beat["live"])} for beat in beats]
    return {"active": len(live), "connections": live, "instance": instance, "instances": instances,
            "everywhere": conversations_of(beats), **state.perimeter.status()}


@router.post("/ws/disconnect/{connection_id}")
async def ws_disconnect(request: Request, connection_id: str = Path(max_length=32, pattern=r"^[0-9a-f]+$")) -> dict:
    """End one live conversation, on whichever instance holds it (what it said so far stays stored).

    404 when no instance holds it; 503 when its instance does not answer.
    """
    try:
        done = await control(request.app.state, "disconnect", connection_id)
    except ControlError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return {"disconnected": connection_id, "instance": done["instance"]}
