"""Input types shared by the routers: bounded, and free of text a database would choke on."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def clean_text(value: str) -> str:
    """``value`` unchanged if it can be stored: valid Unicode (no lone surrogate) and no NUL.

    A lone surrogate ("\\ud800") decodes from JSON but cannot be encoded to UTF-8 for storage.

    Raises:
        ValueError: it cannot, with why.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text contains an unpaired surrogate (not valid Unicode)") from None
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    return value


Text = Annotated[str, AfterValidator(clean_text)]
"""A string that stores: valid Unicode, no NUL."""

Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""A row id: a positive 32-bit integer (PostgreSQL's INTEGER)."""

PersonaId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
"""A persona file's id (prompts/<id>.toml)."""
