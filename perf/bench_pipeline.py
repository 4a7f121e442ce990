"""What the worker's part of one hunt's tick costs, phase by phase: everything but the writes.

    .venv/bin/python perf/bench_pipeline.py                    # 1,000 and 2,000 players, ~1 min
    .venv/bin/python perf/bench_pipeline.py --commit main~3    # and an old revision, interleaved
    .venv/bin/python perf/bench_pipeline.py --quick            # smoke run, a few seconds

Drives the server's own ``TickPipeline.compute`` (server/hunt/_pipeline.py) for one hunt
of N players shaped as the load test's (``perf/loadtest.py --clients N``): the demo hunt
(1000 x 1000 world units, view radius 150, 100 world units/s at 20 Hz), every player an
observer speaking protocol version 2, half of them moving each tick (each player every
other tick, in one of 8 random directions, as perf/loadgen.py sends them), no journal, one
Numba thread (the server's default ``--tick-threads 1``).

Per tick it takes the CPU time (``time.thread_time``) of the whole ``compute`` and of the
calls inside it: ``world.visibility``, ``build_tails``, ``frame_sizes`` and
``write_frames`` (each wrapped in place for the run, so the pipeline's own code runs),
plus the engine's phases as the World reports them (``TickResult.phase_ns``). ``other``
is what the whole leaves to none of them (moves into the engine, Python glue). Also:
records and bytes per tick, and ns per record of visibility and frames.

``--commit REV`` runs the same measurement on that revision's ``server`` and
``tickengine`` (exported with ``git archive`` as perf/loadtest.py does), each repeat
running the old and the current code one after the other, so that the machine's load
hits both alike; every figure is the least over ``--repeat`` repeats (a shared machine
only ever adds time). Both are fed identical moves, so the digest of every frame they
wrote must agree: a differing digest means the wire bytes changed.

Figures are printed and written to ``bench_pipeline.json`` under ``--out``; nothing is
asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Phases in the order printed; the engine's own names come first.
CALLS = ("visibility", "tails", "frame_sizes", "write_frames")


def _timed(fn: Any, into: dict[str, float], name: str) -> Any:
    """``fn`` that adds its CPU seconds to ``into[name]`` at each call."""
    def call(*a: Any, **k: Any) -> Any:
        t0 = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            into[name] += time.thread_time() - t0
    return call


def measure(players: int, ticks: int, warm: int, seed: int) -> dict[str, Any]:
    """Ticks of one hunt of ``players`` through the real TickPipeline (in this process's
    ``server`` and ``tickengine``); per-tick CPU ms per phase and the frames' digest."""
    import numba

    from server._config import ServeConfig
    from server.hunt import _pipeline
    from server.hunt import _tickframes as tf
    from server.hunt._players import Observers, TickInputs
    from server.protocol import MoveBatch, NameEntry
    from tickengine import World

    cfg = ServeConfig()
    world = World(cfg.world.engine, cfg.world.hunts)
    ids = world.join_many(0, players)
    slots = (ids & 0xFFFFFFFF).astype(np.int32)
    names = {int(s): f"p{s}" for s in slots}
    entries = [NameEntry(int(s), int(i >> 32), names[int(s)])
               for s, i in zip(slots, ids, strict=True)]
    pipeline = _pipeline.TickPipeline(world, None, 1, dict, names.get, lambda h: entries)

    obs = Observers(world.players.capacity)
    order = np.argsort(slots)
    obs.count = players
    obs._slots[:players] = slots[order]
    obs._versions[:players] = 2
    obs.slots, obs.hunts = obs._slots[:players], obs._hunts[:players]
    obs.versions = obs._versions[:players]
    keyframe = np.ones(players, np.uint8)  # the first TICK of a client is a keyframe

    spent = dict.fromkeys(CALLS, 0.0)
    world.visibility = _timed(world.visibility, spent, "visibility")
    _pipeline.build_tails = _timed(_pipeline.build_tails, spent, "tails")
    tf.frame_sizes = _timed(tf.frame_sizes, spent, "frame_sizes")
    tf.write_frames = _timed(tf.write_frames, spent, "write_frames")

    rng = np.random.default_rng(seed)
    dirs = np.array([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)],
                    np.float64)
    seq = np.zeros(players, np.int64)
    batch = MoveBatch()
    digest = hashlib.blake2b(digest_size=16)
    rows: dict[str, list[float]] = {}
    records = []
    nbytes = []
    numba.set_num_threads(1)
    for t in range(warm + ticks):
        movers = np.flatnonzero((np.arange(players) + t) % 2 == 0)
        m = len(movers)
        seq[movers] += 1
        batch.ids[:m] = ids[movers]
        batch.seqs[:m] = seq[movers]
        batch.dx[:m], batch.dy[:m] = dirs[rng.integers(0, 8, m)].T
        batch.count = m
        for k in spent:
            spent[k] = 0.0
        t0 = time.thread_time()
        frames = pipeline.compute(batch, TickInputs(), obs, keyframe)
        total = time.thread_time() - t0
        batch.clear()
        keyframe[:] = 0
        end = int(frames.offsets[frames.count])
        digest.update(frames.out[:end].tobytes())
        if t < warm:
            continue
        phases = {name: ns * 1e-6 for name, ns in
                  zip(_pipeline.ENGINE_PHASES, frames.result.phase_ns, strict=True)}
        phases.update({k: v * 1e3 for k, v in spent.items()})
        phases["other"] = total * 1e3 - sum(phases.values())
        phases["total"] = total * 1e3
        for k, v in phases.items():
            rows.setdefault(k, []).append(v)
        records.append(int(frames.vis.offsets[frames.count]))
        nbytes.append(end)
    out: dict[str, Any] = {"players": players, "ticks": ticks, "digest": digest.hexdigest(),
                           "records_per_tick": float(np.median(records)),
                           "bytes_per_tick": float(np.median(nbytes))}
    out["ms"] = {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
                 for k, v in rows.items()}
    return out


def child(args: argparse.Namespace) -> int:
    """One run of every size in this process, the code imported from ``--src``."""
    sys.path.insert(0, str(args.src))
    import tickengine
    assert Path(tickengine.__file__).is_relative_to(args.src), tickengine.__file__
    res = [measure(n, args.ticks, args.warm, args.seed) for n in args.clients]
    print(json.dumps(res))
    return 0


def run_child(src: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--src", str(src),
           "--ticks", str(args.ticks), "--warm", str(args.warm), "--seed", str(args.seed),
           "--clients", *map(str, args.clients)]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"the run of {src} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def least(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per size and phase, the least p50 and p99 over the repeats."""
    out = []
    for sizes in zip(*runs, strict=True):
        first = dict(sizes[0])
        first["ms"] = {k: {q: min(r["ms"][k][q] for r in sizes) for q in ("p50", "p99")}
                       for k in first["ms"]}
        first["digests"] = sorted({r["digest"] for r in sizes})
        out.append(first)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_pipeline.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1000, 2000],
                    help="players (all observers) of the hunt, one case each (1000 2000)")
    ap.add_argument("--ticks", type=int, default=300, help="measured ticks per case (300)")
    ap.add_argument("--warm", type=int, default=20, help="ticks run first, not measured (20)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each code; figures are the least over them (3)")
    ap.add_argument("--commit", help="also measure this revision's code, in the same run")
    ap.add_argument("--seed", type=int, default=1, help="seed of the moves (1)")
    ap.add_argument("--quick", action="store_true", help="200 players, 20 ticks, one repeat")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.ticks, args.warm, args.repeat = [200], 20, 3, 1
    if args.child:
        return child(args)

    sys.path.insert(0, str(HERE))
    from loadtest import server_source
    from rich.console import Console
    from rich.table import Table

    variants = [server_source(None)]
    if args.commit:
        old = server_source(args.commit)
        if old[1] == variants[0][1]:  # the same revision twice: tell the runs apart
            variants[0] = (variants[0][0], variants[0][1] + " (tree)")
        variants.insert(0, old)
    runs: dict[str, list] = {rev: [] for _, rev in variants}
    for _ in range(args.repeat):
        for src, rev in variants:
            runs[rev].append(run_child(src, args))
    result = {rev: least(r) for rev, r in runs.items()}

    console = Console(width=140)
    revs = list(result)
    for i, n in enumerate(args.clients):
        rows = {rev: result[rev][i] for rev in revs}
        table = Table(title=f"{n} players, one hunt: CPU ms per tick, least of {args.repeat}",
                      title_justify="left")
        table.add_column("phase")
        for rev in revs:
            table.add_column(f"{rev} p50", justify="right")
            table.add_column(f"{rev} p99", justify="right")
        if len(revs) == 2:
            table.add_column("new/old p50", justify="right")
        for phase in rows[revs[-1]]["ms"]:
            cells = []
            for rev in revs:
                ms = rows[rev]["ms"].get(phase, {"p50": float("nan"), "p99": float("nan")})
                cells += [f"{ms['p50']:.3f}", f"{ms['p99']:.3f}"]
            if len(revs) == 2:
                old = rows[revs[0]]["ms"].get(phase, {"p50": float("nan")})["p50"]
                new = rows[revs[1]]["ms"][phase]["p50"]
                cells.append(f"{new / old:.2f}x" if old > 0.005 else "-")
            table.add_row(phase, *cells)
        console.print(table)
        for rev in revs:
            r = rows[rev]
            per = 1e6 / max(1.0, r["records_per_tick"])
            frames = r["ms"]["write_frames"]["p50"] + r["ms"]["frame_sizes"]["p50"]
            console.print(f"  {rev}: {r['records_per_tick']:.0f} records and "
                          f"{r['bytes_per_tick']:.0f} bytes per tick; per record (p50) "
                          f"visibility {r['ms']['visibility']['p50'] * per:.1f} ns, frames "
                          f"{frames * per:.1f} ns; frames digest {', '.join(r['digests'])}")
        if len(revs) == 2:
            same = rows[revs[0]]["digests"] == rows[revs[1]]["digests"]
            console.print(f"  frames {'identical' if same else 'DIFFER'} between {revs[0]} "
                          f"and {revs[1]}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_pipeline.json"
    path.write_text(json.dumps({"meta": {"time": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                               time.gmtime()),
                                         "load_average": os.getloadavg(),
                                         "repeat": args.repeat, "ticks": args.ticks},
                                "runs": result}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
