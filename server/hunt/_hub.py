"""The hub: one hunt's World (or every hunt of an older data dir), its tick and its players.

A server runs one hub per hunt (where: server/hunt/_placement.py). The hub is three
parts, in the order the data flows, sharing the state this module sets up:

- **sessions** (server/hunt/_sessions.py): sockets -> join, resume and leave requests,
  resume tokens and grace, the rate limit, and the tick's move batch;
- **tick pipeline** (server/hunt/_pipeline.py): the worker thread: batch -> moves into
  the engine -> ``World.tick`` -> journal -> visibility -> each hunt's tail -> every
  client's frame in one buffer -> one ``write(2)`` per claimed client;
- **broadcaster** (server/hunt/_broadcast.py): the Trio thread after the worker:
  WELCOMEs, what the worker did not write whole (through each client's outbox;
  a full outbox skips the tick for that client, too many skips evict it), and
  the tick's accounting.

Threads and ownership: the World is touched by one Trio task, the ticker (here),
and by the worker thread it hands each tick to (``trio.to_thread``; the kernels
release the GIL). Connection tasks never call the World: their requests wait for
the tick boundary, and moves go into the current batch; at tick time the ticker
swaps in the spare batch (double buffering), so sockets keep being read while the
worker ticks. Deadlines come from the schedule (start + n * period), not from a
sleep after the work, so the rate does not drift.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import trio

from tickengine import HuntParams, World

from .._config import ServeConfig
from .._metrics import TICK_PHASES, Metrics
from ..protocol import ErrorCode, ErrorMessage
from ._broadcast import RING, Broadcaster
from ._pipeline import TickPipeline, _Fenced
from ._sessions import JoinRequest as JoinRequest
from ._sessions import Session as Session
from ._sessions import Sessions


class Hub(Sessions, TickPipeline, Broadcaster):
    """A World served to clients on a fixed tick. See the module docstring."""

    def __init__(self, config: ServeConfig, metrics: Metrics, log: Any,
                 journal: Any = None, recovered: Any = None) -> None:
        self.config = config
        self.server = config.server
        self.metrics = metrics
        self.log = log
        self.journal = journal
        self.sessions: dict[int, Session] = {}  # by slot
        #: Sessions by token hash.
        self.by_token: dict[bytes, Session] = {}
        #: Sessions without a connection (in their resume grace).
        self.lost: set[Session] = set()
        #: Players per (hunt index, IP address), connected or within their grace.
        self.address_players: dict[tuple[int, str], int] = {}
        # Inputs of the coming tick, as the journal records them (durability contract).
        self.tick_hunts: list[HuntParams] = []
        self.tick_joins: list[tuple[int, int, str, bytes]] = []
        self.tick_leaves: list[int] = []
        if recovered is None:
            self.world = World(config.world.engine, config.world.hunts)
            self.created_hunts = 0
        else:
            self.world = recovered.world
            self._restore_sessions(recovered)
            # Hunts of the config that the recovered world lacks are added now.
            for params in config.world.hunts:
                if params.name not in {p.name for p in self.world.hunt_params}:
                    self.world.add_hunt(params)
                    self.tick_hunts.append(params)
        self._init_buffers()
        self._send_pool = (ThreadPoolExecutor(1, thread_name_prefix="hub-send")
                           if self.server.send_threads > 1 else None)
        self.requests: list[JoinRequest] = []
        self.leaves: list[Session] = []
        #: Stop moves that found the batch full, for the next tick's batch.
        self.deferred_stops: list[Session] = []
        self.running = True
        self.stats: dict[str, float] = {"tick": 0, "tick_ms_p50": 0.0, "tick_ms_p99": 0.0}
        #: Ring of the last RING ticks' timings (ms) by phase, for /api/stats and load tests.
        self.ring = np.zeros((RING, len(TICK_PHASES)), np.float64)
        self.ring_count = 0
        self.evictions = 0
        self.skipped_total = 0
        #: Observers cut by a full visibility buffer since the last log line about it.
        self.truncated_since_log = 0
        self._truncation_logged = -math.inf
        self.recent_discoveries: list[deque[dict[str, Any]]] = [
            deque(maxlen=20) for _ in self.world.hunt_params]
        # Per-tick counters, flushed into the metrics once per tick.
        self.moves_received = 0
        self.moves_dropped = 0
        #: Stop moves the server put in the current batch (not received: see tick_once).
        self.stop_moves = 0
        #: Per-hunt figures and move arrival times for the metrics (server/_hunt_metrics.py).
        self.report = metrics.hub_report(self)
        self._observers_dirty = True
        self._on_tick: list[Callable[[Hub, Any], None]] = []
        #: ``time.monotonic()`` after which this node may no longer tick the hunt (scale-out:
        #: its lease in Redis may have expired). inf: no lease (one node). See server/hunt/_node.py.
        self.lease_deadline = math.inf
        #: True once a tick was refused for want of a lease (the hub then stops for good).
        self.fenced = False
        #: True while :meth:`run_ticker` runs; ``ticker_done`` is set when it returns.
        self.ticking = False
        self.ticker_done = trio.Event()
        #: Runs the tick's worker part in a thread (the placement shares one among hubs:
        #: server/hunt/_groups.py BatchedOffload).
        self.offload: Callable[..., Any] = trio.to_thread.run_sync

    async def run_ticker(self, task_status: Any = trio.TASK_STATUS_IGNORED,
                         schedule: Callable[[float], float] | None = None) -> None:
        """The fixed-rate tick loop; returns when :attr:`running` turns False.

        ``schedule(deadline)``: the deadline of the tick after the one due at ``deadline``
        (``trio.current_time()`` seconds; its tick group's phase: server/hunt/_groups.py);
        default one period later."""
        rate = self.world.tick_rate or 20
        period = 1.0 / rate
        start = trio.current_time()
        for s in self.lost:  # recovered players: their grace starts now
            if s.lost_at is None:
                s.lost_at = start
        self.ticking = True
        task_status.started()
        try:
            await self._tick_loop(start, period, schedule or (lambda t: t + period))
        finally:
            self.ticking = False
            self.report.release()
            self.ticker_done.set()

    async def _tick_loop(self, start: float, period: float,
                         schedule: Callable[[float], float]) -> None:
        deadline = start
        while self.running:
            deadline = schedule(deadline)
            now = trio.current_time()
            if now > deadline + period:  # overran by more than a whole period: skip ahead
                missed = int((now - deadline) / period)
                deadline += missed * period
                self.metrics.overruns.inc(missed)
                self.report.overran(missed)
                self.log.warning("tick_overrun", missed_ticks=missed)
            await trio.sleep_until(deadline)
            if not self.running:
                break
            if time.monotonic() >= self.lease_deadline:
                self._fence()
                break
            await self.tick_once()

    async def tick_once(self) -> None:
        t0 = time.perf_counter()
        now = trio.current_time()
        accepted = self._apply_requests(now)
        if self._observers_dirty:
            self._rebuild_observers()
        obs = self.obs_sessions
        n_obs = len(obs)
        slots = self.obs_slots[:n_obs]
        self.obs_keyframe[:n_obs] = self.keyframe_due[slots]
        # The worker writes the frames of idle, welcomed connections (self.fds[i] >= 0);
        # the others go through send_now in _finish, behind what they have queued.
        send = self.send_slots
        claimed = self._claimed[:n_obs]
        send.begin(slots, self.fds[:n_obs], claimed)
        batch, self.batch = self.batch, self.spare
        clock = self.report.swap_clocks()
        n_moves = batch.count
        # Received moves are counted per tick, not per frame (an int above 256 is an
        # allocation): the batch holds them and the server's own stop moves.
        self.moves_received, self.stop_moves = n_moves - self.stop_moves, 0
        if self.deferred_stops:  # stops that found the last batch full: into this one
            stops, self.deferred_stops = self.deferred_stops, []
            for s in stops:
                if s.conn is None and not s.leaving:
                    self._stop_move(s)
        t_call = time.perf_counter()
        try:
            result, vis, _total, phases = await self.offload(self._compute, batch, n_obs)
        except BaseException as exc:
            send.end()
            if isinstance(exc, _Fenced):
                self._fence(accepted)
                return
            raise
        batch.clear()
        self.spare = batch
        self.tick_hunts.clear()
        self.tick_joins.clear()
        self.tick_leaves.clear()
        t_send = time.perf_counter()
        phases["prepare"] = t_call - t0
        phases["handoff"] = (phases.pop("_c0") - t_call) + (t_send - phases.pop("_c4"))
        sent_msgs, sent_bytes, skipped = self._finish(result, vis, accepted, n_obs, now)
        t_end = time.perf_counter()
        phases["finish"] = t_end - t_send
        phases["total"] = t_end - t0
        self._account(result, phases, sent_msgs, sent_bytes, skipped)
        world = self.world
        self.report.tick(world.hunt_params, world.hunts.players, self.obs_hunt[:n_obs],
                         result.discoveries["hunt"], vis.truncated if vis.dropped else None,
                         phases["total"], clock, n_moves, trio.current_time())
        for hook in self._on_tick:
            hook(self, result)

    def _fence(self, accepted: list[JoinRequest] = ()) -> None:
        """The lease is gone: stop ticking at once, answer waiting HELLOs with HUNT_MOVED."""
        self.fenced = True
        self.running = False
        self.log.warning("fenced", hunts=[p.name for p in self.world.hunt_params],
                         tick=self.world.tick_number)
        self.answer_pending(list(accepted))

    def answer_pending(self, extra: list[JoinRequest] = (),
                       refusal: ErrorMessage | None = None) -> None:
        """Refuse every HELLO still waiting for this hub (it stopped): ``refusal``, by
        default HUNT_MOVED."""
        moved = refusal or ErrorMessage(
            ErrorCode.HUNT_MOVED, "this hunt moved to another node: reconnect to the server "
            "you first connected to, with your resume token")
        for req in [*extra, *self.requests]:
            req.session = None
            req.refusal = moved
            req.done.set()
        self.requests.clear()

    def close(self) -> None:
        """Release the hub's threads (after its ticker ended). Idempotent."""
        if self._send_pool is not None:
            self._send_pool.shutdown(wait=False)
            self._send_pool = None
