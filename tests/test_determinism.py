"""Same config, seed and inputs -> same state hash: across runs, processes, thread counts
and snapshot/restore."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tickengine import Bots, EngineConfig, HuntParams, SnapshotError, World

RUN = """
import sys, numba, numpy as np
from tickengine import Bots, EngineConfig, HuntParams, World
assert numba.get_num_threads() == int(sys.argv[1])
world = World(EngineConfig(max_players=6000, max_treasures=900, max_hunts=3, max_visible=200_000))
for h in range(3):
    world.add_hunt(HuntParams(name=f"h{h}", width=600 + 100 * h, height=500, treasures=300,
                              discovery_radius=4, hint_radius=60, view_radius=50, seed=h * 7))
bots = Bots(world)
for h in range(3):
    bots.add(h, 1500, "hunter", seed=h)
    bots.add(h, 500, "random", seed=100 + h)
hashes = []
for t in range(120):
    bots.decide()
    world.tick()
    vis = world.visibility(np.arange(0, 6000, 7, dtype=np.int32))
    if t % 40 == 39:
        hashes.append(world.state_hash())
        hashes.append(str(int(vis.offsets[-1])))
print(" ".join(hashes))
"""


def run_in_process(threads: int) -> str:
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", RUN, str(threads)], env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    return out.stdout.strip()


def test_same_hashes_with_one_and_two_threads_in_separate_processes() -> None:
    one = run_in_process(1)
    two = run_in_process(2)
    assert one == two
    assert len(set(one.split())) == 6  # the state did move on between checkpoints


def small_world(seed: int = 3) -> tuple[World, Bots]:
    world = World(EngineConfig(max_players=300, max_treasures=100, max_hunts=2),
                  [HuntParams(name="a", treasures=60, discovery_radius=15, seed=seed),
                   HuntParams(name="b", treasures=30, seed=seed + 1)])
    bots = Bots(world)
    bots.add("a", 150, "hunter", seed=seed)
    bots.add("b", 100, "random", seed=seed)
    return world, bots


def test_same_seed_same_hash_different_seed_different_hash() -> None:
    hashes = []
    for seed in (3, 3, 4):
        world, bots = small_world(seed)
        for _ in range(50):
            bots.decide()
            world.tick()
        hashes.append(world.state_hash())
    assert hashes[0] == hashes[1] != hashes[2]


def test_snapshot_round_trip_keeps_the_hash_and_the_future() -> None:
    world, bots = small_world()
    for _ in range(40):
        bots.decide()
        world.tick()
    leaver = world.player_id(5)
    world.leave(leaver)
    joiner = world.join("b")  # queued requests are part of the snapshot
    data = world.snapshot()
    copy = World.restore(data)
    assert copy.state_hash() == world.state_hash()
    assert copy.tick_number == world.tick_number
    # Both play on identically with the same inputs.
    for t in range(30):
        ids = np.array([world.player_id(s) for s in range(0, 200, 3)], np.int64)
        seqs = np.full(ids.shape, 10_000 + t, np.int64)
        dx = np.cos(ids * 0.1 + t)
        dy = np.sin(ids * 0.1 + t)
        for w in (world, copy):
            w.moves.put_many(ids, seqs, dx, dy)
            w.tick()
        assert copy.state_hash() == world.state_hash()
    assert copy.player(joiner).state == "active" and not copy.is_live(leaver)
    assert np.array_equal(copy.leaderboard("a"), world.leaderboard("a"))


def test_corrupt_snapshots_are_refused() -> None:
    world, _ = small_world()
    world.tick()
    data = bytearray(world.snapshot())
    with pytest.raises(SnapshotError, match="magic"):
        World.restore(b"nonsense" + bytes(data[8:]))
    for offset in (10, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[offset] ^= 0x40
        with pytest.raises(SnapshotError):
            World.restore(bytes(bad))
    with pytest.raises(SnapshotError):
        World.restore(bytes(data[: len(data) // 3]))
