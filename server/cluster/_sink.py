"""EventSink: the bounded queue between the tick and Redis. The tick never waits on it.

After each tick the node calls :meth:`EventSink.push` (synchronous, O(input), no
I/O); :meth:`EventSink.run`, a task of its own, writes what piled up to Redis in
batches, one Lua script per batch (atomic like MULTI/EXEC, and able to check the
batch's mark, see below):

- every discovery becomes one entry of the stream ``<prefix>:discoveries``
  (capped near ``stream_maxlen``), in push order;
- changed scores go to the global leaderboard (sorted set, member
  ``"<hunt>/<player_id>"``) and names to ``<prefix>:names``; players who left are
  removed from both;
- in ticket mode the players' users too: each user's best score in any hunt goes to
  ``<prefix>:users:leaderboard`` (member: the user id; a score only ever rises) and the
  display name of their latest ticket to ``<prefix>:users:names``; users stay when
  their players leave;
- ``<prefix>:exported`` records, per hunt, the last tick whose events are all in
  Redis (a new owner re-publishes the ticks after it).

When Redis is down, batches stay queued (nothing is dropped while the queue has
room), the sink logs ``redis_unavailable`` once, retries with a backoff of 0.1 s
doubling to 2 s, and logs ``redis_back`` with the outage's length. A batch is
written at most once even when a reply is lost (Redis paused, connection cut after
the write): each batch carries a sequence number and the script skips a batch whose
number the sink's mark key already holds. Hence, with the retries, exactly once.

Memory: at most ``max_discoveries`` queued discoveries plus one batch being
written (``batch_discoveries``, a little more to end at a tick boundary); when
full, the oldest are dropped and counted (``dropped``). Scores coalesce per (hunt,
player): at most one entry per player.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from ._keys import member
from ._model import ClusterUnavailable
from ._store import ClusterStore

#: The de-duplication mark of a sink outlives any retry by far.
MARK_TTL_MS = 24 * 3600 * 1000
#: Backoff after a failed write: first and longest wait, in seconds.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
#: Discoveries whose strings are built between two checkpoints (the drain runs on the
#: Trio thread: long synchronous stretches would delay ticks).
BUILD_CHUNK = 500


@dataclass(eq=False)
class _Batch:
    seq: int
    groups: list[tuple[str, int, list[tuple], float]]
    scores: dict[tuple[str, int], tuple[str, int] | None]
    exported: dict[str, int]
    discoveries: int
    oldest: float
    #: pushes counted when taken, if the batch took everything queued (for flush()).
    upto: int | None
    args: list[str] | None = field(default=None)


class EventSink:
    """A node's queue of events for Redis; see the module docstring.

    ``push`` from the Trio thread after each tick; ``await nursery.start_soon(sink.run)``
    once; ``await sink.flush(seconds)`` at shutdown. ``max_discoveries``: queue
    bound; ``stream_maxlen``: approximate cap of the stream (MAXLEN ~);
    ``batch_discoveries``: discoveries per write at most (plus the rest of a tick;
    coredis encodes a write's arguments in one go on the Trio thread, so a bigger
    batch is a longer stall of the tick's thread while a backlog drains);
    ``interval``: seconds between two writes at least, unless a backlog is draining.
    ``metrics`` is kept as ``self.metrics`` for the caller; the sink only exposes
    :meth:`stats`.
    """

    def __init__(self, store: ClusterStore, *, node_id: str,
                 max_discoveries: int = 200_000, stream_maxlen: int = 100_000,
                 batch_discoveries: int = 1_000, interval: float = 0.05,
                 log: Any = None, metrics: Any = None) -> None:
        if max_discoveries < 1 or stream_maxlen < 1 or batch_discoveries < 1:
            raise ValueError("max_discoveries, stream_maxlen and batch_discoveries must be >= 1")
        if log is None:
            from .._log import get_logger

            log = get_logger(component="event_sink")
        self.store = store
        self.node_id = node_id
        self.max_discoveries = max_discoveries
        self.stream_maxlen = stream_maxlen
        self.batch_discoveries = batch_discoveries
        self.interval = interval
        self.log = log
        self.metrics = metrics
        self._mark = store.keys.sink(node_id, secrets.token_hex(6))
        # (hunt, tick, discoveries, monotonic time pushed), oldest first.
        self._groups: deque[tuple[str, int, list[tuple], float]] = deque()
        self._queued = 0
        # (hunt, player_id) -> (name, score), or None: the player left.
        self._scores: dict[tuple[str, int], tuple[str, int] | None] = {}
        self._scores_since = 0.0
        self._latest: dict[str, int] = {}
        self._exported_sent: dict[str, int] = {}
        self._inflight: _Batch | None = None
        self._seq = 0
        self._pushes = 0
        self._written_upto = 0
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._last_write = -1e9
        self._overflowing = False
        self._episode_dropped = 0
        self._outage_since: float | None = None
        self._push_error_logged = False
        #: Counters (also in stats()).
        self.dropped = 0
        self.flushed_batches = 0
        self.failures = 0
        self.written_discoveries = 0
        self.push_errors = 0
        self.rewrites_skipped = 0
        self.last_write_s = 0.0
        self.max_write_s = 0.0

    # ------------------------------------------------------------------ the tick's side

    def push(self, hunt: str, tick: int, discoveries: list[tuple],
             scores: dict[int, tuple[str, int]], removed: list[int]) -> None:
        """Queue one tick's events of ``hunt``; never blocks, never raises.

        ``discoveries``: ``(player_id, name, value, x, y, user)`` tuples (value in points,
        x and y in world units, user "" for an anonymous player); the sink keeps the list
        itself, so do not change it afterwards. ``scores``: player_id -> (name, score,
        user) of players whose score changed or who joined. ``removed``: player ids that
        left the hunt. (5-tuples and 2-tuples without the user are taken as anonymous.)
        """
        try:
            now = time.monotonic()
            if discoveries:
                self._groups.append((hunt, tick, discoveries, now))
                self._queued += len(discoveries)
                if self._queued > self.max_discoveries:
                    self._overflow()
            if scores or removed:
                pending = self._scores
                if not pending:
                    self._scores_since = now
                for pid, entry in scores.items():
                    pending[(hunt, pid)] = entry
                for pid in removed:
                    pending[(hunt, pid)] = None
            self._latest[hunt] = tick
            self._pushes += 1
            self._wake.set()
        except Exception:  # the tick must go on whatever a caller passed
            self.push_errors += 1
            if not self._push_error_logged:
                self._push_error_logged = True
                self.log.exception("event_push_failed", hunt=hunt, tick=tick)

    def _overflow(self) -> None:
        excess = self._queued - self.max_discoveries
        groups = self._groups
        while excess > 0:
            hunt, tick, found, pushed = groups[0]
            if len(found) <= excess:
                groups.popleft()
                gone = len(found)
            else:
                groups[0] = (hunt, tick, found[excess:], pushed)
                gone = excess
            excess -= gone
            self._queued -= gone
            self.dropped += gone
            self._episode_dropped += gone
        if not self._overflowing:
            self._overflowing = True
            self.log.warning("events_dropped", queued=self._queued, limit=self.max_discoveries,
                             hint="Redis is too slow or down: the oldest discoveries are "
                                  "dropped from the queue and counted")

    # ------------------------------------------------------------------ the drain

    async def run(self) -> None:
        """Write queued events to Redis until cancelled (start it in a nursery)."""
        backoff = BACKOFF_FIRST
        while True:
            if self._inflight is None and not self._pending():
                await self._wake.wait()
            self._wake = trio.Event()
            wait = self._last_write + self.interval - time.monotonic()
            if wait > 0 and self._queued < self.batch_discoveries:
                await trio.sleep(wait)
            try:
                await self._step()
            except ClusterUnavailable as exc:
                self._failed(exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                backoff = BACKOFF_FIRST

    async def flush(self, timeout: float) -> bool:
        """Write everything pushed so far; True when done within ``timeout`` seconds.

        Works with or without :meth:`run` (at shutdown its task may be cancelled
        already): both write under one lock, one batch at a time.
        """
        target = self._pushes
        with trio.move_on_after(timeout):
            while self._written_upto < target:
                try:
                    await self._step()
                except ClusterUnavailable as exc:
                    self._failed(exc)
                    await trio.sleep(BACKOFF_FIRST)
            return True
        return False

    def _pending(self) -> bool:
        return bool(self._groups or self._scores) or any(
            self._exported_sent.get(h) != t for h, t in self._latest.items())

    async def _step(self) -> None:
        """Write the batch in flight, or take the next one and write it."""
        async with self._lock:
            batch = self._inflight
            if batch is None:
                batch = self._inflight = self._take()
                if batch is None:
                    self._written_upto = self._pushes
                    return
            if batch.args is None:
                batch.args = await self._build(batch)
            started = time.monotonic()
            if not await self.store.write_batch(self._mark, batch.seq, MARK_TTL_MS,
                                                batch.args):
                self.rewrites_skipped += 1  # an attempt whose reply was lost had written it
            done = time.monotonic()
            self._inflight = None
            self._last_write = done
            self.last_write_s = done - started
            self.max_write_s = max(self.max_write_s, self.last_write_s)
            self.flushed_batches += 1
            self.written_discoveries += batch.discoveries
            self._exported_sent.update(batch.exported)
            if batch.upto is not None:
                self._written_upto = batch.upto
            if not self._groups and self._overflowing:
                self._overflowing = False
                self.log.warning("events_dropped_total", dropped=self._episode_dropped,
                                 hint="the queue is empty again")
                self._episode_dropped = 0
            if self._outage_since is not None:
                self.log.info("redis_back", outage_s=round(done - self._outage_since, 3),
                              queued=self._queued)
                self._outage_since = None

    def _take(self) -> _Batch | None:
        """Move the next batch out of the queue (synchronous: cancellation-safe)."""
        groups: list[tuple[str, int, list[tuple], float]] = []
        n = 0
        queue = self._groups
        while queue and n < self.batch_discoveries:
            g = queue.popleft()
            groups.append(g)
            n += len(g[2])
        # End at a tick boundary, so that a hunt's cursor can say "all of tick T".
        while queue and groups and queue[0][:2] == groups[-1][:2]:
            g = queue.popleft()
            groups.append(g)
            n += len(g[2])
        self._queued -= n
        scores, self._scores = self._scores, {}
        oldest = min([g[3] for g in groups[:1]] + ([self._scores_since] if scores else []),
                     default=time.monotonic())
        first_left: dict[str, int] = {}
        for hunt, tick, _found, _t in queue:
            first_left.setdefault(hunt, tick)
        exported = {}
        for hunt, latest in self._latest.items():
            cursor = first_left[hunt] - 1 if hunt in first_left else latest
            if self._exported_sent.get(hunt) != cursor:
                exported[hunt] = cursor
        if not groups and not scores and not exported:
            return None
        self._seq += 1
        return _Batch(self._seq, groups, scores, exported, n, oldest,
                      None if queue else self._pushes)

    async def _build(self, b: _Batch) -> list[str]:
        """The script's ARGV for a batch (see _scripts.WRITE_BATCH), built in chunks.

        Malformed entries (push never checks, to stay cheap) are left out and counted
        in ``push_errors``.
        """
        disc: list[str] = []
        since = bad = 0
        for hunt, tick, found, _t in b.groups:
            t = str(tick)
            for d in found:
                try:
                    pid, name, value, x, y = d[:5]
                    user = str(d[5]) if len(d) > 5 else ""
                    disc += (hunt, t, str(int(pid)), str(name), str(int(value)),
                             str(round(float(x), 3)), str(round(float(y), 3)), user)
                except (TypeError, ValueError):
                    bad += 1
            since += len(found)
            if since >= BUILD_CHUNK:
                since = 0
                await trio.lowlevel.checkpoint()
        scores: list[str] = []
        removed: list[str] = []
        users: dict[str, tuple[int, str]] = {}
        for (hunt, pid), entry in b.scores.items():
            if entry is None:
                removed.append(member(hunt, pid))
                continue
            try:
                score = int(entry[1])
                scores += (member(hunt, pid), str(score), str(entry[0]))
                user = str(entry[2]) if len(entry) > 2 else ""
            except (TypeError, ValueError, IndexError):
                bad += 1
                continue
            if user:  # the best score of the batch, the name of the latest push
                users[user] = (max(score, users.get(user, (score, ""))[0]), str(entry[0]))
        if bad:
            self.push_errors += bad
            self.log.error("event_input_malformed", count=bad,
                           hint="discoveries must be (player_id, name, value, x, y, user) "
                                "tuples, scores player_id -> (name, score, user)")
        cursors = [x for hunt, tick in b.exported.items() for x in (hunt, str(tick))]
        flat_users = [x for user, (score, name) in users.items()
                      for x in (user, str(score), name)]
        return [str(self.stream_maxlen), self.node_id, str(len(disc) // 8),
                str(len(scores) // 3), str(len(removed)), str(len(b.exported)),
                str(len(users)), *disc, *scores, *removed, *cursors, *flat_users]

    def _failed(self, exc: ClusterUnavailable) -> None:
        self.failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.log.warning("redis_unavailable", error=str(exc), queued=self._queued,
                             hint="play goes on; events stay queued and are written when "
                                  "Redis answers again")

    # ------------------------------------------------------------------ observation

    def stats(self) -> dict[str, Any]:
        """Queue depth and counters: queued_discoveries (including the batch in flight),
        pending_scores, dropped, flushed_batches, failures, outage (bool),
        oldest_queued_age_s (0 when empty), written_discoveries, push_errors,
        rewrites_skipped (retried batches Redis already had), last_write_s and
        max_write_s (seconds per batch write)."""
        now = time.monotonic()
        b = self._inflight
        oldest = [self._groups[0][3]] if self._groups else []
        if self._scores:
            oldest.append(self._scores_since)
        if b is not None:
            oldest.append(b.oldest)
        return {
            "queued_discoveries": self._queued + (b.discoveries if b else 0),
            "pending_scores": len(self._scores) + (len(b.scores) if b else 0),
            "dropped": self.dropped,
            "flushed_batches": self.flushed_batches,
            "failures": self.failures,
            "outage": self._outage_since is not None,
            "oldest_queued_age_s": max(0.0, now - min(oldest)) if oldest else 0.0,
            "written_discoveries": self.written_discoveries,
            "push_errors": self.push_errors,
            "rewrites_skipped": self.rewrites_skipped,
            "last_write_s": self.last_write_s,
            "max_write_s": self.max_write_s,
        }
