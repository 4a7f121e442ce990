"""Admin changes outlive the server: a real ``serve`` process killed with SIGKILL right after
the answers, then started again on the same data dir: a created hunt (with its round plan),
a stopped hunt, a round started and a round ended early."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from admin_support import TWO_HUNTS, ServeProcess, admin_call

from server.client import JoinRefused, connect
from server.protocol import ErrorCode

pytestmark = pytest.mark.slow


async def test_a_created_hunt_exists_and_a_stopped_hunt_stays_stopped_after_kill_9(
        tmp_path: Path) -> None:
    srv = ServeProcess(tmp_path, TWO_HUNTS, "--allow-create-hunts").start()
    try:
        port = srv.http
        status, _, row = await admin_call(port, "POST", "/api/admin/hunts", {
            "name": "cup", "params": {"width": 321, "treasures": 7, "seed": 5}})
        assert status == 201, row
        status, _, row = await admin_call(port, "POST", "/api/admin/hunts", {
            "name": "league", "rounds": {"count": 3, "lobby_ticks": 20_000,
                                         "running_ticks": 20_000, "results_ticks": 20_000}})
        assert status == 201 and row["phase"] == "lobby", row
        status, _, begun = await admin_call(port, "POST", "/api/admin/hunts/league/rounds/next")
        assert status == 200 and begun["phase"] == "running", begun
        status, _, ended = await admin_call(port, "POST", "/api/admin/hunts/league/rounds/end")
        assert status == 200 and ended["phase"] == "results", ended
        status, _, second = await admin_call(port, "POST",
                                             "/api/admin/hunts/league/rounds/next")
        assert (status, second["phase"], second["round"]) == (200, "running", 2), second
        status, _, row = await admin_call(port, "POST", "/api/admin/hunts/beta/stop")
        assert status == 200 and row["status"] == "stopped", row
        with trio.fail_after(30):
            async with connect(srv.ws_url, "ada", "cup") as ada:
                await ada.next_tick()
                token = ada.resume_token
        srv.kill()  # no clean shutdown: what was answered must already be on disk

        srv.start()
        port = srv.http
        status, _, body = await admin_call(port, "GET", "/api/admin/hunts")
        assert status == 200
        rows = {h["name"]: h for h in body["hunts"]}
        assert {n: r["status"] for n, r in rows.items()} == {
            "alpha": "ticking", "beta": "stopped", "cup": "ticking", "league": "ticking"}
        league = rows["league"]
        assert (league["phase"], league["round"]) == ("running", 2), league
        assert league["clock"]["phase_start"] == second["applied_tick"], \
            "the round controls were journaled: recovery replays them to the same tick"
        _, _, results = await admin_call(port, "GET", "/api/hunts/league/rounds")
        assert [r["round"] for r in results["rounds"]] == [1]
        assert results["rounds"][0]["ended_tick"] == ended["applied_tick"]
        status, _, cup = await admin_call(port, "GET", "/api/admin/hunts/cup")
        assert cup["params"]["width"] == 321.0 and cup["params"]["treasures"] == 7
        assert cup["params"]["seed"] == 5
        _, _, beta = await admin_call(port, "GET", "/api/admin/hunts/beta")
        assert beta["stopped"]["by"] == "admin_token"
        with trio.fail_after(30):
            async with connect(srv.ws_url, "ada", "cup", resume_token=token) as ada:
                assert ada.welcome.resumed, "the created hunt recovered its journal"
                await ada.next_tick()
            for hunt in ("beta", "beta"):  # allow_create_hunts does not bring it back either
                with pytest.raises(JoinRefused) as refused:
                    async with connect(srv.ws_url, "bob", hunt):
                        pass
                assert refused.value.code == ErrorCode.UNKNOWN_HUNT
                assert "stopped by an operator" in refused.value.message
        started = [e["hunt"] for e in srv.events() if e.get("event") == "hunt_started"]
        assert sorted(started) == ["alpha", "cup", "league"], \
            "the stopped hunt never started again"
    finally:
        srv.stop()
