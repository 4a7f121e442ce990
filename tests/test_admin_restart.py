"""Admin changes outlive the server: a real ``serve`` process killed with SIGKILL right after
the answers, then started again on the same data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from admin_support import ServeProcess, admin_call

from server.client import JoinRefused, connect
from server.protocol import ErrorCode

pytestmark = pytest.mark.slow

CONFIG = """\
[engine]
max_players = 256
max_treasures = 1024

[defaults]
width = 200.0
height = 200.0
treasures = 20
max_players = 64

[[hunt]]
name = "alpha"

[[hunt]]
name = "beta"
"""


async def test_a_created_hunt_exists_and_a_stopped_hunt_stays_stopped_after_kill_9(
        tmp_path: Path) -> None:
    srv = ServeProcess(tmp_path, CONFIG, "--allow-create-hunts").start()
    try:
        port = srv.http
        status, _, row = await admin_call(port, "POST", "/api/admin/hunts", {
            "name": "cup", "params": {"width": 321, "treasures": 7, "seed": 5}})
        assert status == 201, row
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
            "alpha": "ticking", "beta": "stopped", "cup": "ticking"}
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
        assert sorted(started) == ["alpha", "cup"], "the stopped hunt never started again"
    finally:
        srv.stop()
