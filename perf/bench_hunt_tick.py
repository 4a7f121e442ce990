"""The worker-side CPU of one small hunt's tick (issue 18, section 3).

With many small hunts (``perf/loadtest.py --clients 1000 --hunts 50``: 50 hunts of 20 at
20 Hz, 1,000 hunt-ticks a second) every microsecond of a hunt's tick is 0.1% of a core.
This times the part of a real hub's tick that runs in the tick's worker thread
(``Hub._work``: the tick pipeline, then the broadcaster's write, and the CPU-wait clock
reads around them), with no network: H hubs built as the server builds them
(``hunt_world_config``, ``Hub``), each with M players who joined through the hub's real
sessions over real loopback connections speaking protocol version 2, about half of
them sending a move each tick (``Sessions.take_moves``). Each hub ticks with its real
``tick_once``, one hub after the other; a hunt this small ticks on the Trio thread
(server/hunt/_groups.py, ``INLINE_PLAYERS``), as a server's small groups do, and the
worker part is timed there with ``time.thread_time``. The connections are not
bound to the worker's writes (no claimed socket: the ``write(2)`` calls are not measured
here); their frames go out on the Trio side, and the peers are drained between ticks.

    .venv/bin/python perf/bench_hunt_tick.py                     # 50 hunts of 20, this tree
    .venv/bin/python perf/bench_hunt_tick.py --commit 99620d4    # + that commit, same run
    .venv/bin/python perf/bench_hunt_tick.py --quick             # smoke run, a few seconds

Figures: CPU microseconds per hunt-tick of the worker part (the least over ``--repeat``
runs of ``--ticks`` ticks of every hunt), and a breakdown by part from a second,
instrumented pass (each part wrapped in ``thread_time`` reads, less what a wrapper
measures of itself on an empty function, so the parts add up to about the plain
total): ``moves`` (the batch into the engine), ``engine kernels`` (World.tick's
compiled calls), ``World.tick Python`` (the rest of World.tick), ``visibility``,
``tails``, ``frames`` (the frame kernels and their Python), ``waits`` (the CPU-wait
clock reads of the worker), ``write`` (the broadcaster's write, nothing claimed) and
``rest`` (the pipeline's own Python: the total minus the parts). The Trio side's clock
reads (``waits, Trio thread``) are shown beside them, not in the total.

With ``--commit``, each revision runs in a child process of its own (``git archive``
under perf/results/src-REV, as perf/loadtest.py does), alternated ``--rounds`` times;
the least of each is kept. Written to ``bench_hunt_tick.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: The parts of the worker's tick, in the order they run (see the module docstring).
PARTS = ("moves", "engine kernels", "World.tick Python", "visibility", "tails", "frames",
         "waits", "write", "rest")
#: The engine's compiled calls, as tickengine/_world.py names them (whichever exist).
KERNELS = ("apply_membership", "apply_inputs_and_move", "place_rows", "place_rows_parallel",
           "respawn_due", "find_finders", "score_discoveries", "update_hints", "rank_hunts",
           "assign_cells", "assign_cells_parallel", "tick_kernels", "engine_tick")


class Clock:
    """CPU seconds of this thread, summed by part."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, part: str, fn: Any) -> Any:
        spent, calls, now = self.spent, self.calls, time.thread_time
        spent.setdefault(part, 0.0)
        calls.setdefault(part, 0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = now()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += now() - t
                calls[part] += 1
        return timed

    def reset(self) -> None:
        for k in self.spent:
            self.spent[k] = 0.0
            self.calls[k] = 0

    @staticmethod
    def overhead(n: int = 20000) -> tuple[float, float]:
        """CPU seconds a wrapper adds per call: (inside its own figure, outside it)."""
        def noop() -> None:
            pass
        c = Clock()
        timed = c.wrap("noop", noop)
        t = time.thread_time()
        for _ in range(n):
            noop()
        bare = time.thread_time() - t
        t = time.thread_time()
        for _ in range(n):
            timed()
        whole = time.thread_time() - t
        inner = c.spent["noop"] / n
        return inner, max(0.0, (whole - bare) / n - inner)

    def patch(self, obj: Any, name: str, part: str) -> None:
        if hasattr(obj, name):
            setattr(obj, name, self.wrap(part, getattr(obj, name)))


def build(hunts: int, players: int) -> tuple[list[Any], list[tuple[Any, Any, socket.socket]]]:
    """``hunts`` hubs as the placement builds them, and their players' (session, hub, peer
    socket) after a first tick (their WELCOMEs)."""
    import trio

    from server._config import ServeConfig
    from server._log import get_logger
    from server._metrics import Metrics
    from server.hunt._hub import Hub
    from server.hunt._placement import hunt_world_config
    from server.hunt._players import JoinRequest
    from server.shell._conn import Connection
    from tickengine import HuntParams

    base = ServeConfig()
    metrics, log = Metrics(), get_logger()
    hubs, peers = [], []
    listener = socket.create_server(("127.0.0.1", 0), backlog=hunts * players)
    for k in range(hunts):
        params = HuntParams(name=f"load-{k:03d}", seed=k, max_players=max(64, 2 * players),
                            width=1000.0, height=1000.0)
        config = ServeConfig(hunt_world_config(base.world.engine, params),
                             base.server.replace(allow_create_hunts=False))
        hub = Hub(config, metrics, log)
        for _ in range(players):
            theirs = socket.create_connection(listener.getsockname())
            ours, _ = listener.accept()
            theirs.setblocking(False)
            conn = Connection(trio.SocketStream(trio.socket.from_stdlib_socket(ours)),
                              1 << 16, 64)
            conn.version = 2
            conn.remote = f"10.0.{k}.{len(peers) % 250}"  # the per-address limit is per IP
            hub.requests.append(JoinRequest(conn, f"p{len(peers)}", params.name, None))
            peers.append((None, hub, theirs))
        hubs.append(hub)
    listener.close()
    return hubs, peers


def drain(peers: list[tuple[Any, Any, socket.socket]]) -> None:
    for _, _, sock in peers:
        try:
            while sock.recv(1 << 16):
                pass
        except BlockingIOError:
            pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import trio

    import server.hunt._pipeline as pipeline_mod
    import tickengine._world as world_mod
    from server.protocol import encode
    from server.protocol._messages import Move, Moves

    hubs, peers = build(args.hunts, args.players)
    rng = np.random.default_rng(1)
    spent = {"worker": 0.0}

    def timed(work: Any) -> Any:
        def run(*a: Any) -> Any:  # where the hub ticks: the Trio thread, for a hunt this small
            t = time.thread_time()
            try:
                return work(*a)
            finally:
                spent["worker"] += time.thread_time() - t
        return run

    async with trio.open_nursery() as nursery:
        for hub in hubs:
            hub.nursery = nursery
            hub._work = timed(hub._work)
        for hub in hubs:
            await hub.tick_once()  # the joins, their WELCOMEs
        # No claimed socket: the worker's write has nothing to write.
        for hub in hubs:
            for s in hub.sessions.values():
                s.conn.unbind()
        sessions = [list(hub.sessions.values()) for hub in hubs]
        seq = [0]

        async def ticks(n: int) -> None:
            for _ in range(n):
                seq[0] += 1
                now = trio.current_time()
                for hub, mine in zip(hubs, sessions, strict=True):
                    for s in mine:
                        if rng.random() < 0.5:
                            a = rng.uniform(0, 2 * np.pi)
                            hub.take_moves(s, _moves(encode, Moves, Move, seq[0], a), now)
                    await hub.tick_once()
                drain(peers)

        await ticks(args.warmup)
        runs = []
        for _ in range(args.repeat):
            spent["worker"] = 0.0
            await ticks(args.ticks)
            runs.append(spent["worker"] / (args.ticks * len(hubs)) * 1e6)

        # The instrumented pass: each part wrapped (a little slower, by the wrappers).
        clock = Clock()
        for name in KERNELS:
            clock.patch(world_mod, name, "engine kernels")
        clock.patch(pipeline_mod, "build_tails", "tails")
        for name in ("frame_sizes", "write_frames", "seen_of", "Players"):
            clock.patch(pipeline_mod.tf, name, "frames")
        for hub in hubs:
            world = hub.world
            clock.patch(world.moves, "put_many", "moves")
            clock.patch(world, "tick", "World.tick")
            clock.patch(world, "visibility", "visibility")
            clock.patch(hub.broadcaster, "write", "write")
            # TickWaits has slots: the hub gets a stand-in whose methods are the wrapped ones.
            w = hub._waits
            hub._waits = types.SimpleNamespace(**{
                name: getattr(w, name) for name in dir(w)
                if not name.startswith("_") and callable(getattr(w, name))})
            for name in ("work_begins", "work_computed", "work_ends"):
                clock.patch(hub._waits, name, "waits")
            for name in ("start", "call", "back", "end"):
                clock.patch(hub._waits, name, "waits, Trio thread")
        inner, outer = Clock.overhead()
        parts_runs = []
        for _ in range(args.repeat):
            spent["worker"] = 0.0
            clock.reset()
            await ticks(args.ticks)
            n = args.ticks * len(hubs)
            # Each part less what its own wrappers add to it, in us per hunt-tick.
            got = {k: (v - clock.calls[k] * inner) / n * 1e6 for k, v in clock.spent.items()}
            got["kernel wrappers"] = clock.calls["engine kernels"] * outer / n * 1e6
            got["wrappers"] = sum(clock.calls.values()) * (inner + outer) / n * 1e6
            got["instrumented total"] = spent["worker"] / n * 1e6
            parts_runs.append(got)
        for hub in hubs:
            hub.running = False
            hub.close()
    for _, _, sock in peers:
        sock.close()
    best = min(parts_runs, key=lambda p: p["instrumented total"])
    parts = {"moves": best.get("moves", 0.0),
             "engine kernels": best.get("engine kernels", 0.0),
             "World.tick Python": best.get("World.tick", 0.0) - best.get("engine kernels", 0.0)
             - best["kernel wrappers"],
             "visibility": best.get("visibility", 0.0), "tails": best.get("tails", 0.0),
             "frames": best.get("frames", 0.0), "waits": best.get("waits", 0.0),
             "write": best.get("write", 0.0)}
    parts["rest"] = best["instrumented total"] - best["wrappers"] - sum(parts.values())
    return {"hunts": args.hunts, "players": args.players, "ticks": args.ticks,
            "repeat": args.repeat, "us_per_hunt_tick": min(runs), "runs": runs,
            "instrumented_total": best["instrumented total"], "parts": parts,
            "waits_trio_thread": best.get("waits, Trio thread", 0.0)}


def _moves(encode: Any, moves: Any, move: Any, seq: int, a: float) -> bytes:
    """One MOVES frame's payload: move ``seq`` in direction ``a`` (radians)."""
    return encode(moves((move(seq, math.cos(a), math.sin(a)),)))


def child(args: argparse.Namespace) -> int:
    """Run the bench on the code this process imports; print its JSON."""
    import numba
    import trio

    from server._log import configure

    configure("json", 40)  # errors only: 1,000 join lines are not the figure
    numba.set_num_threads(1)
    result = trio.run(run, args)
    print(json.dumps(result))
    return 0


def code_of(rev: str | None) -> tuple[Path, str]:
    sys.path.insert(0, str(HERE))
    from loadtest import server_source

    return server_source(rev)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hunts", type=int, default=50)
    p.add_argument("--players", type=int, default=20, help="players per hunt")
    p.add_argument("--ticks", type=int, default=100, help="ticks of every hunt per run")
    p.add_argument("--warmup", type=int, default=20, help="ticks before the timed runs")
    p.add_argument("--repeat", type=int, default=5, help="runs; the least is kept")
    p.add_argument("--rounds", type=int, default=2,
                   help="with --commit: child processes of each revision, alternated")
    p.add_argument("--commit", help="also run this git revision's server, in the same run")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 hunts, few ticks")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.hunts, args.ticks, args.warmup, args.repeat, args.rounds = 4, 10, 3, 2, 1
    if args.child:
        return child(args)
    from rich.console import Console
    from rich.table import Table

    revs = [code_of(None)] + ([code_of(args.commit)] if args.commit else [])
    flags = ["--hunts", str(args.hunts), "--players", str(args.players), "--ticks",
             str(args.ticks), "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):  # old and new alternate: the machine's load falls on both
        for src, name in revs:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", *flags], cwd=src,
                env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True,
                check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                return 1
            results.setdefault(name, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {name: min(rs, key=lambda r: r["us_per_hunt_tick"]) for name, rs in results.items()}
    table = Table(title=f"worker CPU per hunt-tick, us ({args.hunts} hunts of {args.players}, "
                        f"least of {args.repeat} runs x {args.rounds} processes)")
    table.add_column("part")
    for name in best:
        table.add_column(name, justify="right")
    table.add_row("[b]total[/b]", *(f"[b]{r['us_per_hunt_tick']:.1f}[/b]" for r in best.values()))
    for part in PARTS:
        table.add_row(f"  {part}", *(f"{r['parts'][part]:.1f}" for r in best.values()))
    table.add_row("  (instrumented total)", *(f"{r['instrumented_total']:.1f}"
                                              for r in best.values()))
    table.add_row("waits, Trio thread", *(f"{r['waits_trio_thread']:.1f}" for r in best.values()))
    if len(best) == 2:
        new, old = best.values()
        table.add_row("new / old", f"{new['us_per_hunt_tick'] / old['us_per_hunt_tick']:.2f}", "")
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_hunt_tick.json"
    out.write_text(json.dumps({"stamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "argv": sys.argv[1:], "loadavg": os.getloadavg(),
                               "best": best, "runs": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
