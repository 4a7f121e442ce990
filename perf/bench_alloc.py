"""Allocation CALLS of a real server, per move and per tick, at several client counts.

Counts every allocation call, short-lived ones included (not blocks still alive
afterwards, which is what tracemalloc snapshots see): perf/alloc_count.c is compiled
with gcc at run time and loaded into the server process with LD_PRELOAD. It interposes
malloc / calloc / realloc (the C heap: NumPy's array data, Numba's runtime, the Python
allocator's blocks above 512 bytes) and, installed once Python runs, wraps the Python
allocator's MEM and OBJ domains with PyMem_SetAllocator (every Python object). Counts go
to a shared file that this script reads, so reading them costs the server nothing; each is
split between the server's main thread (Trio: sockets, ingest, the tick's bookkeeping, and
without a journal the whole tick of a hunt of up to 1,024 players, as here) and the other
threads (the tick's worker and send threads, Numba's).

For each client count C, two runs of a fresh ``treasure-hunt serve`` with C clients of
perf/loadgen.c (or ``--loadgen python``: perf/loadgen.py; other processes, not counted):

- idle: the clients play but send (almost) no moves: every allocation is the tick's
  (and the server's idle loop's), so allocations per tick = count / ticks;
- busy: the same clients send --rate moves per second each: allocations per move =
  (count - ticks x the idle run's per-tick figure) / moves received.

Targets (issue 15): amortized allocations per move <= 1 and per-tick allocations that do not
grow with C (O(hunts)). The figures and what they mean are in perf/README.md.

    python perf/bench_alloc.py                      # 200 and 2,000 clients, 10 s windows
    python perf/bench_alloc.py --clients 200 --duration 5
    python perf/bench_alloc.py --quick              # 20 clients, 2 s: a smoke test
    python perf/bench_alloc.py --commit main~3      # the server of a commit (before/after)
    python perf/bench_alloc.py --clients 200 --where   # and where the calls come from

--where also tallies every counted call by call site (the innermost Python frames of the
calling thread and, for a C call, the code that called malloc; perf/alloc_count.c) and
prints the sites whose calls the moves add: busy minus idle, per tick and per move, grouped
by the innermost frame of the server's own code (server/, tickengine/). The tally slows
every allocation, so the ticks a second of a --where run are not figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from loadtest import (
    PY,
    Procs,
    add_loadgen_option,
    loadgen_command,
    metrics,
    newest_version,
    server_source,
    wait_serving,
)

HERE = Path(__file__).resolve().parent
COUNTERS = ("c_main", "c_other", "py_main", "py_other")
IDLE_RATE = 0.001  # moves per second per client: one at connection, then none
CONNECT_RATE = 500  # new clients per second


def build_shim(workdir: Path) -> Path:
    """Compile perf/alloc_count.c against this Python's headers; returns the .so path."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("bench_alloc needs a C compiler: apt-get install gcc")
    so = workdir / "alloc_count.so"
    include = sysconfig.get_paths()["include"]
    done = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-Wall", f"-I{include}",
                           "-o", str(so), str(HERE / "alloc_count.c")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_alloc: gcc failed (Python headers in {include}?):\n"
                         f"{done.stderr}")
    return so


class Counts:
    """The shared counter file the shim writes (uint64 x 4), and the word that arms its
    call-site tally (where mode)."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(bytes(8 * (len(COUNTERS) + 1)))
        self.path = path
        self._map = np.memmap(path, np.uint64, "r+", shape=(len(COUNTERS) + 1,))

    def read(self) -> np.ndarray:
        return np.array(self._map[:len(COUNTERS)], np.int64)

    def arm(self, on: bool) -> None:
        self._map[len(COUNTERS)] = int(on)


def read_sites(server: subprocess.Popen, path: Path) -> list[tuple[int, str, str, list[str]]]:
    """The server's call-site table (where mode): SIGUSR1 makes it write ``path``."""
    server.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if lines and lines[-1].startswith("end\t"):
            return [(int(n), family, caller, frames) for n, family, caller, *frames in
                    (line.split("\t") for line in lines[:-1])]
        time.sleep(0.2)
    raise RuntimeError(f"no call-site table in {path} after SIGUSR1 (server log beside it)")


def start_server(procs: Procs, shim: Path, counts: Counts, clients: int,
                 args: argparse.Namespace, logdir: Path) -> tuple[Any, str, str]:
    """``serve`` with the shim preloaded and installed before the server imports."""
    limit = str(clients + 64)
    launcher = [PY, "-c", "import ctypes, signal, sys; lib = ctypes.PyDLL(sys.argv.pop(1)); "
                "assert lib.alloc_count_install(), 'ALLOC_COUNT_FILE not mapped'; "
                "signal.signal(signal.SIGUSR1, lambda *_: lib.alloc_count_dump()); "
                "from server.cli import main; sys.exit(main())", str(shim)]
    cmd = [*launcher, "serve", "--port", "0", "--http-port", "0", "--log-format", "json",
           "--tick-rate", str(args.tick_rate), "--moves-per-second", str(max(60.0, 3 * args.rate)),
           "--data-dir", "",
           # Every client comes from 127.0.0.1: the per-address limits are raised to fit.
           "--max-connections", limit, "--max-connections-per-address", limit,
           "--max-players-per-address", limit, "--hellos-per-second-per-address",
           str(2 * CONNECT_RATE), "--connections-per-second-per-address", str(2 * CONNECT_RATE)]
    env = {**os.environ, "LD_PRELOAD": str(shim), "ALLOC_COUNT_FILE": str(counts.path),
           "PYTHONPATH": str(args.server_src),
           "ALLOC_COUNT_WHERE": str(logdir / "sites.tsv") if args.where else ""}
    log = logdir / "server.log"
    with open(log, "wb") as err:
        # From the code's own directory: ``python -c`` puts the working directory first
        # on sys.path, ahead of PYTHONPATH.
        p = procs.start(cmd, stdout_lines=False, stderr=err, env=env, cwd=args.server_src)
    return p, *wait_serving(p, log)


def run(clients: int, rate: float, shim: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One server, ``clients`` clients at ``rate`` moves/s each, one window of counts."""
    logdir = Path(tempfile.mkdtemp(prefix="bench-alloc-"))
    try:
        counts = Counts(logdir / "counts")
        with Procs() as procs:
            server, ws_url, http_url = start_server(procs, shim, counts, clients, args,
                                                     logdir)
            gen = procs.start([*args.loadgen_cmd, "--url", ws_url,
                               "--clients", str(clients), "--rate", str(rate),
                               "--connect-rate", str(CONNECT_RATE), "--drain", "0.5",
                               "--protocol-version", str(newest_version(args.server_src))],
                              stdout_lines=True, stderr=open(logdir / "loadgen.log", "wb"))  # noqa: SIM115
            ready = procs.json_line(gen, clients / CONNECT_RATE + 90)
            if ready["playing"] < 0.9 * clients:  # the figures are per tick and per move
                raise RuntimeError(f"only {ready['playing']} of {clients} clients play: "
                                   f"{json.dumps(ready)}")
            time.sleep(args.warmup)
            gen.stdin.write(b"start\n")
            gen.stdin.flush()
            # The server's counters are read over HTTP just outside the counted window
            # (a scrape allocates thousands of times).
            m0 = metrics(http_url)
            c0 = counts.read()
            counts.arm(True)
            time.sleep(args.duration)
            counts.arm(False)
            c1 = counts.read()
            m1 = metrics(http_url)
            sites = read_sites(server, logdir / "sites.tsv") if args.where else []
            gen.stdin.write(b"stop\n")
            gen.stdin.flush()
            result = procs.json_line(gen, 60)

        def delta(key: str) -> float:
            return m1.get(key, 0.0) - m0.get(key, 0.0)

        return {"clients": clients, "playing": ready["playing"], "rate": rate,
                "window_s": args.duration, "ticks": delta("hunt_ticks_total"),
                "moves": delta('hunt_moves_total{fate="received"}'),
                "evictions": delta("hunt_evictions_total"),
                "skipped": delta("hunt_ticks_skipped_total"),
                "client_ticks_median": float(np.median(result["ticks_per_client"] or [0])),
                "counts": dict(zip(COUNTERS, (c1 - c0).tolist(), strict=True)),
                "sites": sites}
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def figures(idle: dict[str, Any], busy: dict[str, Any]) -> dict[str, Any]:
    """Per tick (idle run) and per move (busy run, the idle per-tick share taken out)."""
    per_tick = {k: v / max(idle["ticks"], 1) for k, v in idle["counts"].items()}
    per_move = {k: (busy["counts"][k] - per_tick[k] * busy["ticks"]) / max(busy["moves"], 1)
                for k in COUNTERS}
    return {"clients": idle["clients"], "per_tick": per_tick, "per_move": per_move,
            "per_tick_total": sum(per_tick.values()),
            "per_move_total": sum(per_move.values()),
            "moves_per_s": busy["moves"] / busy["window_s"], "idle": idle, "busy": busy}


def site_label(family: str, caller: str, frames: list[str], src: Path) -> tuple[str, str]:
    """(where in the server's code, what under it) for one call site: the innermost frame
    of server/ or tickengine/, and the innermost function (or C caller) below it."""
    mine = (f"{src}/server/", f"{src}/tickengine/")

    def short(frame: str) -> str:
        for cut in (f"{src}/", "site-packages/", "/lib/python3"):
            if cut in frame:
                return frame.split(cut, 1)[1]
        return frame

    frames = [f for f in frames if f != "-"]
    own = next((f for f in frames if f.startswith(mine)), None)
    kind = "C " if family.startswith("c") else "Py"
    thread = "main" if family.endswith("main") else "other"
    # The function, not its line: the calls of one library call add up.
    below = short(frames[0]).split(":", 1)[0] + " " + frames[0].rsplit(" ", 1)[-1] \
        if frames and frames[0] != own else ""
    if family.startswith("c"):
        below = f"{below} <- {caller}" if below else caller
    where = short(own) if own else (f"(no server frame) {short(frames[-1])}" if frames
                                    else "(no Python frame)")
    return f"{kind} {thread:<5} {where}", below


def where_rows(idle: dict[str, Any], busy: dict[str, Any], src: Path) -> list[dict[str, Any]]:
    """Call sites per tick in both runs, and what the moves add (busy minus idle); "below"
    is what under the site made the most calls in the busy run."""
    per: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    below: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for i, run_ in enumerate((idle, busy)):
        for n, family, caller, frames in run_["sites"]:
            site, under = site_label(family, caller, frames, src)
            per[site][i] += n / max(run_["ticks"], 1)
            below[site][under] += n * (1 + i * 1000)  # the busy run's first
    moves_per_tick = busy["moves"] / max(busy["ticks"], 1)
    return sorted(({"site": k, "below": below[k].most_common(1)[0][0], "idle_per_tick": v[0],
                    "busy_per_tick": v[1], "added_per_tick": v[1] - v[0],
                    "added_per_move": (v[1] - v[0]) / max(moves_per_tick, 1e-9)}
                   for k, v in per.items()), key=lambda r: -r["added_per_tick"])


def print_where(row: dict[str, Any], top: int) -> None:
    print(f"\n{row['busy']['playing']} clients: call sites, per tick (idle run, busy run) and "
          f"what the moves add (busy - idle), by the innermost frame in server/ or "
          f"tickengine/ (C: the caller of malloc)")
    sites = row["where"]
    shown = sites[:top] + [r for r in sites[-top // 3:] if r["added_per_tick"] < -1]
    print(f"{'idle/tick':>9} {'busy/tick':>9} {'added/tick':>10} {'added/move':>10}  site  "
          f"[below it]")
    for r in shown:
        print(f"{r['idle_per_tick']:>9.1f} {r['busy_per_tick']:>9.1f} "
              f"{r['added_per_tick']:>10.1f} {r['added_per_move']:>10.3f}  {r['site']}"
              + (f"  [{r['below']}]" if r["below"] else ""))
    added = sum(r["added_per_tick"] for r in sites)
    print(f"{'':>9} {'':>9} {added:>10.1f} {'':>10}  all sites (idle: "
          f"{sum(r['idle_per_tick'] for r in sites):.1f} per tick)")
    print("most per tick in the idle run:")
    for r in sorted(sites, key=lambda r: -r["idle_per_tick"])[:top // 2]:
        print(f"{r['idle_per_tick']:>9.1f}  {r['site']}"
              + (f"  [{r['below']}]" if r["below"] else ""))


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'playing':>8} | {'per tick: C main':>16} {'C other':>8} {'Py main':>8} "
          f"{'Py other':>8} {'total':>8} | {'per move: C':>11} {'Py':>7} {'total':>7} | "
          f"{'moves/s':>8} {'ticks/s':>7} {'evicted':>7}")
    for r in rows:
        t, m = r["per_tick"], r["per_move"]
        print(f"{r['busy']['playing']:>8} | {t['c_main']:>16.1f} {t['c_other']:>8.1f} "
              f"{t['py_main']:>8.1f} {t['py_other']:>8.1f} {r['per_tick_total']:>8.1f} | "
              f"{m['c_main'] + m['c_other']:>11.3f} {m['py_main'] + m['py_other']:>7.3f} "
              f"{r['per_move_total']:>7.3f} | {r['moves_per_s']:>8.0f} "
              f"{r['busy']['ticks'] / r['busy']['window_s']:>7.1f} "
              f"{r['idle']['evictions'] + r['busy']['evictions']:>7.0f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n")[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="200,2000", help="client counts, comma separated")
    p.add_argument("--rate", type=float, default=10.0, help="moves per second per client "
                   "in the busy run (default 10)")
    p.add_argument("--tick-rate", type=int, default=20, help="server ticks per second")
    p.add_argument("--duration", type=float, default=10.0, help="counting window, seconds")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds between the clients "
                   "being ready and the window")
    p.add_argument("--commit", help="count the server of this git commit (an export under "
                   "perf/results/, as perf/loadtest.py does), not the working tree")
    p.add_argument("--where", action="store_true", help="also tally the calls by call "
                   "site and print where the moves' calls come from")
    p.add_argument("--top", type=int, default=30, help="call sites shown with --where")
    add_loadgen_option(p)
    p.add_argument("--quick", action="store_true", help="smoke test: 20 clients, 2 s windows")
    p.add_argument("--out", type=Path, default=HERE / "results", help="the JSON goes here")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.warmup = "20", 2.0, 1.0
    args.client_counts = [int(c) for c in args.clients.split(",")]
    args.server_src, args.server_code = server_source(args.commit)
    args.out.mkdir(parents=True, exist_ok=True)
    args.loadgen_cmd = loadgen_command(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alloc-shim-") as tmp:
        shim = build_shim(Path(tmp))
        for clients in args.client_counts:
            print(f"{clients} clients: idle run, then {args.rate:g} moves/s each",
                  file=sys.stderr)
            idle = run(clients, IDLE_RATE, shim, args)
            busy = run(clients, args.rate, shim, args)
            rows.append(figures(idle, busy))
            if args.where:
                rows[-1]["where"] = where_rows(idle, busy, args.server_src)
            for r in (idle, busy):
                r.pop("sites")
    print(f"server code: {args.server_code}")
    print_table(rows)
    for row in rows if args.where else ():
        print_where(row, args.top)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_alloc.json"
    out.write_text(json.dumps({"rows": rows, "rate": args.rate, "tick_rate": args.tick_rate,
                               "window_s": args.duration, "server": args.server_code,
                               "loadgen": args.loadgen},
                              indent=1))
    print(json.dumps({"json": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
