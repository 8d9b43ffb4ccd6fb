"""What the sidecar's logs may hold: no query strings in the access log.

A key sent as ``?api_key=…`` (or a phone number in a query) must not reach the log, so every
access-log line is written with its path alone. The app factory installs the filter once.
"""

from __future__ import annotations

import logging


class NoQueryStrings(logging.Filter):
    """Drops the query string from uvicorn's access-log lines (their third argument is the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's path without its query; always keeps the record."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def hide_query_strings() -> None:
    """Install :class:`NoQueryStrings` on uvicorn's access log (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, NoQueryStrings) for f in access.filters):
        access.addFilter(NoQueryStrings())
