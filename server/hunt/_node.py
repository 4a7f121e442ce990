"""The Redis placement: this server as one node of a cluster (``serve --redis URL``).

Like a single server (server/hunt/_placement.py), a node runs one
:class:`~server.hunt._hub.Hub` (one World, one journal) per hunt, so that a hunt can
move between nodes on its own. Redis holds who runs what
(server/cluster: node heartbeats, the hunt catalogue, one lease per hunt with a
fencing token); this module is the node's side of it:

- **The loop** (every ``lease / 4`` seconds): renew the leases of the hunts this
  node runs (one round trip), heartbeat, then place hunts nobody holds on the
  least loaded live node (``acquire`` for that node; a node adopts the hunts
  leased to it). A hub whose renewal failed is fenced at once.
- **Fencing**: a hub may tick only before its ``lease_deadline``, which is the
  send time of the last successful renewal plus the lease, minus a margin: Redis
  starts the lease's TTL when it *receives* the renewal, so the node's own
  deadline always falls first (clocks may differ in offset, not in rate). A node
  paused past its lease (SIGSTOP, a long GC, a partition) finds its deadline
  passed and stops before its next tick, and the worker checks it again between
  the journal append and the first write, so a tick it could not keep is never
  acknowledged.
- **Data**: ``<data_dir>/hunts/<hunt>/<token>/`` is the journal of the hunt under
  lease ``token``. A new owner recovers from the newest older directory and
  starts its own with a base snapshot; the old owner, if it still runs, writes
  only into a directory nobody reads again. The data dir must be shared by the
  nodes (the same disk, or a network file system: docs/cluster.md).
- **Events**: after each tick the hub's discoveries and changed scores are
  pushed to an :class:`~server.cluster.EventSink`, whose own task writes them
  to Redis off the tick's path.

Clients asking a node for a hunt it does not run get REDIRECT to the owner's
public URL (placing the hunt first when nobody runs it). A hunt whose tick or
journal fails here is stopped and its lease released: the placement loop puts
it on the least loaded node, which recovers it from its last durable tick.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from tickengine import LEFT, ConfigError, HuntParams

from ..cluster import ClusterStore, ClusterUnavailable, EventSink, Lease, NodeInfo, least_loaded
from ..protocol import ErrorCode, ErrorMessage, Redirect, Refused
from ._placement import (
    HEALTHY_AFTER,
    Location,
    Placement,
    Running,
    _fit,
    hunt_dir_name,
    hunt_world_config,
    stopped_message,
)
from ._rounds import ended_rounds
from ._rounds_publish import ResultsPublisher

if TYPE_CHECKING:
    from ..shell._app import HuntServer
    from ._hub import Hub

#: Part of the lease kept as a safety margin on the node's side (clock rate drift, jitter).
LEASE_MARGIN = 0.1


class RedisPlacement(Placement):
    """The node's part of scale-out. Build with the server; ``await nursery.start(node.run)``."""

    def __init__(self, app: HuntServer) -> None:
        super().__init__(app)
        cfg = self.cfg
        app.metrics.add_cluster()
        self.ttl_ms = int(cfg.lease_seconds * 1000)
        self.interval = cfg.lease_seconds / 4
        self.node_id = cfg.node_id
        self.store: ClusterStore | None = None
        self.sink: EventSink | None = None
        self.started_ms = 0
        self.outage = False
        self._loop_scope = trio.CancelScope()
        self.public_url = cfg.public_url
        self.http_url = ""

    # ------------------------------------------------------------------ life cycle

    async def run(self, public_url: str, http_url: str,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, define the configured hunts, then loop until cancelled."""
        if not self.node_id:
            self.node_id = public_url.removeprefix("ws://").rstrip("/")
        self.public_url = self.cfg.public_url or public_url
        self.http_url = http_url
        async with ClusterStore.open(self.cfg.redis, prefix=self.cfg.redis_prefix) as store:
            self.store = store
            self.sink = EventSink(store, node_id=self.node_id, log=self.log)
            self.results = ResultsPublisher(store, self.app.server.data_dir, self.log)
            self.results.scan()  # rounds whose results no node published yet
            self.started_ms = await store.time_ms()
            for params in self.app.config.world.hunts:
                await store.define_hunt(params.name, _params_dict(params))
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.sink.run)
                nursery.start_soon(self.groups.run, self.log)
                nursery.start_soon(self.results.run)
                await self._step()
                self.log.info("cluster_joined", node=self.node_id, redis=self.cfg.redis,
                              public_url=self.public_url, lease_s=self.cfg.lease_seconds)
                task_status.started()
                try:
                    with self._loop_scope:
                        while True:
                            await trio.sleep(self.interval)
                            await self._step()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._leave_cluster()
                    self.offload.close()
                nursery.cancel_scope.cancel()

    async def leave(self) -> None:
        """Hand every hunt over (see :meth:`_leave_cluster`) and stop the loop."""
        self._loop_scope.cancel()
        await self._leave_cluster()

    async def _leave_cluster(self) -> None:
        """Clean shutdown: stop every hub, close its journal, release its lease, so another
        node takes the hunt over at once (its players resume there)."""
        for r in list(self.running.values()):
            await self._stop(r, "node shutting down", release=True)
        if self.sink is not None:
            with trio.move_on_after(2):
                await self.sink.flush(2.0)
        if self.store is not None:
            with trio.move_on_after(2), _quiet():
                await self.store.remove_node(self.node_id)

    # ------------------------------------------------------------------ the loop

    async def _step(self) -> None:
        store = self.store
        assert store is not None
        try:
            await self._renew()
            await store.heartbeat(self.info(), self.ttl_ms)
            await self._place()
        except ClusterUnavailable as exc:
            if not self.outage:
                self.outage = True
                self.log.warning("redis_unavailable", error=str(exc),
                                 hint="hunts stop when their lease runs out")
            return
        if self.outage:
            self.outage = False
            self.log.info("redis_back")

    async def _renew(self) -> None:
        # Not the ones still adopting (deadline 0): _adopt renews those itself.
        held = [r for r in self.running.values() if not r.stopping and r.deadline > 0]
        if not held:
            return
        sent = time.monotonic()
        ok = await self.store.renew([r.lease for r in held], self.ttl_ms)
        for r, good in zip(held, ok, strict=True):
            if good:
                self._extend(r, sent)
            else:
                self.log.warning("lease_lost", hunt=r.name, token=r.lease.token)
                self._set_deadline(r, 0.0)
                self.nursery.start_soon(self._stop, r, "lease lost", False)

    def _extend(self, r: Running, sent: float) -> None:
        self._set_deadline(r, sent + self.cfg.lease_seconds * (1 - LEASE_MARGIN))

    def _set_deadline(self, r: Running, deadline: float) -> None:
        r.deadline = deadline
        if r.hub is not None:
            r.hub.lease_deadline = deadline

    async def _place(self) -> None:
        """Adopt the hunts leased to this node; lease the free ones to the least loaded;
        stop the hunts an operator stopped (should the call to stop them have missed us)."""
        store = self.store
        self.stopped = stopped = await store.stopped()
        for name, r in list(self.running.items()):
            if name in stopped and not r.stopping:
                self.nursery.start_soon(self._stop_for_good, r)
        catalogue = {k: v for k, v in (await store.hunts()).items() if k not in stopped}
        if not catalogue:
            return
        owners = await store.owners(sorted(catalogue))
        for name, lease in owners.items():
            if lease is not None and lease.node_id == self.node_id and name not in self.running:
                await self._adopt(name, lease, catalogue[name])
        free = sorted(name for name, lease in owners.items() if lease is None)
        if not free:
            return
        nodes = await store.live_nodes()
        if not nodes:
            return
        loads = {n.node_id: n for n in nodes}
        for name in free:
            target = least_loaded(list(loads.values()))
            lease = await store.acquire(name, target.node_id, self.ttl_ms)
            if lease is None:
                continue
            self.log.info("hunt_placed", hunt=name, node=target.node_id, token=lease.token)
            loads[target.node_id] = dataclasses.replace(target, hunts=target.hunts + 1)
            if target.node_id == self.node_id:
                await self._adopt(name, lease, catalogue[name])

    def info(self) -> NodeInfo:
        hubs = [r.hub for r in self.running.values() if r.hub is not None]
        return NodeInfo(node_id=self.node_id, public_url=self.public_url,
                        http_url=self.http_url, players=sum(len(h.sessions) for h in hubs),
                        hunts=len(self.running), started_ms=self.started_ms)

    # ------------------------------------------------------------------ hubs

    async def _adopt(self, name: str, lease: Lease, params: dict[str, Any]) -> None:
        """Start the hub of a hunt leased to this node: renew first (the deadline must come
        from this node's own renewal), recover from the shared data dir, then tick."""
        if name in self.running:  # the loop and a HELLO may both get here: one hub only
            return
        r = Running(name, token=lease.token, lease=lease, hunts=(name,), deadline=0.0)
        self.running[name] = r  # claimed before the await below
        sent = time.monotonic()
        try:
            ok = (await self.store.renew([lease], self.ttl_ms))[0]
        except ClusterUnavailable:
            ok = False
        if not ok:
            if self.running.get(name) is r:
                del self.running[name]
            r.stopping = True
            r.stopped.set()
            r.ready.set()
            return
        self._extend(r, sent)
        self.nursery.start_soon(self._serve_hunt, r, params)

    def _on_started(self, r: Running, hub: Hub) -> None:
        hub._on_tick.append(self._push_events)
        hub.rounds.listeners.append(self.results.push)
        for h, params in enumerate(hub.world.hunt_params):  # what a last owner left unsent
            directory = hub.rounds.store(h).directory
            if params.rounds is not None and directory is not None:
                self.results.scan(directory)
        self._push_all_scores(hub)

    async def _after_failure(self, r: Running, count: int, starting: bool) -> None:
        # The lease is released (_released): the placement loop puts the hunt on the least
        # loaded node. The failure stays listed in /healthz a while for the operator.
        failure = self.failed.get(r.name)
        await trio.sleep(HEALTHY_AFTER)
        if self.failed.get(r.name) is failure:
            del self.failed[r.name]

    async def _released(self, r: Running) -> None:
        with _quiet(), trio.move_on_after(2):
            await self.store.release(r.lease)

    async def _open_hub(self, r: Running, params: dict[str, Any]) -> Hub:
        app = self.app
        try:
            hunt = HuntParams.from_dict(params)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"hunt {r.name!r} in the catalogue: {exc}") from exc
        world = hunt_world_config(app.config.world.engine, hunt)
        if not app.server.data_dir:
            return self._new_hub(r, world, None)
        base = Path(app.server.data_dir) / "hunts" / hunt_dir_name(r.name)
        r.data_dir = base / f"{r.lease.token:012d}"
        cursor = (await self.store.exported([r.name])).get(r.name)
        hub, recovered, missed = await trio.to_thread.run_sync(
            self._open_sync, r, world, base, cursor)
        if recovered is not None:
            for line in recovered.report.lines():
                self.log.info("recovery", hunt=r.name, report=line)
            self.log.info("recovered", hunt=r.name, tick=recovered.tick,
                          state_hash=recovered.state_hash, players=len(hub.sessions),
                          republished_ticks=len(missed))
            for tick, disc in missed:  # what the last owner had not written to Redis
                self._push_discoveries(hub, tick, disc)
        return hub

    def _open_sync(self, r: Running, world: Any, base: Path, cursor: int | None
                   ) -> tuple[Hub, Any, list[tuple[int, Any]]]:
        """Worker thread: recover the newest older lease's directory, start this lease's."""
        import numba

        numba.set_num_threads(self.cfg.tick_threads)
        recovered, source, missed, ended = _recover_latest(base, r.lease.token, cursor)
        hub = self._new_hub(r, world, recovered)
        hub.rounds.replayed(ended)  # results files a dead owner had not written
        # A fresh journal in this lease's own directory, based on the recovered world.
        hub.journal.start(hub.world, hub.journal_meta())
        _prune(base, keep={r.data_dir.name, source.name if source else ""})
        return hub, recovered, missed

    # ------------------------------------------------------------------ routing

    async def route(self, hunt: str, token: bytes | None = None
                    ) -> Hub | Redirect | ErrorMessage:
        for _ in range(3):
            if hunt in self.stopped:
                return Refused(ErrorCode.UNKNOWN_HUNT, stopped_message(hunt))
            r = self.running.get(hunt)
            if r is not None and not r.stopped.is_set():
                with trio.move_on_after(30):
                    await r.ready.wait()
                if r.hub is not None and r.hub.running:
                    return r.hub
                if r.error is not None:
                    return ErrorMessage(ErrorCode.HUNT_FAILED, _fit(
                        f"hunt {hunt!r} failed on this node: retry in a second ({r.error})"))
            try:
                answer = await self._route_remote(hunt)
            except ClusterUnavailable:
                return ErrorMessage(ErrorCode.GOING_AWAY, "the cluster's Redis is unreachable: "
                                    "retry in a few seconds")
            if answer is not None:
                return answer
        return ErrorMessage(ErrorCode.GOING_AWAY, f"hunt {hunt!r} is moving between nodes: "
                            "retry in a second")

    async def _route_remote(self, hunt: str) -> Redirect | ErrorMessage | None:
        store = self.store
        lease = (await store.owners([hunt]))[hunt]
        if lease is None:
            stopped = await store.stopped()
            if hunt in stopped:  # stopped on another node since our last loop
                self.stopped = stopped
                return Refused(ErrorCode.UNKNOWN_HUNT, stopped_message(hunt))
            params = await store.hunt(hunt)
            if params is None:
                params = await self._create(hunt)
                if isinstance(params, ErrorMessage):
                    return params
            nodes = await store.live_nodes()
            target = least_loaded(nodes) if nodes else None
            if target is None:
                return ErrorMessage(ErrorCode.GOING_AWAY, "no live node: retry later")
            lease = await store.acquire(hunt, target.node_id, self.ttl_ms)
            if lease is None:
                return None  # somebody else placed it meanwhile: look again
            self.log.info("hunt_placed", hunt=hunt, node=target.node_id, token=lease.token)
            if target.node_id == self.node_id:
                await self._adopt(hunt, lease, params)
                return None
        if lease.node_id == self.node_id:
            if hunt not in self.running:
                params = await store.hunt(hunt)
                if params is not None:
                    await self._adopt(hunt, lease, params)
            return None
        owner = {n.node_id: n for n in await store.live_nodes()}.get(lease.node_id)
        if owner is None:
            return ErrorMessage(ErrorCode.GOING_AWAY, f"hunt {hunt!r} is failing over from "
                                f"node {lease.node_id!r}: retry in a second")
        return Redirect(url=owner.public_url, hunt=hunt, node=owner.node_id)

    async def _create(self, hunt: str) -> dict[str, Any] | ErrorMessage:
        cfg = self.cfg
        if not cfg.allow_create_hunts:
            names = ", ".join(sorted(await self.store.hunts())) or "none"
            return Refused(ErrorCode.UNKNOWN_HUNT, f"no hunt named {hunt!r}; hunts: {names}")
        try:
            params = HuntParams.from_dict({**self.app.config.hunt_defaults, "name": hunt})
        except (ConfigError, TypeError, ValueError) as exc:
            return Refused(ErrorCode.UNKNOWN_HUNT, f"cannot create hunt {hunt!r}: {exc}")
        d = _params_dict(params)
        fixed = len(self.app.config.world.hunts)
        if not await self.store.define_hunt(hunt, d, limit=fixed + cfg.max_created_hunts):
            existing = await self.store.hunt(hunt)
            if existing is not None:
                return existing
            return Refused(ErrorCode.UNKNOWN_HUNT, f"no hunt named {hunt!r}, and the cluster "
                           f"holds the most hunts allowed ({fixed + cfg.max_created_hunts})")
        self.log.info("hunt_created", hunt=hunt)
        return d

    # ------------------------------------------------------------------ operators

    async def create_hunt(self, params: HuntParams) -> str:
        fixed = len(self.app.config.world.hunts)
        defined = await self.store.define_hunt(params.name, _params_dict(params),
                                               limit=fixed + self.cfg.max_created_hunts)
        if not defined:
            return defined.value
        self.log.info("hunt_created", hunt=params.name, by="admin")
        await self._route_remote(params.name)  # placed now, not at the next loop
        return "created"

    async def locate(self, hunt: str) -> Location:
        store = self.store
        params = await store.hunt(hunt)
        if params is None:
            return Location(None)
        stopped = (await store.stopped()).get(hunt)
        r = self.running.get(hunt)
        if r is not None and r.hub is not None and r.hub.running:
            return Location(params, hub=r.hub, stopped=stopped)
        lease = (await store.owners([hunt]))[hunt]
        node = None
        if lease is not None and lease.node_id != self.node_id:
            node = {n.node_id: n for n in await store.live_nodes()}.get(lease.node_id)
        return Location(params, node=node, stopped=stopped)

    async def stop_hunt(self, hunt: str, info: dict[str, Any]) -> None:
        await self.store.mark_stopped(hunt, info)
        self.stopped[hunt] = info
        if self.cfg.data_dir:
            from ._admin_state import mark_stopped

            await trio.to_thread.run_sync(mark_stopped, self.cfg.data_dir, hunt, info)
        r = self.running.get(hunt)
        if r is not None:
            await self._stop_for_good(r)

    async def _stop_for_good(self, r: Running) -> None:
        await self._stop(r, "stopped by an operator", release=True,
                         code=ErrorCode.UNKNOWN_HUNT, message=stopped_message(r.name))

    # ------------------------------------------------------------------ events

    def _push_events(self, hub: Hub, result: Any) -> None:
        """After each tick (Trio thread): discoveries, changed scores and leaves to the sink."""
        sink = self.sink
        disc = result.discoveries
        mem = result.memberships
        if not len(disc) and not len(mem):
            return
        name = hub.world.hunt_params[0].name
        found, scores = _discoveries(hub, disc)
        removed = []
        sessions = hub.sessions
        for m in mem.tolist() if len(mem) else ():
            kind, _hunt, slot, gen = m[0], m[1], m[2], m[3]
            pid = (gen << 32) | slot
            if kind == LEFT:
                removed.append(pid)
                scores.pop(pid, None)
            elif pid not in scores:  # a join: the user's name from their latest ticket
                s = sessions.get(slot)
                if s is not None and s.user and s.player_id == pid:
                    scores[pid] = (s.name, 0, s.user)
        sink.push(name, result.tick, found, scores, removed)

    def _push_discoveries(self, hub: Hub, tick: int, disc: Any) -> None:
        found, scores = _discoveries(hub, disc)
        self.sink.push(hub.world.hunt_params[0].name, tick, found, scores, [])

    def _push_all_scores(self, hub: Hub) -> None:
        """After adoption: every player's score again (what a dead owner had not flushed)."""
        P = hub.world.players
        scores = {s.player_id: (s.name, int(P.score[s.slot]), s.user)
                  for s in hub.sessions.values()}
        if scores:
            self.sink.push(hub.world.hunt_params[0].name, hub.world.tick_number, [], scores, [])

    # ------------------------------------------------------------------ HTTP views

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        if self.app.server.auth != "none":  # ticket mode: users, their best in any hunt
            return await self.store.user_leaderboard(limit)
        return await self.store.leaderboard(limit)

    def health(self) -> tuple[str, dict[str, Any]]:
        status, body = super().health()
        if self.outage:
            status = "down"
        return status, {"node": self.node_id, **body}

    def update_metrics(self, metrics: Any) -> None:
        metrics.set_cluster(not self.outage and self.store is not None, len(self.running),
                            self.sink.stats() if self.sink is not None else None)

    async def hunts_view(self) -> list[dict[str, Any]]:
        store = self.store
        catalogue = await store.hunts()
        stopped = await store.stopped()
        owners = await store.owners(sorted(catalogue)) if catalogue else {}
        nodes = {n.node_id: n for n in await store.live_nodes()}
        rows = []
        for name in sorted(catalogue):
            lease = owners.get(name)
            node = nodes.get(lease.node_id) if lease else None
            r = self.running.get(name)
            rows.append({
                "name": name, "owner": lease.node_id if lease else None,
                "owner_url": node.public_url if node else None,
                "owner_live": node is not None, "token": lease.token if lease else None,
                "stopped": name in stopped,
                "players": len(r.hub.sessions) if r and r.hub else None,
                "tick": r.hub.world.tick_number if r and r.hub else None,
                "max_players": catalogue[name].get("max_players")})
        return rows


def _discoveries(hub: Hub, disc: Any) -> tuple[list[tuple], dict[int, tuple]]:
    """DISCOVERY_DTYPE rows as the sink takes them: (player_id, name, value, x, y, user)
    tuples, and the finders' new scores as (name, score, user)."""
    sessions = hub.sessions
    found = []
    scores: dict[int, tuple] = {}
    for _hunt, _treasure, slot, gen, value, score, x, y in disc.tolist() if len(disc) else ():
        pid = (gen << 32) | slot
        s = sessions.get(slot)
        who, user = (s.name, s.user) if s is not None else ("?", "")
        found.append((pid, who, value, x, y, user))
        scores[pid] = (who, score, user)
    return found, scores


def _params_dict(params: HuntParams) -> dict[str, Any]:
    return params.to_dict()


def _recover_latest(base: Path, token: int, cursor: int | None
                    ) -> tuple[Any, Path | None, list[tuple[int, Any]], list[tuple[int, Any]]]:
    """Recover the newest directory below ``token`` that holds a provable state.

    Also returns the discoveries of the replayed ticks after ``cursor`` (the last
    tick whose events reached Redis), as ``(tick, records)``: the dead owner may
    have journaled them without publishing them; and the results of the rounds that ended
    in the replayed ticks, as ``(tick, results)``. When the newest snapshot is
    already past ``cursor``, the replay starts from the oldest kept snapshot.
    """
    from ..durability import recover

    if not base.is_dir():
        return None, None, [], []
    dirs = sorted((p for p in base.iterdir() if p.is_dir() and p.name.isdigit()
                   and int(p.name) < token), key=lambda p: int(p.name), reverse=True)
    for d in dirs:
        missed: list[tuple[int, Any]] = []
        ended: list[tuple[int, Any]] = []

        def keep(result: Any, missed: list[tuple[int, Any]] = missed,
                 ended: list[tuple[int, Any]] = ended) -> None:
            if (cursor is None or result.tick > cursor) and len(result.discoveries):
                missed.append((result.tick, result.discoveries.copy()))
            if len(result.rounds_ended):
                ended.append((result.tick, ended_rounds(result)))

        rec = recover(d, on_result=keep)
        if rec is None:
            continue
        if cursor is not None and cursor < (rec.report.snapshot_tick or 0):
            missed.clear()
            ended.clear()
            older = recover(d, earliest=True, on_result=keep)
            if older is not None and older.tick == rec.tick:
                rec = older
        return rec, d, missed, ended
    return None, None, [], []


def _prune(base: Path, keep: set[str]) -> None:
    """Delete token directories older than the ones kept (the current and its source)."""
    for p in base.iterdir():
        if p.is_dir() and p.name.isdigit() and p.name not in keep:
            numbers = sorted(int(k) for k in keep if k.isdigit())
            if numbers and int(p.name) < numbers[0]:
                shutil.rmtree(p, ignore_errors=True)


class _quiet:
    """Swallow ClusterUnavailable (best-effort calls at shutdown)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> bool:
        return typ is not None and issubclass(typ, ClusterUnavailable)

