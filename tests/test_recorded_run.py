"""The recorded run (tests/recorded_run.py, tests/data/recorded_run.json): same state hashes here,
in a fresh process with an empty Numba cache, on two threads and on one; and the reference agrees
with the engine on every tick of it.

A failure here means the engine computes other floats than when the run was recorded
(docs/rules.md, "Determinism"): find out why before recording again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from differential_support import compare_all, compare_visibility
from recorded_run import apply_moves, load, replay

from tickengine import EngineConfig, HuntParams, World
from tickengine.reference import ReferenceWorld

SCRIPT = Path(__file__).with_name("recorded_run.py")


def first_difference(got: list[str], want: list[str]) -> str:
    for t, (a, b) in enumerate(zip(got, want, strict=True), start=1):
        if a != b:
            return f"first difference after tick {t}: replayed {a}, recorded {b}"
    return "none"


def test_recorded_hashes_replay_in_this_process() -> None:
    run = load()
    want = [step["hash"] for step in run["ticks"]]
    got = replay(run)
    assert got == want, first_difference(got, want)
    assert len(set(want)) == len(want)  # every tick changed the state


def test_the_recorded_run_follows_the_rules() -> None:
    """The engine against the reference on the recorded inputs, every tick."""
    run = load()
    config = EngineConfig.from_dict(run["engine"])
    hunts = [HuntParams.from_dict(h) for h in run["hunts"]]
    world = World(config, hunts)
    ref = ReferenceWorld(max_players=config.max_players, max_treasures=config.max_treasures,
                         max_hunts=config.max_hunts)
    for params in hunts:
        ref.add_hunt(params)
    discoveries = 0
    observers = list(range(config.max_players))
    for step in run["ticks"]:
        for params in step["hunts"]:
            assert world.add_hunt(HuntParams.from_dict(params)) == ref.add_hunt(
                HuntParams.from_dict(params))
        for hunt, count in step["joins"]:
            assert world.join_many(hunt, count).tolist() == ref.join_many(hunt, count)
        for pid in step["leaves"]:
            world.leave(pid)
            ref.leave(pid)
        apply_moves(world, step["moves"])
        for pid, seq, dx, dy in step["moves"]:
            ref.put_move(pid, seq, dx, dy)
        got, want = world.tick(), ref.tick()
        compare_all(world, ref, got, want)
        if want.tick % 10 == 0:
            compare_visibility(world, ref, observers, [want.tick % 20 == 0] * len(observers),
                               want.tick)
        assert world.state_hash() == step["hash"]
        discoveries += len(want.discoveries)
    assert discoveries > 20 and world.hunts.count == 3


@pytest.mark.slow
def test_recorded_hashes_in_a_fresh_process_with_an_empty_numba_cache(tmp_path: Path) -> None:
    """Kernels compiled anew (NUMBA_CACHE_DIR empty), two threads then one: the same hashes."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(SCRIPT), "check"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    hashes = json.loads(out.stdout)
    want = [step["hash"] for step in load()["ticks"]]
    for threads in ("2", "1"):
        assert hashes[threads] == want, f"{threads} threads: " + first_difference(
            hashes[threads], want)
    cached = list(tmp_path.rglob("*.nbi"))
    assert cached, "the kernels were not compiled into the empty cache"
    assert np.all([f.stat().st_size > 0 for f in cached])
