"""How a Forge server is served: uvicorn's limits in one place, and connections bounded before ASGI.

uvicorn runs the sidecar (``forge serve``), the Realtime server and every test server through
:func:`uvicorn_config`. What an ASGI middleware cannot see, a connection that has not finished
sending its request line and headers, is bounded here by :class:`GuardedH11Protocol`:

- **header deadline** (``FORGE_HEADER_TIMEOUT_S``, 10 s): from the moment a connection opens (or
  the first byte of its next request on a kept-alive connection) its request line and headers
  must be complete, else it is answered ``408`` and closed. uvicorn's own keep-alive timeout
  (5 s) stops at the first byte, so without this a client sending a header line every few
  seconds (slowloris) holds a connection forever.
- **global cap** (``FORGE_MAX_CONNECTIONS``): past it a new connection is answered ``503`` with
  ``Retry-After`` and closed at once. uvicorn's ``limit_concurrency`` is not used: it does not
  apply to websocket upgrades.
- **per-address cap** on connections still waiting for their headers
  (``FORGE_MAX_UNAUTHENTICATED_PER_ADDRESS``): ``429``; a trusted proxy
  (``FORGE_TRUSTED_PROXIES``) is exempt, since every client behind it shares its address.

After the headers, :mod:`server.perimeter` takes over (authentication before the body, body
deadlines, a websocket's first message). Other uvicorn limits set here: websocket messages
≤ 1 MiB, pings every 20 s (a peer that does not answer within 20 s is dropped), request
headers ≤ 16 KiB (h11's incomplete-event limit, else 400), keep-alive 5 s.

The HTTP protocol is always h11's, whether or not ``httptools`` is installed.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from voiceforge.config import Settings, get_settings

log = logging.getLogger("forge.sidecar.connections")

WS_MAX_BYTES = 1 << 20
"""The largest websocket message accepted (uvicorn closes the socket with 1009 past it)."""
MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers together; h11 answers 400 past it."""
KEEP_ALIVE_S = 5
"""An idle kept-alive connection is closed after this (uvicorn's default, stated)."""
WS_PING_S = 20.0
"""Websocket ping interval and timeout (s): a peer that vanished without closing is dropped."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits :class:`GuardedH11Protocol` enforces (from :class:`Settings`).

    Attributes:
        max_connections: open connections of this server, websockets included.
        max_waiting_per_address: connections from one address still sending their headers.
        header_timeout_s: seconds a request's line and headers may take.
        trusted_proxies: addresses or networks exempt from the per-address cap.
    """

    max_connections: int = 1000
    max_waiting_per_address: int = 32
    header_timeout_s: float = 10.0
    trusted_proxies: tuple[str, ...] = ()
    _networks: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets = []
        for entry in self.trusted_proxies:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                log.warning("FORGE_TRUSTED_PROXIES: %r is not an address or network; ignored", entry)
        object.__setattr__(self, "_networks", tuple(nets))

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits a sidecar's settings ask for."""
        return cls(settings.forge_max_connections, settings.forge_max_unauthenticated_per_address,
                   settings.forge_header_timeout_s, tuple(settings.trusted_proxies))

    def trusted(self, host: str) -> bool:
        """Whether ``host`` is one of the trusted proxies."""
        if "*" in self.trusted_proxies:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._networks)


class _Refusals:
    """Refusal warnings at most once per :attr:`every_s` per reason, with how many were refused since."""

    every_s = 10.0

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.count: Counter[str] = Counter()

    def warn(self, reason: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        self.count[reason] += 1
        if now - self.last.get(reason, -self.every_s) >= self.every_s:
            log.warning(message + " (%d refused for this since the last warning)", *args, self.count.pop(reason))
            self.last[reason] = now


def _raw_response(status: int, reason: str, text: str, retry_after: int | None = None) -> bytes:
    body = text.encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: text/plain; charset=utf-8", "connection: close",
            f"content-length: {len(body)}"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a global cap and a per-address cap.

    Subclassed per server by :func:`guarded_protocol`, which sets :attr:`limits` and a fresh
    :attr:`waiting` counter (connections per address still sending their headers).
    """

    limits: ConnectionLimits = ConnectionLimits()
    waiting: Counter[str] = Counter()
    refusals: _Refusals = _Refusals()

    def connection_made(self, transport: Any) -> None:  # noqa: D102 - asyncio.Protocol
        super().connection_made(transport)
        self._host = self.client[0] if self.client else ""
        self._header_timer: Any = None
        self._counted = False
        if len(self.connections) > self.limits.max_connections:
            self.refusals.warn("full", "refused a connection from %s: %d open, the limit is %d", self._host,
                               len(self.connections) - 1, self.limits.max_connections)
            self._refuse(503, "Service Unavailable", "the server is at its connection limit; try again shortly", 1)
            return
        if not self.limits.trusted(self._host) and self.waiting[self._host] >= self.limits.max_waiting_per_address:
            self.refusals.warn("address", "refused a connection from %s: %d of its connections are still sending "
                               "headers", self._host, self.waiting[self._host])
            self._refuse(429, "Too Many Requests", "too many connections from this address are still sending "
                         "their request", 1)
            return
        self._await_request()

    def data_received(self, data: bytes) -> None:  # noqa: D102 - asyncio.Protocol
        super().data_received(data)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._request_arrived()
        else:  # part of a request line or headers: the deadline runs (from the first byte, when kept alive)
            self._await_request()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:  # noqa: D102 - uvicorn's
        self._request_arrived()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102 - asyncio.Protocol
        self._request_arrived()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        if self._counted:
            return
        self._counted = True
        self.waiting[self._host] += 1
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._request_late)

    def _request_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._counted:
            self._counted = False
            self.waiting[self._host] -= 1
            if self.waiting[self._host] <= 0:
                del self.waiting[self._host]

    def _request_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        log.info("closed a connection from %s: no complete request within %.0f s", self._host,
                 self.limits.header_timeout_s)
        self._refuse(408, "Request Timeout",
                     f"the request line and headers did not arrive within {self.limits.header_timeout_s:g} s")

    def _refuse(self, status: int, reason: str, text: str, retry_after: int | None = None) -> None:
        self._request_arrived()
        self.transport.write(_raw_response(status, reason, text, retry_after))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` class of its own (limits and counter) for one server."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"limits": limits, "waiting": Counter(), "refusals": _Refusals()})


def uvicorn_config(app: Any, host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None,
                   **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for a Forge app (see the module docstring for each limit).

    Args:
        app: the ASGI app (``create_app``'s; its ``state.settings`` is used when ``settings`` is None).
        host: the address to bind.
        port: the TCP port.
        settings: the limits' source (default: the app's, else ``get_settings()``).
        overrides: any other ``uvicorn.Config`` argument (``log_level``, ...).
    """
    settings = settings or getattr(getattr(app, "state", None), "settings", None) or get_settings()
    trusted = settings.trusted_proxies
    options: dict[str, Any] = {
        "http": guarded_protocol(ConnectionLimits.from_settings(settings)),
        "ws_max_size": WS_MAX_BYTES, "ws_ping_interval": WS_PING_S, "ws_ping_timeout": WS_PING_S,
        "timeout_keep_alive": KEEP_ALIVE_S, "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None, "server_header": False,
        "log_level": "warning",
    }
    options.update(overrides)
    return uvicorn.Config(app, host=host, port=port, **options)
