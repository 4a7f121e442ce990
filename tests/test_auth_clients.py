"""Ticket mode from the clients' side, on a real server: ``treasure-hunt bots`` signing a
ticket per bot, and refused without one."""

from __future__ import annotations

import sys

import pytest
import trio
from auth_support import AUDIENCE, jwt_server, secret_file
from test_bots_budgets import summary_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("collect_garbage")]


async def bots(url: str, *extra: str) -> tuple[int, dict[str, str], str]:
    cmd = [sys.executable, "-m", "server", "bots", "--url", url, "--duration", "4",
           "--quiet", *extra]
    with trio.fail_after(60):
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False)
    out = proc.stdout.decode() + proc.stderr.decode()
    return proc.returncode, summary_rows(proc.stdout.decode()), out


async def test_bots_sign_their_own_tickets_and_play_as_their_users(serve, tmp_path) -> None:
    srv = await serve(**jwt_server(tmp_path))
    seen: set[str] = set()
    srv.hub._on_tick.append(lambda hub, _r: seen.update(s.name for s in hub.sessions.values()))
    code, rows, out = await bots(srv.url, "--count", "3", "--ticket-key",
                                 str(secret_file(tmp_path)), "--ticket-audience", AUDIENCE)
    assert code == 0 and rows["Bots joined"] == "3 of 3" and rows["Errors"] == "0", out
    assert seen == {"bot-0", "bot-1", "bot-2"}
    assert srv.metric("hunt_tickets_total", result="ok") == 3
    code, rows, out = await bots(srv.url, "--count", "1")
    assert code == 1 and "TICKET_REQUIRED" in out, out
    code, _rows, out = await bots(srv.url, "--count", "2", "--ticket", "a.b.c")
    assert code == 2 and "--count 1" in out
