"""Counters and timings of the journal, for logs, metrics and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class JournalStats:
    """What the journal did, for logs and metrics. Times in seconds."""

    ticks: int = 0
    bytes: int = 0
    fsyncs: int = 0
    #: Seconds in ``append_tick`` and its ``settle`` (encode + write + fsync): last tick, max
    #: and total. A record written by ``settle_together`` counts its encoding only (the
    #: batch's writes and syncs are shared; the server's ``sync`` tick phase has them).
    append_last_s: float = 0.0
    append_max_s: float = 0.0
    append_total_s: float = 0.0
    snapshots: int = 0
    #: Seconds ``maybe_snapshot`` held the tick thread (``World.snapshot()`` and meta): last, max.
    snapshot_tick_last_s: float = 0.0
    snapshot_tick_max_s: float = 0.0
    #: Seconds the background write of the last snapshot took (encode, write, fsync, prune).
    snapshot_write_last_s: float = 0.0
    #: Seconds ``maybe_snapshot`` waited for the previous snapshot to finish writing.
    snapshot_wait_max_s: float = 0.0
    snapshot_bytes_last: int = 0
    segments_pruned: int = 0
    snapshots_pruned: int = 0
