"""FastAPI dependencies: settings and the engine, swapped in tests with dependency_overrides."""

from __future__ import annotations

from fastapi import Request

from voiceforge.config import Settings
from voiceforge.engine import Engine


def get_app_settings(request: Request) -> Settings:
    """The Settings the app was created with."""
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    """The process-wide Engine (providers, database, tools)."""
    return request.app.state.engine
