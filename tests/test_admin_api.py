"""The admin API on an in-process server: refusals, create, list, stop, with real clients.

Every call is a real HTTP request on 127.0.0.1; players are real WebSocket clients.
Restarts of a real ``serve`` process are in tests/test_admin_restart.py, the cluster
in tests/test_admin_cluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from admin_support import TOKEN, admin_call

from server.client import JoinRefused, ServerError, connect
from server.protocol import ErrorCode

pytestmark = pytest.mark.usefixtures("collect_garbage")

SMALL = {"width": 200.0, "height": 200.0, "treasures": 20, "max_players": 50}


async def _server(serve: Any, tmp_path: Path, **server: Any) -> Any:
    return await serve({"name": "demo", **SMALL}, admin_token=TOKEN,
                       data_dir=str(tmp_path / "data"), **server)


async def test_refusals_say_what_is_wrong_with_the_status_of_each(serve, tmp_path: Path):
    srv = await _server(serve, tmp_path)
    port = srv.ports.http
    hunts = "/api/admin/hunts"

    status, headers, body = await admin_call(port, "GET", hunts, token=None)
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = await admin_call(port, "GET", hunts, token=None,
                                       headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    status, _, body = await admin_call(port, "POST", hunts, {"name": "x"}, token="wrong")
    assert status == 403 and "not valid" in body["error"]

    status, _, body = await admin_call(port, "GET", hunts + "/nope")
    assert status == 404 and "'nope'" in body["error"]
    status, _, body = await admin_call(port, "POST", hunts + "/nope/stop")
    assert status == 404
    status, _, body = await admin_call(port, "GET", hunts + "/%ff%fe")
    assert status == 400 and "UTF-8" in body["error"]
    status, _, body = await admin_call(port, "GET", "/api/admin/players")
    assert status == 404 and "routes:" in body["error"]
    status, headers, body = await admin_call(port, "GET", hunts + "/demo/stop")
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _ = await admin_call(port, "PUT", hunts)
    assert status == 405 and "POST" in headers["allow"]

    cases = [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"params": {}}, 422, "name"),
        ({"name": "", "params": {}}, 422, "name"),
        ({"name": "x" * 65}, 422, "name"),
        ({"name": "cup", "colour": "red"}, 422, "colour"),
        ({"name": "cup", "params": []}, 422, "params"),
        ({"name": "cup", "params": {"name": "other"}}, 422, "params.name"),
        ({"name": "cup", "params": {"width": -5}}, 422, "params.width"),
        ({"name": "cup", "params": {"treasures": 2.5}}, 422, "params.treasures"),
        ({"name": "cup", "params": {"speed": 3}}, 422, "params.speed"),
        ({"name": "cup", "rounds": 3}, 422, "rounds"),
        ({"name": "cup", "rounds": {"lobby_ticks": 0}}, 422, "rounds.lobby_ticks"),
        ({"name": "cup", "rounds": {"laps": 2}}, 422, "rounds.laps"),
        ({"name": "cup", "rounds": {"round": [{"end": "never"}]}}, 422, "rounds.round.end"),
        ({"name": "cup", "rounds": {"round": [{"treasures": 999}]}}, 422,
         "rounds.round.treasures"),
        ({"name": "cup", "rounds": {}, "params": {"rounds": {}}}, 422, "rounds"),
        ({"name": "demo"}, 409, "name"),
    ]
    for body_in, want, field in cases:
        status, _, body = await admin_call(port, "POST", hunts, body_in)
        assert status == want, (body_in, body)
        assert body.get("field") == field, (body_in, body)
        assert body["error"]
    status, _, body = await admin_call(port, "POST", hunts, b"{" + b" " * 70_000 + b"}")
    assert status == 413 and "65536 bytes" in body["error"]

    listed = (await admin_call(port, "GET", hunts))[2]["hunts"]
    assert [h["name"] for h in listed] == ["demo"], "no refused call created anything"


async def test_a_server_without_admin_token_refuses_every_call(serve):
    srv = await serve({"name": "demo", **SMALL})
    status, _, body = await admin_call(srv.ports.http, "GET", "/api/admin/hunts")
    assert status == 403 and "--admin-token" in body["error"]


async def test_create_play_stop_with_real_clients(serve, tmp_path: Path):
    """A hunt created through the API ticks at once with its parameters and takes players;
    stopping it closes them with UNKNOWN_HUNT (4002), refuses new HELLOs and is final."""
    srv = await _server(serve, tmp_path, allow_create_hunts=True)
    port = srv.ports.http
    status, _, row = await admin_call(port, "POST", "/api/admin/hunts", {
        "name": "spring cup/1", "params": {"width": 300, "treasures": 15, "seed": 9}})
    assert status == 201, row
    assert row["name"] == "spring cup/1" and row["status"] == "ticking"
    assert row["params"]["width"] == 300.0 and row["params"]["treasures"] == 15
    assert row["params"]["seed"] == 9
    path = "/api/admin/hunts/spring%20cup%2F1"

    with trio.fail_after(30):
        async with connect(srv.url, "ada", "spring cup/1") as ada:
            assert ada.welcome.width == 300.0
            await ada.next_tick()
            status, _, shown = await admin_call(port, "GET", path)
            assert status == 200 and shown["players"] == 1 and shown["status"] == "ticking"
            listed = (await admin_call(port, "GET", "/api/admin/hunts"))[2]["hunts"]
            assert {h["name"]: h["status"] for h in listed} == {
                "demo": "ticking", "spring cup/1": "ticking"}

            status, _, stopped = await admin_call(port, "POST", path + "/stop",
                                                  {"reason": "the cup is over"})
            assert status == 200 and stopped["status"] == "stopped", stopped
            assert stopped["stopped"]["by"] == "admin_token"
            assert stopped["stopped"]["reason"] == "the cup is over"
            with pytest.raises(ServerError) as closed:
                for _ in range(100):
                    await ada.next_tick()
            assert closed.value.code == ErrorCode.UNKNOWN_HUNT
            assert closed.value.close_code == 4002
            assert "stopped by an operator" in closed.value.message

        # allow_create_hunts does not bring a stopped hunt back.
        with pytest.raises(JoinRefused) as refused:
            async with connect(srv.url, "bob", "spring cup/1"):
                pass
        assert refused.value.code == ErrorCode.UNKNOWN_HUNT
        status, _, again = await admin_call(port, "POST", path + "/stop")
        assert status == 200 and again["status"] == "stopped", "stopping twice is harmless"
        status, _, body = await admin_call(port, "POST", "/api/admin/hunts",
                                           {"name": "spring cup/1"})
        assert status == 409 and body["field"] == "name"
        async with connect(srv.url, "cy", "demo") as cy:  # the other hunt never noticed
            await cy.next_tick()

    trail = (tmp_path / "data" / "hunts").glob("spring_cup_1-*/admin.jsonl")
    lines = [json.loads(line) for p in trail for line in p.read_text().splitlines()]
    assert [(x["action"], x["hunt"], x["by"]) for x in lines] == [
        ("create", "spring cup/1", "admin_token"), ("stop", "spring cup/1", "admin_token")]
    assert lines[0]["params"]["width"] == 300.0 and lines[1]["reason"] == "the cup is over"


async def test_a_hunt_created_with_a_round_plan_keeps_it(serve, tmp_path: Path):
    srv = await _server(serve, tmp_path)
    plan = {"count": 2, "lobby_ticks": 40, "running_ticks": 200, "results_ticks": 20,
            "round": [{"treasures": 5, "respawn": False, "end": "all_found"}]}
    status, _, row = await admin_call(srv.ports.http, "POST", "/api/admin/hunts",
                                      {"name": "cup", "params": {"treasures": 10},
                                       "rounds": plan})
    assert status == 201, row
    got = row["params"]["rounds"]
    assert (got["count"], got["lobby_ticks"], got["running_ticks"]) == (2, 40, 200)
    assert got["round"][0]["treasures"] == 5 and got["round"][0]["end"] == "all_found"
    assert srv.app.placement.hub_named("cup").world.hunt_params[0].rounds.count == 2
    assert row["phase"] == "lobby" and row["round"] == 1
    clock = row["clock"]
    assert clock["count"] == 2 and clock["end"] == "all_found" and clock["treasures"] == 5
    assert 0 <= clock["ticks_left"] <= 41 and clock["phase_end"] == clock["phase_start"] + 40
    _, _, listed = await admin_call(srv.ports.http, "GET", "/api/admin/hunts")
    phases = {h["name"]: (h["phase"], h["round"]) for h in listed["hunts"]}
    assert phases == {"demo": (None, None), "cup": ("lobby", 1)}


async def test_created_hunts_are_capped_by_max_created_hunts(serve, tmp_path: Path):
    srv = await _server(serve, tmp_path, max_created_hunts=1)
    port = srv.ports.http
    assert (await admin_call(port, "POST", "/api/admin/hunts", {"name": "a"}))[0] == 201
    status, _, body = await admin_call(port, "POST", "/api/admin/hunts", {"name": "b"})
    assert status == 409 and "max_created_hunts" in body["error"]


async def test_admin_tickets_in_ticket_mode(serve, tmp_path: Path):
    """In ticket mode an admin ticket opens the API (its hunts claim limits it); a player's,
    an expired or a forged ticket is 403; the admin token still works beside them."""
    from auth_support import AUDIENCE, SECRET, jwt_server

    from server.auth import mint_ticket

    srv = await serve({"name": "demo", **SMALL}, {"name": "other", **SMALL},
                      admin_token=TOKEN, data_dir=str(tmp_path / "data"),
                      **jwt_server(tmp_path))
    port = srv.ports.http

    def ticket(**kw: Any) -> str:
        return mint_ticket(SECRET, user="op-7", name="Operator", audience=AUDIENCE, **kw)

    admin = ticket(role="admin")
    status, _, body = await admin_call(port, "GET", "/api/admin/hunts", token=admin)
    assert status == 200 and {h["name"] for h in body["hunts"]} == {"demo", "other"}
    scoped = ticket(role="admin", hunts=["demo"])
    status, _, body = await admin_call(port, "GET", "/api/admin/hunts", token=scoped)
    assert [h["name"] for h in body["hunts"]] == ["demo"]
    status, _, body = await admin_call(port, "POST", "/api/admin/hunts/other/stop",
                                       token=scoped)
    assert status == 403 and "'other'" in body["error"]
    for bad, why in [(ticket(), "role"), (ticket(role="admin", ttl=-120), "expired"),
                     (admin[:-4] + "AAAA", "signature")]:
        status, _, body = await admin_call(port, "GET", "/api/admin/hunts", token=bad)
        assert status == 403, (why, body)
    status, _, row = await admin_call(port, "POST", "/api/admin/hunts/demo/stop", token=scoped)
    assert status == 200 and row["stopped"]["by"] == "user:op-7"
    status, _, _ = await admin_call(port, "GET", "/api/admin/hunts")  # the admin token
    assert status == 200
