"""The admin API's round controls with real clients: start the next round now, end the
running round early, refusals where the phase does not allow them; each change is seen by
every player as ROUND (and RESULTS) messages, and kept in the hunt's audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from admin_support import TOKEN, admin_call

from server.client import HuntClient, connect
from server.protocol import PHASE_LOBBY, PHASE_RESULTS, PHASE_RUNNING, Results, Round

pytestmark = pytest.mark.usefixtures("collect_garbage")

#: Phases long enough that only the operator's calls change them during the test.
LONG = 20_000
PLAN = {"count": 2, "lobby_ticks": LONG, "running_ticks": LONG, "results_ticks": LONG,
        "round": [{"treasures": 30}]}
PARAMS = {"width": 120.0, "height": 120.0, "treasures": 30, "discovery_radius": 15.0,
          "player_speed": 200.0, "seed": 3}


async def _next_round(client: HuntClient, phase: int, number: int,
                      limit: int = 200) -> Round:
    """Read ticks until the client has a ROUND of ``phase`` in round ``number``."""
    for _ in range(limit):
        r = client.round
        if r is not None and r.phase == phase and r.round == number:
            return r
        await client.next_tick()
    raise AssertionError(f"no ROUND phase {phase} round {number}; last {client.round}")


async def test_round_controls_reach_every_player(serve, tmp_path: Path) -> None:
    srv = await serve({"name": "demo", "treasures": 5}, admin_token=TOKEN,
                      data_dir=str(tmp_path / "data"))
    port = srv.ports.http
    status, _, row = await admin_call(port, "POST", "/api/admin/hunts",
                                      {"name": "cup", "params": PARAMS, "rounds": PLAN})
    assert status == 201, row
    base = "/api/admin/hunts/cup/rounds/"

    with trio.fail_after(60):
        async with connect(srv.url, "ada", "cup") as ada, connect(srv.url, "bo", "cup") as bo:
            for c in (ada, bo):
                await _next_round(c, PHASE_LOBBY, 1)
            status, _, body = await admin_call(port, "POST", base + "end")
            assert status == 409 and "running" in body["error"], body

            status, _, row = await admin_call(port, "POST", base + "next")
            assert status == 200, row
            assert row["phase"] == "running" and row["round"] == 1
            applied = row["applied_tick"]
            for c in (ada, bo):
                r = await _next_round(c, PHASE_RUNNING, 1)
                assert r.phase_start == applied and r.treasures == 30

            # Ada walks the small crowded map until she scores, then the round ends early.
            for _ in range(400):
                if ada.score > 0:
                    break
                await ada.move(1.0 if (ada.tick // 20) % 2 else -1.0, 0.6)
                await ada.next_tick()
            assert ada.score > 0
            status, _, row = await admin_call(port, "POST", base + "end")
            assert status == 200 and row["phase"] == "results", row
            for c in (ada, bo):
                await _next_round(c, PHASE_RESULTS, 1)
                for _ in range(5):
                    if isinstance(c.results, Results):
                        break
                    await c.next_tick()
                assert c.results.round == 1 and c.results.tick == row["applied_tick"]
            assert ada.results.your_rank == 1 and ada.results.your_score > 0
            assert bo.results.your_rank == 2 and ada.results.players == 2

            # From the results of round 1 (not the last): "next" skips round 2's lobby.
            status, _, row = await admin_call(port, "POST", base + "next")
            assert status == 200 and (row["phase"], row["round"]) == ("running", 2), row
            await _next_round(bo, PHASE_RUNNING, 2)
            status, _, row = await admin_call(port, "POST", base + "end")
            assert status == 200 and (row["phase"], row["round"]) == ("results", 2)
            status, _, body = await admin_call(port, "POST", base + "next")
            assert status == 409, "the last round's results lead to the end, not a round 3"

    status, _, body = await admin_call(port, "POST", "/api/admin/hunts/demo/rounds/next")
    assert status == 409 and "no round plan" in body["error"]
    status, _, body = await admin_call(port, "POST", "/api/admin/hunts/nope/rounds/next")
    assert status == 404
    status, _, body = await admin_call(port, "POST", base + "restart")
    assert status == 404
    status, _, body = await admin_call(port, "POST", base + "next", token="wrong")
    assert status == 403

    status, _, results = await admin_call(port, "GET", "/api/hunts/cup/rounds")
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert results["rounds"][0]["winner"]["name"] == "ada"
    trail = next((tmp_path / "data" / "hunts").glob("cup-*/admin.jsonl")).read_text()
    actions = [json.loads(line)["action"] for line in trail.splitlines()]
    assert actions == ["create", "round_next", "round_end", "round_next", "round_end"]
