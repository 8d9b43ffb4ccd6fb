"""Per-process telephony state: the Twilio client, stream tokens, live calls, pending hang-ups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from voiceforge.config import ConfigError, Settings
from voiceforge.telephony.security import SharedStreamTokens, StreamTokens

if TYPE_CHECKING:
    from twilio.http import HttpClient

    from voiceforge.conversation import ConversationLoop
    from voiceforge.store.db import Database
    from voiceforge.telephony.rest import TwilioService

log = logging.getLogger("forge.sidecar.twilio")


class TelephonyState:
    """What the Twilio routers share within one sidecar process."""

    def __init__(self, settings: Settings, http_client: HttpClient | None = None) -> None:
        self.settings = settings
        self.tokens = StreamTokens(ttl_s=60)
        self._redis = None
        self.shared_tokens: SharedStreamTokens | None = None
        """Stream tokens in Redis (``REDIS_URL``): a call's webhook and its stream may reach different sidecars."""
        if settings.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
            self.shared_tokens = SharedStreamTokens(self._redis, ttl_s=60)
        self.calls: dict[str, ConversationLoop] = {}
        self.http_client = http_client
        self._twilio: TwilioService | None = None
        self._background: set[asyncio.Task] = set()

    async def issue_token(self, call_sid: str, meta: dict[str, str]) -> str:
        """A stream token for ``call_sid`` (in Redis when shared; here if Redis cannot be reached)."""
        if self.shared_tokens is not None:
            try:
                return await self.shared_tokens.issue(call_sid, meta)
            except Exception as exc:  # noqa: BLE001 - Redis down: this instance can still take its own stream
                log.warning("stream token kept in this process: Redis unavailable (%s)", type(exc).__name__)
        return self.tokens.issue(call_sid, meta)

    async def token_issued(self, call_sid: str) -> bool:
        """Whether any instance (or this one) issued a token for ``call_sid`` (a replayed webhook)."""
        if self.tokens.issued(call_sid):
            return True
        if self.shared_tokens is not None:
            try:
                return await self.shared_tokens.issued(call_sid)
            except Exception:  # noqa: BLE001
                log.warning("Redis unavailable: a replayed webhook is checked in this process only")
        return False

    async def consume_token(self, token: str, call_sid: str) -> dict[str, str] | None:
        """The grant of a live token for ``call_sid``, spent once across every instance; None otherwise."""
        if self.shared_tokens is not None:
            try:
                grant = await self.shared_tokens.consume(token, call_sid)
                if grant is not None:
                    return grant
            except Exception as exc:  # noqa: BLE001
                log.warning("Redis unavailable for a stream token (%s); trying this process's", type(exc).__name__)
        return self.tokens.consume(token, call_sid)

    @property
    def twilio(self) -> TwilioService:
        """The Twilio REST service (built once).

        Raises:
            ConfigError: Twilio is not configured; the message names what is missing.
        """
        if self._twilio is None:
            from voiceforge.telephony.rest import TwilioService

            self._twilio = TwilioService(self.settings, http_client=self.http_client)
        return self._twilio

    def public_url(self, path: str) -> str:
        """``PUBLIC_BASE_URL + path``.

        Raises:
            ConfigError: PUBLIC_BASE_URL is not set.
        """
        if not self.settings.public_base_url:
            raise ConfigError("PUBLIC_BASE_URL is not set: Twilio needs a public https URL for this sidecar")
        return self.settings.public_base_url + path

    def stream_url(self, path: str = "/twilio/stream") -> str:
        """The media-stream websocket URL Twilio connects to (wss:// for https://)."""
        base = self.public_url(path)
        return "wss://" + base[len("https://"):] if base.startswith("https://") else "ws://" + base[len("http://"):]

    async def close_stale_calls(self, db: Database, at_start: bool = False) -> list[str]:
        """Close the calls this sidecar (``FORGE_INSTANCE``) left open or that never connected.

        See :func:`voiceforge.store.calls.close_stale_calls`; logged, and returns the call SIDs.
        """
        from voiceforge.store import calls

        closed = await asyncio.to_thread(calls.close_stale_calls, db, self.settings.instance, at_start)
        for sid in closed:
            log.warning("call %s closed as failed: %s", sid,
                        "left open by a sidecar that stopped" if at_start else "it never connected")
        return closed

    def sweep_stale_calls(self, db: Database, every_s: float = 60.0) -> None:
        """Every ``every_s`` seconds, close calls that never connected (until :meth:`aclose`)."""

        async def sweep() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.close_stale_calls(db)
                except Exception:  # noqa: BLE001 - a busy database waits for the next sweep
                    log.warning("sweeping stale calls failed", exc_info=True)

        task = asyncio.create_task(sweep(), name="sweep-stale-calls")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def hang_up_later(self, call_sid: str) -> None:
        """End ``call_sid`` over REST in the background (bounded by the client's timeouts)."""

        async def hang_up() -> None:
            try:
                await self.twilio.hangup(call_sid)
            except Exception as exc:  # noqa: BLE001 - local simulator calls have no REST side
                log.info("hang-up of %s through REST skipped: %s", call_sid, exc)

        task = asyncio.create_task(hang_up())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Stop every live call loop and wait briefly for pending hang-ups."""
        for call in list(self.calls.values()):
            await call.stop()
        self.calls.clear()
        for task in list(self._background):
            if task.get_name() == "sweep-stale-calls":
                task.cancel()
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 2)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
