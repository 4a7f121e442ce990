"""The hub's broadcaster: the Trio thread's part of a tick after the worker.

WELCOMEs of the players accepted this tick, then whatever the worker did not write
whole (a backlog, a short write, a truncated view) through each connection's
outbox; a client whose outbox stays full is skipped, then evicted. Counts what was
sent for the metrics and /api/stats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._metrics import TICK_PHASES
from ..protocol import ErrorCode, ErrorMessage, Welcome, encode
from ..shell import _wsframes as wf
from ..shell._conn import Connection
from ._sessions import JoinRequest, Session

#: Ticks of timings kept for /api/stats.
RING = 8192


class Broadcaster:
    """Frames to clients after the worker (a mixin of :class:`server.hunt._hub.Hub`):
    frames -> WELCOMEs, outboxes, evictions -> metrics."""

    def _finish(self, result: Any, vis: Any, accepted: list[JoinRequest], n_obs: int,
                now: float) -> tuple[int, int, int]:
        """Trio thread, after the worker: WELCOMEs, then what the worker did not write
        whole (a backlog, a short write, no connection, a truncated view) one by one.
        Returns (messages sent, bytes sent, ticks skipped for full outboxes)."""
        obs = self.obs_sessions
        slots = self.obs_slots[:n_obs]
        claimed = self._claimed[:n_obs]
        send = self.send_slots
        tick = result.tick
        # WELCOME tells the state at this tick; the client's first TICK is the next one.
        welcomed: set[int] = set()
        for req in accepted:
            if req.session is not None and self._send_welcome(req.session, tick):
                welcomed.add(req.session.slot)
            req.done.set()
        send.end()  # every claim at once: the frames written whole need nothing more
        # Frames the worker wrote whole, in bulk; the rest (welcome pending, no connection,
        # truncated view, short write, unclaimed) one by one below: usually a few.
        sizes = self.frame_sizes[:n_obs]
        whole = self._whole[:n_obs]
        np.equal(self.written[:n_obs], sizes, out=whole)
        done = slots[whole]
        self.keyframe_due[done] = 0
        self.skipped_ticks[done] = 0
        sent_msgs = len(done)
        sent_bytes = int(sizes[whole].sum())
        skipped = 0
        out = memoryview(self.out)
        offsets = self.frame_offsets
        truncated = vis.truncated
        evict_after = self.server.evict_after_ticks
        for i in np.flatnonzero(~whole).tolist():
            s = obs[i]
            slot = s.slot
            a, b = int(offsets[i]), int(offsets[i + 1])
            w = int(self.written[i])
            if claimed[i]:
                conn = send.conn[slot]  # None: lost during the tick (s.conn is None too)
                if conn is None or w == -2:  # or truncated visibility: nothing written
                    self.keyframe_due[slot] = 1
                    continue
                # Partly written, or not at all: the rest is queued (the outbox was empty
                # when claimed), so it counts as sent.
                conn.after_worker(out[a:b], w)
                self.keyframe_due[slot] = 0
                self.skipped_ticks[slot] = 0
                sent_msgs += 1
                sent_bytes += b - a
                continue
            conn = s.conn
            if conn is None or (vis.dropped and truncated[i]) or slot in welcomed:
                self.keyframe_due[slot] = 1
                continue
            if conn.send_now(out[a:b]):
                self.keyframe_due[slot] = 0
                self.skipped_ticks[slot] = 0
                sent_msgs += 1
                sent_bytes += b - a
            else:
                self.keyframe_due[slot] = 1
                self.skipped_ticks[slot] += 1
                skipped += 1
                if self.skipped_ticks[slot] >= evict_after and conn.closed is None:
                    self._evict(s)
        if vis.dropped:
            self._visibility_truncated(int(np.count_nonzero(truncated[:n_obs])),
                                       int(vis.dropped), tick, now)
        return sent_msgs, sent_bytes, skipped

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
        s.welcome_pending = False
        conn.bind(self.send_slots, s.slot)  # from the next tick, the worker writes its frames
        return True

    def _evict(self, s: Session) -> None:
        conn = s.conn
        assert conn is not None
        self.metrics.evictions.inc()
        self.report.evicted(s.hunt)
        self.evictions += 1
        skipped = int(self.skipped_ticks[s.slot])
        self.log.warning("evict", player=s.player_id, name=s.name, remote=conn.remote,
                         skipped_ticks=skipped, backlog=conn.backlog)
        self.disconnected(s, conn)
        # The queued TICKs are dropped for it; a client that still reads gets it.
        self._close_soon(conn, 4008, "too slow: evicted after skipped ticks", wf.frame(encode(
            ErrorMessage(ErrorCode.TOO_SLOW, f"evicted after {skipped} ticks it could not "
                         "take"))))

    def _close_soon(self, conn: Connection, code: int, reason: str, final: bytes) -> None:
        """``final``, then close ``code``: queued now (nothing can come between), written
        by a task."""
        conn.begin_close(code, reason, final)
        self.nursery.start_soon(conn.close, code, reason)

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

    def _account(self, result: Any, phases: dict[str, float], msgs: int, nbytes: int,
                 skipped: int) -> None:
        m = self.metrics
        m.observe_tick(phases)
        row = self.ring[self.ring_count % RING]
        for k, name in enumerate(TICK_PHASES):
            row[k] = phases[name] * 1e3
        self.ring_count += 1
        self.skipped_total += skipped
        m.ticks.inc()
        m.add_moves(self.moves_received, result.moves_applied, self.moves_dropped)
        self.moves_received = self.moves_dropped = 0
        if msgs:
            m.messages.inc(msgs)
            m.bytes.inc(nbytes)
        if skipped:
            m.skipped.inc(skipped)
        n_disc = len(result.discoveries)
        if n_disc:
            m.discoveries.inc(n_disc)
            for d in result.discoveries[-20:]:
                s = self.sessions.get(int(d["slot"]))
                self.recent_discoveries[int(d["hunt"])].append({
                    "tick": result.tick, "slot": int(d["slot"]),
                    "name": s.name if s else "?", "value": int(d["value"]),
                    "x": round(float(d["x"]), 1), "y": round(float(d["y"]), 1)})
        m.clients.set(len(self.obs_sessions))
        m.players.set(len(self.sessions))
        m.hunts.set(self.world.hunts.count)
        if result.tick % 10 == 0:  # for the watch view: the ring's last 200 ticks
            n = min(self.ring_count, 200)
            idx = np.arange(self.ring_count - n, self.ring_count) % RING
            total = self.ring[idx, TICK_PHASES.index("total")]
            self.stats["tick_ms_p50"] = float(np.percentile(total, 50))
            self.stats["tick_ms_p99"] = float(np.percentile(total, 99))
        self.stats["tick"] = result.tick
