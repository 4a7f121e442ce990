"""A recorded run: fixed inputs (tests/data/recorded_run.json) and the state hash after every tick.

The inputs are stored, not regenerated, so that the check does not depend on
any random generator: hunts (one added mid-run), joins, leaves and moves
(including stale ids, old sequence numbers and non-finite and oversized
directions), tick by tick. The state hashes recorded with them were computed
when the file was written. tests/test_recorded_run.py replays the inputs and
compares every hash: in the test process, and in a fresh process with an
empty Numba cache on two threads and then one. A difference means the engine
no longer computes the same floats: a compiler flag, a Numba, NumPy or LLVM
upgrade, a reordered expression, or a rule change.

Usage::

    python tests/recorded_run.py record     # rewrite tests/data/recorded_run.json
    python tests/recorded_run.py check      # replay; print the hashes (JSON) at 2 then 1 thread

Record again only for an intended change of the rules (docs/rules.md), and say
so in the commit: the point of the file is that it does not move otherwise.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tickengine import EngineConfig, HuntParams, World

PATH = Path(__file__).with_name("data") / "recorded_run.json"
TICKS = 60

CONFIG = EngineConfig(max_players=400, max_treasures=300, max_hunts=4, max_visible=50_000)
HUNTS = [
    HuntParams(name="meadow", width=300.0, height=200.0, treasures=120, discovery_radius=5.0,
               hint_radius=40.0, view_radius=30.0, player_speed=37.0, tick_rate=20,
               respawn_delay=7, leaderboard_size=5, seed=20261201),
    HuntParams(name="caves", width=123.4, height=98.7, treasures=80, discovery_radius=2.5,
               hint_radius=25.0, hint_levels=7, view_radius=15.0, player_speed=21.0,
               tick_rate=20, treasure_value_min=2, treasure_value_max=11, respawn_delay=3,
               leaderboard_size=3, seed=99),
]
LATE_HUNT = HuntParams(name="late", width=77.0, height=55.0, treasures=40, discovery_radius=3.0,
                       hint_radius=20.0, view_radius=12.0, player_speed=15.0, tick_rate=20,
                       respawn_delay=2, seed=5)
LATE_AT = 20


def record() -> dict[str, Any]:
    """Play a seeded schedule on a World and return it with the hash after every tick."""
    rng = np.random.default_rng(1616)
    world = World(CONFIG, HUNTS)
    live: list[int] = []
    gone: list[int] = []
    seq: dict[int, int] = {}
    ticks = []
    for t in range(1, TICKS + 1):
        step: dict[str, Any] = {"hunts": [], "joins": [], "leaves": [], "moves": []}
        if t == LATE_AT:
            world.add_hunt(LATE_HUNT)
            step["hunts"].append(LATE_HUNT.to_dict())
        for _ in range(int(rng.integers(0, 4)) if t > 1 else 3):
            hunt = int(rng.integers(0, world.hunts.count))
            count = min(int(rng.integers(1, 40)), 300 - len(live))
            if count <= 0:
                continue
            live += world.join_many(hunt, count).tolist()
            step["joins"].append([hunt, count])
        for _ in range(int(rng.integers(0, 3))):
            if live:
                pid = live.pop(int(rng.integers(0, len(live))))
                world.leave(pid)
                gone.append(pid)
                step["leaves"].append(pid)
        movers = [p for p in live if rng.random() < 0.15] + gone[-2:]
        for pid in movers:
            s = seq.get(pid, 0) + int(rng.integers(-1, 3))
            seq[pid] = max(seq.get(pid, 0), s)
            roll = rng.random()
            if roll < 0.03:
                dx, dy = math.nan, 0.5
            elif roll < 0.06:
                dx, dy = 3.0, -math.inf
            elif roll < 0.12:
                dx = round(float(rng.uniform(-40, 40)), 3)
                dy = round(float(rng.uniform(-40, 40)), 3)
            else:
                a = float(rng.uniform(0, 2 * math.pi))
                dx, dy = round(math.cos(a), 4), round(math.sin(a), 4)
            step["moves"].append([pid, max(s, 1), dx, dy])
        apply_moves(world, step["moves"])
        world.tick()
        step["hash"] = world.state_hash()
        ticks.append(step)
    return {"engine": CONFIG.to_dict(), "hunts": [h.to_dict() for h in HUNTS], "ticks": ticks}


def apply_moves(world: World, moves: list[list]) -> None:
    if moves:
        ids, seqs, dx, dy = zip(*moves, strict=True)
        world.moves.put_many(np.array(ids, np.int64), np.array(seqs, np.int64),
                             np.array(dx, np.float64), np.array(dy, np.float64))


def replay(run: dict[str, Any]) -> list[str]:
    """The state hash after every tick of a recorded run, replayed from its inputs."""
    world = World(EngineConfig.from_dict(run["engine"]),
                  [HuntParams.from_dict(h) for h in run["hunts"]])
    hashes = []
    for step in run["ticks"]:
        for params in step["hunts"]:
            world.add_hunt(HuntParams.from_dict(params))
        for hunt, count in step["joins"]:
            world.join_many(hunt, count)
        for pid in step["leaves"]:
            world.leave(pid)
        apply_moves(world, step["moves"])
        world.tick()
        hashes.append(world.state_hash())
    return hashes


def load() -> dict[str, Any]:
    return json.loads(PATH.read_text())


def main(argv: list[str]) -> int:
    if argv == ["record"]:
        PATH.parent.mkdir(exist_ok=True)
        run = record()
        ticks = run.pop("ticks")
        head = json.dumps(run, separators=(",", ":"))[:-1]
        lines = ",\n".join(json.dumps(step, separators=(",", ":")) for step in ticks)
        PATH.write_text(f'{head},"ticks":[\n{lines}\n]}}\n')  # one tick per line
        print(f"wrote {PATH}")
        return 0
    if argv == ["check"]:
        import numba

        run = load()
        out = {}
        for threads in (2, 1):
            numba.set_num_threads(threads)
            out[str(threads)] = replay(run)
        print(json.dumps(out))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
