"""Scale-out against a real redis-server and real `serve --redis` processes (issue 6).

Placement, redirects, kill -9 failover with scores and resume tokens intact, the
global leaderboard, a Redis restart during play, and no split brain when a node
is paused (SIGSTOP) past its lease. Each test starts its own Redis and nodes.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster_support import CLI, Node
from redis_server import RedisServer, redis_server  # noqa: F401

from server.client import HuntClient, ServerError, connect

pytestmark = pytest.mark.slow

HUNTS = ("alpha", "beta", "gamma")


async def until(predicate: Any, timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll a blocking ``predicate`` (in a thread) until truthy; fail after ``timeout`` s."""
    deadline = trio.current_time() + timeout
    while True:
        value = await trio.to_thread.run_sync(predicate)
        if value:
            return value
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await trio.sleep(step)


def owners(node: Node) -> dict[str, str | None] | None:
    body = node.try_get("/hunts")
    if body is None:
        return None
    return {h["name"]: h["owner"] for h in body["hunts"]}


def all_placed(node: Node, live: set[str]) -> dict[str, str] | None:
    o = owners(node)
    if o is None or set(o) != set(HUNTS) or not all(v in live for v in o.values()):
        return None
    return o  # type: ignore[return-value]


def node_of(nodes: list[Node], node_id: str) -> Node:
    return next(n for n in nodes if n.node_id == node_id)


def start_nodes(tmp_path: Path, redis_url: str, ids: str, *extra: str,
                lease: float = 1.5) -> list[Node]:
    data = tmp_path / "shared-data"
    nodes = [Node(i, redis_url, data, tmp_path, *extra, lease=lease) for i in ids]
    for n in nodes:
        n.start()
    return nodes


def stop_all(nodes: list[Node]) -> None:
    for n in nodes:
        n.stop()


async def play_until_score(hunt: HuntClient, timeout: float = 30.0) -> int:
    """Steer at random until the player has scored (a discovery); returns the score."""
    rng = random.Random(hunt.player_id)
    with trio.fail_after(timeout):
        while hunt.score == 0:
            await hunt.move(rng.uniform(-1, 1), rng.uniform(-1, 1))
            for _ in range(5):
                await hunt.next_tick()
    return hunt.score


async def test_hunts_are_placed_on_the_nodes_and_clients_are_redirected(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    nodes = start_nodes(tmp_path, redis_server.url, "ab")
    try:
        placed = await until(lambda: all_placed(nodes[0], {"a", "b"}), 15, "placement")
        assert await trio.to_thread.run_sync(owners, nodes[1]) == placed
        for owner in set(placed.values()):
            mine = {h for h, o in placed.items() if o == owner}
            node = node_of(nodes, owner)
            # /healthz lists a hunt once it ticks; until then it is "starting".
            await until(lambda node=node, mine=mine: set(node.running()) == mine, 15,
                        f"node {owner} to tick {sorted(mine)}")
            assert node.get("/healthz")["starting"] == []
        for hunt, owner in placed.items():
            other = node_of(nodes, "b" if owner == "a" else "a")
            target = node_of(nodes, owner)
            async with connect(other.ws_url, f"p-{hunt}", hunt) as client:
                assert client.url == target.ws_url
                assert client.redirects == [target.ws_url]
                assert client.entry_url == other.ws_url
                await client.move(1.0, 0.0)
                for _ in range(3):
                    await client.next_tick()
            assert hunt in node_of(nodes, owner).running()
        metrics = await trio.to_thread.run_sync(_metrics, node_of(nodes, owner))
        assert metrics["hunt_redis_up"] == 1
        assert metrics["hunt_cluster_leases"] == list(placed.values()).count(owner)
        # A client that asks the owner directly is not redirected.
        hunt, owner = next(iter(placed.items()))
        async with connect(node_of(nodes, owner).ws_url, "direct", hunt) as client:
            assert client.redirects == []
    finally:
        stop_all(nodes)


async def test_a_new_hunt_goes_to_the_least_loaded_node(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    a, b = start_nodes(tmp_path, redis_server.url, "a", "--allow-create-hunts")[0], None
    try:
        # Node a alone places the three configured hunts on itself.
        await until(lambda: all_placed(a, {"a"}), 15, "placement on the only node")
        b = Node("b", redis_server.url, tmp_path / "shared-data", tmp_path,
                 "--allow-create-hunts", lease=1.5).start()
        # b heartbeats before it logs "serving": a sees it from now on.
        # Both have no players: the node with fewer hunts (b) gets the new one.
        async with connect(a.ws_url, "p1", "delta") as p1, connect(a.ws_url, "p2", "delta") as p2:
            assert p1.url == b.ws_url and p2.url == b.ws_url
            await p1.next_tick()
            await trio.sleep(1.0)  # a heartbeat or two: a sees b's two players
            # Now b has players and a has none: players count first, so a gets it.
            async with connect(b.ws_url, "maker", "epsilon") as maker:
                assert maker.url == a.ws_url
        assert owners(a)["delta"] == "b" and owners(b)["epsilon"] == "a"
    finally:
        a.stop()
        if b is not None:
            b.stop()


async def test_kill_9_moves_the_hunts_with_scores_and_players_resume(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    nodes = start_nodes(tmp_path, redis_server.url, "ab")
    try:
        placed = await until(lambda: all_placed(nodes[0], {"a", "b"}), 15, "placement")
        victim_id = "a"
        survivor = node_of(nodes, "b")
        victim = node_of(nodes, victim_id)
        moved = [h for h, o in placed.items() if o == victim_id]
        told = {}
        for hunt in moved:
            async with connect(survivor.ws_url, f"p-{hunt}", hunt) as client:
                score = await play_until_score(client)
                told[hunt] = (client.player_id, client.resume_token, score, client.tick)
        victim.kill()
        t0 = time.monotonic()
        await until(lambda: set(moved) <= set(survivor.running()), 15, "takeover")
        took = time.monotonic() - t0
        assert took < 1.5 + 4.0, took  # lease + recovery, generously on a busy machine
        for hunt, (pid, token, score, tick) in told.items():
            async with connect(survivor.ws_url, f"p-{hunt}", hunt,
                               resume_token=token) as client:
                assert client.url == survivor.ws_url
                assert client.player_id == pid
                await client.next_tick()  # a keyframe: the player's own state
                assert client.score >= score  # nothing lost (it may have scored since)
                assert client.tick > tick
        started = [e for e in survivor.events() if e.get("event") == "hunt_started"]
        assert {e["hunt"] for e in started} >= set(moved)
    finally:
        stop_all(nodes)


async def test_discoveries_a_dead_node_had_not_written_are_republished(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    nodes = start_nodes(tmp_path, redis_server.url, "ab", lease=3.0)
    try:
        placed = await until(lambda: all_placed(nodes[0], {"a", "b"}), 15, "placement")
        hunt = next(h for h, o in placed.items() if o == "a")
        victim, survivor = node_of(nodes, "a"), node_of(nodes, "b")
        told: set[tuple[int, int]] = set()  # (tick, player_id) of discoveries the client saw
        async with connect(victim.ws_url, "finder", hunt) as client:
            await play_until_score(client)
            # Redis away: the victim's sink queues what it cannot write; then the victim dies
            # (well inside its lease deadline, 2.7 s) with those discoveries unwritten.
            redis_server.pause()
            rng = random.Random(3)
            try:
                with trio.move_on_after(1.5):
                    while True:
                        await client.move(rng.uniform(-1, 1), rng.uniform(-1, 1))
                        for _ in range(2):
                            update = await client.next_tick()
                            for d in update.discoveries:
                                told.add((update.tick, (int(d["gen"]) << 32) | int(d["slot"])))
                victim.kill()
            finally:
                redis_server.resume()
        assert told, "no discovery while Redis was paused: the test proves nothing"
        await until(lambda: hunt in survivor.running(), 15, "takeover")

        def in_stream() -> set[tuple[int, int]]:
            out = subprocess.run(["redis-cli", "-u", redis_server.url, "--json", "XRANGE",
                                  "th:discoveries", "-", "+"], capture_output=True, text=True,
                                 timeout=5).stdout
            got = set()
            for _entry_id, flat in json.loads(out or "[]"):
                f = dict(zip(flat[::2], flat[1::2], strict=True))
                if f["hunt"] == hunt:
                    got.add((int(f["tick"]), int(f["player_id"])))
            return got

        await until(lambda: told <= in_stream(), 10, "the dead node's discoveries in the stream")
        recovered = [e for e in survivor.events() if e.get("event") == "recovered"]
        assert any(e.get("republished_ticks", 0) > 0 for e in recovered)
    finally:
        stop_all(nodes)


def leaderboard_scores(node: Node) -> dict[tuple[str, int], int] | None:
    body = node.try_get("/leaderboard?limit=1000")
    if body is None:
        return None
    return {(r["hunt"], r["player_id"]): r["score"] for r in body["leaderboard"]}


def _metrics(node: Node) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def discoveries_total(nodes: list[Node]) -> float:
    """hunt_discoveries_total summed over the nodes' /metrics."""
    total = 0.0
    for n in nodes:
        with urllib.request.urlopen(f"http://127.0.0.1:{n.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("hunt_discoveries_total "):
                total += float(line.split()[1])
    return total


async def _play_all(clients: list[HuntClient], seconds: float) -> None:
    async def one(c: HuntClient) -> None:
        rng = random.Random(c.player_id)
        with trio.move_on_after(seconds):
            while True:
                await c.move(rng.uniform(-1, 1), rng.uniform(-1, 1))
                for _ in range(3):
                    await c.next_tick()

    async with trio.open_nursery() as nursery:
        for c in clients:
            nursery.start_soon(one, c)


async def test_global_leaderboard_and_stream_survive_a_redis_restart(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    nodes = start_nodes(tmp_path, redis_server.url, "ab", lease=3.0)
    try:
        await until(lambda: all_placed(nodes[0], {"a", "b"}), 15, "placement")
        async with connect(nodes[0].ws_url, "a1", "alpha") as a1, \
                connect(nodes[0].ws_url, "a2", "alpha") as a2, \
                connect(nodes[1].ws_url, "b1", "beta") as b1, \
                connect(nodes[1].ws_url, "g1", "gamma") as g1:
            clients = [a1, a2, b1, g1]
            hunt_of = {a1: "alpha", a2: "alpha", b1: "beta", g1: "gamma"}
            await _play_all(clients, 2.0)
            redis_server.stop()
            await _play_all(clients, 1.0)  # play goes on while Redis is down
            redis_server.start()
            await _play_all(clients, 2.0)
            for c in clients:  # stand still: scores settle (a respawn may still land on one)
                await c.move(0.0, 0.0)
            matched = None
            with trio.move_on_after(15):
                while matched is None:
                    for c in clients:
                        await c.next_tick()
                    expected = {(hunt_of[c], c.player_id): c.score for c in clients if c.score}
                    board = await trio.to_thread.run_sync(leaderboard_scores, nodes[1])
                    if board is not None and {k: v for k, v in board.items() if v} == expected:
                        matched = expected
            assert matched is not None, (board, expected)
            expected = matched
            assert sum(expected.values()) > 0
        found = await trio.to_thread.run_sync(discoveries_total, nodes)

        def stream_complete() -> bool:
            return _stream_length(redis_server) == found

        await until(stream_complete, 10, f"{found:g} discoveries in the stream")
        for n in nodes:
            assert not [e for e in n.events() if e.get("event") in ("fenced", "lease_lost")]
    finally:
        stop_all(nodes)


def _stream_length(redis: RedisServer) -> int:
    import subprocess

    out = subprocess.run(["redis-cli", "-u", redis.url, "XLEN", "th:discoveries"],
                         capture_output=True, text=True, timeout=5)
    return int(out.stdout.strip() or 0)


async def test_a_paused_node_past_its_lease_never_ticks_the_moved_hunt(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    nodes = start_nodes(tmp_path, redis_server.url, "ab")
    try:
        placed = await until(lambda: all_placed(nodes[0], {"a", "b"}), 15, "placement")
        paused = node_of(nodes, "a")
        other = node_of(nodes, "b")
        hunt = next(h for h, o in placed.items() if o == "a")
        async with connect(paused.ws_url, "p", hunt) as client:
            await play_until_score(client)
            pid, token = client.player_id, client.resume_token
            paused.pause()
            try:
                await until(lambda: hunt in other.running(), 15, "takeover of the paused hunt")
            finally:
                paused.resume()
            # What the paused node told this client before and after: every tick it saw
            # must be part of the new owner's history (the new owner recovered at least it).
            seen = client.tick
            with trio.move_on_after(5):
                try:
                    while True:
                        await client.next_tick()
                        seen = client.tick
                except ServerError as exc:
                    assert exc.code == 4011  # HUNT_MOVED
        recovered = await until(lambda: [e for e in other.events()
                                         if e.get("event") == "recovered"
                                         and e.get("hunt") == hunt], 15, "recovery logged")
        assert recovered[-1]["tick"] >= seen
        await until(lambda: hunt not in paused.running(), 10, "the paused node to let go")
        fenced = [e for e in paused.events() if e.get("event") in ("fenced", "lease_lost")]
        assert fenced, json.dumps(paused.events()[-20:])
        async with connect(paused.ws_url, "p", hunt, resume_token=token) as back:
            assert back.url == other.ws_url and back.player_id == pid
    finally:
        stop_all(nodes)


def test_serve_says_what_to_do_when_redis_is_unreachable(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "serve", "--redis", "redis://127.0.0.1:1/0", "--port", "0", "--http-port", "0",
         "--data-dir", str(tmp_path / "data"), "--log-format", "json"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 2
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in proc.stderr
    assert "start redis-server or fix --redis" in proc.stderr
