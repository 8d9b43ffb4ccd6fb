"""Forge's settings: one :class:`Settings` from the environment and `.env`, in groups, with one cached getter."""

from voiceforge.config.environment import effective_settings, is_secret
from voiceforge.config.groups import ROOT, SECRET_FIELD, ConfigError
from voiceforge.config.settings import (
    Settings,
    get_settings,
    known_env_names,
    load_settings,
    unknown_env_keys,
)

__all__ = [
    "ROOT", "SECRET_FIELD", "ConfigError", "Settings", "effective_settings", "get_settings", "is_secret",
    "known_env_names", "load_settings", "unknown_env_keys",
]
