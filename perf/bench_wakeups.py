"""What a phase of the tick period costs when there is nothing to do: the CPU of wake-ups.

Tick groups (docs/server.md, "Tick groups") spread a server's hunts over G phases of the
tick period, so the server wakes ``G x rate`` times a second. Each wake-up costs CPU
even when the tick it starts is empty: the kernel's sleep and wake of the thread (on a
virtual machine, the virtual CPU's halt and resume too) and, under Trio, one turn of
its run loop. This measures that floor, without any server code, for each phase count:

- ``epoll``: a bare loop, ``epoll.poll(timeout)`` until each deadline (one thread, no
  Trio): what the operating system charges per wake-up;
- ``trio``: G Trio tasks, each ``trio.sleep_until`` its own phase at ``--rate`` Hz, as
  the server's tickers (server/hunt/_hub.py) do.

Figures: CPU % of one core (``time.process_time`` over wall time, least of
``--repeat`` runs: another process's load only ever adds) and CPU microseconds per
wake-up. Nothing is asserted: the machine is shared.

    .venv/bin/python perf/bench_wakeups.py                 # 1, 5, 10, 20, 50 phases at 20 Hz
    .venv/bin/python perf/bench_wakeups.py --phases 1 50 --seconds 5
    .venv/bin/python perf/bench_wakeups.py --quick         # smoke run, a few seconds

Writes ``bench_wakeups.json`` to ``--out`` (default perf/results/).
"""

from __future__ import annotations

import argparse
import json
import select
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


def epoll_cpu(phases: int, rate: float, seconds: float) -> float:
    """CPU % of a bare epoll loop that wakes ``phases * rate`` times a second."""
    ep = select.epoll()
    step = 1.0 / (rate * phases)
    try:
        t = time.monotonic()
        end = t + seconds
        c0, w0 = time.process_time(), time.perf_counter()
        while t < end:
            t += step
            left = t - time.monotonic()
            if left > 0:
                ep.poll(left)
        return (time.process_time() - c0) / (time.perf_counter() - w0) * 100
    finally:
        ep.close()


def trio_cpu(phases: int, rate: float, seconds: float) -> float:
    """CPU % of ``phases`` Trio tasks, each waking ``rate`` times a second at its phase."""
    period = 1.0 / rate

    async def ticker(first: float) -> None:
        deadline = first
        while True:
            deadline += period
            await trio.sleep_until(deadline)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for k in range(phases):
                nursery.start_soon(ticker, start + k * period / phases)
            await trio.sleep(min(0.5, seconds / 4))  # the tasks settle into their phases
            c0, w0 = time.process_time(), time.perf_counter()
            await trio.sleep(seconds)
            pct = (time.process_time() - c0) / (time.perf_counter() - w0) * 100
            nursery.cancel_scope.cancel()
        return pct

    return trio.run(main)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", type=int, nargs="+", default=[1, 5, 10, 20, 50],
                   help="phase counts (tick groups) to measure, one case each")
    p.add_argument("--rate", type=float, default=20.0, help="wake-ups per second per phase")
    p.add_argument("--seconds", type=float, default=4.0, help="measuring window per run")
    p.add_argument("--repeat", type=int, default=2, help="runs per case; the least is kept")
    p.add_argument("--quick", action="store_true", help="1 and 10 phases, 1 s, one run")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.phases, args.seconds, args.repeat = [1, 10], 1.0, 1

    from rich.console import Console
    from rich.table import Table

    rows: list[dict[str, Any]] = []
    for g in args.phases:
        wakes = g * args.rate
        row: dict[str, Any] = {"phases": g, "wakeups_per_s": wakes}
        for name, fn in (("epoll", epoll_cpu), ("trio", trio_cpu)):
            pct = min(fn(g, args.rate, args.seconds) for _ in range(args.repeat))
            row[f"{name}_cpu_pct"] = pct
            row[f"{name}_us_per_wakeup"] = pct / 100 / wakes * 1e6
        rows.append(row)
        print(f"{g} phases: epoll {row['epoll_cpu_pct']:.1f}%, trio {row['trio_cpu_pct']:.1f}% "
              "of a core", flush=True)

    table = Table(title=f"CPU of empty wake-ups at {args.rate:g} Hz per phase "
                        f"(least of {args.repeat})")
    for col in ("phases", "wake-ups/s", "epoll CPU %", "epoll us/wake", "Trio CPU %",
                "Trio us/wake"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["phases"]), f"{r['wakeups_per_s']:,.0f}",
                      f"{r['epoll_cpu_pct']:.1f}", f"{r['epoll_us_per_wakeup']:.0f}",
                      f"{r['trio_cpu_pct']:.1f}", f"{r['trio_us_per_wakeup']:.0f}")
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_wakeups.json"
    out.write_text(json.dumps({"rate": args.rate, "seconds": args.seconds,
                               "repeat": args.repeat, "cases": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
