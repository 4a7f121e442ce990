"""Where hunts run: the placement interface, its one-server implementation, and supervision.

A server runs every hunt in a hub of its own (one World, one journal, one
ticker: server/hunt/_hub.py). What decides where a hunt runs, who owns it and when
it moves is a :class:`Placement`; the application asks it only where a HELLO
goes (:meth:`Placement.route`) and what runs here (:meth:`Placement.hubs`).
Two implementations, one code path:

- :class:`server.hunt._local.LocalPlacement`: a single server is a cluster of one;
  every hunt runs here, always.
- :class:`server.hunt._node.RedisPlacement` (``serve --redis``): hunts are placed
  across nodes by leases in Redis, and move when a node dies or leaves.

**Supervision.** Each hunt's ticker runs in a task of its own that catches what
the tick or the journal raises (a full disk, an I/O error, a bug). Such a
failure stops that hunt only: its journal ends at the last durable tick (a
tick is sent only after it is journaled), its players get ERROR ``HUNT_FAILED``
and close 4014, the log line ``hunt_failed`` says what happened and what to do,
``hunt_failures_total`` counts it and ``/healthz`` lists the hunt as failed.
Every other hunt keeps its tick. Then the placement decides: here, the hunt is
restarted from its journal after a backoff (doubling while it keeps failing,
so a full disk keeps it stopped); on a scale-out node its lease is released so
that any node recovers it.

**Data dir.** ``<data_dir>/hunts/<hunt_dir_name(name)>/<token>/`` holds the
journal of a hunt; a single server always writes token 0, so a scale-out node
given the same data dir continues from it. A data dir of the older layout (one
journal for all hunts in ``<data_dir>`` itself) is recovered as it is: one hub
ticks all its hunts, and hunts created later get hubs of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from tickengine import EngineConfig, HuntParams, WorldConfig

from ..protocol import MAX_MESSAGE_BYTES, ErrorCode, ErrorMessage, Redirect, encode
from ..shell import _wsframes as wf
from ._groups import BatchedOffload, TickGroups

if TYPE_CHECKING:
    from ..shell._app import HuntServer
    from ._hub import Hub

#: Seconds a restarted hunt must tick before its failures in a row are forgotten.
HEALTHY_AFTER = 60.0
#: The journal directory a single server writes in a hunt's directory (lease token 0).
LOCAL_TOKEN = 0


def hunt_dir_name(name: str) -> str:
    """A file-system-safe, unique directory name for a hunt name (any UTF-8, <= 256 bytes)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40].strip(".") or "hunt"
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"


def hunt_world_config(engine: EngineConfig, params: HuntParams) -> WorldConfig:
    """The World of one hunt, sized from that hunt's parameters (not the engine's maxima)."""
    players = min(engine.max_players, params.max_players)
    treasures = min(engine.max_treasures, max(1, params.treasures))
    sized = dataclasses.replace(
        engine, max_players=players, max_treasures=treasures, max_hunts=1,
        max_visible=min(engine.max_visible, max(1, players * players)))
    return WorldConfig(sized, (params,))


class StartError(Exception):
    """A hunt could not start when the server started (``serve`` exits with status 2).

    ``__cause__`` is what failed (an OSError of the data dir, a RecoveryError, ...).
    """


@dataclass(eq=False)
class Running:
    """A hunt this server runs (or is starting, or stopping): its hub and its ticker's state."""

    name: str
    #: Lease token: the journal directory's name (always LOCAL_TOKEN on a single server).
    token: int = LOCAL_TOKEN
    #: The scale-out lease (server.cluster.Lease), None on a single server.
    lease: Any = None
    hub: Hub | None = None
    data_dir: Path | None = None
    #: Hunt names routed to this hub: the one hunt, or every hunt of an older data dir.
    hunts: tuple[str, ...] = ()
    #: Set when the hub's ticker has ended and its clients were told.
    stopped: trio.Event = field(default_factory=trio.Event)
    #: Set once the hub ticks (or failed to start).
    ready: trio.Event = field(default_factory=trio.Event)
    #: Why the hunt could not start, or why its tick failed ("Type: message").
    error: str | None = None
    exc: BaseException | None = None
    #: ``time.monotonic()`` after which the hub may not tick (the lease's end; inf: no lease).
    deadline: float = math.inf
    stopping: bool = False
    #: The hub of a data dir of the older layout (one journal for all its hunts).
    legacy: bool = False


@dataclass(frozen=True)
class Location:
    """Where a hunt is, for an operator's call (:meth:`Placement.locate`)."""

    #: Its parameters as the catalogue holds them (None: no hunt of that name).
    params: dict[str, Any] | None
    #: Its hub, when it ticks on this server.
    hub: Hub | None = None
    #: The live node that runs it, when that is another node (a server.cluster.NodeInfo).
    node: Any = None
    #: What its stop mark says, when an operator stopped it.
    stopped: dict[str, Any] | None = None


@dataclass
class Failure:
    """A hunt that failed: what happened, how often in a row, and when it is retried."""

    error: str
    count: int
    #: trio.current_time() of the next restart (inf: none here; another node recovers it).
    retry_at: float
    #: time.time() of the failure (for /healthz).
    at: float


class Placement:
    """Where hunts run and their supervision; see the module docstring.

    The application calls :meth:`run` (in its nursery, after the warm-up),
    :meth:`route` for each HELLO, :meth:`leave` at shutdown, and the views below
    for HTTP. Subclasses say how a hunt gets its token and data, and what
    happens after a failure (:meth:`_after_failure`).
    """

    #: This server's name in a cluster (None on a single server).
    node_id: str | None = None

    def __init__(self, app: HuntServer) -> None:
        self.app = app
        self.cfg = app.server
        self.log = app.log
        self.running: dict[str, Running] = {}
        #: Hunts stopped by a failure, by name (removed when the hunt ticks here again).
        self.failed: dict[str, Failure] = {}
        #: Failures in a row by hunt name (forgotten after HEALTHY_AFTER seconds of ticking).
        self.strikes: dict[str, int] = {}
        #: Hunts an operator stopped, by name: what their stop mark says. They do not run
        #: again, on this server or any other, and a HELLO for them is refused.
        self.stopped: dict[str, dict[str, Any]] = {}
        self.nursery: trio.Nursery | None = None
        #: When in the period each hunt here ticks (server/hunt/_groups.py).
        self.groups = TickGroups(self.cfg.tick_groups, journal=bool(self.cfg.data_dir))
        #: One worker-thread hand-off for the ticks due at the same instant.
        self.offload = BatchedOffload()

    # ------------------------------------------------------------------ the interface

    async def run(self, public_url: str, http_url: str,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the hunts that run here; report started; run until cancelled."""
        raise NotImplementedError

    async def route(self, hunt: str, token: bytes | None = None
                    ) -> Hub | Redirect | ErrorMessage:
        """Where a HELLO for ``hunt`` (resuming with ``token``) goes: a hub of this server,
        a REDIRECT, or a refusal."""
        raise NotImplementedError

    async def leave(self) -> None:
        """Shutdown: stop every hub here (journals closed)."""
        raise NotImplementedError

    async def hunts_view(self) -> list[dict[str, Any]]:
        """Every hunt and the server that runs it (``/hunts``)."""
        raise NotImplementedError

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        """The best ``limit`` players of all hunts (``/leaderboard``)."""
        raise NotImplementedError

    async def create_hunt(self, params: HuntParams) -> str:
        """Define a hunt an operator asked for, and start it where it belongs: "created"
        (it ticks, or is being placed), "exists" (a hunt of that name exists, stopped ones
        included) or "full" (``max_created_hunts`` reached)."""
        raise NotImplementedError

    async def locate(self, hunt: str) -> Location:
        """Where ``hunt`` is: its catalogue entry, its hub here or the node that runs it."""
        raise NotImplementedError

    async def stop_hunt(self, hunt: str, info: dict[str, Any]) -> None:
        """Stop ``hunt`` for good (an operator asked; ``info`` says when and who): mark it
        stopped (durably, before anything else), stop its hub if it ticks here (players get
        ERROR ``UNKNOWN_HUNT``, close 4002) and never run it again."""
        raise NotImplementedError

    def hubs(self) -> list[Hub]:
        """The hubs this server ticks or has started (one per hunt, or per older data dir)."""
        runs = dict.fromkeys(self.running.values())
        return [r.hub for r in runs if r.hub is not None]

    def hub_named(self, hunt: str | None) -> Hub | None:
        """The hub of hunt ``hunt`` (None or "": the first), else None."""
        if not hunt:
            hubs = self.hubs()
            return hubs[0] if hubs else None
        r = self.running.get(hunt)
        return r.hub if r is not None else None

    def health(self) -> tuple[str, dict[str, Any]]:
        """``("ok" | "degraded" | "down", details)`` for ``/healthz``: degraded while a hunt
        is failed, down when nothing here can serve."""
        runs = dict.fromkeys(self.running.values())
        ticking = sorted(n for r in runs if r.hub is not None and r.hub.running
                         for n in r.hunts)
        starting = sorted(n for r in runs if r.hub is None or not r.hub.running for n in r.hunts)
        now = trio.current_time()
        failed = {name: {"error": f.error, "failures": f.count, "at": round(f.at, 3),
                         "retry_in": (round(max(0.0, f.retry_at - now), 1)
                                      if math.isfinite(f.retry_at) else None)}
                  for name, f in sorted(self.failed.items())}
        status = "degraded" if failed else "ok"
        return status, {"hunts": ticking, "starting": starting, "failed": failed}

    def update_metrics(self, metrics: Any) -> None:
        """Gauges set at scrape time."""

    # ------------------------------------------------------------------ hubs

    def _new_hub(self, r: Running, world: WorldConfig, recovered: Any) -> Hub:
        """The hub of ``r`` over ``world`` (or the recovered world), with a journal in
        ``r.data_dir`` not yet started (none without a data dir)."""
        from ..durability import Journal
        from ._hub import Hub

        app = self.app
        server = app.server
        config = dataclasses.replace(app.config, world=world,
                                     server=server.replace(allow_create_hunts=False))
        journal = None
        if r.data_dir is not None:
            fsync = server.fsync
            journal = Journal(r.data_dir, fsync=int(fsync) if fsync.isdigit() else fsync,
                              snapshot_every=server.snapshot_every, hash_every=server.hash_every)
            if journal.fsync_warning:
                self.log.warning("durability", warning=journal.fsync_warning)
        return Hub(config, app.metrics, self.log, journal, recovered)

    async def _open_hub(self, r: Running, params: dict[str, Any]) -> Hub:
        """Build, recover and journal the hub of ``r`` (in a worker thread)."""
        raise NotImplementedError

    def _on_started(self, r: Running, hub: Hub) -> None:
        """The hub of ``r`` is about to tick (Trio thread)."""

    async def _serve_hunt(self, r: Running, params: dict[str, Any]) -> None:
        """Open the hunt's hub and tick it until it stops; a failure stops this hunt only."""
        if r.stopping:
            r.ready.set()
            return
        try:
            hub = await self._open_hub(r, params)
        except Exception as exc:  # a hunt that cannot start must not stop the others
            r.error, r.exc = f"{type(exc).__name__}: {exc}", exc
            r.ready.set()
            await self._failed(r, exc, starting=True)
            return
        r.hub = hub
        hub.lease_deadline = r.deadline
        hub.nursery = self.app.nursery
        hub.offload = self.offload.for_hunt(
            lambda: self.groups.together(r.name),
            lambda: len(hub.sessions))
        self._on_started(r, hub)
        async with trio.open_nursery() as nursery:  # this hunt's own: its failure stays here
            await nursery.start(self._tick, r, hub)
            r.ready.set()
            self.failed.pop(r.name, None)
            self.log.info("hunt_started", hunt=r.name, token=r.token,
                          tick=hub.world.tick_number, players=len(hub.sessions))
        if r.exc is not None:
            await self._failed(r, r.exc, starting=False)
        elif hub.fenced:
            await self._stop(r, "lease ran out", release=False)

    async def _tick(self, r: Running, hub: Hub, task_status: Any) -> None:
        schedule = self.groups.schedule(r.name, lambda: len(hub.sessions),
                                        1.0 / (hub.world.tick_rate or 20))
        try:
            await hub.run_ticker(task_status=task_status, schedule=schedule)
        except Exception as exc:
            r.error, r.exc = f"{type(exc).__name__}: {exc}", exc
        finally:
            self.groups.remove(r.name)

    async def _failed(self, r: Running, exc: BaseException, starting: bool) -> None:
        """A hunt's start, tick or journal raised: stop it, tell everyone, then let the
        placement decide (:meth:`_after_failure`)."""
        count = self.strikes[r.name] = self.strikes.get(r.name, 0) + 1
        os_error = _os_error(exc)
        if os_error is not None:
            where = f", {os_error.filename}" if os_error.filename else ""
            what = f"{os_error.strerror or os_error} (errno {os_error.errno}{where})"
            short = os_error.strerror or type(os_error).__name__
            hint = (f"{_start_hint(os_error)}; the hunt restarts from its last durable tick "
                    "by itself once the fault is gone")
        else:
            what = f"{type(exc).__name__}: {exc}"
            short = type(exc).__name__
            hint = ("a bug, or the data dir was changed under the server: keep the traceback "
                    "and the hunt's data dir; the hunt restarts from its last durable tick "
                    "by itself")
        self.log.error("hunt_failed", hunt=r.name, stage="start" if starting else "tick",
                       error=what, failures_in_a_row=count, data_dir=str(r.data_dir or ""),
                       hint=hint, exc_info=exc)
        self.failed[r.name] = Failure(what, count, math.inf, time.time())
        self.app.metrics.failures.inc()
        await self._stop(r, "failed", release=True, code=ErrorCode.HUNT_FAILED,
                         message=_fit(f"hunt {r.name!r} failed ({short}); reconnect in a "
                                      "few seconds with your resume token: it restarts from "
                                      "its last durable tick"))
        await self._after_failure(r, count, starting)

    async def _after_failure(self, r: Running, count: int, starting: bool) -> None:
        """What happens to a failed hunt (the placement's policy)."""

    async def _stop(self, r: Running, why: str, release: bool,
                    code: int | None = ErrorCode.HUNT_MOVED, message: str = "") -> None:
        """Stop a hub: no more ticks, journal closed, players told ``code`` (None: nobody;
        the app tells them at shutdown), then :meth:`_released` if ``release``."""
        if r.stopping:
            await r.stopped.wait()
            return
        r.stopping = True
        hub = r.hub
        if hub is not None:
            hub.running = False
            if hub.ticking:
                await hub.ticker_done.wait()  # the tick in flight ends (at most one period)
            refusal = (ErrorMessage(code, message or _moved(r.name, why))
                       if code is not None else None)
            hub.answer_pending(refusal=refusal)
            if hub.journal is not None:
                try:
                    await trio.to_thread.run_sync(hub.journal.close)
                except Exception as exc:  # the disk that failed the tick may fail this too
                    self.log.warning("journal_close_failed", hunt=r.name, error=str(exc))
            hub.close()
        if release:
            await self._released(r)
        r.stopped.set()
        for name in r.hunts:
            if self.running.get(name) is r:
                del self.running[name]
        if hub is not None and code is not None:
            frame = wf.frame(encode(ErrorMessage(code, message or _moved(r.name, why))))
            for s in list(hub.sessions.values()):
                conn = s.conn
                if conn is not None and conn.closed is None:
                    self.app.nursery.start_soon(conn.close, int(code), why[:100], frame)
        self.log.info("hunt_stopped", hunt=r.name, reason=why, token=r.token)

    async def _released(self, r: Running) -> None:
        """Give ``r``'s hunt up (scale-out: release its lease)."""


def stopped_message(name: str) -> str:
    """What a player of a hunt an operator stopped is told (ERROR or REFUSED UNKNOWN_HUNT)."""
    return _fit(f"hunt {name!r} was stopped by an operator: it is over; join another hunt")


def _moved(name: str, why: str) -> str:
    return (f"hunt {name!r} moved ({why}): reconnect to the server you first connected to, "
            "with your resume token")


def hunt_journals(data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The journal directory of each hunt in a server's data dir, by hunt name: the newest
    lease's directory of ``<data_dir>/hunts/<hunt>/`` (what ``treasure-hunt replay`` reads)."""
    found = {}
    for meta in sorted(Path(data_dir, "hunts").glob("*/hunt.json")):
        try:
            name = json.loads(meta.read_text(encoding="utf-8"))["name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        tokens = [p for p in meta.parent.iterdir() if p.is_dir() and p.name.isdigit()]
        if tokens:
            found[name] = max(tokens, key=lambda p: int(p.name))
    return found


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (itself, or what it was raised from), if any."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _fit(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut to ``limit`` bytes of UTF-8 (an ERROR's message is bounded)."""
    data = message.encode()
    return message if len(data) <= limit else data[:limit].decode(errors="ignore")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc) or type(exc).__name__


def _start_hint(exc: BaseException) -> str:
    import errno

    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return "free space on the data dir's disk, or give another --data-dir"
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return "the data dir is not writable: fix its mount or permissions, or give " \
                   "another --data-dir"
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return "a file stands where a directory must be: move it, or give another " \
                   "--data-dir"
        return "check the data dir's disk, or give another --data-dir"
    return "see the error above; --fresh moves an unusable journal aside"
