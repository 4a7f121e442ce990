"""Where the tick's hand-off time goes: Trio thread -> worker thread -> Trio thread.

    .venv/bin/python perf/bench_handoff.py             # every variant, 600 ticks each, ~3 min
    .venv/bin/python perf/bench_handoff.py --quick     # smoke run, a few seconds

A hub hands every tick to a worker thread and takes the result back (the ``handoff``
phase of ``/api/stats``: ``go``, from the ticker's call to the worker's first
instruction, plus ``back``, from the worker's last instruction to the ticker running
again). Both legs wait for the GIL and for the Trio scheduler while the Trio thread
is busy reading sockets. This benchmark isolates them, with no network: a Trio task
stands for the poller (pure-Python work in slices of ``--slice-us`` between
checkpoints, ``--busy`` of the time), and a ticker every 50 ms hands the worker a
job that holds the GIL for a moment and then releases it for ``--work-ms`` (as the
Numba kernels do). Variants, interleaved tick by tick so that the machine's load
hits them alike: ``trio.to_thread.run_sync`` or the hub's own thread
(server/hunt/_worker.py), under Python's default switch interval (5 ms) or a
shorter one (``sys.setswitchinterval``; ``--switch``).

Each leg is also split into the time its waiting thread spent runnable but without a
CPU (the run-queue delay of ``/proc/self/task/<tid>/schedstat``: other processes had
both cores) and the rest (the GIL, the Trio scheduler, the wake-ups): ``go cpu`` is
the worker thread's run-queue delay during ``go``, ``back cpu`` the Trio thread's
during ``back``, and ``handoff - cpu`` what is left of the two legs.

Figures are printed and written to ``bench_handoff.json`` under ``--out``; nothing is
asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.hunt._worker import TickThread  # noqa: E402

PERIOD_S = 0.05


def run_delay(tid: int) -> float:
    """Seconds thread ``tid`` of this process has spent runnable, waiting for a CPU."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[1]) * 1e-9


def _spin(seconds: float) -> None:
    """Hold the GIL for ``seconds`` running Python code (as parsing frames does)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(50):
            x += i


def _job(work_s: float, trio_tid: int) -> tuple[float, float, int, float, float]:
    """(start, end, this thread's id, its run-queue delay at the start, the Trio
    thread's at the end)."""
    c0 = time.perf_counter()
    tid = threading.get_native_id()
    w0 = run_delay(tid)
    _spin(20e-6)  # Python between the kernels
    time.sleep(work_s)  # a nogil kernel: the GIL is released meanwhile
    _spin(20e-6)
    t4 = run_delay(trio_tid)
    return c0, time.perf_counter(), tid, w0, t4


async def _poller(busy: float, slice_s: float, stop: trio.Event) -> None:
    """Busy ``busy`` of the time in slices of ``slice_s``, a checkpoint after each."""
    idle = slice_s * (1 - busy) / busy if busy > 0 else PERIOD_S
    while not stop.is_set():
        if busy > 0:
            _spin(slice_s)
        await trio.sleep(idle)


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    variants = [("to_thread", s) for s in args.switch] + [("tick_thread", s) for s in args.switch]
    legs: dict[str, dict[str, list[float]]] = {
        f"{how} switch={s * 1e3:g}ms": {"go": [], "back": [], "go_cpu": [], "back_cpu": []}
        for how, s in variants}
    trio_tid = threading.get_native_id()
    last_tid = {"to_thread": 0, "tick_thread": 0}
    thread = TickThread("bench-tick")
    stop = trio.Event()
    default_switch = sys.getswitchinterval()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poller, args.busy, args.slice_us * 1e-6, stop)
        start = trio.current_time()
        for n in range(args.ticks * len(variants)):
            await trio.sleep_until(start + (n + 1) * PERIOD_S)
            how, switch = variants[n % len(variants)]
            sys.setswitchinterval(switch)
            # The worker's run-queue delay so far (the thread of its last call: trio's
            # cache reuses it; a sample whose thread changed is left out).
            w_call = run_delay(last_tid[how]) if last_tid[how] else 0.0
            t_call = time.perf_counter()
            if how == "to_thread":
                c0, c4, tid, w0, t4 = await trio.to_thread.run_sync(
                    _job, args.work_ms * 1e-3, trio_tid)
            else:
                c0, c4, tid, w0, t4 = await thread.run(_job, args.work_ms * 1e-3, trio_tid)
            t_back = time.perf_counter()
            t_end = run_delay(trio_tid)
            same = tid == last_tid[how]
            last_tid[how] = tid
            if n >= len(variants) * 5 and same:  # the first rounds warm the threads up
                leg = legs[f"{how} switch={switch * 1e3:g}ms"]
                leg["go"].append((c0 - t_call) * 1e3)
                leg["back"].append((t_back - c4) * 1e3)
                leg["go_cpu"].append((w0 - w_call) * 1e3)
                leg["back_cpu"].append((t_end - t4) * 1e3)
        stop.set()
    sys.setswitchinterval(default_switch)
    thread.close()
    out = {}
    for name, leg in legs.items():
        go, back = np.asarray(leg["go"]), np.asarray(leg["back"])
        cpu = np.asarray(leg["go_cpu"]) + np.asarray(leg["back_cpu"])
        both = go + back
        out[name] = {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                         "max": float(v.max())} for k, v in
                     (("go", go), ("back", back), ("handoff", both), ("cpu_wait", cpu),
                      ("handoff_minus_cpu", both - cpu))}
        out[name]["samples"] = len(go)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ticks", type=int, default=600, help="timed ticks per variant")
    p.add_argument("--busy", type=float, default=0.5,
                   help="share of the time the stand-in poller holds the GIL")
    p.add_argument("--slice-us", type=float, default=500.0,
                   help="the poller's work between two checkpoints (us)")
    p.add_argument("--work-ms", type=float, default=8.0, help="the job's nogil time (ms)")
    p.add_argument("--switch", type=lambda s: [float(x) for x in s.split(",")],
                   default=[0.005, 0.0005], help="switch intervals to compare (s, comma separated)")
    p.add_argument("--quick", action="store_true", help="smoke run: 30 ticks per variant")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.ticks = 30
    results = trio.run(_measure, args)
    print(f"hand-off (ms), {args.ticks} ticks per variant, stand-in poller busy "
          f"{args.busy:.0%} in {args.slice_us:g} us slices, job {args.work_ms:g} ms nogil")
    print(f"{'variant':26s} {'n':>4s} {'go p50':>7s} {'p99':>7s} {'back p50':>8s} {'p99':>7s} "
          f"{'hand-off p50':>12s} {'p99':>7s} {'cpu wait p99':>12s} {'- cpu p50':>9s} {'p99':>7s}")
    for name, r in results.items():
        print(f"{name:26s} {r['samples']:4d} {r['go']['p50']:7.3f} {r['go']['p99']:7.3f} "
              f"{r['back']['p50']:8.3f} {r['back']['p99']:7.3f} {r['handoff']['p50']:12.3f} "
              f"{r['handoff']['p99']:7.3f} {r['cpu_wait']['p99']:12.3f} "
              f"{r['handoff_minus_cpu']['p50']:9.3f} {r['handoff_minus_cpu']['p99']:7.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_handoff.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                "results": results}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
