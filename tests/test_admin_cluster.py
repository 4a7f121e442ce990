"""The admin API on a cluster: a real redis-server and real ``serve --redis`` nodes.

Any node takes the call: a hunt created through one node is placed on the least
loaded, calls about it through the other node are forwarded to its owner, a stop
through a node that does not run the hunt stops it at once on its owner, and stays
stopped (in Redis) across the restart of every node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from admin_support import TOKEN, admin_call
from redis_server import RedisServer, redis_server  # noqa: F401
from test_cluster_nodes import start_nodes, stop_all, until

from server.client import JoinRefused, ServerError, connect
from server.protocol import PHASE_LOBBY, PHASE_RUNNING, ErrorCode

pytestmark = pytest.mark.slow


def _owner(node: Any, hunt: str) -> str | None:
    body = node.try_get("/hunts")
    if body is None:
        return None
    return next((h["owner"] for h in body["hunts"] if h["name"] == hunt and h["owner_live"]),
                None)


async def test_any_node_takes_the_call_and_routes_it_to_the_owner(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    nodes = start_nodes(tmp_path, redis_server.url, ("n1", "n2"), "--admin-token", TOKEN)
    try:
        n1, n2 = nodes
        status, _, row = await admin_call(n1.http, "POST", "/api/admin/hunts", {
            "name": "cup", "params": {"width": 250, "treasures": 9},
            "rounds": {"count": 3, "lobby_ticks": 20_000, "running_ticks": 20_000}})
        assert status == 201, row
        owner_id = await until(lambda: _owner(n2, "cup"), 30, "cup placed")
        owner = next(n for n in nodes if n.node_id == owner_id)
        other = n2 if owner is n1 else n1

        await until(lambda: "cup" in owner.running(), 30, "cup ticking on its owner")
        status, _, shown = await admin_call(other.http, "GET", "/api/admin/hunts/cup")
        assert status == 200 and shown["status"] == "ticking", shown
        assert shown["owner"] == owner_id and shown["params"]["width"] == 250.0
        status, _, listed = await admin_call(other.http, "GET", "/api/admin/hunts")
        rows = {h["name"]: h for h in listed["hunts"]}
        assert set(rows) == {"alpha", "beta", "gamma", "cup"}
        assert rows["cup"]["status"] == "ticking" and rows["cup"]["owner"] == owner_id
        status, _, body = await admin_call(other.http, "GET", "/api/admin/hunts/nope")
        assert status == 404
        status, _, body = await admin_call(other.http, "POST", "/api/admin/hunts",
                                           {"name": "cup"})
        assert status == 409 and body["field"] == "name"
        status, _, body = await admin_call(other.http, "POST", "/api/admin/hunts/cup/stop",
                                           token="wrong")
        assert status == 403

        with trio.fail_after(60):
            async with connect(other.ws_url, "ada", "cup") as ada:  # redirected to the owner
                await ada.next_tick()
                assert ada.welcome.width == 250.0
                assert ada.round.phase == PHASE_LOBBY
                status, _, row = await admin_call(other.http, "POST",
                                                  "/api/admin/hunts/cup/rounds/next")
                assert status == 200 and row["phase"] == "running", row
                assert row["owner"] == owner_id, "the owner answered, through the other node"
                for _ in range(100):
                    if ada.round.phase == PHASE_RUNNING:
                        break
                    await ada.next_tick()
                assert ada.round.phase_start == row["applied_tick"]
                status, _, row = await admin_call(other.http, "POST",
                                                  "/api/admin/hunts/cup/stop",
                                                  {"reason": "final"})
                assert status == 200 and row["status"] == "stopped", row
                with pytest.raises(ServerError) as closed:
                    for _ in range(100):  # the owner stopped it now, not a loop later
                        await ada.next_tick()
                assert closed.value.code == ErrorCode.UNKNOWN_HUNT
            for node in nodes:
                with pytest.raises(JoinRefused) as refused:
                    async with connect(node.ws_url, "bob", "cup"):
                        pass
                assert refused.value.code == ErrorCode.UNKNOWN_HUNT

        stop_all(nodes)
        for n in nodes:
            n.start()
        await until(lambda: all(_owner(n1, h) for h in ("alpha", "beta", "gamma")), 30,
                    "the configured hunts placed again")
        status, _, listed = await admin_call(n2.http, "GET", "/api/admin/hunts")
        rows = {h["name"]: h for h in listed["hunts"]}
        assert rows["cup"]["status"] == "stopped" and rows["cup"]["owner"] is None
        assert rows["alpha"]["status"] == "ticking"
        for n in nodes:
            started = [e["hunt"] for e in n.events(since_start=True)
                       if e.get("event") == "hunt_started"]
            assert "cup" not in started
    finally:
        stop_all(nodes)
