"""Settings from the environment and `.env`, with one cached getter.

Every variable is listed in `.env.sample`. ``auto`` providers mean OpenAI when a key (or an
Azure set) is configured and the embedded offline providers otherwise. The fields come in
groups (:mod:`voiceforge.config.groups`); :class:`Settings` is all of them.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsConfigDict

from voiceforge.config.groups import (
    ConfigError,
    ConversationSettings,
    PerimeterSettings,
    ProviderSettings,
    SqlSettings,
    StorageSettings,
    TelephonySettings,
)

log = logging.getLogger("voiceforge.config")


class Settings(SqlSettings, ConversationSettings, PerimeterSettings, StorageSettings, TelephonySettings,
               ProviderSettings):
    """Forge's configuration. Field names map to upper-case environment variables.

    The groups are listed last to first: pydantic orders the fields from the last base on, so
    ``forge config`` shows providers first and run_sql's budgets last.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment, `.env` and ``overrides``.

    Raises:
        ConfigError: a value is invalid; the message names each offending variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "?"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, built once (tests call ``get_settings.cache_clear()``).

    A key in `.env` that Forge does not know is logged as a warning naming it (a typo, or a
    variable of another project), never silently dropped.
    """
    settings = load_settings()
    for name in unknown_env_keys():
        log.warning("%s in .env is not a Forge setting (see .env.sample); it is ignored", name)
    return settings


def env_names(field: str) -> list[str]:
    """The environment names of a setting: its own upper-case name and any aliases."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    names = [field.upper()]
    if isinstance(alias, AliasChoices):
        names = [str(c) for c in alias.choices]
    return names


def known_env_names() -> set[str]:
    """Every environment variable name Forge reads."""
    return {n.upper() for f in Settings.model_fields for n in env_names(f)}


def dotenv_values_of(path: Path) -> dict[str, str]:
    """The keys (upper case) and values of a `.env` file; {} when there is none."""
    from dotenv import dotenv_values

    return {k.upper(): v or "" for k, v in dotenv_values(path).items()} if path.exists() else {}


def unknown_env_keys(path: Path | None = None) -> list[str]:
    """Keys of ``path`` (default the `.env` Settings read) that are not Forge settings, sorted."""
    env_file = Settings.model_config.get("env_file")
    target = path or (Path(env_file) if env_file else None)
    if target is None:
        return []
    return sorted(set(dotenv_values_of(target)) - known_env_names())
