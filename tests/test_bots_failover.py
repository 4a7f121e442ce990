"""``treasure-hunt bots`` through a failover, with real processes: a real redis-server, two
``serve --redis`` nodes, the bots' command entering through the node that does not run their
hunt, and the owner killed with SIGKILL while they play. Every bot resumes on the new owner,
so the summary counts reconnect attempts, not errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from cluster_support import Node
from redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.slow

BOTS = 4


async def until(predicate, timeout: float, what: str) -> object:
    """Poll a blocking ``predicate`` (in a thread) until truthy; fail after ``timeout`` s."""
    deadline = trio.current_time() + timeout
    while not (value := await trio.to_thread.run_sync(predicate)):
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await trio.sleep(0.1)
    return value


def owner_of(node: Node, hunt: str) -> str | None:
    body = node.try_get("/hunts")
    owners = {h["name"]: h["owner"] for h in body["hunts"]} if body else {}
    return owners.get(hunt)


def clients(node: Node) -> int:
    body = node.try_get("/healthz")
    return int(body["clients"]) if body else 0


def tick(node: Node) -> int:
    body = node.try_get("/healthz")
    return int(body["tick"]) if body else 0


def summary_rows(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.count("│") == 3}


async def test_bots_count_a_failover_as_reconnects_not_errors(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    data = tmp_path / "shared-data"
    a = Node("a", redis_server.url, data, tmp_path).start()
    b = Node("b", redis_server.url, data, tmp_path).start()
    try:
        # The hunt runs on a; the bots enter through b (redirected) and resume through b.
        await until(lambda: owner_of(b, "alpha") in ("a", "b"), 15, "placement of alpha")
        victim, entry = (a, b) if owner_of(b, "alpha") == "a" else (b, a)
        cmd = [sys.executable, "-m", "server", "bots", "--url", entry.ws_url, "--hunt", "alpha",
               "--count", str(BOTS), "--duration", "15", "--connect-rate", "100", "--quiet"]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                result: list[subprocess.CompletedProcess[bytes]] = []

                async def run_bots() -> None:
                    result.append(await trio.run_process(
                        cmd, capture_stdout=True, capture_stderr=True, check=False))

                nursery.start_soon(run_bots)
                await until(lambda: clients(victim) >= BOTS, 20, "the bots on the owner")
                # A second of ticks: every bot has its WELCOME (a bot cut before it would join
                # anew on the new owner, not resume).
                since = await trio.to_thread.run_sync(tick, victim)
                await until(lambda: tick(victim) >= since + 20, 20, "the bots to play")
                victim.kill()
                await until(lambda: clients(entry) >= BOTS, 20, "the bots on the new owner")
        (proc,) = result
    finally:
        a.stop()
        b.stop()
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode() + out
    rows = summary_rows(out)
    assert rows["Bots joined"] == f"{BOTS} of {BOTS}"
    assert rows["Errors"] == "0", out
    assert rows["Gave up"] == "0"
    assert int(rows["Resumes"]) >= BOTS
    attempts = dict(kv.rsplit(" ", 1) for kv in rows["Reconnect attempts"].split(", "))
    assert sum(int(n) for n in attempts.values()) >= BOTS, out
    assert set(attempts) <= {"ConnectionLost", "ConnectFailed", "HUNT_MOVED", "GOING_AWAY"}
    assert "Last error" not in out
    assert "Reconnect attempts: drops, HUNT_MOVED" in out
