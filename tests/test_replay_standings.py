"""``treasure-hunt replay`` of a finished hunt: every player has left, and the report still
shows who scored what, as they left. A real ``treasure-hunt serve`` process writes the data
dir, real clients play and say BYE, the server stops on SIGTERM, and the replay command runs
on what it left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from server.client import connect

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "treasure-hunt"
# A small map thick with treasures that do not come back: both players score within a few
# ticks, and a player standing still scores no more once the treasures in its reach are gone.
CONFIG = """\
[[hunt]]
name = "demo"
width = 60.0
height = 60.0
treasures = 200
discovery_radius = 12.0
respawn_delay = 10000000
"""


async def play_and_leave(url: str, name: str, heading: tuple[float, float]) -> int:
    """Join, steer ``heading`` until scored, stop, and BYE once the score can no longer
    change (the stop applied, then a tick at rest found what was in reach); that score."""
    async with connect(url, name, "demo") as c:
        await c.move(*heading)
        for _ in range(200):
            await c.next_tick()
            if c.score > 0:
                break
        stop = await c.move(0.0, 0.0)
        for _ in range(200):
            await c.next_tick()
            if c.ack >= stop:
                break
        for _ in range(2):
            await c.next_tick()
        score = c.score
        await c.bye(timeout=5)
    return score


async def get_hunt(http_port: int) -> dict:
    """The single hunt of GET /hunts (players, tick)."""
    stream = await trio.open_tcp_stream("127.0.0.1", http_port)
    async with stream:
        await stream.send_all(b"GET /hunts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    (hunt,) = json.loads(bytes(data).partition(b"\r\n\r\n")[2])["hunts"]
    return hunt


async def until_everyone_left(http_port: int) -> None:
    """Wait (bounded) for the BYEs to take effect and two more ticks to be journaled."""
    for _ in range(200):
        hunt = await get_hunt(http_port)
        if hunt["players"] == 0:
            break
        await trio.sleep(0.05)
    else:
        raise AssertionError(f"players still in the hunt: {hunt}")
    left_at = hunt["tick"]
    for _ in range(200):
        if (await get_hunt(http_port))["tick"] >= left_at + 2:
            return
        await trio.sleep(0.05)
    raise AssertionError("the hunt stopped ticking")


async def test_replay_of_a_hunt_everyone_left_shows_the_final_standings(tmp_path: Path) -> None:
    (tmp_path / "hunt.toml").write_text(CONFIG)
    data = tmp_path / "data"
    cmd = [str(EXE), "serve", "--config", "hunt.toml", "--port", "0", "--http-port", "0",
           "--data-dir", str(data), "--log-format", "json"]
    scores: dict[str, int] = {}
    with trio.fail_after(90):
        proc = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            buf = b""
            serving = None
            while serving is None:
                chunk = await proc.stderr.receive_some(65536)
                assert chunk, f"serve exited before serving: {buf.decode(errors='replace')}"
                buf += chunk
                *lines, buf = buf.split(b"\n")
                serving = next((e for e in map(json.loads, lines) if e["event"] == "serving"),
                               None)
            url, http_port = serving["ws_url"], int(serving["http_url"].rsplit(":", 1)[1][:-1])
            scores["alice"] = await play_and_leave(url, "alice", (1.0, 0.3))
            scores["bob"] = await play_and_leave(url, "bob", (-0.4, -1.0))
            await until_everyone_left(http_port)
            proc.send_signal(signal.SIGTERM)
            # Drain the log so the server never blocks on a full pipe while stopping.
            while await proc.stderr.receive_some(65536):
                pass
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stderr.aclose()
    assert scores["alice"] > 0 and scores["bob"] > 0

    report = tmp_path / "replay.json"
    replay = subprocess.run(
        [str(EXE), "replay", str(data), "--verify", "--quiet", "--json", str(report)],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"})
    assert replay.returncode == 0, replay.stderr
    (hunt,) = json.loads(report.read_text())["hunts"]
    assert hunt["players"] == 0 and hunt["leaderboard"] == []
    standings = hunt["standings"]
    assert {row["name"]: row["score"] for row in standings} == scores
    assert [row["rank"] for row in standings] == [1, 2]
    assert standings[0]["score"] >= standings[1]["score"]
    assert all(row["left_tick"] > 0 for row in standings)
    out = replay.stdout
    assert "no score yet" not in out and "nobody played" not in out
    for name, score in scores.items():
        assert name in out and f"{score:,}" in out
