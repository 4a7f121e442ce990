"""A single server is a cluster of one: one hub per hunt, created hunts get hubs of their own,
and a data dir of the older layout (one journal for every hunt) is still recovered."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import trio
from test_server_ops import get_json

from server.client import connect
from server.durability import Journal, token_hash
from server.hunt._placement import hunt_dir_name, hunt_journals
from tickengine import EngineConfig, HuntParams, World

pytestmark = pytest.mark.usefixtures("collect_garbage")


async def test_each_hunt_runs_in_a_hub_of_its_own_with_a_world_sized_from_it(serve) -> None:
    srv = await serve({"name": "small", "max_players": 50, "treasures": 10},
                      {"name": "large", "max_players": 400, "treasures": 300})
    hubs = srv.app.hubs()
    assert sorted(h.world.hunt_params[0].name for h in hubs) == ["large", "small"]
    assert all(len(h.world.hunt_params) == 1 for h in hubs)
    caps = {h.world.hunt_params[0].name: (h.world.players.capacity, h.world.treasures.capacity)
            for h in hubs}
    assert caps == {"small": (50, 10), "large": (400, 300)}
    with trio.fail_after(10):
        async with connect(srv.url, "ann", "small") as a, connect(srv.url, "bob", "large") as b:
            assert a.welcome.width > 0 and b.welcome.width > 0
            ta = await a.ticks().__anext__()
            tb = await b.ticks().__anext__()
            assert ta.tick >= 1 and tb.tick >= 1
    health = await get_json(srv.ports.http, "/healthz")
    assert health["ok"] and health["status"] == "ok"
    assert health["hunts"] == ["large", "small"] and health["failed"] == {}
    hunts = await get_json(srv.ports.http, "/hunts")
    assert [h["name"] for h in hunts["hunts"]] == ["small", "large"]


async def test_a_created_hunt_gets_its_own_hub_and_journal_and_survives_a_restart(
        serve, tmp_path: Path) -> None:
    from server._config import parse_serve_config
    from server.shell._app import HuntServer

    data = tmp_path / "data"
    config = parse_serve_config({
        "server": {"host": "127.0.0.1", "port": 0, "http_port": -1, "data_dir": str(data),
                   "allow_create_hunts": True}, "hunt": [{"name": "main"}]})
    first = HuntServer(config)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(first.run)
            async with connect(ports.ws_url, "cat", "fresh-hunt") as c:
                token, pid = c.resume_token, c.player_id
                await c.ticks().__anext__()
            assert len(first.hubs()) == 2
            assert sorted(hunt_journals(data)) == ["fresh-hunt", "main"]
            assert (data / "hunts" / hunt_dir_name("fresh-hunt") / "hunt.json").exists()
            first.shutdown()
        # A new server on the same data dir brings the created hunt back, player included.
        again = await serve({"name": "main"}, data_dir=str(data))
        assert sorted(h.world.hunt_params[0].name for h in again.app.hubs()) == \
            ["fresh-hunt", "main"]
        async with connect(again.url, "cat", "fresh-hunt", resume_token=token) as back:
            assert back.welcome.resumed and back.player_id == pid


def _older_layout(data: Path) -> tuple[bytes, int]:
    """A data dir as a server before one hub per hunt wrote it: one journal, two hunts, one
    player in 'west'. Returns that player's resume token and id."""
    world = World(EngineConfig(max_players=64, max_treasures=400, max_hunts=4),
                  (HuntParams(name="west"), HuntParams(name="east")))
    token = secrets.token_bytes(16)
    journal = Journal(data, snapshot_every=0)
    journal.start(world, {"created_hunts": 0, "players": []})
    pid = world.join(0)
    for _ in range(3):
        result = world.tick()
        joins = [(pid, 0, "wes", token_hash(token))] if result.tick == 1 else []
        journal.append_tick(result.tick, joins=joins)
    journal.close()
    return token, pid


async def test_a_data_dir_of_the_single_journal_layout_is_recovered(
        serve, tmp_path: Path) -> None:
    data = tmp_path / "data"
    token, pid = _older_layout(data)
    srv = await serve({"name": "west"}, {"name": "east"}, data_dir=str(data),
                      allow_create_hunts=True)
    hubs = srv.app.hubs()
    assert len(hubs) == 1, "one hub ticks every hunt of the older journal"
    assert hubs[0].world.tick_number == 3
    with trio.fail_after(15):
        async with connect(srv.url, "wes", "west", resume_token=token) as back:
            assert back.welcome.resumed and back.player_id == pid
            tick = await back.ticks().__anext__()
            assert tick.tick > 3
        async with connect(srv.url, "eve", "east") as e:
            await e.ticks().__anext__()
        # A hunt created now gets a hub and a journal of its own; the old journal goes on.
        async with connect(srv.url, "neo", "north") as n:
            await n.ticks().__anext__()
    assert len(srv.app.hubs()) == 2
    assert list(hunt_journals(data)) == ["north"]
    assert sorted(p.name for p in data.glob("journal-*.log"))
    health = await get_json(srv.ports.http, "/healthz")
    assert health["status"] == "ok" and health["hunts"] == ["east", "north", "west"]
    meta = json.loads((data / "hunts" / hunt_dir_name("north") / "hunt.json").read_text())
    assert meta["name"] == "north"


async def test_the_server_pins_a_threading_layer_safe_for_concurrent_callers(serve) -> None:
    import numba

    srv = await serve({"name": "one"}, {"name": "two"})
    assert len(srv.app.hubs()) == 2  # two worker threads call the parallel kernels at once
    assert numba.threading_layer() in ("tbb", "omp"), numba.threading_layer()


async def test_fresh_moves_every_hunts_journal_aside(serve, tmp_path: Path) -> None:
    from server._config import parse_serve_config
    from server.shell._app import HuntServer

    data = tmp_path / "data"
    config = parse_serve_config({
        "server": {"host": "127.0.0.1", "port": 0, "http_port": -1, "data_dir": str(data)},
        "hunt": [{"name": "main"}]})
    with trio.fail_after(30):
        for fresh in (False, True):
            app = HuntServer(config, fresh=fresh)
            async with trio.open_nursery() as nursery:
                ports = await nursery.start(app.run)
                if not fresh:
                    async with connect(ports.ws_url, "old", "main") as c:
                        await c.ticks().__anext__()
                else:
                    assert len(app.hub.sessions) == 0, "a fresh start recovers nobody"
                    assert app.hub.world.tick_number < 40
                app.shutdown()
    moved = [p for p in data.iterdir() if p.name.startswith("discarded-")]
    assert len(moved) == 1 and (moved[0] / "hunts" / hunt_dir_name("main")).is_dir()
    assert sorted(hunt_journals(data)) == ["main"]
