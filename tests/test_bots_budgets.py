"""``treasure-hunt bots`` against a server's per-address budgets (docs/protocol.md, Limits):
all bots come from one address, so a join refused for pace (TOO_MANY_JOINS) is retried and
counted as a reconnect attempt, and a full address (ADDRESS_FULL) is an error that says which
server flag to raise. The real ``bots`` command against an in-process server."""

from __future__ import annotations

import sys

import pytest
import trio

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("collect_garbage")]


def summary_rows(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.count("│") == 3}


async def run_bots(url: str, count: int) -> tuple[dict[str, str], str]:
    cmd = [sys.executable, "-m", "server", "bots", "--url", url, "--count", str(count),
           "--duration", "6", "--connect-rate", "100", "--quiet"]
    with trio.fail_after(60):
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode() + out
    return summary_rows(out), out


async def test_bots_over_the_join_pace_retry_and_all_get_in(serve) -> None:
    srv = await serve(hellos_per_second_per_address=4.0, hello_burst_per_address=2)
    rows, out = await run_bots(srv.url, 6)
    assert rows["Bots joined"] == "6 of 6", out
    assert rows["Errors"] == "0", out
    assert "TOO_MANY_JOINS" in rows["Reconnect attempts"], out


async def test_bots_past_the_address_cap_say_which_flag_to_raise(serve) -> None:
    srv = await serve(max_players_per_address=3)
    rows, out = await run_bots(srv.url, 5)
    assert rows["Bots joined"] == "3 of 5", out
    assert rows["Errors"] == "ADDRESS_FULL 2", out
    assert "--max-players-per-address" in out
