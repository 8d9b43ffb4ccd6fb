"""Per-key rate limits for the routes that cost money (placing calls, sending SMS).

Fixed one-minute windows counted per (API key, action), the key as authentication reads it (the
scheme in any case, spaces trimmed), so ``BEARER k`` and ``Bearer  k`` share ``Bearer k``'s count: in Redis when ``REDIS_URL`` is set, so
that every sidecar instance behind a load balancer shares the count (``INCR`` then ``EXPIRE``
on the window's key), in this process otherwise. If Redis cannot be reached the process
counts alone and says so in the log, rather than refusing every call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException, Request

from server.auth import bearer_key

log = logging.getLogger("forge.sidecar.ratelimit")


class RateLimiter:
    """Counts hits per bucket per window.

    Args:
        redis_url: a ``redis://`` URL, or None to count in process.
        window_s: window length in seconds.
    """

    def __init__(self, redis_url: str | None = None, window_s: int = 60) -> None:
        self.window_s = window_s
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._redis = None
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)

    async def hit(self, bucket: str, limit: int) -> int | None:
        """Count one hit; return None while within ``limit``, else the seconds until the next window."""
        now = time.time()
        window = int(now // self.window_s)
        retry_after = max(1, int((window + 1) * self.window_s - now))
        if self._redis is not None:
            try:
                key = f"forge:rate:{bucket}:{window}"
                async with self._redis.pipeline(transaction=True) as pipe:
                    count, _ = await pipe.incr(key).expire(key, self.window_s * 2).execute()
                return retry_after if count > limit else None
            except Exception as exc:  # noqa: BLE001 - Redis down: count here rather than refuse all
                log.warning("rate limit falls back to this process: Redis unavailable (%s)", type(exc).__name__)
        with self._lock:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window - 1}
            count = self._counts[(bucket, window)] = self._counts.get((bucket, window), 0) + 1
        return retry_after if count > limit else None

    async def aclose(self) -> None:
        """Close the Redis connection, if any."""
        if self._redis is not None:
            await self._redis.aclose()


def limit(action: str, per_minute: Callable[[object], int]) -> Callable:
    """A FastAPI dependency allowing ``per_minute(settings)`` hits per API key on ``action``.

    Raises:
        HTTPException: 429 with ``Retry-After`` (seconds) past the limit.
    """

    async def dependency(request: Request) -> None:
        key = bearer_key(request.headers.get("authorization")) or ""
        bucket = hashlib.sha256(key.encode()).hexdigest()[:16] + ":" + action
        allowed = per_minute(request.app.state.settings)
        retry = await request.app.state.rate_limiter.hit(bucket, allowed)
        if retry is not None:
            raise HTTPException(429, f"rate limit: at most {allowed} {action} a minute per API key",
                                headers={"Retry-After": str(retry)})

    return dependency
