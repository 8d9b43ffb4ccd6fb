"""Twilio request signatures and the one-time stream tokens that bind a media stream to a call."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Mapping

from twilio.request_validator import RequestValidator


def valid_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """Check ``X-Twilio-Signature`` with the twilio SDK's RequestValidator.

    ``url`` must be the public URL Twilio called (built from PUBLIC_BASE_URL, never from the
    Host header); ``params`` the POSTed form fields (empty for the websocket upgrade, which
    Twilio signs on the ``wss://`` URL).
    """
    if not signature or not auth_token:
        return False
    return RequestValidator(auth_token).validate(url, dict(params), signature)


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio would send for ``url`` and ``params`` (used by the simulator)."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))


class StreamTokens:
    """One-time tokens with a short lifetime, checked in constant time.

    ``issue(call_sid)`` goes into the TwiML ``<Parameter>``; ``consume(token, call_sid)``
    accepts it once, for that call, within ``ttl_s`` seconds.
    """

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, call_sid: str) -> str:
        """A new token for ``call_sid``."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (call_sid, now + self.ttl_s)
        return token

    def consume(self, token: str, call_sid: str) -> bool:
        """True once for a live token issued for ``call_sid``; the token is spent either way."""
        with self._lock:
            now = time.monotonic()
            match = None
            for candidate, value in self._tokens.items():
                if hmac.compare_digest(candidate.encode(), token.encode()):
                    match = candidate, value
            if match is None:
                return False
            del self._tokens[match[0]]
            sid, expires = match[1]
            return expires > now and hmac.compare_digest(sid.encode(), call_sid.encode())
