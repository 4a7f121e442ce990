"""Benchmark of durability (issue 4): journal append, snapshot, recovery and replay.

    .venv/bin/python perf/bench_journal.py                 # full run, about a minute
    .venv/bin/python perf/bench_journal.py --quick --out /tmp/b   # smoke run, a few seconds

Figures, against the issue's targets on this machine:

- append: ``Journal.append_tick`` per tick with 1,000 moves (20,000 moves per second
  at 20 Hz), a few joins and leaves, a state hash every 20 ticks; fsync every tick,
  every 50 ms, and off. Target: <= 10% of the 50 ms tick (5 ms), judged on p99.
- snapshot: what ``maybe_snapshot`` costs the tick thread for 100k players
  (``World.snapshot()`` and the meta callable) and the background write.
- recovery: ``recover()`` of a 100k-player hunt from a snapshot plus 1,000 journaled
  ticks, state hashes verified. Target: < 5 s (JIT already warm, as in the server).
- replay: re-simulating 10k players at 20 Hz with 1,000 moves per tick, without and
  with ``--verify``. Target: >= 50x real time.

Timings are reported, never asserted: the machine is shared. The data dirs are
temporary directories on the same disk as ``--scratch`` (default: the system's).
Writes ``bench_journal.json`` to ``--out`` (default perf/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.durability import Journal, recover  # noqa: E402
from tickengine import EngineConfig, HuntParams, World, warm_up  # noqa: E402

TICK_RATE = 20
TICK_BUDGET_MS = 1000 / TICK_RATE
MOVES_PER_TICK = 1000
TARGET_APPEND_PCT = 10.0
TARGET_RECOVERY_S = 5.0
TARGET_REPLAY_X = 50.0


def stats(ns: list[int] | np.ndarray) -> dict[str, float]:
    """p50 / p99 / max / mean of nanosecond samples, in milliseconds."""
    ms = np.asarray(ns, np.float64) / 1e6
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "mean": float(ms.mean()), "n": int(ms.shape[0])}


def hunt_for(players: int) -> HuntParams:
    side = float(round((players * 400) ** 0.5))
    return HuntParams(name="bench", width=side, height=side, treasures=max(10, players // 10),
                      max_players=players, seed=1, tick_rate=TICK_RATE)


def moves_for(rng: np.random.Generator, ids: np.ndarray, seq: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pick = ids[rng.integers(0, ids.shape[0], MOVES_PER_TICK)]
    return (pick, np.full(MOVES_PER_TICK, seq, np.int64),
            rng.uniform(-1, 1, MOVES_PER_TICK), rng.uniform(-1, 1, MOVES_PER_TICK))


def bench_append(scratch: Path, fsync: str | int, ticks: int) -> dict[str, Any]:
    """append_tick alone (the world does not change what the journal costs)."""
    rng = np.random.default_rng(1)
    world = World(EngineConfig(max_players=10_000, max_treasures=1_000), [hunt_for(10_000)])
    ids = world.join_many(0, 10_000)
    world.tick()
    data = Path(tempfile.mkdtemp(dir=scratch))
    inputs = [moves_for(rng, ids, k + 1) for k in range(ticks)]
    fake_hash = "ab" * 16
    ns, cpu_ns = [], []
    with Journal(data, fsync=fsync, snapshot_every=0) as journal:
        journal.start(world, {})
        t0 = world.tick_number
        for k in range(ticks):
            tick = t0 + k + 1
            joins = [(int(ids[k % 10_000]), 0, f"player-{k}", rng.bytes(16)) for _ in range(2)]
            c, cpu = time.perf_counter_ns(), time.thread_time_ns()
            journal.append_tick(tick, joins=joins, leaves=[int(ids[(k + 7) % 10_000])],
                                moves=inputs[k],
                                state_hash=fake_hash if journal.wants_hash(tick) else None)
            ns.append(time.perf_counter_ns() - c)
            cpu_ns.append(time.thread_time_ns() - cpu)
        st = journal.stats
    shutil.rmtree(data)
    s = stats(ns)
    return {"fsync": fsync, "ticks": ticks, "moves_per_tick": MOVES_PER_TICK,
            "bytes_per_tick": st.bytes / ticks, "fsyncs": st.fsyncs, "append_ms": s,
            # CPU of the calling thread: what the tick thread pays whatever the disk does.
            "append_cpu_ms": stats(cpu_ns),
            "pct_of_tick_p50": 100 * s["p50"] / TICK_BUDGET_MS,
            "pct_of_tick_p99": 100 * s["p99"] / TICK_BUDGET_MS}


def journaled_world(scratch: Path, players: int, ticks: int, hash_every: int
                    ) -> tuple[Path, dict[int, str], dict[str, Any]]:
    """A data dir: ``players`` joined, a snapshot, then ``ticks`` journaled ticks of moves."""
    rng = np.random.default_rng(2)
    world = World(EngineConfig(max_players=players, max_treasures=max(10, players // 10)),
                  [hunt_for(players)])
    ids = world.join_many(0, players)
    world.tick()
    data = Path(tempfile.mkdtemp(dir=scratch))
    names = {str(pid): f"player-{k}" for k, pid in enumerate(ids.tolist())}
    hashes = {}
    journal = Journal(data, snapshot_every=0, hash_every=hash_every)
    c = time.perf_counter()
    journal.start(world, {"names": names})
    start_s = time.perf_counter() - c
    c = time.perf_counter()
    for k in range(ticks):
        moves = moves_for(rng, ids, k + 1)
        world.moves.put_many(*moves)
        world.tick()
        tick = world.tick_number
        h = world.state_hash() if journal.wants_hash(tick) else None
        if h is not None:
            hashes[tick] = h
        journal.append_tick(tick, moves=moves, state_hash=h)
    run_s = time.perf_counter() - c
    # What maybe_snapshot costs the tick thread at this size, and the background write.
    journal.snapshot_every = tick = world.tick_number
    c = time.perf_counter()
    journal.maybe_snapshot(world, lambda: {"names": names})
    tick_thread_s = time.perf_counter() - c
    # While the background thread writes, how long can the tick thread be kept waiting
    # (for the GIL)? Small steps of Python work, timed: the longest gap is the stall.
    stall_ns, last = 0, time.perf_counter_ns()
    while journal.snapshot_in_flight:
        sum(range(200))
        now = time.perf_counter_ns()
        stall_ns, last = max(stall_ns, now - last), now
    journal.close()
    st = journal.stats
    snapshot = {"players": players, "bytes": st.snapshot_bytes_last,
                "tick_thread_ms": 1e3 * tick_thread_s,
                "world_snapshot_and_meta_ms": 1e3 * st.snapshot_tick_last_s,
                "background_write_ms": 1e3 * st.snapshot_write_last_s,
                "tick_thread_max_stall_during_write_ms": stall_ns / 1e6,
                "start_with_base_snapshot_ms": 1e3 * start_s,
                "ticks_per_s_while_journaling": ticks / run_s}
    (data / f"snapshot-{tick:012d}.snap").unlink()  # recovery must replay the journal
    hashes[tick] = world.state_hash()
    return data, hashes, snapshot


def bench_recovery(scratch: Path, players: int, ticks: int) -> tuple[dict, dict]:
    data, hashes, snapshot = journaled_world(scratch, players, ticks, hash_every=20)
    c = time.perf_counter()
    rec = recover(data)
    wall = time.perf_counter() - c
    r = rec.report
    assert rec.state_hash == hashes[rec.tick] and rec.tick == ticks + 1, "recovery is wrong"
    shutil.rmtree(data)
    return {"players": players, "ticks": r.ticks_replayed, "seconds": wall,
            "snapshot_seconds": r.snapshot_seconds, "replay_seconds": r.replay_seconds,
            "hashes_verified": r.hashes_verified, "target_s": TARGET_RECOVERY_S}, snapshot


def bench_replay(scratch: Path, players: int, ticks: int) -> dict[str, Any]:
    data, hashes, _ = journaled_world(scratch, players, ticks, hash_every=20)
    out: dict[str, Any] = {"players": players, "ticks": ticks, "tick_rate": TICK_RATE,
                           "target_x": TARGET_REPLAY_X}
    for verify in (False, True):
        rec = recover(data, earliest=True, verify=verify)
        assert rec.state_hash == hashes[rec.tick], "replay is wrong"
        tps = rec.report.ticks_replayed / rec.report.replay_seconds
        key = "verify" if verify else "plain"
        out[key] = {"ticks_per_s": tps, "realtime_factor": tps / TICK_RATE,
                    "hashes_verified": rec.report.hashes_verified}
    shutil.rmtree(data)
    return out


def render(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    t = Table(title=f"Journal append per tick ({MOVES_PER_TICK:,} moves, "
                    f"{MOVES_PER_TICK * TICK_RATE:,} per second at {TICK_RATE} Hz)",
              title_justify="left")
    for col in ("fsync", "ticks", "bytes/tick", "p50 ms", "p99 ms", "max ms", "mean ms",
                "p99 % of tick", "CPU mean ms"):
        t.add_column(col, justify="right")
    for a in results["append"]:
        s = a["append_ms"]
        t.add_row(str(a["fsync"]), f"{a['ticks']:,}", f"{a['bytes_per_tick']:,.0f}",
                  f"{s['p50']:.3f}", f"{s['p99']:.3f}", f"{s['max']:.3f}", f"{s['mean']:.3f}",
                  f"{a['pct_of_tick_p99']:.2f}%", f"{a['append_cpu_ms']['mean']:.3f}")
    console.print(t)
    s = results["snapshot"]
    t = Table(title=f"Snapshot of {s['players']:,} players", show_header=False,
              title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("Size", f"{s['bytes'] / 1e6:,.1f} MB")
    t.add_row("Tick thread", f"{s['tick_thread_ms']:.1f} ms (World.snapshot() and meta: "
                             f"{s['world_snapshot_and_meta_ms']:.1f} ms), once per snapshot")
    t.add_row("Background write", f"{s['background_write_ms']:.1f} ms (JSON, write, fsync, "
                                  "rename, prune)")
    t.add_row("Tick thread stall", f"{s['tick_thread_max_stall_during_write_ms']:.1f} ms at "
                                   "most, while the background write held the GIL")
    console.print(t)
    r, p = results["recovery"], results["replay"]
    t = Table(title="Recovery and replay", title_justify="left")
    for col in ("what", "figure", "target", "verdict"):
        t.add_column(col)
    for row in results["targets"]:
        t.add_row(row["what"], row["figure"], row["target"],
                  "[green]met[/]" if row["met"] else "[red]missed[/]")
    console.print(t)
    load = results["meta"]
    console.print(f"load average before / after: {load['load_before']} / {load['load_after']} "
                  f"on {load['cpus']} CPUs, engine on {load['threads']} Numba threads (wall "
                  "times above include waiting for the CPUs)")
    console.print(f"recovery: snapshot restored in {r['snapshot_seconds']:.2f} s, "
                  f"{r['ticks']:,} ticks re-run in {r['replay_seconds']:.2f} s "
                  f"({r['hashes_verified']} hashes verified); replay with --verify: "
                  f"{p['verify']['realtime_factor']:,.0f}x real time")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    tick = next(a for a in results["append"] if a["fsync"] == "tick")
    r, p = results["recovery"], results["replay"]
    return [
        {"what": "append, fsync every tick (p99)",
         "figure": f"{tick['append_ms']['p99']:.3f} ms = {tick['pct_of_tick_p99']:.2f}% of "
                   f"{TICK_BUDGET_MS:.0f} ms",
         "target": f"<= {TARGET_APPEND_PCT:.0f}%", "met": tick["pct_of_tick_p99"]
         <= TARGET_APPEND_PCT},
        {"what": f"recovery, {r['players']:,} players + {r['ticks']:,} ticks",
         "figure": f"{r['seconds']:.2f} s", "target": f"< {TARGET_RECOVERY_S:.0f} s",
         "met": r["seconds"] < TARGET_RECOVERY_S},
        {"what": f"replay, {p['players']:,} players at {TICK_RATE} Hz",
         "figure": f"{p['plain']['realtime_factor']:,.0f}x real time "
                   f"({p['plain']['ticks_per_s']:,.0f} ticks/s)",
         "target": f">= {TARGET_REPLAY_X:.0f}x", "met": p["plain"]["realtime_factor"]
         >= TARGET_REPLAY_X},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few ticks (smoke test; figures not comparable)")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results",
                        help="directory for bench_journal.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="Numba threads for the engine (default: all; on a loaded "
                             "machine 1 is faster)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="where the temporary data dirs go (default: the system's temp)")
    args = parser.parse_args(argv)
    quick = args.quick
    started = time.perf_counter()
    import numba

    if args.threads is not None:
        numba.set_num_threads(args.threads)
    report = warm_up()
    scratch = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.scratch))
    try:
        append_ticks = 100 if quick else 1200
        results: dict[str, Any] = {
            "meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick,
                     "cpus": os.cpu_count(), "python": platform.python_version(),
                     "numpy": np.__version__, "scratch": str(scratch),
                     "threads": numba.get_num_threads(),
                     "warm_up_s": report.seconds,
                     "load_before": [round(x, 2) for x in os.getloadavg()]},
            "append": [bench_append(scratch, fsync, append_ticks)
                       for fsync in ("tick", 50, "off")],
        }
        recovery_players, recovery_ticks = (10_000, 50) if quick else (100_000, 1000)
        results["recovery"], results["snapshot"] = bench_recovery(
            scratch, recovery_players, recovery_ticks)
        results["replay"] = bench_replay(scratch, 10_000, 100 if quick else 1200)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["targets"] = targets(results)
    results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["elapsed_s"] = time.perf_counter() - started
    render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_journal.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {path} ({results['meta']['elapsed_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
