"""Tick benchmark: the Numba engine against its targets, a NumPy baseline and the reference.

    python perf/bench_tick.py [--sizes 1000,10000,100000,1000000] [--ticks N]
                              [--threads 1,2] [--out perf/results] [--quick]

Every size is one hunt of N "hunter" bots at constant density (perf/numpy_rules.py,
``bench_hunt``). Per size and thread count: 20 warm-up ticks, then timed ticks
(``bots.decide()`` is timed apart, not counted in the tick), each followed by
``world.visibility()`` for min(5000, N) observers. The NumPy baseline and the
pure-Python reference play the same game in lockstep with an engine world (same
bots' moves) and their agreement with it is reported. Allocations per tick are
measured under tracemalloc (and Numba's runtime counters) at two sizes.

Targets are reported (MET / MISSED), never asserted: the machine is noisy.
Writes ``bench_tick.json`` (every figure) and ``bench_tick.png`` to ``--out``.
perf/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from bench_machine import (
    ENGINE_DIR,
    CpuMeter,
    cpu_model,
    engine_source,
    ms_stats,
    noise_probe,
    nrt_allocations,
)
from bench_report import plot, ratios, render, targets
from numpy_rules import Agreement, NumpyHunt, bench_world, lockstep, self_check
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import tickengine
from tickengine import PHASES, make_player_id
from tickengine.reference import ReferenceWorld

#: Observers of the "tick + visibility" figure (fewer when the hunt has fewer players).
MAX_OBSERVERS = 5000
#: Other processes' load (cores) above which a timed run is repeated; attempts in all.
QUIET_CORES = 0.3
ATTEMPTS = 3
#: Ticks run under tracemalloc before allocations are counted.
SETTLE_TICKS = 8


console = Console()
if not console.is_terminal:
    console = Console(width=140)  # logs and pipes: wide enough for the tables


class Plan:
    """What a run measures, from the command line."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        default_sizes = "1000,5000" if args.quick else "1000,10000,100000,1000000"
        self.sizes = sorted({int(s) for s in (args.sizes or default_sizes).split(",")})
        if args.quick:
            self.sizes = [n for n in self.sizes if n < 1_000_000]
        limit = numba.config.NUMBA_NUM_THREADS
        wanted = [int(t) for t in args.threads.split(",")]
        self.threads = sorted({t for t in wanted if 1 <= t <= limit})
        self.skipped_threads = sorted(set(wanted) - set(self.threads))
        self.fixed_ticks = args.ticks
        self.warm_ticks = 5 if args.quick else 20
        self.numpy_sizes = [n for n in self.sizes if n <= 100_000]
        self.reference_sizes = [n for n in self.sizes if n <= (1000 if args.quick else 10_000)]
        small = [n for n in self.sizes if n <= 100_000]
        self.alloc_sizes = ([n for n in small if n in (10_000, 100_000)] or small[:2])[:2]
        self.alloc_ticks = 10 if args.quick else 50
        self.self_check = (500, 20) if args.quick else (2000, 100)
        self.attempts = 1 if args.quick else ATTEMPTS  # a smoke test never waits for quiet

    def ticks(self, n: int) -> int:
        if self.fixed_ticks:
            return self.fixed_ticks
        if self.quick:
            return 30
        return 200 if n <= 100_000 else 50

    def numpy_ticks(self, n: int) -> int:
        t = self.ticks(n)
        return t if n <= 10_000 else max(10, t // 4)

    def reference_ticks(self, n: int) -> int:
        if self.quick:
            return 2
        return 5 if n <= 1000 else 2

    def total_work(self) -> int:
        work = sum(len(self.threads) * (self.warm_ticks + self.ticks(n)) for n in self.sizes)
        work += sum(self.numpy_ticks(n) for n in self.numpy_sizes)
        work += sum(self.reference_ticks(n) + 1 for n in self.reference_sizes)
        work += len(self.alloc_sizes) * (2 * self.alloc_ticks + SETTLE_TICKS)
        return work + self.self_check[1]


# ---------------------------------------------------------------- measurements


def quietest(run: Callable[[], dict[str, Any]], plan: Plan, progress, task, work: int
             ) -> dict[str, Any]:
    """Run a timed measurement; repeat it while other processes disturbed it.

    If other processes kept more than ``QUIET_CORES`` busy meanwhile, the run is
    repeated (up to ``plan.attempts`` in all) and the quietest attempt is kept,
    chosen by other processes' load, never by speed. Every attempt is recorded.
    """
    attempts: list[dict[str, Any]] = []
    for attempt in range(plan.attempts):
        if attempt:
            progress.update(task, total=progress.tasks[0].total + work)
            time.sleep(2.0)  # let a burst of other work pass
        meter = CpuMeter()
        result = run()
        foreign = meter.foreign_cores()
        result["other_cores"] = None if foreign is None else foreign["other_processes"]
        result["steal_cores"] = None if foreign is None else foreign["steal"]
        attempts.append(result)
        if result["other_cores"] is None or result["other_cores"] <= QUIET_CORES:
            break
    best = min(attempts, key=lambda r: r["other_cores"] or 0.0)
    best["attempts"] = [{"tick_p50_ms": r["tick_ms"]["p50"], "other_cores": r["other_cores"]}
                        for r in attempts]
    return best


def measure_engine(world, bots, n: int, threads: int, plan: Plan, progress, task
                   ) -> dict[str, Any]:
    """Time ``plan.ticks(n)`` ticks (and the visibility after each) at a thread count."""
    numba.set_num_threads(threads)
    observers = np.arange(min(MAX_OBSERVERS, n), dtype=np.int32)
    for _ in range(plan.warm_ticks):
        bots.decide()
        world.tick()
        world.visibility(observers)
        progress.advance(task)
    progress.refresh()
    ticks = plan.ticks(n)

    def run() -> dict[str, Any]:
        tick_ns, decide_ns, vis_ns = (np.zeros(ticks, np.int64) for _ in range(3))
        phase_ns = np.zeros((ticks, len(PHASES)), np.int64)
        events = np.zeros((ticks, 3), np.int64)  # discoveries, respawns, moves applied
        records = 0
        gc.collect()
        for k in range(ticks):
            a = time.perf_counter_ns()
            bots.decide()
            b = time.perf_counter_ns()
            result = world.tick()
            c = time.perf_counter_ns()
            vis = world.visibility(observers)
            d = time.perf_counter_ns()
            tick_ns[k], decide_ns[k], vis_ns[k] = c - b, b - a, d - c
            phase_ns[k] = result.phase_ns
            events[k] = (result.discoveries.shape[0], result.respawns, result.moves_applied)
            records += int(vis.offsets[-1])
            if k % 10 == 9:  # drawing the bar between ticks, never during one
                progress.advance(task, 10)
                progress.refresh()
        progress.advance(task, ticks % 10)
        tick = ms_stats(tick_ns)
        return {
            "players": n, "threads": threads, "ticks": ticks,
            "treasures": world.treasures.used, "tick_ms": tick,
            "p99_over_p50": tick["p99"] / tick["p50"],
            "phase_p50_ms": {p: float(np.percentile(phase_ns[:, i], 50) / 1e6)
                             for i, p in enumerate(PHASES)},
            "phase_mean_ms": {p: float(phase_ns[:, i].mean() / 1e6)
                              for i, p in enumerate(PHASES)},
            "decide_ms": ms_stats(decide_ns),
            "observers": int(observers.shape[0]),
            "visibility_ms": ms_stats(vis_ns),
            "tick_visibility_ms": ms_stats(tick_ns + vis_ns),
            "visibility_records_per_tick": records / ticks,
            "discoveries_per_tick": float(events[:, 0].mean()),
            "respawns_per_tick": float(events[:, 1].mean()),
            "moves_applied_per_tick": float(events[:, 2].mean()),
        }

    return quietest(run, plan, progress, task, ticks)


def measure_numpy(world, bots, n: int, plan: Plan, progress, task) -> dict[str, Any]:
    """Time the NumPy baseline in lockstep with the engine world (same moves)."""
    numba.set_num_threads(max(plan.threads))
    ticks = plan.numpy_ticks(n)

    def run() -> dict[str, Any]:
        hunt = NumpyHunt.from_world(world)
        lockstep(world, bots, hunt, 3)  # first calls
        times = np.zeros(ticks, np.int64)
        agr = Agreement()
        done = 0
        while done < ticks:
            step = min(10, ticks - done)
            times[done:done + step], agr = lockstep(world, bots, hunt, step, agr)
            done += step
            progress.advance(task, step)
            progress.refresh()
        return {"players": n, "ticks": ticks, "tick_ms": ms_stats(times),
                "agreement": agr.to_dict()}

    return quietest(run, plan, progress, task, ticks)


def measure_reference(n: int, plan: Plan, progress, task) -> dict[str, Any]:
    """Time the pure-Python reference, fed the moves of an engine world's bots."""
    numba.set_num_threads(max(plan.threads))
    ticks = plan.reference_ticks(n)

    def run() -> dict[str, Any]:
        world, bots = bench_world(n)
        params = world.hunt_params[0]
        ref = ReferenceWorld(max_players=n, max_treasures=params.treasures, max_hunts=1)
        ref.add_hunt(params)
        ids = [ref.join(0) for _ in range(n)]
        if ids != bots.ids().tolist():
            raise RuntimeError("the reference and the engine gave the bots different ids")
        world.tick()
        ref.tick()  # the joins: untimed
        progress.advance(task)
        progress.refresh()
        P, mv = world.players, world.moves
        times = np.zeros(ticks, np.int64)
        hints_equal = 0
        for k in range(ticks):
            bots.decide()
            for s in np.flatnonzero(mv.seq[:n]).tolist():
                ref.put_move(make_player_id(s, P.gen[s]), int(mv.seq[s]), float(mv.dx[s]),
                             float(mv.dy[s]))
            start = time.perf_counter_ns()
            ref.tick()
            times[k] = time.perf_counter_ns() - start
            world.tick()
            ref_hints = np.fromiter((p.hint for p in ref.players[:n]), np.int8, n)
            hints_equal += int(np.count_nonzero(ref_hints == P.hint[:n]))
            progress.advance(task)
            progress.refresh()
        return {"players": n, "ticks": ticks, "tick_ms": ms_stats(times),
                "agreement": {"hints": hints_equal / (n * ticks)}}

    return quietest(run, plan, progress, task, ticks + 1)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64)
    if np.ptp(x) == 0:
        return 0.0
    return round(float(np.polyfit(x, y.astype(np.float64), 1)[0]), 3) + 0.0  # no "-0.0"


def measure_allocations(world, bots, n: int, plan: Plan, progress, task) -> dict[str, Any]:
    """Python/NumPy memory a tick allocates, under tracemalloc, after warm-up.

    - retained: blocks and bytes allocated by tickengine code during a tick and
      still alive after it, with every TickResult kept (what a tick hands back);
    - transient peak: the most traced memory in flight during a tick above its
      start (an array sized by players would show here);
    - leak: growth of tickengine's traced memory over as many ticks, results dropped;
    - Numba runtime (NRT) allocations per tick, which tracemalloc cannot see.
    """
    numba.set_num_threads(max(plan.threads))
    ticks = plan.alloc_ticks
    kept: list[Any] = [None] * (ticks + SETTLE_TICKS)
    cols = {k: np.zeros(ticks, np.int64) for k in
            ("blocks", "bytes", "peak", "nrt", "discoveries")}
    only_engine = [tracemalloc.Filter(True, os.path.join(ENGINE_DIR, "*"))]
    gc.collect()
    tracemalloc.start(1)
    try:
        # The first SETTLE_TICKS run the same code uncounted: first calls under
        # tracing allocate once, and NumPy's small cache of array shape blocks
        # empties after a few kept views; from then on every tick looks alike.
        for k in range(-SETTLE_TICKS, ticks):
            bots.decide()
            before = tracemalloc.take_snapshot().filter_traces(only_engine)
            nrt0 = nrt_allocations()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            kept[k] = world.tick()
            peak = tracemalloc.get_traced_memory()[1]
            nrt1 = nrt_allocations()
            after = tracemalloc.take_snapshot().filter_traces(only_engine)
            progress.advance(task)
            if k < 0:
                continue
            diff = after.compare_to(before, "filename")
            cols["blocks"][k] = sum(d.count_diff for d in diff)
            cols["bytes"][k] = sum(d.size_diff for d in diff)
            cols["peak"][k] = peak - base
            cols["nrt"][k] = -1 if nrt0 is None or nrt1 is None else nrt1 - nrt0
            cols["discoveries"][k] = kept[k].discoveries.shape[0]
        del kept, before, after, diff
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces(only_engine)
        for _ in range(ticks):
            bots.decide()
            world.tick()
            progress.advance(task)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(only_engine)
        leak = sum(d.size_diff for d in after.compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    progress.refresh()

    def span(c: str) -> dict[str, float]:
        v = cols[c]
        return {"median": float(np.median(v)), "min": int(v.min()), "max": int(v.max())}

    return {
        "players": n, "ticks": ticks,
        "retained_blocks_per_tick": span("blocks"),
        "retained_bytes_per_tick": span("bytes"),
        "transient_peak_bytes": span("peak"),
        "nrt_allocations_per_tick": span("nrt") if cols["nrt"].min() >= 0 else None,
        "discoveries_per_tick": span("discoveries"),
        # Least-squares slope of retained bytes against the tick's discoveries: 0 if
        # events cost no allocation.
        "retained_bytes_per_discovery": _slope(cols["discoveries"], cols["bytes"]),
        "leak_bytes_over_run": int(leak),
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", help="players per hunt, comma separated")
    parser.add_argument("--ticks", type=int, help="timed ticks per size (default 200; 50 at 1M)")
    parser.add_argument("--threads", default="1,2", help="Numba thread counts, comma separated")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few ticks (smoke test)")
    args = parser.parse_args(argv)
    plan = Plan(args)
    if not plan.threads:
        parser.error(f"no usable thread count (Numba allows 1..{numba.config.NUMBA_NUM_THREADS})")
    if plan.skipped_threads:
        console.print(f"[yellow]skipping thread counts {plan.skipped_threads}: "
                      f"Numba allows at most {numba.config.NUMBA_NUM_THREADS}[/]")
    plan_out = dict(vars(plan))
    plan_out["out"] = str(args.out)
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "cpu_model": cpu_model(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": sys.version.split()[0], "numpy": np.__version__,
            "numba": numba.__version__, "tickengine": tickengine.__version__,
            "threading_layer": None, "load_before": [round(x, 2) for x in os.getloadavg()],
            "plan": plan_out, "engine_source": engine_source(),
        },
        "engine": [], "numpy": [], "reference": [], "allocations": [],
    }
    started = time.perf_counter()
    report = tickengine.warm_up()  # a WarmUpReport (older engines returned seconds)
    results["meta"]["warm_up_s"] = float(getattr(report, "seconds", report))
    results["meta"]["warm_up_compiled"] = getattr(report, "compiled", None)
    results["noise"] = noise_probe()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, auto_refresh=False) as progress:
        task = progress.add_task("numpy self-check", total=plan.total_work())
        progress.refresh()
        agr = self_check(*plan.self_check)
        results["self_check"] = agr.to_dict()
        progress.advance(task, plan.self_check[1])
        for n in plan.sizes:
            progress.update(task, description=f"{n:,} players: set-up")
            progress.refresh()
            world, bots = bench_world(n)
            world.tick()  # the joins
            for threads in plan.threads:
                progress.update(task, description=f"{n:,} players: engine, {threads} thr")
                r = measure_engine(world, bots, n, threads, plan, progress, task)
                results["engine"].append(r)
                progress.console.print(
                    f"{n:>9,} players, {threads} thr: tick p50 {r['tick_ms']['p50']:.3f} ms, "
                    f"p99 {r['tick_ms']['p99']:.3f} ms; + visibility p50 "
                    f"{r['tick_visibility_ms']['p50']:.3f} ms")
            if n in plan.alloc_sizes:
                progress.update(task, description=f"{n:,} players: allocations")
                results["allocations"].append(
                    measure_allocations(world, bots, n, plan, progress, task))
            if n in plan.numpy_sizes:
                progress.update(task, description=f"{n:,} players: numpy baseline")
                r = measure_numpy(world, bots, n, plan, progress, task)
                results["numpy"].append(r)
                progress.console.print(f"{n:>9,} players, numpy: tick p50 "
                                       f"{r['tick_ms']['p50']:.3f} ms")
            del world, bots
            gc.collect()
        for n in plan.reference_sizes:
            progress.update(task, description=f"{n:,} players: reference (slow)")
            progress.refresh()
            r = measure_reference(n, plan, progress, task)
            results["reference"].append(r)
            progress.console.print(f"{n:>9,} players, reference: tick p50 "
                                   f"{r['tick_ms']['p50']:.1f} ms")
        progress.update(task, description="done")
        progress.refresh()
    results["meta"]["threading_layer"] = numba.threading_layer()
    results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["elapsed_s"] = time.perf_counter() - started
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    render(results, console)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "bench_tick.json", args.out / "bench_tick.png"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, png_path)
    console.print(f"Wrote {json_path} and {png_path} "
                  f"({results['meta']['elapsed_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
