"""``treasure-hunt events`` as a real subprocess against a real redis-server (issue 6).

Runs ``python -m server.tools.events`` (the same code as ``treasure-hunt events``). The
discoveries are written the way nodes write them: through an EventSink.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from coredis import PureToken
from redis_server import RedisServer, free_port, redis_server  # noqa: F401

from server.cluster import ClusterStore, EventSink

ROOT = Path(__file__).resolve().parent.parent
#: Seconds any one CLI run may take in these tests.
RUN_TIMEOUT = 20


class Log:
    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: None


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.tools.events", *args]


@contextlib.contextmanager
def started(*args: str) -> Iterator[subprocess.Popen[str]]:
    """The CLI as a subprocess, killed if the test leaves it running."""
    proc = subprocess.Popen(command(*args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def exited(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for the subprocess to exit with code 0; its stdout and stderr."""
    out, err = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=RUN_TIMEOUT))
    assert proc.returncode == 0, err
    return out, err


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[ClusterStore]:  # noqa: F811
    async with ClusterStore.open(redis_server.url) as s:
        yield s


async def publish(store: ClusterStore, hunt: str, tick: int, values: list[int]) -> None:
    sink = EventSink(store, node_id="n1", log=Log())
    sink.push(hunt, tick, [(i, f"p{v}", v, 1.0 * i, 2.5) for i, v in enumerate(values)],
              {}, [])
    assert await sink.flush(5)


def values_of(stdout: str) -> list[int]:
    return [json.loads(line)["value"] for line in stdout.splitlines()]


async def test_the_last_n_newest_last(redis_server: RedisServer,  # noqa: F811
                                      store: ClusterStore) -> None:
    await publish(store, "forest", 1, [10, 11, 12, 13, 14])
    out = await trio.to_thread.run_sync(lambda: run("--redis", redis_server.url, "--count", "3",
                                                    "--json"))
    assert out.returncode == 0, out.stderr
    assert values_of(out.stdout) == [12, 13, 14]
    first = json.loads(out.stdout.splitlines()[0])
    assert first["hunt"] == "forest" and first["name"] == "p12" and first["node"] == "n1"
    assert set(first) == {"id", "time_ms", "hunt", "tick", "player_id", "name", "value",
                          "x", "y", "user", "node"}
    text = await trio.to_thread.run_sync(lambda: run("--redis", redis_server.url))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 5 and "forest tick 1: p14 found 14 at (4.0, 2.5)" in lines[-1]


async def follow(redis_url: str, store: ClusterStore, group: str, *extra: str,
                 publish_after: list[int]) -> list[int]:
    """Start ``--follow``, wait until its group exists, publish, return what it printed."""
    with started("--redis", redis_url, "--follow", "--json", "--group", group,
                 *extra) as proc:
        with trio.fail_after(RUN_TIMEOUT):
            while group not in await groups(store):
                assert proc.poll() is None, proc.communicate()
                await trio.sleep(0.05)
        if publish_after:
            await publish(store, "lake", 2, publish_after)
        out, _err = await exited(proc)
    return values_of(out)


async def groups(store: ClusterStore) -> set[str]:
    try:
        info = await store.client.xinfo_groups(store.keys.discoveries)
    except Exception:  # no stream yet
        return set()
    return {g["name"] for g in info}


async def test_follow_reads_new_entries_acknowledges_them_and_never_repeats(
        redis_server: RedisServer, store: ClusterStore) -> None:  # noqa: F811
    await publish(store, "forest", 1, [1, 2])  # before the group: not for it
    got = await follow(redis_server.url, store, "g1", "--max-events", "3",
                       publish_after=[100, 101, 102])
    assert got == [100, 101, 102]
    assert await store.pending_count("g1") == 0  # every entry acknowledged
    # The same group again: nothing of the above, only what comes next.
    got = await follow(redis_server.url, store, "g1", "--max-events", "1",
                       publish_after=[200])
    assert got == [200]
    # A new group from the start sees everything kept.
    got = await follow(redis_server.url, store, "g2", "--from-start", "--max-events", "6",
                       publish_after=[])
    assert got == [1, 2, 100, 101, 102, 200]


async def test_follow_first_rereads_what_it_did_not_acknowledge(
        redis_server: RedisServer, store: ClusterStore) -> None:  # noqa: F811
    await store.create_group("g3")
    await publish(store, "forest", 1, [7, 8])
    # A consumer that read and crashed before XACK:
    assert len(await store.read_group("g3", "worker-1", count=10, block_ms=10)) == 2
    assert await store.pending_count("g3") == 2
    got = await follow(redis_server.url, store, "g3", "--consumer", "worker-1",
                       "--max-events", "2", publish_after=[])
    assert got == [7, 8]
    assert await store.pending_count("g3") == 0
    # Pending entries trimmed from the stream meanwhile are acknowledged, not printed.
    await publish(store, "forest", 2, [9, 10])
    assert len(await store.read_group("g3", "worker-1", count=10, block_ms=10)) == 2
    await store.client.xtrim(store.keys.discoveries, PureToken.MAXLEN, 1)
    trimmed, kept = await store.read_group("g3", "worker-1", pending=True)
    assert set(trimmed) == {"id", "trimmed"} and kept["value"] == 10
    got = await follow(redis_server.url, store, "g3", "--consumer", "worker-1",
                       "--max-events", "1", publish_after=[])
    assert got == [10]
    assert await store.pending_count("g3") == 0


async def test_follow_rides_out_a_redis_restart(redis_server: RedisServer,  # noqa: F811
                                                store: ClusterStore) -> None:
    with started("--redis", redis_server.url, "--follow", "--json", "--group", "g5",
                 "--max-events", "2", "--timeout", "0.5") as proc:
        with trio.fail_after(RUN_TIMEOUT):
            while "g5" not in await groups(store):
                await trio.sleep(0.05)
            await publish(store, "lake", 1, [1])
            while await store.pending_count("g5") or not await store.client.xlen(
                    store.keys.discoveries):
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(redis_server.restart)
        await publish(store, "lake", 2, [2])
        out, _err = await exited(proc)
    assert values_of(out) == [1, 2]


async def test_ctrl_c_exits_cleanly(redis_server: RedisServer,  # noqa: F811
                                    store: ClusterStore) -> None:
    with started("--redis", redis_server.url, "--follow", "--group", "g4") as proc:
        with trio.fail_after(RUN_TIMEOUT):
            while "g4" not in await groups(store):
                await trio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = await exited(proc)
    assert "Traceback" not in err


def test_errors_say_what_to_do() -> None:
    down = run("--redis", f"redis://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "start redis-server or fix --redis" in down.stderr and "Traceback" not in down.stderr
    missing = subprocess.run(command(), cwd=ROOT, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT, env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 2 and "TREASURE_HUNT_REDIS" in missing.stderr
    bad = run("--redis", "http://example.org/")
    assert bad.returncode == 2 and "not a Redis URL" in bad.stderr
    assert run("--count", "0").returncode == 2
    helped = run("--help")
    assert helped.returncode == 0 and "examples:" in helped.stdout
