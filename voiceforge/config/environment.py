"""Where each setting came from, and which `.env` keys are not Forge's (``forge config``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from voiceforge.config.settings import Settings, dotenv_values_of, env_names


def is_secret(field: str) -> bool:
    """The setting is declared secret (its value is never shown whole)."""
    extra = Settings.model_fields[field].json_schema_extra
    return isinstance(extra, dict) and extra.get("secret") is True


def effective_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(NAME, value as shown, where it came from) for every setting; secrets masked.

    Sources: ``environment``, ``.env``, ``default`` (an alias such as PHONE_NUMBER_FROM is named).
    """
    env_file = Settings.model_config.get("env_file")
    dotenv = dotenv_values_of(Path(env_file)) if env_file else {}
    rows = []
    for field in Settings.model_fields:
        names = env_names(field)
        value = getattr(settings, field)
        source = "default"
        for name in names:
            if os.environ.get(name) not in (None, ""):
                source = f"environment ({name})" if name != field.upper() else "environment"
                break
            if dotenv.get(name) not in (None, ""):
                source = f".env ({name})" if name != field.upper() else ".env"
                break
        shown = "" if value is None else str(value)
        if shown and is_secret(field):
            shown = shown[:3] + "…" + f" ({len(shown)} characters)"
        elif shown and "://" in shown:
            shown = re.sub(r"//([^:/@]+):([^@]+)@", r"//\1:***@", shown)  # a password in a URL
        rows.append((names[0].upper(), shown, source))
    return rows
