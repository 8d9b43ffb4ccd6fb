"""The sidecar: the parts of Forge that must be reachable from outside (Twilio, ESP32, API).

Run with ``uvicorn server.main:create_app --factory`` (``make run`` does) or ``forge serve``.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

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
        app.state.engine = engine or Engine(settings)
        app.state.engine.ensure_mock_data()
        from server.telephony_state import TelephonyState

        app.state.telephony = TelephonyState(settings)
        # send_sms reaches Twilio through the sidecar's one client (built on first use).
        app.state.engine.services.setdefault("twilio", lambda: app.state.telephony.twilio)
        yield
        await app.state.telephony.aclose()

    app = FastAPI(title="Forge sidecar", version="0.1.0", lifespan=lifespan,
                  description="Twilio webhooks and media stream, outbound calls and SMS, and a voice-agent REST API.")
    from server.routers import api, twilio, voice

    app.include_router(api.router)
    app.include_router(voice.router)
    app.include_router(twilio.router)
    return app
