"""Round results on scale-out nodes, with a real redis-server: every ended round reaches the
results stream once, any node serves every hunt's results, and a round that a killed
owner left running ends on the node that takes the hunt over, once in the stream too."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
from cluster_support import Node
from redis_server import RedisServer, redis_server  # noqa: F401
from test_cluster_nodes import node_of, owners, stop_all, until

from server.client import HuntClient, connect
from server.cluster import ClusterStore
from server.protocol import PHASE_RUNNING

pytestmark = pytest.mark.slow

CONFIG = """\
[engine]
max_players = 64
max_treasures = 64

[[hunt]]
name = "cup"
width = 60.0
height = 60.0
treasures = 12
discovery_radius = 8.0
player_speed = 120.0
seed = 9

[hunt.rounds]
lobby_ticks = 10
running_ticks = 40
results_ticks = 10
respawn = false
"""


async def play_until(c: HuntClient, number: int, phase: int, rng: random.Random) -> None:
    while not (c.round is not None and c.round.round == number and c.round.phase == phase):
        await c.move(rng.uniform(-1, 1), rng.uniform(-1, 1))
        await c.next_tick()


async def test_results_stream_and_routes_across_nodes_and_a_failover(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    (tmp_path / "cluster.toml").write_text(CONFIG)
    data = tmp_path / "shared-data"
    nodes = [Node(i, redis_server.url, data, tmp_path).start() for i in "ab"]
    rng = random.Random(3)
    try:
        owner_id = await until(lambda: (owners(nodes[0]) or {}).get("cup"), 20, "placement")
        owner = node_of(nodes, owner_id)
        await until(lambda: "cup" in owner.running(), 20, "the hunt to tick")
        other = node_of(nodes, "b" if owner.node_id == "a" else "a")
        with trio.fail_after(60):
            async with connect(other.ws_url, "ada", "cup") as ada:
                token = ada.resume_token
                await play_until(ada, 3, PHASE_RUNNING, rng)  # rounds 1 and 2 ended
                # Round 3 runs on the owner: it dies mid-round.
                await trio.to_thread.run_sync(owner.kill)
        async with ClusterStore.open(redis_server.url) as store:
            first = [r["key"] for r in await store.read_results()]
            assert first[:2] == ["cup#1", "cup#2"]
            # The other node takes the hunt over; the player resumes there, round 3 goes on
            # and ends there.
            await until(lambda: "cup" in other.running(), 20, "the takeover")
            with trio.fail_after(60):
                async with connect(other.ws_url, "ada", "cup", resume_token=token) as ada:
                    await ada.next_tick()
                    assert ada.round.round == 3, "the same round goes on after the failover"
                    await play_until(ada, 4, PHASE_RUNNING, rng)
            keys = [r["key"] for r in await store.read_results()]
        assert keys[:3] == ["cup#1", "cup#2", "cup#3"] and len(keys) == len(set(keys))
        listing = await trio.to_thread.run_sync(other.get, "/api/hunts/cup/rounds")
        assert [r["round"] for r in listing["rounds"]][:3] == [1, 2, 3]
        third = await trio.to_thread.run_sync(other.get, "/api/hunts/cup/rounds/3")
        assert third["standings"][0]["name"] == "ada" and third["players"] == 1
    finally:
        stop_all(nodes)
