"""The hub's broadcaster: a tick's frames to the clients, and what that cost.

The last stage of a hub's tick (server/hunt/_hub.py). It owns what delivery needs
to remember per player slot (the next TICK must be a keyframe; ticks skipped for a
full outbox) and the claims on idle sockets (:class:`~server.shell._conn.SendSlots`):

1. :meth:`Broadcaster.claim` (Trio thread, before the worker): claim the idle socket
   of every observer, and say whose TICK is a keyframe;
2. :meth:`Broadcaster.write` (worker thread, after the pipeline): one ``write(2)``
   per claimed client, in a nogil kernel;
3. :meth:`Broadcaster.finish` (Trio thread): WELCOMEs of the players accepted this
   tick, then whatever the worker did not write whole (a backlog, a short write, a
   truncated view) through each connection's outbox; a client whose outbox stays
   full is skipped, then named for eviction (:meth:`Broadcaster.evict`);
4. :meth:`Broadcaster.account`: the tick's figures for the metrics and /api/stats.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._metrics import TICK_PHASES
from ..protocol import ErrorCode, ErrorMessage, Welcome, encode
from ..shell import _wsframes as wf
from ..shell._conn import Connection, SendSlots
from . import _tickframes as tf
from ._pipeline import Frames
from ._players import CloseSoon, JoinRequest, Observers, Session

#: Ticks of timings kept for /api/stats.
RING = 8192
#: Clients per thread below which the tick's writes stay on one thread.
SPLIT_MIN = 128


class RecentDiscoveries:
    """The last ``keep`` discoveries of each hunt, for the watch view: ``self[hunt]`` is
    a list of dicts (``tick``, ``slot``, ``name``, ``value``, ``x``, ``y``; x, y in world
    units to 0.1), oldest first. Kept as tuples and made dicts only when read: they are
    added every tick, and the page that reads them is seldom open."""

    FIELDS = ("tick", "slot", "name", "value", "x", "y")

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._by_hunt: defaultdict[int, deque[tuple]] = defaultdict(lambda: deque(maxlen=keep))

    def add(self, tick: int, discoveries: np.ndarray,
            name_of: Callable[[int], str | None]) -> None:
        """The tick's ``discoveries`` (DISCOVERY_RECORD); ``name_of(slot)`` as the finder's
        name is now (None: "?")."""
        f = discoveries.dtype.names
        hunt, slot, value, x, y = (f.index("hunt"), f.index("slot"), f.index("value"),
                                   f.index("x"), f.index("y"))
        by_hunt = self._by_hunt
        for d in discoveries[-self.keep:].tolist():  # tuples: no NumPy scalar per field
            name = name_of(d[slot])
            by_hunt[d[hunt]].append((tick, d[slot], name if name is not None else "?",
                                     d[value], round(d[x], 1), round(d[y], 1)))

    def __getitem__(self, hunt: int) -> list[dict[str, Any]]:
        return [dict(zip(self.FIELDS, r, strict=True)) for r in self._by_hunt[hunt]]


@dataclass(eq=False)
class Delivery:
    """What :meth:`Broadcaster.finish` did: messages and bytes sent (or queued), ticks
    skipped for full outboxes, and the sessions to evict (skipped too many ticks)."""

    messages: int
    bytes: int
    skipped: int
    evict: list[Session]


class Broadcaster:
    """Frames -> sockets (claims, writes, WELCOMEs, outboxes, evictions) -> figures.

    ``world`` is read for WELCOMEs and counts, never changed. ``name_of(slot)``: a
    player's name, for the recent discoveries. ``close_soon(conn, code, reason,
    final)``: send ``final``, then close (an eviction). ``greet(session, tick)``: the frames
    that follow a WELCOME (a round-based hunt's ROUND and RESULTS).
    """

    def __init__(self, world: Any, server: Any, metrics: Any, log: Any, report: Any,
                 name_of: Callable[[int], str | None], close_soon: CloseSoon,
                 greet: Callable[[Session, int], list[bytes]] = lambda s, tick: []) -> None:
        self.world = world
        self.greet = greet
        self.server = server
        self.metrics = metrics
        self.log = log
        self.report = report
        self.name_of = name_of
        self.close_soon = close_soon
        P = world.players.capacity
        # Per player slot, as arrays so the tick reads and resets them in bulk:
        #: the next TICK must be a keyframe (join, resume, a skipped or truncated tick);
        self.keyframe_due = np.ones(P, np.uint8)
        #: consecutive ticks skipped because the client's outbox was full.
        self.skipped_ticks = np.zeros(P, np.int32)
        self.send_slots = SendSlots(P)
        # Per observer of the tick in flight:
        self._keyframe = np.zeros(P, np.uint8)
        self._fds = np.zeros(P, np.int64)  # claimed socket, -1: not the worker's to write
        self._claimed = np.zeros(P, np.bool_)
        self._written = np.zeros(P, np.int64)  # bytes the worker wrote (-2: none)
        self._whole = np.zeros(P, np.bool_)
        self._send_pool = (ThreadPoolExecutor(1, thread_name_prefix="hub-send")
                           if server.send_threads > 1 else None)
        self.stats: dict[str, float] = {"tick": 0, "tick_ms_p50": 0.0, "tick_ms_p99": 0.0}
        #: Ring of the last RING ticks' timings (ms) by phase, for /api/stats and load tests.
        self.ring = np.zeros((RING, len(TICK_PHASES)), np.float64)
        self.ring_count = 0
        self.evictions = 0
        self.skipped_total = 0
        #: The last 20 discoveries of each hunt, by hunt index, for the watch view.
        self.recent_discoveries = RecentDiscoveries(20)
        #: Observers cut by a full visibility buffer since the last log line about it.
        self.truncated_since_log = 0
        self._truncation_logged = -math.inf

    def fresh(self, slot: int) -> None:
        """A player joined or resumed in ``slot``: its next TICK is a keyframe."""
        self.keyframe_due[slot] = 1
        self.skipped_ticks[slot] = 0

    def claim(self, obs: Observers) -> np.ndarray:
        """Trio thread, before the worker: claim the idle sockets of ``obs`` (the worker
        writes their frames; the others go through ``send_now`` in :meth:`finish`,
        behind what they have queued). Returns whose TICK is a keyframe, per observer."""
        n = obs.count
        keyframe = self._keyframe[:n]
        np.take(self.keyframe_due, obs.slots, out=keyframe)
        self.send_slots.begin(obs.slots, self._fds[:n], self._claimed[:n])
        return keyframe

    def release(self) -> None:
        """End every claim without writing (the tick failed or was fenced)."""
        self.send_slots.end()

    def write(self, frames: Frames) -> None:
        """Worker thread: one ``write(2)`` per claimed client in a nogil kernel, while
        the Trio thread keeps reading sockets. A truncated view is not written: that
        client gets a keyframe later instead."""
        n = frames.count
        fd = self._fds
        vis = frames.vis
        if vis.dropped:
            fd[:n][vis.truncated[:n] != 0] = -1
        base = frames.out.ctypes.data
        offsets = frames.offsets
        pool = self._send_pool
        if pool is None or n < 2 * SPLIT_MIN:
            tf.write_frames_to_sockets(n, fd, base, offsets, self._written)
            return
        # Each write(2) on loopback runs the receiver's TCP stack too: two threads (the
        # kernel releases the GIL) halve the time to the last frame.
        half = n // 2
        rest = pool.submit(tf.write_frames_to_sockets, n - half, fd[half:], base,
                           offsets[half:], self._written[half:])
        tf.write_frames_to_sockets(half, fd, base, offsets, self._written)
        rest.result()

    def finish(self, frames: Frames, obs: Observers, accepted: list[JoinRequest],
               now: float) -> Delivery:
        """Trio thread, after the worker: WELCOMEs, then what the worker did not write
        whole (a backlog, a short write, no connection, a truncated view) one by one.
        ``now``: the tick's Trio time (seconds)."""
        n = frames.count
        sessions = obs.sessions
        slots = obs.slots
        claimed = self._claimed[:n]
        send = self.send_slots
        tick = frames.result.tick
        keyframe_due, skipped_ticks, written = self.keyframe_due, self.skipped_ticks, self._written
        # WELCOME tells the state at this tick; the client's first TICK is the next one.
        welcomed: set[int] = set()
        for req in accepted:
            if req.session is not None and self._send_welcome(req.session, tick):
                welcomed.add(req.session.slot)
            req.done.set()
        send.end()  # every claim at once: the frames written whole need nothing more
        # Frames the worker wrote whole, in bulk; the rest (welcome pending, no connection,
        # truncated view, short write, unclaimed) one by one below: usually a few.
        sizes = frames.sizes
        whole = self._whole[:n]
        np.equal(written[:n], sizes, out=whole)
        done = slots[whole]
        keyframe_due[done] = 0
        skipped_ticks[done] = 0
        sent = Delivery(len(done), int(sizes[whole].sum()), 0, [])
        out = memoryview(frames.out)
        offsets = frames.offsets
        vis = frames.vis
        truncated = vis.truncated
        evict_after = self.server.evict_after_ticks
        for i in np.flatnonzero(~whole).tolist():
            s = sessions[i]
            slot = s.slot
            a, b = int(offsets[i]), int(offsets[i + 1])
            w = int(written[i])
            if claimed[i]:
                conn = send.conn[slot]  # None: lost during the tick (s.conn is None too)
                if conn is None or w == -2:  # or truncated visibility: nothing written
                    keyframe_due[slot] = 1
                    continue
                # Partly written, or not at all: the rest is queued (the outbox was empty
                # when claimed), so it counts as sent.
                conn.after_worker(out[a:b], w)
                keyframe_due[slot] = 0
                skipped_ticks[slot] = 0
                sent.messages += 1
                sent.bytes += b - a
                continue
            conn = s.conn
            if conn is None or (vis.dropped and truncated[i]) or slot in welcomed:
                keyframe_due[slot] = 1
                continue
            if conn.send_now(out[a:b]):
                keyframe_due[slot] = 0
                skipped_ticks[slot] = 0
                sent.messages += 1
                sent.bytes += b - a
            else:
                keyframe_due[slot] = 1
                skipped_ticks[slot] += 1
                sent.skipped += 1
                if skipped_ticks[slot] >= evict_after and conn.closed is None:
                    sent.evict.append(s)
        if vis.dropped:
            self._visibility_truncated(int(np.count_nonzero(truncated[:n])),
                                       int(vis.dropped), tick, now)
        return sent

    def _send_welcome(self, s: Session, tick: int) -> bool:
        """WELCOME with the player's state at ``tick`` (the tick just computed); True if
        sent."""
        conn = s.conn
        if conn is None or not s.welcome_pending:
            return False
        p = self.world.hunt_params[s.hunt]
        P = self.world.players
        welcome = Welcome(
            player_id=s.player_id, resume_token=s.token, tick=tick,
            ack=int(P.last_seq[s.slot]), width=p.width, height=p.height,
            player_speed=p.player_speed, tick_rate=p.tick_rate,
            discovery_radius=p.discovery_radius, hint_radius=p.hint_radius,
            view_radius=p.view_radius, hint_levels=p.hint_levels,
            spawn_x=float(P.x[s.slot]), spawn_y=float(P.y[s.slot]), resumed=s.resumed,
            version=conn.version)
        conn.send_now(wf.frame(encode(welcome)))
        for frame in self.greet(s, tick):  # round-based hunts: ROUND [, RESULTS]
            conn.send_now(frame)
        s.welcome_pending = False
        conn.bind(self.send_slots, s.slot)  # from the next tick, the worker writes its frames
        return True

    def evict(self, s: Session, conn: Connection) -> None:
        """Close ``conn``, the connection of ``s`` that :meth:`finish` named for eviction,
        with TOO_SLOW (the session already let go of it)."""
        self.metrics.evictions.inc()
        self.report.evicted(s.hunt)
        self.evictions += 1
        skipped = int(self.skipped_ticks[s.slot])
        self.log.warning("evict", player=s.player_id, name=s.name, remote=conn.remote,
                         skipped_ticks=skipped, backlog=conn.backlog)
        # The queued TICKs are dropped for it; a client that still reads gets it.
        self.close_soon(conn, 4008, "too slow: evicted after skipped ticks", wf.frame(encode(
            ErrorMessage(ErrorCode.TOO_SLOW, f"evicted after {skipped} ticks it could not "
                         "take"))))

    def _visibility_truncated(self, observers: int, records: int, tick: int,
                              now: float) -> None:
        """Count the observers the visibility buffer cut this tick (they get a keyframe
        later; who is cut rotates, docs/rules.md) and say so, at most once a second."""
        self.metrics.visibility_cut.inc(observers)
        self.truncated_since_log += observers
        if now - self._truncation_logged >= 1.0:
            self.log.warning("visibility_truncated", tick=tick, observers=observers,
                             records=records, observers_since_last_line=self.truncated_since_log,
                             hint="raise [engine] max_visible")
            self._truncation_logged = now
            self.truncated_since_log = 0

    def account(self, result: Any, phases: dict[str, float], sent: Delivery, received: int,
                dropped: int, clients: int, players: int) -> None:
        """The tick's figures: ``phases`` (seconds, by ``TICK_PHASES`` name), ``sent``,
        the moves ``received`` and ``dropped`` (MOVES frames) for it, and the
        ``clients`` and ``players`` it had."""
        m = self.metrics
        m.observe_tick(phases)
        row = self.ring[self.ring_count % RING]
        for k, name in enumerate(TICK_PHASES):
            row[k] = phases[name] * 1e3
        self.ring_count += 1
        self.skipped_total += sent.skipped
        m.ticks.inc()
        m.add_moves(received, result.moves_applied, dropped)
        if sent.messages:
            m.messages.inc(sent.messages)
            m.bytes.inc(sent.bytes)
        if sent.skipped:
            m.skipped.inc(sent.skipped)
        n_disc = len(result.discoveries)
        if n_disc:
            m.discoveries.inc(n_disc)
            self.recent_discoveries.add(result.tick, result.discoveries, self.name_of)
        m.clients.set(clients)
        m.players.set(players)
        m.hunts.set(self.world.hunts.count)
        if result.tick % 10 == 0:  # for the watch view: the ring's last 200 ticks
            n = min(self.ring_count, 200)
            idx = np.arange(self.ring_count - n, self.ring_count) % RING
            total = np.sort(self.ring[idx, TICK_PHASES.index("total")])
            self.stats["tick_ms_p50"] = _quantile(total, 0.50)
            self.stats["tick_ms_p99"] = _quantile(total, 0.99)
        self.stats["tick"] = result.tick

    def close(self) -> None:
        """Release the send thread (after the ticker ended). Idempotent."""
        if self._send_pool is not None:
            self._send_pool.shutdown(wait=False)
            self._send_pool = None


def _quantile(ordered: np.ndarray, q: float) -> float:
    """``np.percentile(ordered, 100 * q)`` of an ascending array (its linear interpolation),
    without its generality's cost: the hubs of many small hunts ask for two every 10 ticks."""
    at = (ordered.shape[0] - 1) * q
    lo = int(at)
    hi = min(lo + 1, ordered.shape[0] - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo))
