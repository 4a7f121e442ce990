"""ClusterStore: a node's one connection to the cluster's Redis (coredis, on Trio).

Every method is one round trip (a Lua script where it must check and set at
once), is bounded by ``timeout`` seconds, and raises :class:`ClusterUnavailable`
when Redis does not answer: it never hangs. Connections are rebuilt on the next
call after a Redis restart; after a timeout the store drops its connections (a
paused or partitioned Redis may never answer on them) and reconnects.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import coredis
import trio
from coredis.exceptions import BusyLoadingError, ResponseError, StreamDuplicateConsumerGroupError
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.retry import NoRetryPolicy

from . import _scripts as lua
from ._keys import Keys, split_member
from ._model import ClusterUnavailable, DefineResult, Lease, NodeInfo

T = TypeVar("T")

#: Seconds a call may take before it raises ClusterUnavailable.
DEFAULT_TIMEOUT = 1.0
#: Redis error replies that mean "not now" rather than "wrong call".
_TRANSIENT = ("LOADING", "BUSY", "MISCONF", "READONLY", "NOREPLICAS", "TRYAGAIN",
              "MASTERDOWN", "OOM")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_discovery(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry of ``<prefix>:discoveries`` as a dict with typed values.

    Keys: id, time_ms (when Redis appended it), hunt, tick, player_id, name, value,
    x, y (world units), user (the finder's user id in ticket mode, else ""), node.
    """
    return {"id": entry_id, "time_ms": int(entry_id.partition("-")[0]),
            "hunt": fields.get("hunt", ""), "tick": int(fields.get("tick", 0)),
            "player_id": int(fields.get("player_id", 0)), "name": fields.get("name", ""),
            "value": int(fields.get("value", 0)), "x": float(fields.get("x", 0.0)),
            "y": float(fields.get("y", 0.0)), "user": fields.get("user", ""),
            "node": fields.get("node", "")}


class ClusterStore:
    """The cluster's shared state in Redis, for one node. Build with :meth:`open`."""

    def __init__(self, client: coredis.Redis[str], url: str, prefix: str,
                 timeout: float) -> None:
        self.client = client
        self.url = url
        self.keys = Keys(prefix)
        self.timeout = timeout
        s = client.register_script
        self._heartbeat = s(lua.HEARTBEAT)
        self._live_nodes = s(lua.LIVE_NODES)
        self._remove_node = s(lua.REMOVE_NODE)
        self._define = s(lua.DEFINE_HUNT)
        self._acquire = s(lua.ACQUIRE)
        self._renew = s(lua.RENEW)
        self._release = s(lua.RELEASE)
        self._leaderboard = s(lua.LEADERBOARD)
        self._write_batch = s(lua.WRITE_BATCH)
        self._read_pending = s(lua.READ_PENDING)
        self._publish_result = s(lua.PUBLISH_RESULT)

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, prefix: str = "th",
                   timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[ClusterStore]:
        """Connect to ``url`` (``redis://host:port[/db]``) and check it answers.

        ``timeout``: seconds each call may take. Raises ClusterUnavailable when Redis
        cannot be reached now, ValueError when ``url`` is not a Redis URL.
        """
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"redis prefix {prefix!r}: give a non-empty word such as 'th'")
        client = _client(url)
        try:
            async with client:
                store = cls(client, url, prefix, timeout)
                try:
                    await store.time_ms()
                except ClusterUnavailable as exc:
                    raise ClusterUnavailable(
                        f"cannot reach Redis at {url} ({exc.__cause__ or exc}): start "
                        "redis-server or fix --redis") from exc.__cause__
                yield store
        except BaseExceptionGroup as group:
            # coredis's connection pool is a task group: it wraps whatever the body
            # raised. The pool is our detail, so callers get their exception back.
            if len(group.exceptions) == 1:
                raise group.exceptions[0]  # noqa: B904 (the group is only a wrapper)
            raise

    # ------------------------------------------------------------------ calls

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]],
                    extra: float = 0.0) -> T:
        """Run ``fn`` within the timeout (plus ``extra`` seconds for a blocking read); one
        immediate retry on a broken connection (a pooled connection can die with a
        Redis restart before the pool notices)."""
        try:
            with trio.fail_after(self.timeout + extra):
                try:
                    return await fn()
                except RedisConnectionError as exc:
                    if isinstance(exc, BusyLoadingError):
                        raise
                    return await fn()
        except trio.TooSlowError as exc:
            # Requests still queued on these connections would answer late or never.
            self.client.connection_pool.disconnect()
            raise ClusterUnavailable(f"Redis at {self.url} did not answer {what} within "
                                     f"{self.timeout:g} s: is it paused or overloaded?") from exc
        except (RedisConnectionError, TimeoutError, OSError) as exc:
            raise ClusterUnavailable(f"Redis at {self.url} failed on {what}: {exc} "
                                     "(is redis-server running?)") from exc
        except ResponseError as exc:
            if str(exc).startswith(_TRANSIENT):
                raise ClusterUnavailable(f"Redis at {self.url} refused {what} for now: "
                                         f"{exc}") from exc
            raise

    async def time_ms(self) -> int:
        """Redis's clock (TIME) in milliseconds since the epoch: one clock for all nodes."""
        now = await self._call("TIME", self.client.time)
        return (now - _EPOCH) // dt.timedelta(milliseconds=1)

    # ------------------------------------------------------------------ nodes

    async def heartbeat(self, info: NodeInfo, ttl_ms: int) -> None:
        """Write ``info`` to ``node:<id>`` with a TTL of ``ttl_ms`` and list the node (one
        round trip). A node that stops heartbeating drops out after ``ttl_ms``."""
        _check_ttl(ttl_ms)
        k = self.keys
        await self._call("heartbeat", lambda: self._heartbeat(
            keys=[k.node(info.node_id), k.nodes],
            args=[str(ttl_ms), info.node_id, *info.fields()]))

    async def live_nodes(self) -> list[NodeInfo]:
        """Every node whose heartbeat has not expired, by node_id (and forget the others)."""
        k = self.keys
        rows = await self._call("live_nodes", lambda: self._live_nodes(
            keys=[k.nodes], args=[k.node_prefix]))
        return sorted((NodeInfo.from_fields(list(r)) for r in rows or ()),
                      key=lambda n: n.node_id)

    async def remove_node(self, node_id: str) -> None:
        """Forget a node at once (a clean shutdown), without waiting for its TTL."""
        k = self.keys
        await self._call("remove_node", lambda: self._remove_node(
            keys=[k.node(node_id), k.nodes], args=[node_id]))

    # ------------------------------------------------------------------ hunt catalogue

    async def define_hunt(self, name: str, params: dict[str, Any], *,
                          limit: int | None = None) -> DefineResult:
        """Add hunt ``name`` with ``params`` (JSON-able) to the catalogue, unless it is there.

        With ``limit``, only while the catalogue holds fewer than ``limit`` hunts
        (checked and written atomically). The result is truthy only when created.
        """
        body = json.dumps(params, sort_keys=True, separators=(",", ":"))
        lim = "" if limit is None else str(int(limit))
        code = await self._call("define_hunt", lambda: self._define(
            keys=[self.keys.hunts], args=[name, body, lim]))
        return {1: DefineResult.CREATED, 0: DefineResult.EXISTS}.get(int(code), DefineResult.FULL)

    async def hunts(self) -> dict[str, dict[str, Any]]:
        """The whole catalogue: hunt name -> parameters."""
        raw = await self._call("hunts", lambda: self.client.hgetall(self.keys.hunts))
        return {name: json.loads(body) for name, body in raw.items()}

    async def hunt(self, name: str) -> dict[str, Any] | None:
        """One hunt's parameters, or None when the catalogue has no such hunt."""
        body = await self._call("hunt", lambda: self.client.hget(self.keys.hunts, name))
        return None if body is None else json.loads(body)

    async def mark_stopped(self, name: str, info: dict[str, Any]) -> None:
        """Mark hunt ``name`` stopped by an operator (``info``: when, who): no node places
        or adopts it again, and a node running it stops it."""
        body = json.dumps(info, sort_keys=True, separators=(",", ":"))
        await self._call("mark_stopped", lambda: self.client.hset(
            self.keys.stopped, {name: body}))

    async def stopped(self) -> dict[str, dict[str, Any]]:
        """Every hunt an operator stopped: name -> what :meth:`mark_stopped` was given."""
        raw = await self._call("stopped", lambda: self.client.hgetall(self.keys.stopped))
        return {name: json.loads(body) for name, body in raw.items()}

    # ------------------------------------------------------------------ leases

    async def acquire(self, hunt: str, node_id: str, ttl_ms: int) -> Lease | None:
        """Lease ``hunt`` to ``node_id`` (any node: placement leases to the least loaded)
        for ``ttl_ms``, with a new fencing token; None when somebody holds it."""
        _check_ttl(ttl_ms)
        if not node_id:
            raise ValueError("acquire() needs a node_id")
        k = self.keys
        token = await self._call("acquire", lambda: self._acquire(
            keys=[k.lease(hunt), k.fence(hunt)], args=[node_id, str(ttl_ms)]))
        return None if token is None else Lease(hunt, node_id, int(token))

    async def renew(self, leases: Sequence[Lease], ttl_ms: int) -> list[bool]:
        """Extend each lease to ``ttl_ms`` from now if it is still exactly that lease (same
        node, same token); False for those that expired or went to another node."""
        _check_ttl(ttl_ms)
        if not leases:
            return []
        ok = await self._call("renew", lambda: self._renew(
            keys=[self.keys.lease(x.hunt) for x in leases],
            args=[str(ttl_ms), *(x.value for x in leases)]))
        return [bool(v) for v in ok]

    async def release(self, lease: Lease) -> bool:
        """Delete the lease if it is still this one (True); never someone else's."""
        n = await self._call("release", lambda: self._release(
            keys=[self.keys.lease(lease.hunt)], args=[lease.value]))
        return bool(n)

    async def owners(self, hunts: Sequence[str]) -> dict[str, Lease | None]:
        """The current lease of each hunt (None when nobody holds it)."""
        if not hunts:
            return {}
        values = await self._call("owners", lambda: self.client.mget(
            [self.keys.lease(h) for h in hunts]))
        return {h: None if v is None else Lease.parse(h, v)
                for h, v in zip(hunts, values, strict=True)}

    # ------------------------------------------------------------------ cross-node data

    async def leaderboard(self, limit: int = 10) -> list[dict[str, Any]]:
        """The best ``limit`` players of all hunts, highest score first: dicts with hunt,
        player_id, name, score."""
        if limit <= 0:
            return []
        k = self.keys
        flat = await self._call("leaderboard", lambda: self._leaderboard(
            keys=[k.leaderboard, k.names], args=[str(int(limit))], readonly=True))
        rows = []
        for i in range(0, len(flat), 3):
            hunt, pid = split_member(flat[i])
            rows.append({"hunt": hunt, "player_id": pid, "name": flat[i + 2],
                         "score": int(float(flat[i + 1]))})
        return rows

    async def user_leaderboard(self, limit: int = 10) -> list[dict[str, Any]]:
        """The best ``limit`` users (ticket mode) of all hunts, highest first: dicts with
        user, name (from the user's latest ticket) and score (the user's best in any hunt,
        kept after the player leaves)."""
        if limit <= 0:
            return []
        k = self.keys
        flat = await self._call("leaderboard", lambda: self._leaderboard(
            keys=[k.user_leaderboard, k.user_names], args=[str(int(limit))], readonly=True))
        return [{"user": flat[i], "name": flat[i + 2], "score": int(float(flat[i + 1]))}
                for i in range(0, len(flat), 3)]

    async def exported(self, hunts: Sequence[str]) -> dict[str, int]:
        """Per hunt, the last tick whose events reached Redis (hunts never exported are
        left out)."""
        if not hunts:
            return {}
        values = await self._call("exported", lambda: self.client.hmget(
            self.keys.exported, list(hunts)))
        return {h: int(v) for h, v in zip(hunts, values, strict=True) if v is not None}

    async def recent_discoveries(self, count: int = 10) -> list[dict[str, Any]]:
        """The last ``count`` discoveries of the stream, newest first (see
        :func:`parse_discovery` for the keys)."""
        if count <= 0:
            return []
        entries = await self._call("recent_discoveries", lambda: self.client.xrevrange(
            self.keys.discoveries, end="+", start="-", count=count))
        return [parse_discovery(e.identifier, dict(e.field_values)) for e in entries]

    # ------------------------------------------------------------------ round results

    async def publish_result(self, record: dict[str, Any], maxlen: int = 100_000) -> str | None:
        """Add one round's results (server/hunt/_rounds.py's record) to the results stream,
        once: fields ``key`` (``<hunt>#<round>``, unique), ``hunt``, ``round``,
        ``ended_tick``, ``players`` and ``results`` (the record as JSON). Returns the
        entry's id, or None when that key was published before (by any node). A consumer
        de-duplicates by ``key`` all the same: a reply lost after the write makes the
        caller retry, and the retry finds the key and adds nothing."""
        k = self.keys
        fields = ["key", record["key"], "hunt", record["hunt"], "round", str(record["round"]),
                  "ended_tick", str(record["ended_tick"]), "players", str(record["players"]),
                  "results", json.dumps(record, sort_keys=True)]
        got = await self._call("the results stream", lambda: self._publish_result(
            keys=[k.results, k.results_published], args=[record["key"], str(maxlen), *fields]))
        return str(got) if got else None

    async def read_results(self, after: str = "0", count: int = 100) -> list[dict[str, Any]]:
        """Entries of the results stream after id ``after`` (oldest first): each the
        record itself, with the entry ``id``."""
        entries = await self._call("XRANGE results", lambda: self.client.xrange(
            self.keys.results, start=f"({after}" if after != "0" else "-", end="+",
            count=count))
        return [{**json.loads(dict(e.field_values)["results"]), "id": e.identifier}
                for e in entries]

    # ------------------------------------------------------------------ stream consumers

    async def create_group(self, group: str, *, from_start: bool = False) -> bool:
        """Create consumer group ``group`` of the discovery stream (and the stream if
        need be), reading from now on, or from the oldest entry kept (``from_start``).
        False when the group exists already (it keeps its position)."""
        try:
            await self._call("XGROUP CREATE", lambda: self.client.xgroup_create(
                self.keys.discoveries, group, "0" if from_start else "$", mkstream=True))
        except StreamDuplicateConsumerGroupError:
            return False
        return True

    async def read_group(self, group: str, consumer: str, *, pending: bool = False,
                         count: int = 100, block_ms: int = 1000) -> list[dict[str, Any]]:
        """Up to ``count`` discoveries for ``consumer`` of ``group`` (XREADGROUP).

        New entries, waiting up to ``block_ms`` for some; or with ``pending`` this
        consumer's entries delivered earlier and not acknowledged (no waiting).
        Entries trimmed from the stream since come back as ``{"id": ..., "trimmed":
        True}``: acknowledge them too. Acknowledge the others with :meth:`ack` once
        handled (at-least-once delivery).
        """
        key = self.keys.discoveries
        if pending:
            flat = await self._call("XREADGROUP 0", lambda: self._read_pending(
                keys=[key], args=[group, consumer, str(count)]))
            return [{"id": i, "trimmed": True} if f is None else
                    parse_discovery(i, dict(zip(f[::2], f[1::2], strict=True)))
                    for i, f in zip(flat[::2], flat[1::2], strict=True)]
        reply = await self._call("XREADGROUP", lambda: self.client.xreadgroup(
            group, consumer, {key: ">"}, count=count, block=block_ms), extra=block_ms / 1000)
        return [parse_discovery(e.identifier, dict(e.field_values))
                for e in (reply or {}).get(key, ())]

    async def ack(self, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries of ``group`` (XACK); returns how many were pending."""
        if not ids:
            return 0
        return await self._call("XACK", lambda: self.client.xack(
            self.keys.discoveries, group, list(ids)))

    async def pending_count(self, group: str) -> int:
        """Entries of ``group`` delivered and not yet acknowledged (XPENDING)."""
        summary = await self._call("XPENDING", lambda: self.client.xpending(
            self.keys.discoveries, group))
        return int(summary.pending)

    async def write_batch(self, mark_key: str, seq: int, mark_ttl_ms: int,
                          args: list[str]) -> bool:
        """The event sink's one write per batch (:data:`_scripts.WRITE_BATCH`); False when
        the mark shows it was written already. For :class:`EventSink`."""
        k = self.keys
        done = await self._call("the event batch", lambda: self._write_batch(
            keys=[k.discoveries, k.leaderboard, k.names, k.exported, mark_key,
                  k.user_leaderboard, k.user_names],
            args=[str(seq), str(mark_ttl_ms), *args]))
        return bool(done)


def _client(url: str) -> coredis.Redis[str]:
    """A coredis client for ``url`` whose failed connection attempts leave nothing open."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"--redis {url!r} is not a Redis URL: give redis://HOST:PORT[/DB] "
                         "(or rediss:// for TLS, unix:///path/to/socket)")
    try:
        pool = coredis.ConnectionPool.from_url(url, decode_responses=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--redis {url!r} is not a Redis URL: {exc}") from exc
    pool.connection_class = _closing(pool.connection_class)
    return coredis.Redis(connection_pool=pool, decode_responses=True,
                         retry_policy=NoRetryPolicy())


@functools.cache
def _closing(base: type[Any]) -> type[Any]:
    """``base`` (a coredis connection class) that closes its memory streams however its
    ``run`` ends. coredis 6.9 opens them in ``__init__`` and closes them only once
    connected, so each failed attempt (Redis down) leaks six and anyio warns at garbage
    collection, in whatever code runs then (an error under pytest's -W error)."""

    class Closing(base):  # type: ignore[misc, valid-type]
        async def run(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().run(*args, **kwargs)
            finally:
                for name in _STREAMS:
                    stream = getattr(self, name, None)
                    if stream is not None:
                        stream.close()

    Closing.__name__ = Closing.__qualname__ = f"Closing{base.__name__}"
    return Closing


_STREAMS = tuple(f"_{kind}_buffer_{end}" for kind in ("push_message", "streamed_message", "write")
                 for end in ("in", "out"))


def _check_ttl(ttl_ms: int) -> None:
    if not isinstance(ttl_ms, int) or ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be a positive integer of milliseconds, not {ttl_ms!r}")

