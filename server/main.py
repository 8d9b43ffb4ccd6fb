"""The sidecar: the parts of Forge that must be reachable from outside (Twilio, browsers, ESP32).

Run with ``uvicorn server.main:create_app --factory`` (``make run`` does) or ``forge serve``.
Every route needs the API key except Twilio's (signature-checked), the devices' own routes
(``/device/*``, their device token), ``/``, ``/health`` and the
docs, which are served from a package (no CDN), so they work offline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from server.auth import require_api_key
from server.connections import Connections
from server.limits import BodyLimit
from server.loopwatch import LagMonitor
from server.ratelimit import RateLimiter
from voiceforge import __version__
from voiceforge.config import Settings, get_settings
from voiceforge.engine import Engine

log = logging.getLogger("forge.sidecar")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the sidecar app.

    Args:
        settings: defaults to ``get_settings()``.
        engine: defaults to an Engine over ``settings`` (tests pass one with fakes).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        app.state.settings = settings
        key, path = settings.ensure_api_key()
        app.state.api_key = key
        if path is not None:
            log.info("API key: %s", path)
        app.state.engine = engine or Engine(settings)
        await asyncio.to_thread(app.state.engine.ensure_mock_data)
        from server.telephony_state import TelephonyState

        app.state.telephony = TelephonyState(settings)
        app.state.connections = Connections()
        app.state.busy_devices = set()  # devices with a press or a socket in progress (409 for another)
        app.state.rate_limiter = RateLimiter(settings.redis_url)
        app.state.lag = LagMonitor()
        app.state.lag.start()
        # send_sms reaches Twilio through the sidecar's one client (built on first use).
        app.state.engine.services.setdefault("twilio", lambda: app.state.telephony.twilio)
        # Load the speech models now, off the loop, so the first call does not wait for them.
        app.state.warm = asyncio.create_task(asyncio.to_thread(app.state.engine.warm_up))
        yield
        await app.state.connections.close_all()
        await app.state.telephony.aclose()
        await app.state.lag.stop()
        await app.state.rate_limiter.aclose()

    app = FastAPIOffline(
        title="Forge sidecar", version=__version__, lifespan=lifespan,
        description="Twilio webhooks and media stream, the browser and device websockets, outbound calls and SMS, "
                    "and a voice-agent REST API. Every route but Twilio's, the devices' (`/device/*`, their token), "
                    "`/`, `/health` and these docs needs "
                    "`Authorization: Bearer <FORGE_API_KEY>`.",
    )
    from server.routers import api, devices, seed, twilio, voice

    protected = [Depends(require_api_key)]
    app.include_router(api.public)
    app.include_router(api.router, dependencies=protected)
    app.include_router(voice.router, dependencies=protected)
    app.include_router(voice.websockets)
    app.include_router(twilio.router)
    app.include_router(twilio.webhooks)
    app.include_router(seed.router, dependencies=protected)
    app.include_router(devices.admin, dependencies=protected)
    app.include_router(devices.device_routes)  # each route checks the device's own token
    app.add_middleware(BodyLimit, max_bytes=int(settings.forge_max_upload_mb * 1024 * 1024))
    app.add_exception_handler(RequestValidationError, invalid_request)
    return app


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """422 with the validation errors, as ASCII JSON.

    FastAPI's own handler echoes the offending input, and a lone surrogate in it cannot be
    encoded as UTF-8: the client would get a 500 instead of the 422 it earned.
    """
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True, default=str)
    return Response(body, status_code=422, media_type="application/json")
