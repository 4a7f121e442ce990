"""Bytes per TICK message, version 1 against version 2, from the server's own frame kernel.

No network and no clock: a World with ``--hunts`` hunts of ``--players`` players
(each hunt ``--world-size`` wide, the demo's other parameters), every player moving
in one of 8 directions and changing it ``--rate`` times a second (at random ticks),
every player an observer in both versions. Each tick goes through the server's path
(server/hunt/_tails.py, server/hunt/_tickframes.py: tails once per hunt, one kernel
pass for every frame), and the frames' sizes, WebSocket header included, are
averaged over ``--ticks`` ticks after ``--warmup`` ticks (the first keyframes of the
joins are in the warm-up). Prints one JSON line; the load test (perf/loadtest.py)
measures the same over real sockets.

    python perf/bench_tick_bytes.py --hunts 50 --players 20 --world-size 300
    python perf/bench_tick_bytes.py --hunts 1 --players 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.hunt import _tickframes as tf
from server.hunt._tails import WireIndex, build_tails
from server.protocol import NameEntry
from tickengine import EngineConfig, HuntParams, World

DIRS = np.array([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)],
                np.float64)


def run(args: argparse.Namespace) -> dict:
    n = args.hunts * args.players
    world = World(EngineConfig(max_players=n + 16, max_hunts=args.hunts + 1,
                               max_visible=max(1 << 16, n * min(n, 400))))
    for h in range(args.hunts):
        world.add_hunt(HuntParams(name=f"load-{h:03d}", width=args.world_size,
                                  height=args.world_size, tick_rate=args.tick_rate,
                                  max_players=args.players * 2, seed=h))
    ids = np.array([world.join(h % args.hunts) for h in range(n)], np.int64)
    names = {int(i) & 0xFFFFFFFF: f"lg-{k}" for k, i in enumerate(ids)}
    rng = np.random.default_rng(args.seed)
    seq = np.zeros(n, np.int64)
    compact = tf.compact_state(world.players.capacity, world.hunts.capacity)
    wire = WireIndex(compact)
    tails, cache = tf.TailTable(), {}
    sizes = np.zeros(2 * n, np.int64)
    offsets = np.zeros(2 * n + 1, np.int64)
    out = np.zeros(1 << 20, np.uint8)
    keyframe_due = np.ones(n, np.uint8)
    totals = {1: [0, 0], 2: [0, 0]}
    p_move = args.rate / args.tick_rate
    for t in range(args.warmup + args.ticks):
        movers = np.flatnonzero(rng.random(n) < p_move)
        seq[movers] += 1
        d = DIRS[rng.integers(0, 8, len(movers))]
        world.moves.put_many(ids[movers], seq[movers], d[:, 0], d[:, 1])
        result = world.tick()
        slots = (ids & 0xFFFFFFFF).astype(np.int32)
        obs = np.concatenate([slots, slots])
        hunts = world.players.hunt[obs].astype(np.int32)
        versions = np.repeat(np.array([1, 2], np.uint8), n)
        keyframe_due_now = keyframe_due.copy()
        kf = np.concatenate([keyframe_due, keyframe_due])
        keyframe_due[:] = 0
        one = world.visibility(slots, keyframe_due_now)
        assert not one.truncated.any(), "raise max_visible"
        # Each player twice (version 1, then 2): the records and offsets of both halves.
        m = int(one.offsets[n])
        records = np.concatenate([one.records[:m], one.records[:m]])
        vis = argparse.Namespace(offsets=np.concatenate([one.offsets[:n + 1],
                                                         one.offsets[1:n + 1] + m]),
                                 records=records)
        obs_tail = np.zeros(2 * n, np.int32)

        def everyone(h: int) -> list[NameEntry]:
            return [NameEntry(s, int(world.players.gen[s]), names[s])
                    for s in world.active_slots(h).tolist()]

        build_tails(world, result, tails, hunts, kf, obs_tail, names.get, everyone, versions,
                    wire, compact, cache)
        bound = tf.frame_sizes(2 * n, versions, vis.offsets, obs_tail, tails.rows, sizes)
        if bound > len(out):
            out = np.zeros(2 * bound, np.uint8)
        P = world.players
        tf.write_frames(2 * n, result.tick, obs, hunts, versions, kf, tf.seen_of(vis), obs_tail,
                        tails.rows, tails.data,
                        tf.Players(P.last_seq, P.x.view(np.int64), P.y.view(np.int64), P.score,
                                   P.hint), compact, out, offsets, sizes)
        if t >= args.warmup:
            for v, part in ((1, sizes[:n]), (2, sizes[n:])):
                totals[v][0] += int(part.sum())
                totals[v][1] += n
    timing = time_kernel(n, result.tick, obs, hunts, versions, kf, vis, obs_tail, tails,
                         world.players, compact) if args.time else {}
    vis_mean = float(np.diff(vis.offsets)[n:].mean())
    per = {v: b / m for v, (b, m) in totals.items()}
    return {"hunts": args.hunts, "players": args.players, "world_size": args.world_size,
            "rate": args.rate, "tick_rate": args.tick_rate, "ticks": args.ticks,
            "bytes_per_message_v1": round(per[1], 1), "bytes_per_message_v2": round(per[2], 1),
            "ratio": round(per[2] / per[1], 3), "records_per_message_last_tick": round(vis_mean, 1),
            **timing}


def time_kernel(n, tick, obs, hunts, versions, kf, vis, obs_tail, tails, P, compact) -> dict:
    """The frame kernel's time for the last tick's n frames of each version (ms, best of 20;
    what the slots were sent is put back before each call, so each call writes the tick's
    real diffs)."""
    pl = tf.Players(P.last_seq, P.x.view(np.int64), P.y.view(np.int64), P.score, P.hint)
    saved = [a.copy() for a in compact]
    out = {}
    for v, part in ((1, slice(0, n)), (2, slice(n, 2 * n))):
        offsets = vis.offsets[part.start:part.stop + 1]
        seen = argparse.Namespace(offsets=offsets - offsets[0], records=vis.records[offsets[0]:])
        sizes = np.zeros(n, np.int64)
        bound = tf.frame_sizes(n, versions[part], seen.offsets, obs_tail[part], tails.rows,
                               sizes)
        buf, offs, best = np.zeros(bound, np.uint8), np.zeros(n + 1, np.int64), 1e9
        for _ in range(20):
            for a, b in zip(compact, saved, strict=True):
                a[:] = b
            t0 = time.perf_counter()
            tf.write_frames(n, tick, obs[part], hunts[part], versions[part], kf[part],
                            tf.seen_of(seen), obs_tail[part], tails.rows, tails.data, pl,
                            compact, buf, offs, sizes)
            best = min(best, time.perf_counter() - t0)
        out[f"kernel_ms_v{v}"] = round(best * 1e3, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hunts", type=int, default=50)
    p.add_argument("--players", type=int, default=20, help="players per hunt")
    p.add_argument("--world-size", type=float, default=1000.0, help="world units")
    p.add_argument("--rate", type=float, default=10.0, help="moves per second per player")
    p.add_argument("--tick-rate", type=int, default=20)
    p.add_argument("--ticks", type=int, default=200, help="ticks measured")
    p.add_argument("--warmup", type=int, default=20, help="ticks before measuring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time", action="store_true",
                   help="also time the frame kernel on the last tick, per version (ms)")
    print(json.dumps(run(p.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
