"""What batching many small hunts saves (issue 18): one World ticking H hunts in one kernel
pass, against H Worlds of one hunt each, and the cost of a hand-off to the tick's worker
thread (``trio.to_thread.run_sync``) per hunt or per group.

The server's tick groups could be built two ways: one engine (World) per group, ticking
its hunts in one batched pass, or one World per hunt (as today) whose ticks a group
schedules at its phase. The first saves kernel calls and hand-offs; the second keeps each
hunt's World, journal and state hash its own. This prints what each costs per second
at the load test's shape (H hunts of M players, 20 Hz), so that the choice rests on
figures (perf/README.md, "Tick groups").

    python perf/bench_groups.py                       # 50 hunts of 20 players
    python perf/bench_groups.py --hunts 50 --players 20 --ticks 400
    python perf/bench_groups.py --idle --commit 3d11edd  # + serve's CPU with 50 idle hunts,
                                                        #   this tree and that commit

``--idle``: ``treasure-hunt serve`` with ``--hunts`` hunts and no client, its CPU over
``--seconds``: what ticking them costs before any client (the hand-offs and each World's
fixed cost per tick), for each ``--tick-groups`` value asked and for ``--commit``'s server,
also as CPU microseconds per hunt-tick. ``--repeat N`` runs each server N times, old and new
alternated, and keeps the least; ``--idle-only`` skips the engine and hand-off timings:

    python perf/bench_groups.py --idle-only --commit a75aa61 --tick-groups 0,1 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from tickengine import Bots, EngineConfig, HuntParams, World, warm_up


def hunts(n: int, players: int) -> list[HuntParams]:
    return [HuntParams(name=f"h{k:03d}", seed=k, max_players=2 * players) for k in range(n)]


def populate(world: World, players: int) -> tuple[Bots, np.ndarray]:
    bots = Bots(world)
    for h in range(len(world.hunt_params)):
        bots.add(h, players, "random", seed=h)
    world.tick()
    return bots, world.active_slots().astype(np.int32)


def per_tick(fn, ticks: int) -> dict[str, float]:
    """Wall and CPU (this thread) ms of ``fn()``: medians over ``ticks`` calls."""
    wall, cpu = [], []
    for _ in range(ticks):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"wall_ms_p50": statistics.median(wall) * 1e3,
            "cpu_ms_p50": statistics.median(cpu) * 1e3}


def engine(n_hunts: int, players: int, ticks: int) -> dict[str, dict[str, float]]:
    """One tick plus every observer's visibility, of all the hunts."""
    params = hunts(n_hunts, players)
    engine_cfg = EngineConfig(max_players=n_hunts * 2 * players, max_treasures=n_hunts * 100,
                              max_hunts=max(64, n_hunts))
    one = World(engine_cfg, params)
    one_bots, one_obs = populate(one, players)

    def tick_one() -> None:
        one_bots.decide()
        one.tick()
        one.visibility(one_obs)

    small = EngineConfig(max_players=2 * players, max_treasures=100, max_hunts=1,
                         max_visible=4 * players * players)
    many = [World(small, (p,)) for p in params]
    many_state = [populate(w, players) for w in many]

    def tick_many() -> None:
        for w, (bots, obs) in zip(many, many_state, strict=True):
            bots.decide()
            w.tick()
            w.visibility(obs)

    for _ in range(20):
        tick_one()
        tick_many()
    return {"one_world": per_tick(tick_one, ticks), "world_per_hunt": per_tick(tick_many, ticks)}


def handoffs(count: int, rounds: int) -> dict[str, float]:
    """Trio -> worker thread -> Trio round trips of an empty function: ``count`` in a row
    (one per hunt of a group) per round; wall time per round trip and the process's CPU."""
    def noop() -> None:
        pass

    async def main() -> dict[str, float]:
        for _ in range(50):
            await trio.to_thread.run_sync(noop)
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            for _ in range(count):
                await trio.to_thread.run_sync(noop)
        n = rounds * count
        return {"wall_us": (time.perf_counter() - w0) / n * 1e6,
                "cpu_us": (time.process_time() - c0) / n * 1e6}
    return trio.run(main)


def idle_cpu(src: Path, hunts: int, seconds: float, flags: list[str]) -> float:
    """CPU % (of one core) of ``serve`` from ``src`` ticking ``hunts`` hunts, no client.
    CPU seconds, not wall time: another process's load moves it little."""
    from loadtest import cpu_seconds, wait_serving

    with tempfile.TemporaryDirectory(prefix="bench-groups-") as tmp:
        config = Path(tmp) / "hunts.toml"
        config.write_text("\n".join(f'[[hunt]]\nname = "h{k:03d}"\nmax_players = 64\n'
                                    for k in range(hunts)))
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-c", "import sys; from server.cli import main; sys.exit(main())",
               "serve", "--config", str(config), "--port", "0", "--http-port", "0",
               "--data-dir", "", "--log-format", "json", *flags]
        with open(log, "wb") as err:
            p = subprocess.Popen(cmd, cwd=src, stdout=subprocess.DEVNULL, stderr=err,
                                 env={**os.environ, "PYTHONPATH": str(src)})
        try:
            wait_serving(p, log)
            time.sleep(2.0)
            c0, t0 = cpu_seconds(p.pid)["all"], time.monotonic()
            time.sleep(seconds)
            return (cpu_seconds(p.pid)["all"] - c0) / (time.monotonic() - t0) * 100
        finally:
            p.terminate()
            p.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hunts", type=int, default=50)
    p.add_argument("--players", type=int, default=20, help="players per hunt")
    p.add_argument("--ticks", type=int, default=300, help="timed ticks of each variant")
    p.add_argument("--tick-rate", type=int, default=20)
    p.add_argument("--idle", action="store_true",
                   help="also time serve's CPU with --hunts idle hunts (see above)")
    p.add_argument("--tick-groups", default="1,4,0",
                   help="--idle: the server's --tick-groups values to run (0: automatic)")
    p.add_argument("--commit", help="--idle: also run the server of this git commit")
    p.add_argument("--seconds", type=float, default=5.0, help="--idle: measuring window")
    p.add_argument("--repeat", type=int, default=1,
                   help="--idle: runs of each server, alternated; the least CPU is kept")
    p.add_argument("--idle-only", action="store_true", help="--idle, and nothing else")
    args = p.parse_args(argv)
    if args.idle or args.idle_only:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from loadtest import ROOT, server_source

        runs: dict[str, list[float]] = {}
        commit = server_source(args.commit) if args.commit else None
        # Old and new alternate, so that a change in the machine's load falls on both.
        for _ in range(args.repeat):
            for g in args.tick_groups.split(","):
                flags = ["--tick-groups", g]
                if commit is not None:
                    runs.setdefault(f"{commit[1]}, --tick-groups {g}", []).append(
                        idle_cpu(commit[0], args.hunts, args.seconds, flags))
                runs.setdefault(f"this tree, --tick-groups {g}", []).append(
                    idle_cpu(ROOT, args.hunts, args.seconds, flags))
        idle = {k: min(v) for k, v in runs.items()}
        hunt_ticks = args.hunts * args.tick_rate  # per second
        for k, v in idle.items():
            print(f"serve, {args.hunts} idle hunts at {args.tick_rate} Hz, {k}: CPU {v:.1f}% of "
                  f"a core, {v * 10 / hunt_ticks * 1e3:.0f} us per hunt-tick (least of "
                  f"{len(runs[k])}: {', '.join(f'{x:.1f}' for x in runs[k])})")
        print(json.dumps({"idle_cpu_pct": idle,
                          "idle_us_per_hunt_tick": {k: v * 10 / hunt_ticks * 1e3
                                                    for k, v in idle.items()}}))
        if args.idle_only:
            return 0
    warm_up()
    eng = engine(args.hunts, args.players, args.ticks)
    hand = handoffs(args.hunts, max(20, args.ticks // 5))
    rate = args.tick_rate
    out = {"hunts": args.hunts, "players": args.players, "engine": eng, "handoff": hand,
           # CPU per second of serving, ms: engine work plus one hand-off per hunt or per
           # group (4 groups), at the tick rate.
           "cpu_ms_per_s": {
               "one_world_per_group_4": eng["one_world"]["cpu_ms_p50"] * rate
               + 4 * rate * hand["cpu_us"] / 1e3,
               "world_per_hunt_handoff_per_hunt": eng["world_per_hunt"]["cpu_ms_p50"] * rate
               + args.hunts * rate * hand["cpu_us"] / 1e3,
               "world_per_hunt_handoff_per_group_4": eng["world_per_hunt"]["cpu_ms_p50"] * rate
               + 4 * rate * hand["cpu_us"] / 1e3}}
    print(f"{args.hunts} hunts of {args.players} players, tick + visibility of all hunts:")
    for k, v in eng.items():
        print(f"  {k:16s} wall p50 {v['wall_ms_p50']:.3f} ms   cpu p50 {v['cpu_ms_p50']:.3f} ms")
    print(f"hand-off to a worker thread and back: {hand['wall_us']:.1f} us wall, "
          f"{hand['cpu_us']:.1f} us CPU (whole process)")
    for k, v in out["cpu_ms_per_s"].items():
        print(f"  {k:36s} {v:6.1f} ms of CPU per second ({v / 10:.1f}% of a core)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
