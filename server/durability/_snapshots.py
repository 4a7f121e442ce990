"""Snapshot files: written atomically, one at a time, in a background thread; then pruning.

The tick thread hands over ``World.snapshot()`` bytes and the server's meta;
the rest (meta to JSON, CRC, write, fsync, rename, fsync of the directory,
pruning) happens here. Only one snapshot is in flight: the next one waits for
it. A failure is kept and raised on the tick thread by :meth:`SnapshotWriter.wait`.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

from ._errors import JournalError
from ._files import (
    encode_snapshot,
    fsync_dir,
    list_segments,
    list_snapshots,
    snapshot_path,
    write_atomic,
)
from ._stats import JournalStats


class SnapshotWriter:
    """Writes ``snapshot-<tick>.snap`` files into ``data_dir`` and prunes behind them.

    Pruning keeps the newest ``keep`` snapshots and deletes the journal segments
    that hold only ticks up to the oldest of them (replay never needs them).
    It runs only after the new snapshot is durable, so a crash at any moment
    leaves at least one snapshot with its whole journal after it.
    """

    def __init__(self, data_dir: Path, keep: int, stats: JournalStats, *,
                 background: bool) -> None:
        self.data_dir = data_dir
        self.keep = keep
        self.stats = stats
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def write(self, tick: int, meta: Any, world_bytes: bytes, state_hash: str | None) -> None:
        """Write a snapshot (in the background if so configured); wait for the previous one."""
        self.wait()
        if not self.background:
            self._write(tick, meta, world_bytes, state_hash)
            return
        self._thread = threading.Thread(target=self._job,
                                        args=(tick, meta, world_bytes, state_hash),
                                        name=f"journal-snapshot-{tick}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the snapshot in flight is on disk; raise :class:`JournalError` if it
        failed (the ``OSError`` or ``TypeError`` of a meta that is not JSON is the cause)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            exc, self._error = self._error, None
            raise JournalError(f"writing a snapshot in {self.data_dir} failed: {exc}") from exc

    def _job(self, tick: int, meta: Any, world_bytes: bytes, state_hash: str | None) -> None:
        try:
            self._write(tick, meta, world_bytes, state_hash)
        except BaseException as exc:  # handed to the tick thread by wait()
            self._error = exc

    def _write(self, tick: int, meta: Any, world_bytes: bytes, state_hash: str | None) -> None:
        t0 = time.perf_counter()
        chunks = encode_snapshot(tick, meta, world_bytes, state_hash)
        write_atomic(snapshot_path(self.data_dir, tick), chunks)
        self._prune()
        st = self.stats
        st.snapshots += 1
        st.snapshot_bytes_last = sum(len(c) for c in chunks)
        st.snapshot_write_last_s = time.perf_counter() - t0

    def _prune(self) -> None:
        snaps = list_snapshots(self.data_dir)
        doomed = [p for _, p in snaps[: -self.keep]]
        if snaps:
            oldest_kept = snaps[-self.keep :][0][0]
            segs = list_segments(self.data_dir)
            # A segment whose successor starts by oldest_kept + 1 holds only older ticks.
            doomed += [p for (_, p), (nxt, _) in itertools.pairwise(segs)
                       if nxt <= oldest_kept + 1]
        for p in doomed:
            p.unlink(missing_ok=True)
            if p.name.startswith("journal-"):
                self.stats.segments_pruned += 1
            else:
                self.stats.snapshots_pruned += 1
        if doomed:
            fsync_dir(self.data_dir)
