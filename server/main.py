"""The sidecar: the parts of Forge that must be reachable from outside (Twilio, browsers, ESP32).

One app factory, :func:`create_app`, serves one or more *roles*, each a set of routers over the
same engine, so they can run in one process or apart:

============  =====================================  ===============================================
role          command                                paths
============  =====================================  ===============================================
``sidecar``   ``forge serve`` (``make run``)         ``/``, ``/health``, ``/docs``, ``/api/*``,
                                                     ``/ws``, ``/ws/status``, ``/twilio/*`` (and the
                                                     seed's ``/voice``, ``/incoming``, ``/status``,
                                                     ``/sms``, ``/stream``), ``/device/*``
``realtime``  ``forge realtime-server``              ``/v1/realtime``, ``/openai/realtime`` (Azure),
                                                     ``/``, ``/health``
``models``    ``forge serve-models``                 ``/v1/audio/transcriptions``, ``/v1/audio/speech``,
                                                     ``/v1/chat/completions``, ``/v1/models`` (OpenAI-
                                                     compatible: server/routers/models.py)
============  =====================================  ===============================================

The roles share no path, so ``create_app(roles=("sidecar", "realtime", "models"))`` serves all
three. Every route needs the API key except Twilio's (signature-checked),
the devices' own routes (``/device/*``, their device token), ``/``, ``/health`` and the docs,
which are served from a package (no CDN), so they work offline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from server.admission import LoadMonitor
from server.connections import Connections
from server.logs import hide_query_strings
from server.loopwatch import LagMonitor
from server.perimeter import Perimeter, PerimeterCounts
from server.ratelimit import RateLimiter
from voiceforge import __version__, telemetry
from voiceforge.config import Settings, get_settings
from voiceforge.engine import Engine
from voiceforge.store import conversations

log = logging.getLogger("forge.sidecar")


ROLES = ("sidecar", "realtime", "models")
"""The roles :func:`create_app` can serve (see the module docstring for their paths)."""


def create_app(settings: Settings | None = None, engine: Engine | None = None,
               roles: tuple[str, ...] = ("sidecar",)) -> FastAPI:
    """Build the app for ``roles``.

    Args:
        settings: defaults to ``get_settings()``.
        engine: defaults to an Engine over ``settings`` (tests pass one with fakes).
        roles: any of :data:`ROLES`.

    Raises:
        ValueError: an unknown role, or none.
    """
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role {unknown[0]!r}: one of {', '.join(ROLES)}" if unknown else "no role to serve")
    settings = settings or get_settings()
    hide_query_strings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        app.state.settings = settings
        app.state.roles = roles
        key, path = settings.ensure_api_key()
        app.state.api_key = key
        if path is not None:
            log.info("API key: %s", path)
        app.state.engine = engine or Engine(settings)
        await asyncio.to_thread(app.state.engine.ensure_mock_data)
        from server.telephony_state import TelephonyState

        app.state.telephony = TelephonyState(settings)
        if "sidecar" in roles:  # calls a stopped process of this instance left open are closed, with why
            await app.state.telephony.close_stale_calls(app.state.engine.db, at_start=True)
            app.state.telephony.sweep_stale_calls(app.state.engine.db)
        app.state.connections = Connections()
        app.state.cluster = None
        app.state.busy_devices = set()  # devices with a press or a socket in progress (409 for another)
        app.state.rate_limiter = RateLimiter(settings.redis_url)
        app.state.lag = LagMonitor()
        app.state.lag.start()
        app.state.load = LoadMonitor(settings.forge_stt_queue_full)
        app.state.load.start()
        # send_sms reaches Twilio through the sidecar's one client (built on first use).
        app.state.engine.services.setdefault("twilio", lambda: app.state.telephony.twilio)
        # Load the speech models now, off the loop, and synthesize the greetings, so the first call
        # waits for neither; /ready answers 503 until both are done.
        app.state.draining = False
        if "sidecar" in roles and settings.redis_url:  # heartbeat, registry and call control across instances
            from server.cluster import Cluster

            app.state.cluster = Cluster(
                settings.redis_url, settings.instance, app.state.connections, heartbeat_s=settings.forge_heartbeat_s,
                ttl_s=settings.forge_instance_ttl_s,
                describe=lambda: {"load": round(app.state.load.load(), 2), "draining": app.state.draining})
            app.state.connections.on_change = app.state.cluster.changed
            await app.state.cluster.start(app.state.engine.db)
        telemetry.configure_tracing(settings.otel_exporter_otlp_endpoint,
                                    "forge-sidecar" if "sidecar" in roles else f"forge-{roles[0]}")
        app.state.warm = asyncio.create_task(warm_up(app.state.engine))
        yield
        await asyncio.to_thread(telemetry.flush_traces)
        await app.state.connections.close_all()
        if app.state.cluster is not None:
            await app.state.cluster.leave()
        await app.state.telephony.aclose()
        await app.state.lag.stop()
        await app.state.load.stop()
        await app.state.rate_limiter.aclose()

    sidecar = "sidecar" in roles
    app = FastAPIOffline(
        title="Forge sidecar" if sidecar else "Forge Realtime-compatible server" if "realtime" in roles
        else "Forge model host", version=__version__, lifespan=lifespan,
        max_body_size=int(settings.forge_max_upload_mb * 1024 * 1024),
        description="Twilio webhooks and media stream, the browser and device websockets, outbound calls and SMS, "
                    "and a voice-agent REST API. Every route but Twilio's, the devices' (`/device/*`, their token), "
                    "`/`, `/health` and these docs needs "
                    "`Authorization: Bearer <FORGE_API_KEY>`.",
    )
    from server import metrics
    from server.routers import api

    app.include_router(api.public)
    app.include_router(metrics.router)  # /metrics (Prometheus), with the API key
    if sidecar:  # api, voice, seed and devices.admin need the API key (server.auth.protected_router)
        from server.routers import demo, devices, seed, twilio, voice

        app.include_router(api.router)
        app.include_router(voice.router)
        app.include_router(voice.websockets)  # each checks the key before accept
        app.include_router(twilio.router)  # signature-checked
        app.include_router(twilio.webhooks)
        app.include_router(seed.router)
        app.include_router(demo.router)  # the pizza-shop agent's order endpoint (prompts/pizza_shop.toml)
        app.include_router(devices.admin)
        app.include_router(devices.device_routes)  # each route checks the device's own token
    if "realtime" in roles:
        from server.routers import realtime

        app.include_router(realtime.websockets)  # the key is checked before accept, in the route
    if "models" in roles:
        from server.routers import models

        app.include_router(models.router)  # OpenAI-compatible STT, TTS and chat, with the API key
    app.state.settings = settings  # uvicorn's limits are read from it before the lifespan runs
    app.state.perimeter = PerimeterCounts(settings.forge_max_unauthenticated_per_address)
    app.add_middleware(Perimeter, counts=app.state.perimeter, body_idle_s=settings.forge_body_idle_s, body_timeout_s=settings.forge_body_timeout_s,
                       first_message_s=settings.forge_first_message_s)
    app.add_exception_handler(RequestValidationError, invalid_request)
    return app


async def warm_up(engine: Engine) -> float:
    """Load the speech models (in a thread) and synthesize every persona's fixed sentences; the time in ms.

    A failure is logged and leaves the process serving (a model then loads on first use), and
    ``/ready`` answers 200 once this has ended either way.
    """
    start = time.perf_counter()
    try:
        pruned = await asyncio.to_thread(conversations.prune_recordings, engine.settings.forge_data_dir,
                                         engine.settings.forge_reply_retention_days)
        if pruned:
            log.info("deleted %d replies and recordings older than %d days", pruned,
                     engine.settings.forge_reply_retention_days)
        await asyncio.to_thread(engine.warm_up)
        phrases = await engine.prepare_phrases()
    except Exception:  # noqa: BLE001 - the sidecar still serves; the first call pays the load
        log.exception("warming the models up failed")
        return (time.perf_counter() - start) * 1000
    took = (time.perf_counter() - start) * 1000
    log.info("models warm and %d sentences synthesized ahead in %.0f ms", phrases, took)
    return took


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 with the validation errors, as ASCII JSON.

    FastAPI's own handler echoes the offending input, and a lone surrogate in it cannot be
    encoded as UTF-8: the client would get a 500 instead of the 422 it earned.
    """
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True, default=str)
    return Response(body, status_code=422, media_type="application/json")
