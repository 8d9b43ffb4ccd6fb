"""The sidecar's perimeter after the headers: who may send a body, and how fast.

:mod:`server.serving` bounds connections until their headers are in; from there:

- **Authentication before the body.** A route's credential check is declared once, as a FastAPI
  dependency marked with :func:`checked_before_body` (the API key, a device's token, the
  presence of Twilio's signature header). FastAPI parses a body before it solves dependencies,
  so routes are built with :class:`CheckedRoute`, which runs that check on the headers alone
  first: a request without a valid key gets its 401 before a byte of its body is read.
- **Body size**: FastAPI's own ``max_body_size`` (the app's ``FORGE_MAX_UPLOAD_MB``, tighter on
  Twilio's webhooks), a declared ``Content-Length`` refused at once, a chunked one as it passes.
- **Body time** (:class:`Perimeter`, ASGI middleware): a pause over ``FORGE_BODY_IDLE_S`` or a
  body slower than ``FORGE_BODY_TIMEOUT_S`` is a 408, which replaces whatever the handler would
  have answered (a parser's 400).
- **Unauthenticated requests per address** (``FORGE_MAX_UNAUTHENTICATED_PER_ADDRESS``): a
  request counts until its check passes (for Twilio's webhooks, whose signature covers the
  body, until it is answered), a websocket until it is accepted (every websocket route
  authenticates before ``accept``); past the cap, 429. The address is the peer's, or the
  ``X-Forwarded-For`` client when the peer is a trusted proxy (``FORGE_TRUSTED_PROXIES``; uvicorn
  resolves it before this middleware runs).
- **A websocket's first message**: an accepted socket that sends nothing within
  ``FORGE_FIRST_MESSAGE_S`` is closed with 1008 and a reason; the handler sees a disconnect.

:class:`PerimeterCounts` reports open sockets and those still silent (``/ws/status``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Response
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("forge.sidecar.perimeter")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Gate:
    """A route's credential check, run on the headers before its body is read.

    Attributes:
        check: awaited with a :class:`Request` whose body cannot be read; raises
            ``HTTPException`` (401/403) to refuse.
        authenticates: whether passing ``check`` proves who is calling (False for Twilio's
            signature header, which is only checked against the body later).
    """

    check: Callable[[Request], Awaitable[Any]]
    authenticates: bool = True


GATES: dict[Callable[..., Any], Gate] = {}
"""Dependency → the check the perimeter runs for it before the body (see :func:`checked_before_body`)."""


def checked_before_body(check: Callable[[Request], Awaitable[Any]] | None = None, *,
                        authenticates: bool = True) -> Callable[[F], F]:
    """Mark a FastAPI dependency as a route's credential check, run before the body.

    The mark takes effect on routes built with :class:`CheckedRoute` whose own dependencies
    (the route's or its router's, as given to ``APIRouter(dependencies=...)``) include it.

    Args:
        check: what to run on the headers (default: the dependency itself, which must then
            need nothing but a :class:`Request`'s headers and app state).
        authenticates: see :attr:`Gate.authenticates`.
    """
    def mark(dependency: F) -> F:
        GATES[dependency] = Gate(check or dependency, authenticates)
        return dependency

    return mark


RELEASE = "forge.perimeter.release"
"""Scope key: the callable that stops counting a request as unauthenticated (set by :class:`Perimeter`)."""


class CheckedRoute(APIRoute):
    """A FastAPI route that runs its :class:`Gate` on the headers before its handler reads the body.

    Use as ``APIRouter(route_class=CheckedRoute, dependencies=[Depends(require_api_key)])``
    (FastAPI's documented way to customise a route's handler). A refused check is the
    dependency's own ``HTTPException`` (401/403), answered before the body is read.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:  # noqa: D102 - FastAPI's
        handler = super().get_route_handler()
        gate = _find_gate(self.dependant)
        if gate is None:
            return handler

        async def checked(request: Request) -> Response:
            await gate.check(Request(request.scope))  # a Request that cannot read the body
            release = request.scope.get(RELEASE)
            if gate.authenticates and release is not None:
                release()
            return await handler(request)

        return checked


class Refused(Exception):
    """A request or socket the perimeter answers itself: HTTP status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class PerimeterCounts:
    """What the perimeter holds now: unauthenticated requests per address, sockets open and silent."""

    def __init__(self, max_unauthenticated_per_address: int) -> None:
        self.max_per_address = max_unauthenticated_per_address
        self.unauthenticated: Counter[str] = Counter()
        self.sockets = 0
        self.silent_sockets = 0

    def hold(self, address: str) -> Callable[[], None]:
        """Count one unauthenticated request from ``address``; returns its release (idempotent).

        Raises:
            Refused: 429 when the address already holds its share.
        """
        if self.unauthenticated[address] >= self.max_per_address:
            raise Refused(429, f"too many unauthenticated requests from this address (limit {self.max_per_address})",
                          {"retry-after": "1"})
        self.unauthenticated[address] += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.unauthenticated[address] -= 1
                if self.unauthenticated[address] <= 0:
                    del self.unauthenticated[address]

        return release

    def status(self) -> dict[str, int]:
        """JSON: sockets open, accepted sockets that have not sent a message yet, unauthenticated requests."""
        return {"sockets_open": self.sockets, "sockets_silent": self.silent_sockets,
                "unauthenticated": sum(self.unauthenticated.values())}


class Perimeter:
    """ASGI middleware: body deadlines, unauthenticated requests per address, a websocket's first message.

    Args:
        app: the wrapped ASGI app.
        counts: shared with ``/ws/status``.
        body_idle_s: the longest pause inside a body (s).
        body_timeout_s: the longest a whole body may take (s).
        first_message_s: how long an accepted websocket may stay silent (s).
    """

    def __init__(self, app: ASGIApp, counts: PerimeterCounts, body_idle_s: float, body_timeout_s: float,
                 first_message_s: float) -> None:
        self.app, self.counts = app, counts
        self.body_idle_s, self.body_timeout_s = body_idle_s, body_timeout_s
        self.first_message_s = first_message_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            release = self.counts.hold(_address(scope))
        except Refused as exc:
            await _answer(send, exc)
            return
        scope[RELEASE] = release
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        done = False
        tripped: Refused | None = None
        answered = False

        async def timed() -> Message:
            nonlocal done, tripped
            if done or tripped:
                return await receive()  # after the body only a disconnect comes; no deadline
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.body_idle_s, deadline - loop.time())))
            except TimeoutError:
                slow = loop.time() >= deadline
                tripped = Refused(408, f"the request body took longer than {self.body_timeout_s:g} s" if slow else
                                  f"the request body paused for more than {self.body_idle_s:g} s")
                raise tripped from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if tripped is not None:  # the handler's own answer (often a parser's 400) gives way to ours
                if not answered:
                    answered = True
                    await _answer(send, tripped)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed, guarded)
        except Exception:
            if tripped is None:
                raise
        finally:
            release()
        if tripped is not None:
            log.info("refused %s %s: %s", scope.get("method"), scope.get("path"), tripped.message)
            if not answered:
                await _answer(send, tripped)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            release = self.counts.hold(_address(scope))
        except Refused as exc:
            await _deny(scope, send, exc)
            return
        counts = self.counts
        loop = asyncio.get_running_loop()
        accepted_at: float | None = None
        heard = closed_here = False

        async def watched_send(message: Message) -> None:
            nonlocal accepted_at
            if closed_here:
                return
            if message["type"] == "websocket.accept":
                release()
                accepted_at = loop.time()
                counts.silent_sockets += 1
            await send(message)

        async def first_message_bounded() -> Message:
            nonlocal heard, closed_here
            if accepted_at is None or heard:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, accepted_at + self.first_message_s - loop.time()))
            except TimeoutError:
                reason = f"no message within {self.first_message_s:g} s of connecting"
                log.info("closed websocket %s: %s", scope.get("path"), reason)
                heard = closed_here = True
                counts.silent_sockets -= 1
                await send({"type": "websocket.close", "code": 1008, "reason": reason})
                return {"type": "websocket.disconnect", "code": 1008, "reason": reason}
            heard = True
            counts.silent_sockets -= 1
            return message

        counts.sockets += 1
        try:
            await self.app(scope, first_message_bounded, watched_send)
        finally:
            counts.sockets -= 1
            if accepted_at is not None and not heard:
                counts.silent_sockets -= 1
            release()


def _find_gate(dependant: Any) -> Gate | None:
    """The first marked dependency in a route's dependency tree (depth first), or None."""
    if dependant is None:
        return None
    for sub in dependant.dependencies:
        if sub.call in GATES:
            return GATES[sub.call]
        found = _find_gate(sub)
        if found is not None:
            return found
    return None


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else ""


async def _answer(send: Send, refusal: Refused, prefix: str = "http") -> None:
    """Send ``refusal`` as a JSON ``{"detail": ...}`` response (``prefix`` "websocket.http" before accept)."""
    body = json.dumps({"detail": refusal.message}, ensure_ascii=True).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
    await send({"type": f"{prefix}.response.start", "status": refusal.status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


async def _deny(scope: Scope, send: Send, refusal: Refused) -> None:
    """Refuse a websocket before accept: an HTTP answer where the server can send one, else a close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await _answer(send, refusal, "websocket.http")
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]})
