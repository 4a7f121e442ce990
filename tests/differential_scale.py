"""The engine against the reference on a world of 200,100 players, on one and on two threads.

Run by tests/test_differential_scale.py in a subprocess with ``NUMBA_NUM_THREADS=2``
(so that two threads exist whatever the machine), or by hand::

    NUMBA_NUM_THREADS=2 python tests/differential_scale.py

Three worlds receive the same requests: the reference, an engine world ticked on
one thread and one ticked on two. The sizes are chosen to take the engine paths
small worlds never reach:

- 200,100 player rows: the parallel counting sort of the player grid (200,000
  rows and more, two threads) and the parallel cell assignment and gathers
  (16,384 rows and more);
- 17,500 treasure rows: the parallel treasure grid and the parallel discovery
  search (1,000 treasures and more);
- 10 hunts of 1,700 treasures on a small map with a wide hint radius: a hint
  tile gathers more than ``TILE_CANDIDATES`` treasures and falls back to the
  per-player scan;
- a hunt added at tick 3 while 200,000 players are in play (the engine never
  removes a hunt, so there is no removal to compare; grids rebuilt,
  boards ranked from every slot), bulk joins (``join_many``) and 5,000 leaves
  (board members among them), a snapshot/restore of the two-thread world before
  tick 4 that then continues against a reference that never stopped;
- moves for every player each tick, with stale ids, old sequence numbers and
  non-finite, huge and tiny directions;
- visibility for all 200,100 slots in one call (the one-pass parallel path),
  with random keyframe flags.

Compared after each of the 8 ticks, for both engine worlds: every event, every
player column of every slot in play, every treasure column, every board, the
kept-move counts, the state hash of one world against the other's; and the
visibility records of 500 sampled observers (the reference costs O(hunt size)
per observer, too slow for all of them), taken from the engine's call for all
slots. Prints one JSON line of what was seen; exits non-zero on the first
difference.
"""

from __future__ import annotations

import json
import sys
import time

import numba
import numpy as np
from differential_support import compare_all

from tickengine import EngineConfig, HuntParams, World
from tickengine._discovery import PARALLEL_MIN_TREASURES
from tickengine._grid import PARALLEL_MIN_ROWS, PARALLEL_SORT_MIN_ROWS
from tickengine._hints import TILE_CANDIDATES
from tickengine.reference import ReferenceWorld

CROWD_HUNTS = 100
CROWD_PLAYERS = 2_000
HOARD_HUNTS = 10
HOARD_PLAYERS = 10
HOARD_TREASURES = 1_700
TICKS = 8
SAMPLE = 500
LEAVES = 5_000


def hunts() -> list[HuntParams]:
    crowd = [HuntParams(name=f"crowd{i}", width=400.0, height=400.0, treasures=5,
                        discovery_radius=3.0, hint_radius=40.0, view_radius=12.0,
                        player_speed=30.0, tick_rate=10, respawn_delay=2, leaderboard_size=5,
                        max_players=2_100, seed=1000 + i)
             for i in range(CROWD_HUNTS)]
    hoard = [HuntParams(name=f"hoard{i}", width=100.0, height=100.0, treasures=HOARD_TREASURES,
                        discovery_radius=1.0, hint_radius=60.0, view_radius=30.0,
                        player_speed=20.0, tick_rate=10, respawn_delay=1, leaderboard_size=3,
                        max_players=HOARD_PLAYERS, seed=2000 + i)
             for i in range(HOARD_HUNTS)]
    return crowd + hoard


LATE = HuntParams(name="late", width=300.0, height=300.0, treasures=100, discovery_radius=4.0,
                  hint_radius=50.0, view_radius=20.0, player_speed=30.0, tick_rate=10,
                  max_players=3_000, seed=77)


class Run:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(16)
        cfg = EngineConfig(max_players=210_000, max_treasures=17_600, max_hunts=120,
                           max_visible=4_000_000)
        self.ref = ReferenceWorld(max_players=cfg.max_players, max_treasures=cfg.max_treasures,
                                  max_hunts=cfg.max_hunts)
        self.worlds = [World(cfg), World(cfg)]  # ticked on 1 thread, on 2 threads
        self.threads = [1, 2]
        for params in hunts():
            self.add_hunt(params)
        self.live: list[int] = []
        self.gone: list[int] = []
        self.seq: dict[int, int] = {}
        self.seen = {"discoveries": 0, "joins": 0, "leaves": 0, "boards": 0, "respawns": 0,
                     "moves_kept": 0, "visibility_records": 0}

    def add_hunt(self, params: HuntParams) -> None:
        h = self.ref.add_hunt(params)
        assert all(w.add_hunt(params) == h for w in self.worlds)

    def join_many(self, hunt: int, count: int) -> None:
        ids = [w.join_many(hunt, count) for w in self.worlds]
        want = self.ref.join_many(hunt, count)
        for got in ids:
            assert got.tolist() == want, "join_many ids"
        self.live += want

    def leave_some(self, count: int) -> None:
        picks = self.rng.choice(len(self.live), size=count, replace=False)
        leaving = {self.live[i] for i in picks.tolist()}
        for pid in sorted(leaving, key=lambda _: self.rng.random()):  # request order matters
            self.ref.leave(pid)
            for w in self.worlds:
                w.leave(pid)
        self.live = [p for p in self.live if p not in leaving]
        self.gone += sorted(leaving)

    def moves(self) -> None:
        rng = self.rng
        ids = self.live + self.gone[-500:]  # departed players' ids are stale
        n = len(ids)
        seqs = np.array([self.seq.get(p, 0) for p in ids], np.int64)
        seqs += rng.integers(-1, 3, n)  # some not newer than the last one: dropped
        seqs = np.maximum(seqs, 1)
        for p, s in zip(ids, seqs.tolist(), strict=True):
            self.seq[p] = max(self.seq.get(p, 0), s)
        dx = rng.uniform(-1.3, 1.3, n)
        dy = rng.uniform(-1.3, 1.3, n)
        odd = rng.random(n)
        dx[odd < 0.01] = np.nan
        dy[(odd >= 0.01) & (odd < 0.02)] = -np.inf
        dx[(odd >= 0.02) & (odd < 0.03)] = 1e200  # squares to inf
        dy[(odd >= 0.03) & (odd < 0.04)] = 5e-324  # subnormal
        order = rng.permutation(n)  # a batch is not sorted by slot
        id_arr = np.array(ids, np.int64)[order]
        seqs, dx, dy = seqs[order], dx[order], dy[order]
        kept = sum(self.ref.put_move(p, s, a, b) for p, s, a, b in zip(
            id_arr.tolist(), seqs.tolist(), dx.tolist(), dy.tolist(), strict=True))
        for w in self.worlds:
            assert w.moves.put_many(id_arr, seqs, dx, dy) == kept, "moves kept"
        self.seen["moves_kept"] += kept

    def tick(self) -> None:
        want = self.ref.tick()
        t = want.tick
        for w, threads in zip(self.worlds, self.threads, strict=True):
            numba.set_num_threads(threads)
            got = w.tick()
            compare_all(w, self.ref, got, want)
        a, b = self.worlds
        assert a.state_hash() == b.state_hash(), f"tick {t}: hashes differ between thread counts"
        self.compare_visibility(t)
        self.seen["discoveries"] += len(want.discoveries)
        self.seen["joins"] += sum(1 for m in want.memberships if m[0] == 1)
        self.seen["leaves"] += sum(1 for m in want.memberships if m[0] == 2)
        self.seen["boards"] += len(want.leaderboard_changed)
        self.seen["respawns"] += got.respawns

    def compare_visibility(self, t: int) -> None:
        n = self.worlds[0].players.high_water
        observers = np.arange(n, dtype=np.int32)
        keyframe = (self.rng.random(n) < 0.3).astype(np.uint8)
        sample = np.sort(self.rng.choice(n, size=SAMPLE, replace=False))
        for w, threads in zip(self.worlds, self.threads, strict=True):
            numba.set_num_threads(threads)
            vis = w.visibility(observers, keyframe)
            assert vis.dropped == 0 and not vis.truncated.any(), f"tick {t}: visibility truncated"
            for o in sample.tolist():
                recs = np.sort(vis.of(o), order="slot")
                got = [(int(r["slot"]), int(r["gen"]), int(r["flags"]), float(r["x"]),
                        float(r["y"])) for r in recs]
                want = [(s, g, f, float(np.float32(x)), float(np.float32(y)))
                        for s, g, f, x, y in self.ref.visibility(o, keyframe=bool(keyframe[o]))]
                assert got == want, f"tick {t} observer {o} keyframe={bool(keyframe[o])}"
                self.seen["visibility_records"] += len(got)

    def restore_two_thread_world(self) -> None:
        world = self.worlds[1]
        copy = World.restore(world.snapshot())
        assert copy.state_hash() == world.state_hash()
        self.worlds[1] = copy


def main() -> int:
    if numba.config.NUMBA_NUM_THREADS < 2:
        print("needs NUMBA_NUM_THREADS >= 2", file=sys.stderr)
        return 2
    start = time.perf_counter()
    run = Run()
    for h in range(CROWD_HUNTS):
        run.join_many(h, CROWD_PLAYERS)
    for h in range(CROWD_HUNTS, CROWD_HUNTS + HOARD_HUNTS):
        run.join_many(h, HOARD_PLAYERS)
    # The sizes that take the parallel paths (a change of a threshold must not quietly
    # leave them untested).
    assert len(run.live) >= PARALLEL_SORT_MIN_ROWS
    assert run.worlds[0].treasures.used >= PARALLEL_MIN_ROWS
    assert run.worlds[0].treasures.used >= PARALLEL_MIN_TREASURES
    assert HOARD_TREASURES > TILE_CANDIDATES
    for t in range(1, TICKS + 1):
        if t == 3:
            run.add_hunt(LATE)
            run.join_many(CROWD_HUNTS + HOARD_HUNTS, 2_500)
            run.leave_some(LEAVES)
            run.join_many(0, 1)  # takes the last slot freed
        if t == 4:
            run.leave_some(200)
            run.join_many(5, 100)
            run.restore_two_thread_world()  # queued joins and leaves are in the snapshot
        if t >= 2:
            run.moves()
        run.tick()
    run.seen["seconds"] = round(time.perf_counter() - start, 1)
    run.seen["player_rows"] = int(run.worlds[0].players.high_water)
    run.seen["treasure_rows"] = int(run.worlds[0].treasures.used)
    print(json.dumps(run.seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
