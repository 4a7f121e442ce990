"""The hub: one hunt's World (or every hunt of an older data dir), its tick and its players.

A server runs one hub per hunt (where: server/hunt/_placement.py). The hub composes
three stages, each an object owning its state, in the order the data flows; the
ticker task here passes each one's output to the next and nothing flows back:

- **sessions** (server/hunt/_sessions.py, :class:`Sessions`): sockets -> join,
  resume and leave requests, resume tokens and grace, the rate limit, and the tick's
  move batch. Gives: the accepted requests, the observers, the batch and the tick's
  journal inputs;
- **tick pipeline** (server/hunt/_pipeline.py, :class:`TickPipeline`): the worker
  thread: batch -> moves into the engine -> ``World.tick`` -> journal -> visibility
  -> each hunt's tail -> every client's frame in one buffer. Gives: :class:`Frames`;
- **broadcaster** (server/hunt/_broadcast.py, :class:`Broadcaster`): claims on idle
  sockets (before the worker), one ``write(2)`` per claimed client (in the worker,
  after the pipeline), then on the Trio thread WELCOMEs, what the worker did not
  write whole (through each client's outbox; a full outbox skips the tick for that
  client, too many skips evict it), and the tick's accounting. Gives: the sessions
  to evict, which the ticker hands back to the sessions as lost connections.

Threads and ownership: the World is touched by one Trio task, the ticker (here),
and by the worker thread it hands each tick to (server/hunt/_worker.py; the kernels
release the GIL). Connection tasks never call the World: their requests wait for
the tick boundary, and moves go into the current batch; at tick time the ticker
swaps in the spare batch (double buffering), so sockets keep being read while the
worker ticks. Deadlines come from the schedule (the hunt's tick group's phase + n *
period: server/hunt/_groups.py), not from a sleep after the work, so the rate does
not drift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import trio

from tickengine import World

from .._config import ServeConfig
from .._metrics import Metrics
from ..protocol import MoveBatch
from ..shell._conn import Connection
from ._broadcast import Broadcaster
from ._groups import BatchedOffload, Staged
from ._pipeline import Frames, TickPipeline
from ._players import JoinRequest as JoinRequest
from ._players import Observers
from ._players import Session as Session
from ._rounds_stage import HubRounds
from ._sessions import Sessions
from ._worker import TickWaits

#: Seconds before its deadline a hub of many clients reads their sockets once more
#: (:meth:`Sessions.read_ahead`): the pass just before the tick then reads only what came
#: since, so reading up to a pass interval's moves is no longer on the tick's path.
EARLY_READ = 0.002
#: Clients from which the early read pays: it is one more wake-up of the Trio thread per
#: tick (tens of microseconds of CPU on a virtual machine), and the pass before a small
#: hunt's tick is short anyway.
EARLY_READ_MIN = 256


class _Fenced(Exception):
    """Raised in the worker when the lease ran out during a tick: nothing is sent."""


class Hub:
    """A World served to clients on a fixed tick. See the module docstring.

    What the rest of the server uses: :attr:`world`, :attr:`journal`, :attr:`sessions`
    (the players by slot, and where the shell hands in :attr:`requests`,
    :attr:`leaves`, :meth:`take_moves` and :meth:`disconnected`), the ticker
    (:meth:`run_ticker`, :attr:`running`, :attr:`ticking`, :attr:`ticker_done`,
    :attr:`lease_deadline`, :attr:`fenced`, :attr:`nursery`, :meth:`close`) and the
    figures of the broadcaster (:attr:`stats`, :attr:`ring`, :attr:`ring_count`,
    :attr:`evictions`, :attr:`skipped_total`, :attr:`recent_discoveries`).
    """

    def __init__(self, config: ServeConfig, metrics: Metrics, log: Any,
                 journal: Any = None, recovered: Any = None) -> None:
        self.config = config
        self.server = config.server
        self.metrics = metrics
        self.log = log
        self.journal = journal
        self.world = (World(config.world.engine, config.world.hunts) if recovered is None
                      else recovered.world)
        #: Per-hunt figures and move arrival times for the metrics (server/_hunt_metrics.py).
        self.report = metrics.hub_report(self)
        #: Where closes run (set by the placement before the first tick).
        self.nursery: trio.Nursery | None = None
        sessions = self.sessions = Sessions(config, self.world, metrics, log, self.report,
                                            self._close_soon, recovered)
        #: Round-based hunts (server/hunt/_rounds_stage.py): control, results, ROUND/RESULTS.
        rounds = self.rounds = HubRounds(self.world, self.server.data_dir, log, self.report,
                                         sessions.joined_name, self._user_of)
        self.pipeline = TickPipeline(self.world, journal, self.server.tick_threads,
                                     sessions.journal_meta, sessions.joined_name,
                                     sessions.names, rounds.after_journal)
        self.broadcaster = Broadcaster(self.world, self.server, metrics, log, self.report,
                                       sessions.joined_name, self._close_soon, rounds.greet)
        #: The hub's own offload, for a hub no placement shares one with (a benchmark's).
        self._own_offload = BatchedOffload()
        #: How long the tick's threads waited for a CPU (the machine's share of its time).
        self._waits = TickWaits()
        # What the shell hands in, as the sessions take it.
        self.requests: list[JoinRequest] = self.sessions.requests
        self.leaves: list[Session] = self.sessions.leaves
        self.take_moves = self.sessions.take_moves
        self.disconnected = self.sessions.disconnected
        self.holds = self.sessions.holds
        self.journal_meta = self.sessions.journal_meta
        self.answer_pending = self.sessions.answer_pending
        self.address_players = self.sessions.address_players
        self.running = True
        self._on_tick: list[Callable[[Hub, Any], None]] = []
        #: ``time.monotonic()`` after which this node may no longer tick the hunt (scale-out:
        #: its lease in Redis may have expired). inf: no lease (one node). See server/hunt/_node.py.
        self.lease_deadline = math.inf
        #: True once a tick was refused for want of a lease (the hub then stops for good).
        self.fenced = False
        #: True while :meth:`run_ticker` runs; ``ticker_done`` is set when it returns.
        self.ticking = False
        self.ticker_done = trio.Event()
        #: Runs the tick's worker part in a thread (server/hunt/_groups.py BatchedOffload):
        #: the hub's own unless the placement shares one among hubs.
        self.offload: Callable[..., Any] = self._own_offload.for_hunt(lambda: 1)

    # The broadcaster's figures, by the names the shell reads.
    @property
    def stats(self) -> dict[str, float]:
        return self.broadcaster.stats

    @property
    def ring(self) -> np.ndarray:
        return self.broadcaster.ring

    @property
    def ring_count(self) -> int:
        return self.broadcaster.ring_count

    @property
    def evictions(self) -> int:
        return self.broadcaster.evictions

    @property
    def skipped_total(self) -> int:
        return self.broadcaster.skipped_total

    @property
    def recent_discoveries(self) -> Any:
        return self.broadcaster.recent_discoveries

    @property
    def obs_sessions(self) -> list[Session]:
        """The clients the last tick went to."""
        return self.sessions.observers.sessions

    async def run_ticker(self, task_status: Any = trio.TASK_STATUS_IGNORED,
                         schedule: Callable[[float], float] | None = None) -> None:
        """The fixed-rate tick loop; returns when :attr:`running` turns False.

        ``schedule(deadline)``: the deadline of the tick after the one due at ``deadline``
        (``trio.current_time()`` seconds; its tick group's phase: server/hunt/_groups.py);
        default one period later."""
        rate = self.world.tick_rate or 20
        period = 1.0 / rate
        start = trio.current_time()
        for s in self.sessions.lost:  # recovered players: their grace starts now
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
            if self.sessions.observers.count >= EARLY_READ_MIN:
                await trio.sleep_until(deadline - EARLY_READ)
                self.sessions.read_ahead()
            await trio.sleep_until(deadline)
            if not self.running:
                break
            if time.monotonic() >= self.lease_deadline:
                self._fence()
                break
            await self.tick_once()

    async def tick_once(self) -> None:
        """One tick: sessions -> pipeline (worker) -> broadcaster."""
        t0 = time.perf_counter()
        waits = self._waits
        waits.start()
        now = trio.current_time()
        sessions, broadcaster = self.sessions, self.broadcaster
        accepted = sessions.apply_requests(now)
        for req in accepted:
            if req.session is not None:
                broadcaster.fresh(req.session.slot)
        obs = sessions.refresh_observers()
        keyframe = broadcaster.claim(obs)
        self.rounds.before_tick(sessions.inputs.events)
        batch, received = sessions.take_batch()
        clock = self.report.swap_clocks()
        n_moves = batch.count
        t_call = time.perf_counter()
        waits.call()
        try:
            frames = await self.offload(self._work, batch, obs, keyframe)
        except BaseException as exc:
            broadcaster.release()
            if isinstance(exc, _Fenced):
                self._fence(accepted)
                return
            raise
        waits.back()
        sessions.batch_done(batch)
        t_send = time.perf_counter()
        phases = frames.phases
        phases["prepare"] = t_call - t0
        phases["handoff"] = (phases.pop("_c0") - t_call) + (t_send - phases.pop("_c4"))
        sent = broadcaster.finish(frames, obs, accepted, now)
        for s in sent.evict:  # its connection is lost to the session first, then closed
            conn = s.conn
            sessions.disconnected(s, conn)
            broadcaster.evict(s, conn)
        t_end = time.perf_counter()
        phases["finish"] = t_end - t_send
        phases["total"] = t_end - t0
        phases["handoff_cpu"], phases["cpu_wait"] = waits.end(
            phases["handoff"], phases["total"] - phases["send"])
        result, vis = frames.result, frames.vis
        broadcaster.account(result, phases, sent, received, sessions.take_dropped())
        world = self.world
        self.report.tick(world.hunt_params, world.hunts.players, obs.hunts,
                         result.discoveries["hunt"], vis.truncated if vis.dropped else None,
                         phases["total"], clock, n_moves, trio.current_time())
        self.rounds.after_tick(result, obs.sessions)
        for hook in self._on_tick:
            hook(self, result)

    async def control_round(self, hunt: str, action: str, timeout: float = 10.0) -> Any:
        """Start the next round now (``action`` "start") or end the running round now
        ("end") in round-based hunt ``hunt`` (docs/server.md, "Rounds"): queued for the next
        tick, journaled with it, answered once that tick is journaled. Returns the request
        (server/hunt/_rounds.py's RoundRequest): ``error`` (why the engine refused; nothing
        changed), else ``state`` (the round clock after that tick) and ``tick``. Raises
        ``trio.TooSlowError`` after ``timeout`` seconds without a tick (the hub stopped)."""
        return await self.rounds.request(hunt, action, timeout)

    def round_results(self, hunt: str) -> list[dict[str, Any]]:
        """Every ended round's record of ``hunt``, oldest first (``GET .../rounds``)."""
        return self.rounds.results(hunt)

    def _user_of(self, slot: int) -> str | None:
        """The user id of the player in ``slot`` (ticket mode), None if it has none."""
        s = self.sessions.get(slot)
        return (getattr(s, "user", None) or None) if s is not None else None

    def _work(self, batch: MoveBatch, obs: Observers, keyframe: np.ndarray
              ) -> Frames | Staged:
        """A tick thread, or the Trio thread for a small group (server/hunt/_groups.py):
        the pipeline's tick and frames, then the broadcaster's writes (:meth:`_deliver`).
        With a journal, the writes wait for the tick to be on disk: a :class:`Staged`,
        whose record is written and synced in a thread with those of other hunts, then
        the pipeline's ``on_disk`` (round records, snapshot), then the writes, all in that
        thread (a tick thread, or the disk lane). Touches no Trio object."""
        waits = self._waits
        waits.work_begins()
        pipeline = self.pipeline
        frames = pipeline.compute(batch, self.sessions.inputs, obs, keyframe)
        frames.phases["_c3"] = time.perf_counter()
        waits.work_computed()
        if self.journal is not None:
            return Staged(self.journal, partial(pipeline.on_disk, frames.result),
                          partial(self._deliver, frames))
        pipeline.on_disk(frames.result)  # no journal: the rounds' records only
        return self._deliver(frames)

    def _deliver(self, frames: Frames) -> Frames:
        """Once the tick is on disk: the broadcaster's writes. Touches no Trio object."""
        c3 = time.perf_counter()
        phases = frames.phases
        phases["sync"] = c3 - phases.pop("_c3")
        # Fencing: this tick is journaled; it may be acknowledged only while the lease holds
        # (a node paused past its lease must not tell clients of ticks the next owner lacks).
        if time.monotonic() >= self.lease_deadline:
            raise _Fenced
        self.broadcaster.write(frames)
        c4 = time.perf_counter()
        self._waits.work_ends()
        phases["send"] = c4 - c3
        phases["_c4"] = c4  # for the hand-off time (popped by the ticker)
        return frames

    def _fence(self, accepted: list[JoinRequest] = ()) -> None:
        """The lease is gone: stop ticking at once, answer waiting HELLOs with HUNT_MOVED."""
        self.fenced = True
        self.running = False
        self.log.warning("fenced", hunts=[p.name for p in self.world.hunt_params],
                         tick=self.world.tick_number)
        self.sessions.answer_pending(list(accepted))

    def _close_soon(self, conn: Connection, code: int, reason: str, final: bytes) -> None:
        """``final``, then close ``code``: queued now (nothing can come between), written
        by a task."""
        conn.begin_close(code, reason, final)
        self.nursery.start_soon(conn.close, code, reason)

    def close(self) -> None:
        """Release the hub's threads (after its ticker ended). Idempotent."""
        self.rounds.control.refuse_all("the hunt stopped ticking here")
        self._own_offload.close()
        self._waits.close()
        self.broadcaster.close()
