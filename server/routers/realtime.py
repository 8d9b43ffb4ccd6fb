"""The ``realtime`` role: Forge's OpenAI-Realtime-compatible websocket, ``forge realtime-server``.

``/v1/realtime?model=...`` (OpenAI's path) and ``/openai/realtime?api-version=...&deployment=...``
(Azure OpenAI's) run a conversation loop over a :class:`server.transports.realtime.RealtimeServerTransport`.
A client authenticates with Forge's API key as ``Authorization: Bearer <key>`` or, as Azure
clients do, an ``api-key`` header; the key is checked before ``accept`` and a refusal is an
HTTP 401 with OpenAI's error body.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from server.auth import key_matches
from server.transports import close
from server.transports.realtime import RealtimeServerTransport
from voiceforge.conversation import ConversationLoop
from voiceforge.engine import Engine

websockets = APIRouter(tags=["realtime"])


async def realtime(ws: WebSocket, persona: str | None = None) -> None:
    """One Realtime client: authenticate, ``session.created``, then the loop until it leaves.

    The conversation is stored under the "realtime" channel, unless the URL says ``store=false``
    (Forge's own Realtime client, which stores it itself under the channel it serves).
    """
    given = ws.headers.get("api-key") or ws.headers.get("authorization", "").partition(" ")[2]
    if not key_matches(ws.app.state.api_key, given.strip() or None):
        try:
            await ws.send_denial_response(JSONResponse({"error": {"message": "invalid API key"}}, 401))
        except RuntimeError:
            await ws.close(code=1008)
        return
    await ws.accept()
    engine: Engine = ws.app.state.engine
    transport = RealtimeServerTransport(ws)
    try:
        pipeline = engine.pipeline(persona, channel="realtime", persist=ws.query_params.get("store") != "false")
    except Exception:  # noqa: BLE001 - an unknown persona in the query
        await transport.error(f"no persona {persona!r}", "invalid_persona")
        await ws.close(code=1008)
        return
    # server_vad (the session's default) is the silence endpoint; semantic_vad switches to the model.
    loop = ConversationLoop(pipeline, transport, greet=False, limits=False, turn_detector="silence",
                            name=f"realtime-{transport.session_config['id']}")
    await transport.start(ws.query_params.get("model") or ws.query_params.get("deployment"),
                          pipeline.persona.prompt_for("realtime"))
    try:
        await loop.run(transport.events())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await close(ws)


websockets.websocket("/v1/realtime")(realtime)
websockets.websocket("/openai/realtime")(realtime)  # Azure OpenAI's path (api-version, deployment in the query)
