"""E.164 phone numbers: validation and masking for logs."""

from __future__ import annotations

import re

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def normalize_e164(number: str) -> str:
    """Return ``number`` in E.164 form (``+`` then 7 to 15 digits).

    Spaces, dashes, dots and parentheses are dropped; nothing else is guessed (no default
    country code). Source: ITU-T E.164, as Twilio requires for ``To`` and ``From``.

    Raises:
        ValueError: the number is not E.164 once separators are removed.
    """
    cleaned = re.sub(r"[\s\-().]", "", number or "")
    if not _E164.match(cleaned):
        raise ValueError(f"not an E.164 phone number (like +14155550123): {mask_number(cleaned)!r}")
    return cleaned


def mask_number(number: str | None) -> str:
    """Mask all but the country prefix and last four digits: ``+1•••••4567``."""
    if not number:
        return ""
    if len(number) <= 6:
        return "•" * len(number)
    return number[:2] + "•" * (len(number) - 6) + number[-4:]
