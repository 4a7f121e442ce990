"""The hub's tick pipeline: the worker thread's computation of a tick.

The second stage of a hub's tick (server/hunt/_hub.py). :meth:`TickPipeline.compute`
takes the move batch, the tick's other inputs and who the tick goes to, and gives
back :class:`Frames`: moves into the engine, ``World.tick``, the journal, visibility
of every observer, each hunt's tail (server/hunt/_tails.py) and every client's
complete WebSocket frame in one buffer (server/hunt/_tickframes.py). Touches no Trio
object and no socket: the broadcaster (server/hunt/_broadcast.py) writes the frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..protocol import MoveBatch, NameEntry
from . import _tickframes as tf
from ._players import Observers, TickInputs
from ._tails import WireIndex, build_tails

#: Engine phases of ``TickResult.phase_ns``, in order.
ENGINE_PHASES = ("membership", "movement", "grid", "discovery", "hints", "leaderboard")


@dataclass(eq=False)
class Frames:
    """One tick's output: observer i's frame is ``out[offsets[i]:offsets[i + 1]]``
    (``sizes[i]`` bytes) for ``i < count``. ``result`` is the World's TickResult,
    ``vis`` its Visibility (``vis.truncated[i]``: observer i's view was cut short), and
    ``phases`` the time of each phase (seconds, by name as in ``TICK_PHASES``)."""

    result: Any
    vis: Any
    count: int
    out: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    phases: dict[str, float]


class TickPipeline:
    """Batch -> World.tick -> journal record -> visibility -> frames (:meth:`compute`);
    the record on disk (the caller), then :meth:`on_disk`.

    ``world`` and ``journal`` (None: no durability) are the hub's; between two calls of
    :meth:`compute` only the Trio thread touches the World. ``journal_meta()``: what a
    snapshot keeps beside the World; ``name_of(slot)`` and ``everyone(hunt)``: the names
    the tails carry (see :func:`~server.hunt._tails.build_tails`); ``after_journal(result)``:
    called by :meth:`on_disk` once the tick is on disk, before a snapshot (the round
    results' files).
    """

    def __init__(self, world: Any, journal: Any, tick_threads: int,
                 journal_meta: Callable[[], dict[str, Any]],
                 name_of: Callable[[int], str | None],
                 everyone: Callable[[int], list[NameEntry]],
                 after_journal: Callable[[Any], None] = lambda result: None) -> None:
        self.world = world
        self.after_journal = after_journal
        self.journal = journal
        self.tick_threads = tick_threads
        self.journal_meta = journal_meta
        self.name_of = name_of
        self.everyone = everyone
        P = world.players.capacity
        self.obs_tail = np.zeros(P, np.int32)
        # Version 2: hunt-local indices, hunt sizes, what each slot was last sent.
        self.compact = tf.compact_state(P, world.hunts.capacity)
        self.wire_index = WireIndex(self.compact)
        self._names_v2: dict = {}
        self.frame_sizes = np.zeros(P, np.int64)
        self.frame_offsets = np.zeros(P + 1, np.int64)
        self.out = np.zeros(1 << 20, np.uint8)
        self.tails = tf.TailTable()
        # The World's player columns as the frame kernels read them (its buffers are fixed).
        p = world.players
        self.players = tf.Players(p.last_seq, p.x.view(np.int64), p.y.view(np.int64), p.score,
                                  p.hint)
        self._seen: tf.Seen | None = None

    def compute(self, batch: MoveBatch, inputs: TickInputs, obs: Observers,
                keyframe: np.ndarray) -> Frames:
        """Tick the World with ``batch`` and ``inputs`` and encode its journal record (left
        pending: ``journal.settle()`` writes it, then :meth:`on_disk`), then build the
        frame of every observer of ``obs``; ``keyframe[i]`` != 0: observer i's TICK is a
        keyframe. Nothing here blocks: it may run on the event loop
        (server/hunt/_groups.py, :data:`INLINE_PLAYERS`)."""
        threads = self.tick_threads
        if numba.get_num_threads() != threads:  # setting it costs 3x asking
            numba.set_num_threads(threads)
        world = self.world
        c0 = time.perf_counter()
        moves = batch.columns()
        if batch.count:
            world.moves.put_many(*moves)
        result = world.tick(threads=threads)
        journal = self.journal
        if journal is not None:
            # Encoded only: written and fsynced per the policy before any message of this
            # tick leaves, where the disk may block (server/hunt/_hub.py).
            t = result.tick
            journal.append_tick(t, hunts=inputs.hunts, joins=inputs.joins,
                                leaves=inputs.leaves, moves=moves,
                                state_hash=world.state_hash() if journal.wants_hash(t) else None,
                                events=inputs.events or None, defer=True)
        c1 = time.perf_counter()
        n = obs.count
        slots = obs.slots
        vis = world.visibility(slots, keyframe, threads, check=False)  # the hub's own slots
        c2 = time.perf_counter()
        obs_tail = self.obs_tail[:n]
        build_tails(world, result, self.tails, obs.hunts, keyframe, obs_tail, self.name_of,
                    self.everyone, obs.versions, self.wire_index, self.compact, self._names_v2)
        if n:  # each client's frame in its connection's version (server/hunt/_tickframes.py)
            bound = tf.frame_sizes(n, obs.versions, vis.offsets, obs_tail, self.tails.rows,
                                   self.frame_sizes)
            if bound > self.out.shape[0]:
                self.out = np.zeros(max(bound, 2 * self.out.shape[0]), np.uint8)
            tf.write_frames(n, result.tick, slots, obs.hunts, obs.versions, keyframe,
                            self._seen_of(vis), obs_tail, self.tails.rows, self.tails.data,
                            self.players, self.compact, self.out, self.frame_offsets,
                            self.frame_sizes)
        else:  # nobody to send to (the kernels' Python calls are most of an idle tick)
            self.frame_offsets[0] = 0
        c3 = time.perf_counter()
        phases = {name: ns * 1e-9
                  for name, ns in zip(ENGINE_PHASES, result.phase_ns.tolist(), strict=True)}
        phases["visibility"] = c2 - c1
        phases["frames"] = c3 - c2
        phases["_c0"] = c0  # for the hand-off time (popped by the ticker)
        return Frames(result, vis, n, self.out, self.frame_offsets, self.frame_sizes[:n],
                      phases)

    def on_disk(self, result: Any) -> None:
        """Once tick ``result``'s journal record is written and synced per the policy
        (``journal.settle()``; or no journal), before anything of it is sent: the records
        of the rounds it ended, then the snapshot if one is due (after the records: a
        snapshot could skip the tick that made them). This may wait for the disk: with a
        journal it runs in a thread, never on the event loop (server/hunt/_groups.py,
        :class:`~server.hunt._groups.Staged`)."""
        self.after_journal(result)
        if self.journal is not None:
            self.journal.maybe_snapshot(self.world, self.journal_meta)

    def _seen_of(self, vis: Any) -> tf.Seen:
        """``tf.seen_of(vis)``, made once: the World's records and offsets buffers are
        fixed (``vis.offsets`` is a view of the whole offsets buffer, which the frame
        kernel reads only as far as this tick's observers)."""
        seen = self._seen
        offsets = vis.offsets if vis.offsets.base is None else vis.offsets.base
        if seen is None or seen.raw.base is not vis.records or seen.offsets is not offsets:
            seen = self._seen = tf.seen_of(vis)._replace(offsets=offsets)
        return seen
