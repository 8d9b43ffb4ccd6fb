"""Twilio request signatures and the one-time stream tokens that bind a media stream to a call."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

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

    ``issue(call_sid, meta)`` goes into the TwiML ``<Parameter>``; ``consume(token, call_sid)``
    accepts it once, for that call, within ``ttl_s`` seconds, and returns what was issued with
    it (the persona, the caller's number), so the stream trusts the server's record, not the
    message. ``issued(call_sid)`` tells whether a call already had a token (a replayed webhook
    must not mint another); those records are kept for ``remember_s`` (a call's longest life).
    """

    def __init__(self, ttl_s: float = 60.0, remember_s: float = 4 * 3600, max_calls: int = 100_000) -> None:
        self.ttl_s, self.remember_s, self.max_calls = ttl_s, remember_s, max_calls
        self._tokens: dict[str, tuple[str, float, dict[str, str]]] = {}
        self._calls: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, call_sid: str, meta: Mapping[str, str] | None = None) -> str:
        """A new token for ``call_sid``, carrying ``meta``."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            if len(self._calls) >= self.max_calls:
                self._calls = {sid: t for sid, t in self._calls.items() if t > now}
            self._tokens[token] = (call_sid, now + self.ttl_s, {"call_sid": call_sid, **(meta or {})})
            self._calls[call_sid] = now + self.remember_s
        return token

    def issued(self, call_sid: str) -> bool:
        """True when a token was issued for ``call_sid`` within ``remember_s``."""
        with self._lock:
            expires = self._calls.get(call_sid)
            return expires is not None and expires > time.monotonic()

    def consume(self, token: str, call_sid: str) -> dict[str, str] | None:
        """What was issued with a live token for ``call_sid`` (once); the token is spent either way."""
        with self._lock:
            now = time.monotonic()
            match = None
            for candidate, value in self._tokens.items():
                if hmac.compare_digest(candidate.encode(), token.encode()):
                    match = candidate, value
            if match is None:
                return None
            del self._tokens[match[0]]
            sid, expires, meta = match[1]
            ok = expires > now and hmac.compare_digest(sid.encode(), call_sid.encode())
            return meta if ok else None


class SharedStreamTokens:
    """:class:`StreamTokens` kept in Redis, so the webhook and the media stream may reach different sidecars.

    Twilio's voice webhook and the websocket it then opens are separate requests that a load
    balancer may send to different instances (Twilio, "Media Streams": per-call context travels in
    the TwiML ``<Parameter>``s or a shared store). A token is stored under its SHA-256 (never in
    the clear) with the call's grant, for ``ttl_s``; ``consume`` takes it with ``GETDEL``, so it
    is spent once across every instance. Each call's "a token was issued" mark lives
    ``remember_s``. Keys: ``forge:stream-token:<sha256>``, ``forge:stream-call:<call SID>``.

    Args:
        redis: a ``redis.asyncio.Redis`` client.
        ttl_s / remember_s: as :class:`StreamTokens`.
    """

    def __init__(self, redis: Any, ttl_s: float = 60.0, remember_s: float = 4 * 3600) -> None:
        self.redis, self.ttl_s, self.remember_s = redis, ttl_s, remember_s

    @staticmethod
    def _key(token: str) -> str:
        return "forge:stream-token:" + hashlib.sha256(token.encode()).hexdigest()

    async def issue(self, call_sid: str, meta: Mapping[str, str] | None = None) -> str:
        """A new token for ``call_sid``, carrying ``meta`` (stored in Redis with its lifetime)."""
        token = secrets.token_urlsafe(24)
        grant = json.dumps({"call_sid": call_sid, **(meta or {})})
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.set(self._key(token), grant, px=int(self.ttl_s * 1000)).set(
                f"forge:stream-call:{call_sid}", "1", px=int(self.remember_s * 1000)).execute()
        return token

    async def issued(self, call_sid: str) -> bool:
        """True when any instance issued a token for ``call_sid`` within ``remember_s``."""
        return bool(await self.redis.exists(f"forge:stream-call:{call_sid}"))

    async def consume(self, token: str, call_sid: str) -> dict[str, str] | None:
        """What was issued with a live token for ``call_sid`` (once, across instances); spent either way."""
        raw = await self.redis.getdel(self._key(token))
        if raw is None:
            return None
        grant = json.loads(raw)
        ok = hmac.compare_digest(str(grant.get("call_sid", "")).encode(), call_sid.encode())
        return grant if ok else None
