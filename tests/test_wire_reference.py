"""From the wire back to the rules: every TICK real clients decode equals the reference's state.

A real server (in-process, real WebSockets on 127.0.0.1) runs a hunt with five
Python clients (``server.client``): two play throughout, one drops its
connection and resumes, one says BYE halfway, one joins late; two more create
a second hunt mid-run by naming it in their HELLO (``allow_create_hunts``). Every TICK each
client decodes is kept with the view the client holds after it. The
pure-Python reference then runs on the inputs the server journaled (joins,
leaves, moves, in the engine's order; tests/wire_support.py), and for every
TICK received: position, score, hint and ack; the visibility records with
their float32 positions (diff or keyframe, as the TICK says); the view the
client keeps (everyone in view now); the hunt's discoveries and leaves of the
tick; the leaderboard, present exactly when it changed or on a keyframe.

Then the same with engine buffers too small for a tick (visibility records and
discoveries: clients cut from a tick get a keyframe later), and across a crash:
a ``treasure-hunt serve`` process is killed with SIGKILL while three clients
play, started again on its data dir (recovery), and the clients resume (a
fourth joins); one reference run over the whole journal must explain every
TICK of both lives.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_crash_recovery import _stop
from wire_support import Log, check_against_reference, steer

from server.client import HuntError, connect

HUNT = {"name": "glade", "width": 50.0, "height": 40.0, "treasures": 40,
        "discovery_radius": 4.0, "hint_radius": 25.0, "view_radius": 22.0,
        "player_speed": 40.0, "respawn_delay": 4, "leaderboard_size": 4, "seed": 16}
#: The ``[defaults]`` a hunt created by a HELLO gets.
CREATED = {"width": 30.0, "height": 30.0, "treasures": 20, "discovery_radius": 4.0,
           "hint_radius": 20.0, "view_radius": 25.0, "player_speed": 30.0, "seed": 7}
END = 70  # last tick the clients read (20 ticks per second)


async def _player(url: str, name: str, seed: int, log: Log, *, hunt_name: str = "glade",
                  start_at: int = 0, drop_at: int | None = None, bye_at: int | None = None,
                  watch=None) -> None:
    rng = random.Random(seed)
    if start_at:
        with trio.fail_after(20):
            while watch() < start_at:
                await trio.sleep(0.02)
    # Odd seeds speak version 1, even ones version 2: the server serves both in one hunt.
    async with connect(url, name, hunt_name, version=1 if seed % 2 else 2) as hunt:
        await steer(hunt, rng, log, bye_at or drop_at or END)
        if bye_at is not None:
            await hunt.bye()
            return
        if drop_at is None:
            return
    # Closed without BYE: the server stops the player and keeps it for a resume.
    with trio.fail_after(20):
        while watch() < drop_at + 5:
            await trio.sleep(0.02)
    # The resume switches versions: the new connection gets TICKs of its own.
    async with hunt.reconnect(version=3 - hunt.welcome.version) as hunt:
        await steer(hunt, rng, log, END)


async def test_every_tick_clients_decode_equals_the_reference(serve, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = await serve(HUNT, engine={"max_players": 16, "max_treasures": 64},
                      defaults=CREATED, allow_create_hunts=True,
                      http_port=-1, data_dir=str(data_dir), fsync="off", snapshot_every=0)
    log = Log()

    def server_tick() -> int:
        return srv.hub.world.tick_number

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_player, srv.url, "ana", 1, log)
            nursery.start_soon(_player, srv.url, "bo", 2, log)
            nursery.start_soon(lambda: _player(srv.url, "cy", 3, log, drop_at=20,
                                               watch=server_tick))
            nursery.start_soon(lambda: _player(srv.url, "di", 4, log, bye_at=35))
            nursery.start_soon(lambda: _player(srv.url, "ed", 5, log, start_at=25,
                                               watch=server_tick))
            # Two players of a hunt that a HELLO creates mid-run (allow_create_hunts).
            for name, seed, start in (("fy", 6, 30), ("gus", 7, 33)):
                nursery.start_soon(lambda n=name, k=seed, a=start: _player(
                    srv.url, n, k, log, hunt_name="den", start_at=a, watch=server_tick))
    seen = check_against_reference(data_dir, log)
    assert seen["ticks"] > 4 * END - 40, seen
    for what in ("visible", "discoveries", "leaderboards", "leaves", "version_1", "version_2"):
        assert seen[what] > 0, seen
    assert seen["keyframes"] >= 8, seen  # seven joins and one resume start with one
    assert len(srv.app.hubs()) == 2, "the created hunt has a hub of its own"


#: Six players who all see each other on a small map, all moving: a tick's diffs need up
#: to 30 visibility records.
PIT = {"name": "pit", "width": 20.0, "height": 20.0, "treasures": 30, "discovery_radius": 3.0,
       "hint_radius": 15.0, "view_radius": 40.0, "player_speed": 20.0, "respawn_delay": 2,
       "seed": 61}


async def test_ticks_decoded_while_engine_buffers_overflow_equal_the_reference(
        serve, tmp_path: Path) -> None:
    """The same check with a visibility buffer of 12 records and a discovery buffer of 1.

    Most ticks, some clients' records do not fit: they get no TICK that tick and a
    keyframe later (who is cut rotates); discoveries past the first of a tick are
    dropped from the TICK as from the engine's buffer. Whatever arrives must still
    be the reference's truth, and each client's view who is in view.
    """
    data_dir = tmp_path / "data"
    srv = await serve(PIT, engine={"max_players": 8, "max_treasures": 32, "max_visible": 12,
                                   "max_discoveries": 1},
                      http_port=-1, data_dir=str(data_dir), fsync="off", snapshot_every=0)
    log = Log()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(lambda k=i: _player(srv.url, f"p{k}", 30 + k, log,
                                                       hunt_name="pit"))
    seen = check_against_reference(data_dir, log)
    by_player: dict[int, list[int]] = {}
    for r in log.received:
        by_player.setdefault(r.player_id, []).append(r.update.tick)
    skipped = sum(t[-1] - t[0] + 1 - len(t) for t in by_player.values())
    assert skipped > 20, by_player  # the buffer did overflow, again and again
    assert seen["keyframes"] > 6 + 10, seen  # a keyframe after each cut
    assert seen["ticks"] > 6 * 10 and seen["discoveries"] > 0, seen


CRASH_CONFIG = """
[server]
resume_grace = 120.0
snapshot_every = 0
[engine]
max_players = 16
max_treasures = 64
[[hunt]]
name = "glade"
width = 50.0
height = 40.0
treasures = 40
discovery_radius = 4.0
hint_radius = 25.0
view_radius = 22.0
player_speed = 40.0
respawn_delay = 4
leaderboard_size = 4
seed = 16
"""


async def _until_killed(url: str, name: str, seed: int, log: Log, tokens: dict) -> None:
    """Play until the server dies under this client; keep the resume token."""
    try:
        async with connect(url, name, "glade") as hunt:
            tokens[name] = hunt.resume_token
            await steer(hunt, random.Random(seed), log, 10**9)
    except (HuntError, trio.BrokenResourceError, OSError):
        pass  # killed: expected


async def _resumed(url: str, name: str, seed: int, log: Log, tokens: dict, ticks: int) -> None:
    async with connect(url, name, "glade", resume_token=tokens.get(name)) as hunt:
        assert tokens.get(name) is None or hunt.welcome.resumed
        await steer(hunt, random.Random(seed), log, hunt.tick + ticks)


async def _first_life(url: str, proc: subprocess.Popen, log: Log, tokens: dict) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(("ana", "bo", "cy")):
                nursery.start_soon(_until_killed, url, name, 10 + i, log, tokens)
            while sum(1 for r in log.received if r.update.tick) < 3 * 40:
                await trio.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)  # mid-tick or not


async def _second_life(url: str, log: Log, tokens: dict) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(("ana", "bo", "cy", "di")):  # di joins after the crash
                nursery.start_soon(_resumed, url, name, 20 + i, log, tokens, 40)


@pytest.mark.slow
def test_ticks_decoded_across_a_kill_9_and_recovery_equal_the_reference(tmp_path: Path) -> None:
    """The same check across a ``serve`` process killed with SIGKILL and recovered: one
    reference run over the whole journal explains the TICKs of both lives."""
    config = tmp_path / "glade.toml"
    config.write_text(CRASH_CONFIG)
    data_dir = tmp_path / "data"
    log = Log()
    tokens: dict[str, bytes] = {}
    proc, url = _start(data_dir, config)
    try:
        trio.run(_first_life, url, proc, log, tokens)
    finally:
        _stop(proc, signal.SIGKILL)
    killed_after = max(r.update.tick for r in log.received)
    proc, url = _start(data_dir, config)
    try:
        trio.run(_second_life, url, log, tokens)
    finally:
        status = _stop(proc, signal.SIGTERM)
    assert status == 0, "SIGTERM stops the server cleanly"
    assert max(r.update.tick for r in log.received) > killed_after + 30
    seen = check_against_reference(data_dir, log)
    assert seen["ticks"] > 3 * 40 + 4 * 40 - 20, seen
    assert seen["discoveries"] > 0 and seen["leaderboards"] > 0, seen
    assert seen["keyframes"] >= 7, seen  # three joins, four after the restart


def _start(data_dir: Path, config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--config", str(config), "--port", "0",
         "--http-port", "-1", "--data-dir", str(data_dir), "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    other: list[str] = []
    for _ in range(200):
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("{") and json.loads(line)["event"] == "serving":
            return proc, json.loads(line)["ws_url"]
        other.append(line)
    proc.kill()
    raise AssertionError(f"server did not start: {''.join(other)}{proc.stderr.read()}")

