"""Many journals made durable at once (``settle_together``) against one after the other.

A server of many small hunts keeps a journal per hunt; with ``fsync = "tick"`` each
hunt's tick owes a write and a sync. This times, for N journals on the same disk, one
round of N small records (a tick of 10 moves each) made durable:

- ``in turn``: ``Journal.settle()`` of each, one after the other (a write and an
  ``fdatasync`` each, from Python);
- ``together``: ``settle_together(journals)``, what the server's disk lane does: every
  write in one compiled call without the GIL, then one ``syncfs`` for the filesystem.

Figures: wall and CPU (this process, user + system) milliseconds per round, the least
and the median over ``--rounds`` rounds, the two alternating round by round; and the
ratio of the medians. Timings are reported, never asserted.

    .venv/bin/python perf/bench_syncs.py                   # N = 1, 5, 10, 50
    .venv/bin/python perf/bench_syncs.py --quick --out /tmp/b   # smoke run

Writes ``bench_syncs.json`` to ``--out`` (default perf/results/). The journals are
made in a temporary directory under ``--scratch`` (default: the system's).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(n: int, rounds: int, scratch: str | None) -> dict[str, Any]:
    from server.durability import Journal, settle_together
    from server.durability._together import SYNCFS
    from tickengine import EngineConfig, HuntParams, World

    moves = (np.arange(10, dtype=np.int64), np.arange(10, dtype=np.int64),
             np.zeros(10), np.zeros(10))
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        worlds, journals = [], []
        for k in range(n):
            world = World(EngineConfig(max_players=16, max_treasures=16),
                          [HuntParams(name="h", width=100, height=100, treasures=4)])
            journal = Journal(Path(tmp) / f"j{k}", snapshot_every=0, background=False)
            journal.start(world, {})
            worlds.append(world)
            journals.append(journal)
        times: dict[str, list[tuple[float, float]]] = {"in turn": [], "together": []}
        try:
            for r in range(2 * rounds + 2):
                way = "in turn" if r % 2 == 0 else "together"
                for world, journal in zip(worlds, journals, strict=True):
                    world.tick()
                    journal.append_tick(world.tick_number, moves=moves, defer=True)
                w0, c0 = time.perf_counter(), _cpu()
                if way == "in turn":
                    for journal in journals:
                        journal.settle()
                else:
                    errors = settle_together(journals)
                    assert errors == [None] * n, errors
                w, c = time.perf_counter() - w0, _cpu() - c0
                if r >= 2:  # the first round of each compiles or opens files
                    times[way].append((w * 1e3, c * 1e3))
        finally:
            for journal in journals:
                journal.close()
    out: dict[str, Any] = {"journals": n, "rounds": rounds, "syncfs": SYNCFS}
    for way, rows in times.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        out[way] = {"wall_ms_min": min(walls), "wall_ms_median": statistics.median(walls),
                    "cpu_ms_median": statistics.median(cpus)}
    out["wall_ratio"] = out["in turn"]["wall_ms_median"] / out["together"]["wall_ms_median"]
    out["cpu_ratio"] = out["in turn"]["cpu_ms_median"] / max(out["together"]["cpu_ms_median"],
                                                              1e-9)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Figures: wall and CPU ms per round, in turn "
                                        "against together (see the module docstring).")
    ap.add_argument("--journals", default="1,5,10,50",
                    help="comma-separated counts of journals (default 1,5,10,50)")
    ap.add_argument("--rounds", type=int, default=200, help="rounds of each way per count")
    ap.add_argument("--scratch", default=None, help="where the journals are made (a disk)")
    ap.add_argument("--out", default=str(ROOT / "perf" / "results"), help="JSON directory")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 and 5 journals, "
                                                        "10 rounds")
    args = ap.parse_args(argv)
    counts = [1, 5] if args.quick else [int(x) for x in args.journals.split(",")]
    rounds = 10 if args.quick else args.rounds
    print(f"{'journals':>8}  {'in turn wall / cpu ms':>22}  {'together wall / cpu ms':>23}"
          f"  {'wall x':>6}  {'cpu x':>6}")
    rows = []
    for n in counts:
        row = measure(n, rounds, args.scratch)
        rows.append(row)
        a, b = row["in turn"], row["together"]
        print(f"{n:>8}  {a['wall_ms_median']:>10.2f} / {a['cpu_ms_median']:<9.2f}"
              f"  {b['wall_ms_median']:>10.2f} / {b['cpu_ms_median']:<10.2f}"
              f"  {row['wall_ratio']:>6.1f}  {row['cpu_ratio']:>6.1f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_syncs.json"
    path.write_text(json.dumps({"stamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
