"""Several sidecars as one, over Redis: each instance's heartbeat and live conversations, call
control routed to the instance that holds a call's websocket, and the calls of an instance that
died closed once its heartbeat expires.

With no ``REDIS_URL`` there is no :class:`Cluster`: one process works alone, exactly as before.

Keys (all under ``forge:``):

- ``forge:instance:<name>``: JSON ``{"instance", "started", "load", "draining", "live": [...]}``
  with a TTL of ``FORGE_INSTANCE_TTL_S``, rewritten every ``FORGE_HEARTBEAT_S`` and whenever a
  conversation starts or ends. Its absence means the instance is gone.
- ``forge:instances``: the set of instances that joined and have not left cleanly. An instance
  in it without a heartbeat key crashed (or lost Redis for longer than the TTL): the first
  instance to remove it from the set (``SREM`` answers 1 to exactly one) closes its open calls
  as failed, with the reason.
- channel ``forge:control:<name>``: control requests for that instance's conversations
  (``{"id", "action", "target", "text"}``); the answer is pushed to the list
  ``forge:reply:<id>``, which the requester pops (it expires after a minute).

The same actions run here when this process holds the conversation: :func:`act` is the one
place they are carried out. The pattern is LiveKit's and vocode's (per-call state with a TTL in
Redis, instances that come and go); Twilio's media-stream guidance expects the webhook and the
websocket to reach different instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.connections import Connection, Connections
    from voiceforge.store.db import Database

log = logging.getLogger("forge.sidecar.cluster")

ACTIONS = ("disconnect", "hangup", "say", "end")
"""Control actions: end the socket (``disconnect``, ``hangup``: a phone call also ends over
Twilio's REST API), speak a sentence now (``say``), say the persona's wrap-up then hang up (``end``)."""
MEMBERS = "forge:instances"
REPLY_TTL_S = 60
MAX_CONTROL_BYTES = 4096


def _instance_key(name: str) -> str:
    return f"forge:instance:{name}"


def _channel(name: str) -> str:
    return f"forge:control:{name}"


class ControlError(Exception):
    """A control request could not be carried out; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


def conversations_of(beats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The live conversations listed in heartbeats (see :meth:`Cluster.heartbeat`), each with its ``instance``."""
    return [{**conn, "instance": beat["instance"]} for beat in beats for conn in beat["live"]]


def find(connections: Connections, target: str) -> Connection | None:
    """The live conversation of this process whose id or call SID is ``target``, or None."""
    conn = connections.get(target)
    if conn is not None:
        return conn
    return next((c for c in connections.live() if c.call_sid == target), None)


async def act(connections: Connections, action: str, target: str, text: str = "") -> dict[str, Any]:
    """Carry out ``action`` on this process's conversation ``target`` (connection id or call SID).

    Returns:
        ``{"done": action, "id": connection id, "call_sid": …}``.

    Raises:
        ControlError: no such live conversation here (404); ``say``/``end`` on a conversation
            without a conversation loop, or an empty ``say`` (409/422); an unknown action (422).
    """
    if action not in ACTIONS:
        raise ControlError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}", 422)
    conn = find(connections, target)
    if conn is None:
        raise ControlError(f"no live conversation {target} on this instance")
    if action in ("disconnect", "hangup"):
        await conn.close()
    elif conn.loop is None:
        raise ControlError(f"conversation {target} runs over a Realtime session: it can only be hung up", 409)
    elif action == "say":
        if not text.strip():
            raise ControlError("nothing to say", 422)
        conn.loop.say(text.strip())
    else:
        await conn.loop.wrap_up()
    return {"done": action, "id": conn.id, "call_sid": conn.call_sid}


async def control(state: Any, action: str, target: str, text: str = "") -> dict[str, Any]:  # noqa: ANN401
    """Carry out ``action`` on conversation ``target`` for a route: through the cluster when there
    is one (any instance may be asked), else on this process alone.

    Raises:
        ControlError: as :func:`act` and :meth:`Cluster.control`.
    """
    cluster: Cluster | None = getattr(state, "cluster", None)
    if cluster is not None:
        return await cluster.control(action, target, text)
    return {**await act(state.connections, action, target, text), "instance": state.settings.instance}


class Cluster:
    """This instance's membership of the cluster: heartbeat, registry, control and the orphan sweep.

    Args:
        redis_url: the shared Redis.
        instance: this sidecar's name (``FORGE_INSTANCE``; unique among the sidecars).
        connections: this process's live conversations (published with every heartbeat).
        heartbeat_s: seconds between heartbeats (``FORGE_HEARTBEAT_S``).
        ttl_s: how long a heartbeat lives (``FORGE_INSTANCE_TTL_S``): an instance silent this
            long is gone, and its calls are closed as failed.
        describe: extra fields of the heartbeat (``load``, ``draining``), read at each beat.
    """

    def __init__(self, redis_url: str, instance: str, connections: Connections, *, heartbeat_s: float = 5.0,
                 ttl_s: float = 15.0, describe: Callable[[], dict[str, Any]] | None = None) -> None:
        import redis.asyncio as aioredis

        # No socket timeout: the control listener waits on its socket; every other call is bounded below.
        self.redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1)
        self.instance, self.connections = instance, connections
        self.heartbeat_s, self.ttl_s = heartbeat_s, max(ttl_s, 2 * heartbeat_s)
        self.describe = describe or dict
        self.started = time.time()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.db: Database | None = None

    async def _bounded(self, awaitable: Any, timeout_s: float = 2.0) -> Any:  # noqa: ANN401
        return await asyncio.wait_for(awaitable, timeout_s)

    # --- heartbeat and registry ------------------------------------------------------------

    def changed(self) -> None:
        """A conversation started or ended here: publish the registry now, not at the next beat."""
        self._changed.set()

    def heartbeat(self) -> dict[str, Any]:
        """The JSON this instance publishes: name, start time (epoch s), its live conversations, and ``describe()``."""
        return {"instance": self.instance, "started": self.started, **self.describe(),
                "live": self.connections.status()}

    async def beat(self) -> None:
        """Write the heartbeat key (with the TTL) and join the member set.

        Raises:
            redis.RedisError, TimeoutError: Redis did not answer (the caller logs and retries).
        """
        body = json.dumps(self.heartbeat())
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(_instance_key(self.instance), body, px=int(self.ttl_s * 1000))
            pipe.sadd(MEMBERS, self.instance)
            await self._bounded(pipe.execute())

    async def instances(self) -> list[dict[str, Any]]:
        """Every live instance's heartbeat (this one included), by name; ``[]`` if Redis cannot be reached."""
        try:
            names = sorted(n.decode() for n in await self._bounded(self.redis.smembers(MEMBERS)))
            if not names:
                return []
            bodies = await self._bounded(self.redis.mget([_instance_key(n) for n in names]))
        except Exception as exc:  # noqa: BLE001 - the registry is a view; this process still serves
            log.warning("the cluster registry could not be read: %s", type(exc).__name__)
            return []
        return [json.loads(b) for b in bodies if b]

    async def live_everywhere(self) -> list[dict[str, Any]]:
        """Every live conversation on every instance, each with its ``instance``."""
        return conversations_of(await self.instances())

    async def owner_of(self, target: str) -> str | None:
        """The instance holding conversation ``target`` (connection id or call SID), or None."""
        for conn in await self.live_everywhere():
            if target in (conn["id"], conn.get("call_sid")):
                return conn["instance"]
        return None

    # --- control -------------------------------------------------------------------------

    async def control(self, action: str, target: str, text: str = "", timeout_s: float = 5.0) -> dict[str, Any]:
        """Carry out ``action`` on ``target`` wherever it lives: here, or on its owner over pub/sub.

        Returns:
            what :func:`act` returned, plus ``instance`` (the owner).

        Raises:
            ControlError: no instance holds ``target`` (404); the owner did not answer within
                ``timeout_s`` or Redis is down (503); the owner's own refusal (its status).
        """
        if find(self.connections, target) is not None:
            return {**await act(self.connections, action, target, text), "instance": self.instance}
        owner = await self.owner_of(target)
        if owner is None:
            raise ControlError(f"no live conversation {target} on any instance")
        request_id = secrets.token_hex(8)
        message = json.dumps({"id": request_id, "action": action, "target": target, "text": text[:1000]})
        try:
            if not await self._bounded(self.redis.publish(_channel(owner), message)):
                raise ControlError(f"instance {owner} holds {target} but is not listening", 503)
            popped = await self._bounded(self.redis.blpop([f"forge:reply:{request_id}"], timeout=timeout_s),
                                         timeout_s + 2)
        except ControlError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ControlError(f"Redis unavailable for call control ({type(exc).__name__})", 503) from exc
        if popped is None:
            raise ControlError(f"instance {owner} did not answer within {timeout_s:.0f} s", 503)
        reply = json.loads(popped[1])
        if "error" in reply:
            raise ControlError(reply["error"], reply.get("status", 409))
        return {**reply, "instance": owner}

    async def _listen(self) -> None:
        """Carry out control requests addressed to this instance, until cancelled (reconnecting)."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await self._bounded(pubsub.subscribe(_channel(self.instance)))
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and isinstance(message.get("data"), bytes):
                        await self._answer(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis restarted: subscribe again
                log.warning("control channel lost (%s); subscribing again", type(exc).__name__)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _answer(self, data: bytes) -> None:
        try:
            if len(data) > MAX_CONTROL_BYTES:
                raise ValueError("too long")
            request = json.loads(data)
            request_id = str(request["id"])[:32]
            action, target, text = str(request["action"]), str(request["target"])[:64], str(request.get("text", ""))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed control message (%d bytes)", len(data))
            return
        try:
            reply: dict[str, Any] = await act(self.connections, action, target, text)
        except ControlError as exc:
            reply = {"error": str(exc), "status": exc.status}
        except Exception as exc:  # noqa: BLE001 - the requester hears why; this instance serves on
            log.exception("control %s on %s failed", action, target)
            reply = {"error": f"{action} failed: {type(exc).__name__}", "status": 500}
        key = f"forge:reply:{request_id}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, json.dumps(reply))
                pipe.expire(key, REPLY_TTL_S)
                await self._bounded(pipe.execute())
        except Exception as exc:  # noqa: BLE001
            log.warning("could not answer control request %s: %s", request_id, type(exc).__name__)

    # --- instances that died ---------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Close the open calls of every member whose heartbeat expired; returns the call SIDs closed.

        Exactly one instance closes each dead member's calls: the one whose ``SREM`` removed it.
        """
        if self.db is None:
            return []
        try:
            names = [n.decode() for n in await self._bounded(self.redis.smembers(MEMBERS))]
            others = [n for n in names if n != self.instance]
            if not others:
                return []
            alive = await self._bounded(self.redis.mget([_instance_key(n) for n in others]))
            gone = [n for n, beat in zip(others, alive, strict=True) if beat is None]
            claimed = [n for n in gone if await self._bounded(self.redis.srem(MEMBERS, n))]
        except Exception as exc:  # noqa: BLE001
            log.warning("the cluster sweep could not reach Redis: %s", type(exc).__name__)
            return []
        from voiceforge.store import calls

        closed: list[str] = []
        for name in claimed:
            reason = f"the sidecar ({name}) stopped answering: no heartbeat for {self.ttl_s:.0f} s"
            sids = await asyncio.to_thread(calls.close_orphaned_calls, self.db, name, reason)
            for sid in sids:
                log.warning("call %s closed as failed: %s", sid, reason)
            closed += sids
        return closed

    async def _run(self) -> None:
        """Beat every ``heartbeat_s`` (or at once after a change), then sweep; until cancelled."""
        while True:
            try:
                await self.beat()
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - Redis down: this process serves on, and retries
                log.warning("heartbeat failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.heartbeat_s)
            self._changed.clear()

    # --- life cycle ------------------------------------------------------------------------

    async def start(self, db: Database) -> None:
        """Join (a first heartbeat, bounded), then beat, sweep and listen in the background."""
        self.db = db
        try:
            await self.beat()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not join the cluster yet (%s); retrying every %.0f s", type(exc).__name__,
                        self.heartbeat_s)
        self._tasks = [asyncio.create_task(self._run(), name="cluster-heartbeat"),
                       asyncio.create_task(self._listen(), name="cluster-control")]

    async def leave(self) -> None:
        """Stop beating and listening, and leave cleanly (no one will close this instance's calls)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(_instance_key(self.instance))
                pipe.srem(MEMBERS, self.instance)
                await self._bounded(pipe.execute())
        with contextlib.suppress(Exception):
            await self.redis.aclose()
