"""Prometheus metrics of one server, in a registry of its own (tests run several servers).

Counters that would be bumped per move or per message are summed in plain
integers by the hub and added here once per tick: the hot path never takes the
client library's locks. Per-hunt figures and the move latency are in
server/_hunt_metrics.py; the process, GC, Numba runtime and build info in
server/_runtime_metrics.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily

from tickengine import PHASES

from ._hunt_metrics import (
    LATENCY_BUCKETS,
    BulkHistogram,
    HubReport,
    HuntCollector,
    HuntFigures,
    TickTotals,
    TotalsCollector,
)
from ._runtime_metrics import register_runtime

#: Phases timed per tick, in seconds: the engine's, then the server's own. ``send``: the
#: worker threads' writes; ``prepare``: requests and send claims before the worker;
#: ``handoff``: the worker thread starting, and the Trio thread taking the result back
#: (waits, not work); ``finish``: the Trio thread after the worker (welcomes, per-client
#: accounting, the frames of clients with a backlog queued); ``total``: tick start to the
#: end of ``finish``, when every client's message has been handed to its socket or outbox.
#: Not parts of ``total`` but shares of it: ``handoff_cpu``, of ``handoff``, the time the
#: waiting thread was runnable without a CPU (other threads or processes had the cores);
#: ``cpu_wait``, the same over everything but the writes (prepare, hand-off, engine to
#: frames, finish). What the code costs is the phase minus its wait.
TICK_PHASES = (*PHASES, "visibility", "frames", "sync", "send", "prepare", "handoff", "finish",
               "total", "handoff_cpu", "cpu_wait")

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025,
            0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        register_runtime(r)
        #: Figures of the hunts this server ticks, by name (server/_hunt_metrics.py).
        self.hunt_figures: dict[str, HuntFigures] = {}
        self.move_latency = BulkHistogram(LATENCY_BUCKETS)
        r.register(HuntCollector(self))
        #: ``hunt_tick_seconds{phase}``: every hub observes each phase once per tick (a
        #: thousand ticks a second with many small hunts), so the phases are kept as bucket
        #: counts and rendered at scrape time, without the client library's locks.
        self.tick_phases = {p: BulkHistogram(_BUCKETS) for p in TICK_PHASES}
        r.register(_PhaseCollector(self.tick_phases))
        #: What each tick adds, in plain integers rendered at scrape time (server/_hunt_metrics.py
        #: TickTotals): hunt_ticks, hunt_moves{fate}, hunt_messages_sent, hunt_bytes_sent,
        #: hunt_ticks_skipped, hunt_discoveries.
        self.totals = TickTotals()
        r.register(TotalsCollector(self.totals))
        self.overruns = Counter("hunt_tick_overruns", "Ticks that started late because the "
                                "previous one overran its period", registry=r)
        self.clients = Gauge("hunt_connected_clients", "Clients connected and joined", registry=r)
        self.connections = Gauge("hunt_open_connections", "Open WebSocket connections",
                                 registry=r)
        self.hunts = Gauge("hunt_hunts", "Hunts in the world", registry=r)
        self.players = Gauge("hunt_players", "Players in all hunts (connected or within their "
                             "resume grace)", registry=r)
        self.evictions = Counter("hunt_evictions", "Clients evicted for falling behind",
                                 registry=r)
        self.protocol_errors = Counter("hunt_protocol_errors", "Protocol errors by code",
                                       ["code"], registry=r)
        self.events = Counter("hunt_connection_events", "Connection events by kind", ["kind"],
                              registry=r)
        self.failures = Counter("hunt_failures", "Hunts stopped by a failure of their tick or "
                                "journal (each restarts from its last durable tick)",
                                registry=r)
        self.limits = Counter("hunt_limit_hits", "Times a client, an address or the HTTP port "
                              "reached a limit of [server] (docs/server.md, Limits), by limit",
                              ["limit"], registry=r)
        self.tickets = Counter("hunt_tickets", "Join tickets checked in ticket mode, by "
                               "result: ok, or the code of the refusal (TICKET_EXPIRED ...)",
                               ["result"], registry=r)
        self.visibility_cut = Counter("hunt_visibility_truncated", "Observers whose view did "
                                      "not fit a tick's visibility buffer (they get a "
                                      "keyframe later)", registry=r)

    def hub_report(self, hub: object) -> HubReport:
        """What ``hub`` reports per tick for the hunts it ticks."""
        return HubReport(self, hub)

    def add_cluster(self) -> None:
        """Gauges of a scale-out node (``serve --redis``), set at scrape time."""
        r = self.registry
        self.cluster_up = Gauge("hunt_redis_up", "1 while Redis answers the node's calls",
                                registry=r)
        self.cluster_leases = Gauge("hunt_cluster_leases", "Hunts this node holds the lease "
                                    "of and runs", registry=r)
        self.redis_queue = Gauge("hunt_redis_queued_discoveries", "Discoveries waiting for "
                                 "Redis (the event sink's queue)", registry=r)
        self.redis_lag = Gauge("hunt_redis_lag_seconds", "Age of the oldest event waiting "
                               "for Redis", registry=r)
        self.redis_dropped = Gauge("hunt_redis_dropped_discoveries", "Discoveries dropped "
                                   "since start because the sink's queue was full", registry=r)
        self.redis_written = Gauge("hunt_redis_written_discoveries", "Discoveries written to "
                                   "the stream since start", registry=r)
        self.redis_write_seconds = Gauge("hunt_redis_write_seconds", "Time of the last batch "
                                         "write to Redis", registry=r)

    def set_cluster(self, up: bool, leases: int, sink: dict | None) -> None:
        self.cluster_up.set(1 if up else 0)
        self.cluster_leases.set(leases)
        if sink:
            self.redis_queue.set(sink["queued_discoveries"])
            self.redis_lag.set(sink["oldest_queued_age_s"])
            self.redis_dropped.set(sink["dropped"])
            self.redis_written.set(sink["written_discoveries"])
            self.redis_write_seconds.set(sink["last_write_s"])

    def observe_tick(self, seconds: dict[str, float]) -> None:
        phases = self.tick_phases
        for phase, value in seconds.items():
            phases[phase].observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PhaseCollector:
    """Renders ``hunt_tick_seconds{phase}`` from the phases' bucket counts."""

    def __init__(self, phases: dict[str, BulkHistogram]) -> None:
        self.phases = phases

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[HistogramMetricFamily]:
        h = self._family()
        for phase, hist in self.phases.items():
            h.add_metric([phase], hist.buckets(), hist.sum)
        yield h

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "hunt_tick_seconds", "Tick processing time by phase (total: tick start to the "
            "last message handed to its socket)", labels=["phase"])
