"""Round results to Redis (``serve --redis``): the results stream, at least once.

Each ended round's record (server/hunt/_rounds.py) is queued by the hub's owner
node and added to the stream ``<prefix>:results`` by this task, off the tick's
path. With a data dir, a record's file is written before it is queued, and a
``round-<n>.published`` marker beside it once Redis has it: a node that starts
publishes every record of the data dir without a marker, so a crash or a Redis
outage between the round's end and the write delays the entry, never loses it.
Redis keeps the keys of the rounds in the stream (``<prefix>:results:published``)
and adds nothing for a key it holds, so a retry after a lost reply, or two nodes
finding the same unmarked file, add one entry; consumers de-duplicate by the
entry's ``key`` (``<hunt>#<round>``) all the same (docs/cluster.md).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import trio

from ..cluster import ClusterStore, ClusterUnavailable
from ._rounds import RESULT_FILE, RESULTS_DIR, read_results, result_path

#: Backoff after a failed write, first and longest wait (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
#: Records waiting at most (the oldest are dropped past it and counted: their files stay
#: unmarked and are published at the next start).
MAX_QUEUED = 10_000


def _marker(path: Path) -> Path:
    return path.with_suffix(".published")


class ResultsPublisher:
    """Queue (:meth:`push`, from the Trio thread) and task (:meth:`run`) of the results
    stream. ``data_dir``: the server's (None: records live only in the queue)."""

    def __init__(self, store: ClusterStore, data_dir: str | None, log: Any) -> None:
        self.store = store
        self.data_dir = Path(data_dir) if data_dir else None
        self.log = log
        self.queue: deque[tuple[dict[str, Any], Path | None]] = deque()
        self.wakeup = trio.Event()
        self.published = 0
        self.dropped = 0

    def push(self, record: dict[str, Any], directory: Path | None) -> None:
        """Publish ``record`` (its file, if any, is in ``directory`` already)."""
        if len(self.queue) >= MAX_QUEUED:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append((record, directory))
        self.wakeup.set()

    def scan(self, directory: Path | None = None) -> int:
        """Queue every record without a published marker, of the data dir (or of one
        results ``directory``); returns how many."""
        if directory is not None:
            dirs = [directory] if directory.is_dir() else []
        elif self.data_dir is not None:
            dirs = sorted(self.data_dir.glob(f"hunts/*/{RESULTS_DIR}"))
        else:
            return 0
        found = 0
        for directory in dirs:
            waiting = {int(m.group(1)) for p in directory.iterdir()
                       if (m := RESULT_FILE.match(p.name)) and not _marker(p).exists()}
            for record in read_results(directory):
                if record.get("round") in waiting:
                    self.push(record, directory)
                    found += 1
        return found

    async def run(self) -> None:
        """Publish forever: queued records in order, retrying while Redis is away."""
        backoff = BACKOFF_FIRST
        down_since = None
        while True:
            if not self.queue:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
                continue
            record, directory = self.queue[0]
            try:
                await self.store.publish_result(record)
            except ClusterUnavailable as exc:
                if down_since is None:
                    down_since = trio.current_time()
                    self.log.warning("results_unpublished", error=str(exc),
                                     waiting=len(self.queue))
                await trio.sleep(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX)
                continue
            if down_since is not None:
                self.log.info("results_published_again",
                              after_s=round(trio.current_time() - down_since, 3))
                down_since = None
            backoff = BACKOFF_FIRST
            self.queue.popleft()
            self.published += 1
            if directory is not None:
                path = result_path(directory, record["round"])
                if path.exists():
                    _marker(path).touch()
