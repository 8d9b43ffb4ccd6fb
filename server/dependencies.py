"""FastAPI dependencies: settings and the engine, swapped in tests with dependency_overrides."""

from __future__ import annotations

from fastapi import HTTPException, Request

from voiceforge.agent.persona import Persona, PersonaError
from voiceforge.config import Settings
from voiceforge.engine import Engine


def get_app_settings(request: Request) -> Settings:
    """The Settings the app was created with."""
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    """The process-wide Engine (providers, database, tools)."""
    return request.app.state.engine


def persona_or_404(engine: Engine, persona_id: str | None) -> Persona:
    """The persona, or the default one for None.

    Raises:
        HTTPException: 404 naming the persona when there is no such file.
    """
    try:
        return engine.persona(persona_id)
    except PersonaError:
        raise HTTPException(404, f"no persona {persona_id!r}") from None
