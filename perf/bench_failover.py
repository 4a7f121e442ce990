"""Failover time of scale-out (issue 6): kill -9 a node, time until its hunts tick elsewhere.

Starts its own redis-server and two `treasure-hunt serve --redis` nodes (subprocesses,
free ports, a shared data dir), lets node a hold every hunt with players in them (network
bots), then SIGKILLs node a and measures, from the kill, when node b logged each hunt as
started (recovered from the shared journal and ticking) and when a resuming client got
its first TICK through node b. Repeats --rounds times (node a restarts in between).

    .venv/bin/python perf/bench_failover.py                 # lease 3 s (the default), 3 rounds
    .venv/bin/python perf/bench_failover.py --lease 1.5 --rounds 5

Target: a dead node's hunts play again on another node within 5 s (lease 3 s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cluster_support import Node  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from server.client import connect  # noqa: E402


def _ts(event: dict) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def _round(a: Node, b: Node, hunts: list[str], players: int) -> dict[str, float]:
    clients = []
    async with contextlib.AsyncExitStack() as stack:
        for hunt in hunts:
            for k in range(players):
                client = await stack.enter_async_context(
                    connect(b.ws_url, f"{hunt}-{k}", hunt))
                clients.append((hunt, client))
                await client.move(1.0, 0.3)
        resumed_after = await _kill_and_resume(a, b, clients)
    return resumed_after


async def _kill_and_resume(a: Node, b: Node, clients: list) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        for _, c in clients:
            await c.next_tick()
        tokens = [(hunt, c.resume_token) for hunt, c in clients]
        before = len(b.events())
        killed_at = time.time()
        t0 = time.monotonic()
        a.kill()
        for _, c in clients:
            nursery.start_soon(_drain_quietly, c)
        # First resume through node b: measures "players play again".
        hunt, token = tokens[0]
        resumed_after = None
        with trio.fail_after(30):
            while resumed_after is None:
                try:
                    async with connect(b.ws_url, "probe", hunt, resume_token=token) as c:
                        await c.next_tick()
                        resumed_after = time.monotonic() - t0
                except Exception:
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    started = [e for e in b.events()[before:] if e.get("event") == "hunt_started"]
    recovered = [e for e in b.events()[before:] if e.get("event") == "recovered"]
    return {
        "hunts_started_s": max(_ts(e) for e in started) - killed_at if started else float("nan"),
        "first_started_s": min(_ts(e) for e in started) - killed_at if started else float("nan"),
        "player_resumed_s": resumed_after,
        "recovered_ticks": sum(e.get("tick", 0) for e in recovered) / max(1, len(recovered)),
    }


async def _drain_quietly(c) -> None:
    try:
        while True:
            await c.next_tick()
    except Exception:
        return


async def main_async(args: argparse.Namespace) -> list[dict[str, float]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        tmp = Path(tmp)
        with RedisServer(tmp / "redis") as redis:
            data = tmp / "data"
            a = Node("a", redis.url, data, tmp, lease=args.lease).start()
            b = None
            try:
                # a alone places every hunt on itself; then b joins.
                await trio.sleep(args.lease / 2)
                b = Node("b", redis.url, data, tmp, lease=args.lease).start()
                for r in range(args.rounds):
                    hunts = sorted(a.running())
                    row = await _round(a, b, hunts, args.players)
                    row["round"] = r + 1
                    results.append(row)
                    print(f"round {r + 1}: hunts ticking on b after "
                          f"{row['first_started_s']:.2f}-{row['hunts_started_s']:.2f} s, "
                          f"a player resumed after {row['player_resumed_s']:.2f} s", flush=True)
                    # Hand the hunts back for the next round: restart a, stop b cleanly
                    # (b releases its leases; a, the only node left, takes them).
                    if r + 1 < args.rounds:
                        a.start()
                        b.stop()
                        deadline = time.monotonic() + 30
                        while len(a.running()) < len(hunts) and time.monotonic() < deadline:
                            await trio.sleep(0.1)
                        b.start()
            finally:
                a.stop()
                if b is not None:
                    b.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--lease", type=float, default=3.0, help="lease seconds (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="kills to time (default 3)")
    p.add_argument("--players", type=int, default=5, help="players per hunt (default 5)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_failover.json")
    args = p.parse_args(argv)
    rows = trio.run(main_async, args)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"failover after kill -9 (lease {args.lease:g} s)")
    for col in ("round", "first hunt ticking (s)", "all hunts ticking (s)",
                "player resumed (s)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["round"]), f"{r['first_started_s']:.2f}",
                      f"{r['hunts_started_s']:.2f}", f"{r['player_resumed_s']:.2f}")
    Console().print(table)
    worst = max(r["player_resumed_s"] for r in rows)
    median = statistics.median(r["hunts_started_s"] for r in rows)
    print(f"median all-hunts-ticking {median:.2f} s; "
          f"worst player resume {worst:.2f} s; target <= 5 s: {'met' if worst <= 5 else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"lease_s": args.lease, "rounds": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
