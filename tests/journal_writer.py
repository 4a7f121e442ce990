"""A stand-in for the server's tick loop: a World driven by a seeded workload, journaled.

Imported by tests/test_durability*.py (``Workload``, ``run``) and run as a
script in subprocesses, so that a writer can be killed for real::

    python tests/journal_writer.py write DATA_DIR --ticks 0 --snapshot-every 25
    python tests/journal_writer.py recover DATA_DIR

``write`` prints ``H <tick> <state hash>`` once a tick has run and
``A <tick>`` once its ``append_tick`` has returned (stdout flushed each time),
so a test that kills it knows which ticks were fully written. ``--ticks 0``
runs until killed; ``--resume`` first recovers the data dir (and prints
``R <tick> <state hash>``), as a restarted server would. ``recover`` prints the
recovery as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tickengine import EngineConfig, HuntParams, World

#: The server's meta at snapshot time: a fresh dict each time.
Meta = dict[str, Any]


def make_world(max_players: int = 2_000) -> World:
    return World(EngineConfig(max_players=max_players, max_treasures=1_000),
                 [HuntParams(name="forest", width=600, height=600, treasures=60, seed=11,
                             max_players=max_players)])


class Workload:
    """Seeded joins, leaves, moves and one new hunt, applied in the server's order.

    Moves include stale ids, players leaving this tick, duplicates and sequence
    numbers that go back, so the engine's drop rules are part of what replays.
    """

    def __init__(self, world: World, seed: int = 0, *, joins: int = 4, leave_p: float = 0.01,
                 moves: int = 60, new_hunt_at: int = 7) -> None:
        self.world = world
        self.rng = np.random.default_rng(seed)
        self.joins = joins
        self.leave_p = leave_p
        self.moves = moves
        self.new_hunt_at = new_hunt_at
        self.live: list[int] = []
        self.gone: list[int] = []
        self.names: dict[int, str] = {}
        self.seq = 0

    @classmethod
    def resume(cls, world: World, seed: int, **kwargs: Any) -> Workload:
        """A workload that carries on with the players in play in ``world`` (after recovery)."""
        load = cls(world, seed, **kwargs)
        load.live = [world.player_id(int(s)) for s in world.active_slots()]
        load.names = {pid: f"p{pid}" for pid in load.live}
        load.seq = 1 << 40  # above any sequence number of the first run
        return load

    def meta(self) -> Meta:
        return {"names": {str(pid): self.names[pid] for pid in self.live}}

    def step(self) -> dict[str, Any]:
        """Run one tick; returns the ``append_tick`` keyword arguments (without the hash)."""
        w, rng = self.world, self.rng
        tick = w.tick_number + 1
        hunts = []
        if tick == self.new_hunt_at:
            params = HuntParams(name=f"cave-{tick}", width=300, height=300, treasures=20,
                                seed=tick, max_players=w.config.max_players)
            w.add_hunt(params)
            hunts.append(params)
        joins = []
        room = w.config.max_players - len(self.live) - 2 * self.joins
        for _ in range(int(rng.integers(0, self.joins + 1)) if room > 0 else 0):
            h = int(rng.integers(0, w.hunts.count))
            pid = w.join(h)
            name = f"p{len(self.names)}-é"
            self.names[pid] = name
            joins.append((pid, h, name, rng.bytes(16)))
            self.live.append(pid)
        leaves = []
        for k in np.flatnonzero(rng.random(len(self.live)) < self.leave_p)[::-1].tolist():
            pid = self.live.pop(k)
            w.leave(pid)
            leaves.append(pid)
            self.gone.append(pid)
        pool = self.live + leaves + self.gone[-5:]
        n = self.moves if pool else 0
        ids = np.array([pool[i] for i in rng.integers(0, len(pool), n)], np.int64)
        self.seq += n
        seqs = self.seq - rng.integers(0, n + 5, n).astype(np.int64)
        dx = rng.uniform(-1.3, 1.3, n)
        dy = rng.uniform(-1.3, 1.3, n)
        w.moves.put_many(ids, seqs, dx, dy)
        w.tick()
        return {"hunts": hunts, "joins": joins, "leaves": leaves, "moves": (ids, seqs, dx, dy)}


def run(journal: Any, world: World, workload: Workload, ticks: int, *,
        hashes: dict[int, str] | None = None, out: Any = None) -> None:
    """Tick ``ticks`` times (0: forever), journaling like the server; ``hashes[tick]`` filled."""
    k = 0
    while ticks == 0 or k < ticks:
        inputs = workload.step()
        tick = world.tick_number
        h = world.state_hash()
        if hashes is not None:
            hashes[tick] = h
        if out is not None:
            out.write(f"H {tick} {h}\n")
            out.flush()
        journal.append_tick(tick, state_hash=h if journal.wants_hash(tick) else None, **inputs)
        if out is not None:
            out.write(f"A {tick}\n")
            out.flush()
        journal.maybe_snapshot(world, workload.meta)
        k += 1


def main(argv: list[str]) -> int:
    from server.durability import Journal, recover

    p = argparse.ArgumentParser(prog="journal_writer")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("data_dir", type=Path)
    w.add_argument("--ticks", type=int, default=100)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--fsync", default="tick")
    w.add_argument("--snapshot-every", type=int, default=25)
    w.add_argument("--hash-every", type=int, default=5)
    w.add_argument("--moves", type=int, default=60)
    w.add_argument("--resume", action="store_true",
                   help="recover what DATA_DIR holds (if anything) and carry on from there")
    r = sub.add_parser("recover")
    r.add_argument("data_dir", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "write":
        rec = recover(args.data_dir) if args.resume else None
        if rec is None:
            world = make_world()
            workload = Workload(world, args.seed, moves=args.moves)
        else:
            world = rec.world
            workload = Workload.resume(world, args.seed, moves=args.moves)
            print(f"R {rec.tick} {rec.state_hash}", flush=True)
        with Journal(args.data_dir, fsync=args.fsync, snapshot_every=args.snapshot_every,
                     hash_every=args.hash_every) as journal:
            journal.start(world, workload.meta(), recovered=rec)
            run(journal, world, workload, args.ticks, out=sys.stdout)
        return 0
    rec = recover(args.data_dir)
    if rec is None:
        print(json.dumps(None))
        return 0
    print(json.dumps({"tick": rec.tick, "state_hash": rec.state_hash, "joins": len(rec.joins),
                      "leaves": len(rec.leaves), "report": rec.report.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main(sys.argv[1:]))
