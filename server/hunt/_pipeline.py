"""The hub's tick pipeline: the worker thread's part of a tick.

Moves into the engine, ``World.tick``, the journal, visibility of every observer,
each hunt's tail (server/hunt/_tails.py) and every client's frame in one buffer
(server/hunt/_tickframes.py), then one ``write(2)`` per claimed client. Touches no Trio
object: the ticker hands it the batch and takes the frames back.
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

from ..protocol import MoveBatch, NameEntry
from ..shell._conn import SendSlots
from . import _tickframes as tf
from ._sessions import Session
from ._tails import WireIndex, build_tails

#: Clients per thread below which the tick's writes stay on one thread.
SPLIT_MIN = 128


class _Fenced(Exception):
    """Raised in the worker when the lease ran out during a tick: nothing is sent."""


class TickPipeline:
    """The worker's part of a tick (a mixin of :class:`server.hunt._hub.Hub`):
    move batch -> World.tick -> journal -> visibility -> frames -> sockets."""

    def _init_buffers(self) -> None:
        cap = self.server.max_moves_per_tick
        self.batch, self.spare = MoveBatch(cap), MoveBatch(cap)
        P = self.world.players.capacity
        self.obs_sessions: list[Session] = []
        self.obs_slots = np.zeros(P, np.int32)
        self.obs_keyframe = np.zeros(P, np.uint8)
        self.obs_tail = np.zeros(P, np.int32)
        self.obs_hunt = np.zeros(P, np.int32)
        self.obs_version = np.ones(P, np.uint8)
        # Version 2: hunt-local indices, hunt sizes, what each slot was last sent.
        self.compact = tf.compact_state(P, self.world.hunts.capacity)
        self.wire_index = WireIndex(self.compact)
        self._names_v2: dict = {}
        self.frame_sizes = np.zeros(P, np.int64)
        self.frame_offsets = np.zeros(P + 1, np.int64)
        self.out = np.zeros(1 << 20, np.uint8)
        self.written = np.zeros(P, np.int64)
        self.fds = np.zeros(P, np.int64)
        # Per player slot, as arrays so the tick reads and resets them in bulk:
        #: the next TICK must be a keyframe (join, resume, a skipped or truncated tick);
        self.keyframe_due = np.ones(P, np.uint8)
        #: consecutive ticks skipped because the client's outbox was full.
        self.skipped_ticks = np.zeros(P, np.int32)
        self._whole = np.zeros(P, np.bool_)
        self.send_slots = SendSlots(P)
        self._claimed = np.zeros(P, np.bool_)
        self.tails = tf.TailTable()
        self._names_blob: dict[int, list[NameEntry]] = {}

    def _rebuild_observers(self) -> None:
        obs = [s for s in self.sessions.values() if s.conn is not None and not s.leaving]
        obs.sort(key=lambda s: s.slot)
        self.obs_sessions = obs
        n = len(obs)
        self.obs_slots[:n] = [s.slot for s in obs]
        self.obs_hunt[:n] = [s.hunt for s in obs]
        self.obs_version[:n] = [s.conn.version for s in obs]
        self._observers_dirty = False

    def _compute(self, batch: MoveBatch, n_obs: int) -> tuple[Any, Any, int, dict[str, float]]:
        """Worker thread: the tick, visibility, every frame, and the writes of the clients
        the ticker claimed (``self.fds[i] >= 0``). Touches no Trio object."""
        numba.set_num_threads(self.server.tick_threads)
        world = self.world
        c0 = time.perf_counter()
        moves = batch.columns()
        world.moves.put_many(*moves)
        result = world.tick()
        journal = self.journal
        if journal is not None:
            # On disk (per the fsync policy) before any message of this tick leaves.
            t = result.tick
            journal.append_tick(t, hunts=self.tick_hunts, joins=self.tick_joins,
                                leaves=self.tick_leaves, moves=moves,
                                state_hash=world.state_hash() if journal.wants_hash(t) else None)
            journal.maybe_snapshot(world, self.journal_meta)
        c1 = time.perf_counter()
        slots = self.obs_slots[:n_obs]
        vis = world.visibility(slots, self.obs_keyframe)
        c2 = time.perf_counter()
        self._build_tails(result, n_obs)
        version = self.obs_version[:n_obs]
        bound = tf.frame_sizes(n_obs, version, vis.offsets, self.obs_tail, self.tails.rows,
                               self.frame_sizes)
        if bound > self.out.shape[0]:
            self.out = np.zeros(max(bound, 2 * self.out.shape[0]), np.uint8)
        P = world.players
        total = tf.write_frames(
            n_obs, result.tick, slots, self.obs_hunt[:n_obs], version, self.obs_keyframe,
            tf.seen_of(vis), self.obs_tail, self.tails.rows, self.tails.data,
            tf.Players(P.last_seq, P.x.view(np.int64), P.y.view(np.int64), P.score, P.hint),
            self.compact, self.out, self.frame_offsets, self.frame_sizes)
        c3 = time.perf_counter()
        # Fencing: this tick is journaled; it may be acknowledged only while the lease holds
        # (a node paused past its lease must not tell clients of ticks the next owner lacks).
        if time.monotonic() >= self.lease_deadline:
            raise _Fenced
        self._write_frames(n_obs, vis)
        c4 = time.perf_counter()
        phases = {name: float(ns) * 1e-9 for name, ns in
                  zip(("membership", "movement", "grid", "discovery", "hints", "leaderboard"),
                      result.phase_ns, strict=True)}
        phases["visibility"] = c2 - c1
        phases["frames"] = c3 - c2
        phases["send"] = c4 - c3
        phases["_c0"], phases["_c4"] = c0, c4  # for the hand-off times (popped by the ticker)
        return result, vis, total, phases

    def _write_frames(self, n_obs: int, vis: Any) -> None:
        """One ``write(2)`` per claimed client in a nogil kernel: the Trio thread keeps
        reading sockets meanwhile. ``self.written[i]``: bytes taken (-2: not written)."""
        fd = self.fds
        if vis.dropped:  # truncated visibility: that client gets a keyframe later instead
            fd[:n_obs][vis.truncated[:n_obs] != 0] = -1
        base = self.out.ctypes.data
        pool = self._send_pool
        if pool is None or n_obs < 2 * SPLIT_MIN:
            tf.write_frames_to_sockets(n_obs, fd, base, self.frame_offsets, self.written)
            return
        # Each write(2) on loopback runs the receiver's TCP stack too: two threads (the
        # kernel releases the GIL) halve the time to the last frame.
        half = n_obs // 2
        rest = pool.submit(tf.write_frames_to_sockets, n_obs - half, fd[half:], base,
                           self.frame_offsets[half:], self.written[half:])
        tf.write_frames_to_sockets(half, fd, base, self.frame_offsets, self.written)
        rest.result()

    def _build_tails(self, result: Any, n_obs: int) -> int:
        """Each hunt's shared tail, and each observer's (server/hunt/_tails.py)."""
        return build_tails(self.world, result, self.tails, self.obs_hunt[:n_obs],
                           self.obs_keyframe[:n_obs], self.obs_tail[:n_obs],
                           self._joined_name, self._names, self.obs_version[:n_obs],
                           self.wire_index, self.compact, self._names_v2)
