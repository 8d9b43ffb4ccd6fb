"""What time it is for the tools and the date reader: the real clock, or a fixed one for an eval.

An eval suite's ``now:`` fixes the clock so "next Friday at 3 pm" and "appointments coming up"
mean the same on every run (:func:`frozen`). The fixed time is a context variable: it follows
the coroutine that set it into its tasks and worker threads (``asyncio.to_thread`` copies the
context) and no other conversation sees it. A process of its own (the sidecar or the Realtime
server an eval starts) is fixed whole by ``FORGE_NOW``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Iterator

_fixed: contextvars.ContextVar[dt.datetime | None] = contextvars.ContextVar("forge_now", default=None)


def now() -> dt.datetime:
    """The current time, timezone-aware UTC.

    The fixed one inside :func:`frozen`; else ``FORGE_NOW`` when it is set (a whole process on a
    fixed clock: the servers an eval starts); else the real one.
    """
    fixed = _fixed.get()
    if fixed is not None:
        return fixed
    from voiceforge.config import get_settings

    configured = get_settings().forge_now
    if configured is not None:
        return configured if configured.tzinfo else configured.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def frozen(at: dt.datetime) -> Iterator[None]:
    """Fix :func:`now` at ``at`` (naive means UTC) for the code this context runs."""
    token = _fixed.set(at if at.tzinfo else at.replace(tzinfo=dt.UTC))
    try:
        yield
    finally:
        _fixed.reset(token)
