"""Per-hunt figures and the latency histograms, summed per tick and exposed at scrape time.

A hub ticks one hunt (scale-out, and a single server with one hub per hunt) or several
(one World for all hunts): either way it reports for the hunts it ticks, each under its
name (label ``hunt``). Figures live in :class:`HuntFigures` kept by the server's
:class:`~server._metrics.Metrics` under the hunt's name, so a hunt's counters survive its
hub being replaced by another hub of the same server; a hub that stops drops the figures of
its hunts (their gauges would otherwise stay frozen on the scrape).

Nothing here runs per move: the hub adds whole ticks (NumPy sums over its arrays), and the
one per-pass step of a move's latency is a float comparison in :meth:`MoveClock.mark`.
Histograms are lists of bucket counts updated by bisection, rendered as Prometheus
histograms by :class:`HuntCollector`. Observing makes no NumPy temporaries: the moves'
latencies are a few runs a tick, and each NumPy call on them would allocate several objects
per tick (perf/README.md, "Allocation calls").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

#: Upper bounds of the tick-duration buckets per hunt, seconds.
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 1.0)
#: Upper bounds of the move-latency buckets, seconds (a move waits up to one tick period,
#: 50 ms at 20 Hz, then the tick that applies it runs).
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)


class BulkHistogram:
    """A Prometheus histogram that takes weighted observations, never one call per event.

    ``counts[k]`` observations fell in bucket k: at most ``bounds[k]`` and above the bound
    before (``le`` buckets; the last is +Inf). Python numbers, not NumPy: an observation
    costs a bisection and two additions (at most one new int object).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float, weight: int = 1) -> None:
        """``weight`` observations of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += weight
        self.sum += value * weight

    def observe_many(self, values: np.ndarray, weights: np.ndarray) -> None:
        """``weights[i]`` observations of ``values[i]`` each."""
        for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
            self.observe(value, int(weight))

    def buckets(self) -> list[tuple[str, float]]:
        cum = np.cumsum(self.counts)
        out = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
        out.append(("+Inf", float(cum[-1])))
        return out


class MoveClock:
    """When the moves of one batch arrived, per run of moves read at the same instant.

    The poller reads every ready socket in one pass with one timestamp, so a tick's moves
    arrive in a few dozen runs, not one timestamp per move: :meth:`mark` records a run's
    first index in the batch when the time changes. At the tick's end :meth:`observe`
    weighs each run's latency by its number of moves.
    """

    __slots__ = ("first", "n", "t", "time")

    CAPACITY = 4096

    def __init__(self) -> None:
        # Lists: reading a NumPy element makes a scalar object, reading a list's does not.
        self.first = [0] * self.CAPACITY
        self.t = [0.0] * self.CAPACITY
        self.n = 0
        self.time = -1.0

    def mark(self, count: int, added: int, now: float) -> None:
        """The batch holds ``count`` moves, the last ``added`` of them read at ``now``
        (Trio clock, seconds). Allocates nothing unless the time changed."""
        if now == self.time:
            return
        self.time = now
        n = self.n
        if n == self.CAPACITY:  # a flood of runs: the last run absorbs the rest
            return
        self.first[n] = count - added
        self.t[n] = now
        self.n = n + 1

    def observe(self, hist: BulkHistogram, count: int, applied_at: float) -> None:
        """The batch's ``count`` moves were applied by a tick that ended at ``applied_at``."""
        n, first, t = self.n, self.first, self.t
        i = 0
        while i < n:  # not range(): a range and its iterator are two objects a tick
            end = first[i + 1] if i + 1 < n else count
            hist.observe(applied_at - t[i], end - first[i])
            i += 1
        self.n = 0
        self.time = -1.0


class HuntFigures:
    """One hunt's figures: gauges as of its last tick, counters since it started here."""

    __slots__ = ("clients", "discoveries", "evictions", "moves_dropped", "overruns", "owner",
                 "phase", "players", "round", "rounds_ended", "tick", "ticks", "truncations")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.players = self.clients = 0
        #: Round-based hunts: the phase (0 no rounds, 1 lobby, 2 running, 3 results, 4 over),
        #: the round number, and the rounds that ended here.
        self.phase = self.round = self.rounds_ended = 0
        self.ticks = self.overruns = self.evictions = self.truncations = 0
        self.moves_dropped = self.discoveries = 0
        self.tick = BulkHistogram(TICK_BUCKETS)


class HubReport:
    """What one hub adds to the server's figures; the hub calls it once per tick."""

    def __init__(self, metrics: Any, owner: object) -> None:
        self.metrics = metrics
        self.owner = owner
        self.hunts: list[HuntFigures] = []
        #: Moves dropped per hunt index since the last tick (the rate limit's rare path).
        self.dropped = np.zeros(0, np.int64)
        #: Hunts whose round figures were set at least once.
        self._rounds_seen = 0
        #: Two clocks, swapped with the hub's two move batches.
        self.clock, self.spare_clock = MoveClock(), MoveClock()

    def _sync(self, params: list[Any]) -> list[HuntFigures]:
        """``params``: the World's hunt parameters (``.name``), by hunt index."""
        if len(self.hunts) != len(params):
            table = self.metrics.hunt_figures
            for p in params[len(self.hunts):]:
                name = p.name
                fig = table.get(name)
                if fig is None or fig.owner is not self.owner:
                    fig = table[name] = HuntFigures(self.owner)
                self.hunts.append(fig)
            grown = np.zeros(len(params), np.int64)
            grown[:self.dropped.shape[0]] = self.dropped
            self.dropped = grown
        return self.hunts

    def drop_move(self, hunt: int) -> None:
        if hunt < self.dropped.shape[0]:
            self.dropped[hunt] += 1

    def evicted(self, hunt: int) -> None:
        if hunt < len(self.hunts):
            self.hunts[hunt].evictions += 1

    def overran(self, missed: int) -> None:
        for fig in self.hunts:
            fig.overruns += missed

    def swap_clocks(self) -> MoveClock:
        """At the batch swap: the clock of the batch the tick takes; marks go to the other."""
        taken, self.clock = self.clock, self.spare_clock
        self.spare_clock = taken
        return taken

    def tick(self, params: list[Any], players: np.ndarray, obs_hunt: np.ndarray,
             discoveries: np.ndarray, truncated: np.ndarray | None, seconds: float,
             clock: MoveClock, moves: int, now: float) -> None:
        """Add one tick: ``params`` the World's hunt parameters, ``players`` per hunt
        index, ``obs_hunt`` the hunt of every connected client, ``discoveries`` the hunt
        of every discovery, ``truncated`` (or None) which clients' views were cut short,
        ``seconds`` the tick's duration, ``moves`` the size of the batch that ``clock``
        timed, ``now`` the tick's end (Trio clock, seconds)."""
        figs = self._sync(params)
        h = len(figs)
        if h == 1:  # a hub per hunt: no counting by hunt
            self._tick_one(figs[0], players, obs_hunt, discoveries, truncated, seconds)
            clock.observe(self.metrics.move_latency, moves, now)
            return
        clients = np.bincount(obs_hunt, minlength=h)
        disc = np.bincount(discoveries, minlength=h) if len(discoveries) else None
        trunc = (np.bincount(obs_hunt[truncated != 0], minlength=h)
                 if truncated is not None else None)
        dropped = self.dropped
        for i, fig in enumerate(figs):
            fig.players = int(players[i])
            fig.clients = int(clients[i])
            fig.ticks += 1
            fig.tick.observe(seconds)
            if disc is not None:
                fig.discoveries += int(disc[i])
            if trunc is not None:
                fig.truncations += int(trunc[i])
            if dropped[i]:
                fig.moves_dropped += int(dropped[i])
                dropped[i] = 0
        clock.observe(self.metrics.move_latency, moves, now)

    def _tick_one(self, fig: HuntFigures, players: np.ndarray, obs_hunt: np.ndarray,
                  discoveries: np.ndarray, truncated: np.ndarray | None, seconds: float
                  ) -> None:
        """:meth:`tick` of a hub with one hunt (index 0)."""
        fig.players = int(players[0])
        fig.clients = len(obs_hunt)
        fig.ticks += 1
        fig.tick.observe(seconds)
        if len(discoveries):
            fig.discoveries += len(discoveries)
        if truncated is not None:
            fig.truncations += int(np.count_nonzero(truncated[:len(obs_hunt)]))
        dropped = self.dropped
        if dropped[0]:
            fig.moves_dropped += int(dropped[0])
            dropped[0] = 0

    def rounds(self, world: Any, changed: np.ndarray, ended: int) -> None:
        """After a tick of a world with round hunts: the phase and round of the hunts whose
        phase changed (of every hunt the first time), ``ended`` rounds in all."""
        figs = self._sync(world.hunt_params)
        hunts = range(len(figs)) if self._rounds_seen < len(figs) else changed.tolist()
        self._rounds_seen = len(figs)
        for h in hunts:
            state = world.round_state(h)
            if state is not None:
                figs[h].phase, figs[h].round = state.phase_code, state.number
        if ended:
            for h in changed.tolist():
                if figs[h].phase == 3:
                    figs[h].rounds_ended += 1

    def release(self) -> None:
        """The hub stopped: its hunts' series leave the scrape (another hub may own them)."""
        table = self.metrics.hunt_figures
        for name, fig in list(table.items()):
            if fig.owner is self.owner:
                del table[name]
        self.hunts = []


class HuntCollector:
    """Renders the per-hunt figures and the move latency at scrape time."""

    _GAUGES = (("players", "hunt_hunt_players", "Players in the hunt (connected or within "
                "their resume grace), as of its last tick"),
               ("clients", "hunt_hunt_clients", "Clients connected to the hunt and joined, "
                "as of its last tick"),
               ("phase", "hunt_hunt_round_phase", "Round-based hunts: the phase as of the last "
                "tick, 1 lobby, 2 running, 3 results, 4 over (0: the hunt has no rounds)"),
               ("round", "hunt_hunt_round", "Round-based hunts: the current round's number "
                "(0: the hunt has no rounds)"))
    _COUNTERS = (("ticks", "hunt_hunt_ticks", "Ticks run for the hunt"),
                 ("overruns", "hunt_hunt_tick_overruns", "Ticks of the hunt started late "
                  "because one overran its period"),
                 ("evictions", "hunt_hunt_evictions", "Clients evicted for falling behind"),
                 ("truncations", "hunt_hunt_truncations", "TICKs whose view list was cut "
                  "short (max_visible full); the client gets a keyframe later"),
                 ("moves_dropped", "hunt_hunt_moves_dropped", "MOVES frames dropped "
                  "(rate limit or full batch)"),
                 ("discoveries", "hunt_hunt_discoveries", "Treasures found in the hunt"),
                 ("rounds_ended", "hunt_hunt_rounds_ended", "Rounds of the hunt that ended "
                  "here (their results were written)"))

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Any]:
        return self._families({})

    def collect(self) -> Iterator[Any]:
        return self._families(self.metrics.hunt_figures)

    def _families(self, table: dict[str, HuntFigures]) -> Iterator[Any]:
        for attr, name, doc in self._GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["hunt"])
            for hunt, fig in table.items():
                g.add_metric([hunt], getattr(fig, attr))
            yield g
        for attr, name, doc in self._COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["hunt"])
            for hunt, fig in table.items():
                c.add_metric([hunt], getattr(fig, attr))
            yield c
        h = HistogramMetricFamily("hunt_hunt_tick_seconds", "Duration of the ticks that run "
                                  "the hunt (tick start to the last message handed to its "
                                  "socket; a hub ticking several hunts reports each)",
                                  labels=["hunt"])
        for hunt, fig in table.items():
            h.add_metric([hunt], fig.tick.buckets(), fig.tick.sum)
        yield h
        lat = self.metrics.move_latency
        m = HistogramMetricFamily("hunt_move_latency_seconds", "From a move's read off its "
                                  "socket to the end of the tick that applied it")
        m.add_metric([], lat.buckets(), lat.sum)
        yield m
