"""From the wire back to the rules: every TICK real clients decode equals the reference's state.

A real server (in-process, real WebSockets on 127.0.0.1) runs a hunt with five
Python clients (``server.client``): two play throughout, one drops its
connection and resumes, one says BYE halfway, one joins late. Every TICK each
client decodes is kept with the view the client holds after it. The
pure-Python reference then runs on the inputs the server journaled (joins,
leaves, moves, in the engine's order; tests/wire_support.py), and for every
TICK received: position, score, hint and ack; the visibility records with
their float32 positions (diff or keyframe, as the TICK says); the view the
client keeps (everyone in view now); the hunt's discoveries and leaves of the
tick; the leaderboard, present exactly when it changed or on a keyframe.
"""

from __future__ import annotations

import random
from pathlib import Path

import trio
from wire_support import Log, check_against_reference, steer

from server.client import connect

HUNT = {"name": "glade", "width": 50.0, "height": 40.0, "treasures": 40,
        "discovery_radius": 4.0, "hint_radius": 25.0, "view_radius": 22.0,
        "player_speed": 40.0, "respawn_delay": 4, "leaderboard_size": 4, "seed": 16}
END = 70  # last tick the clients read (20 ticks per second)


async def _player(url: str, name: str, seed: int, log: Log, *, start_at: int = 0,
                  drop_at: int | None = None, bye_at: int | None = None,
                  watch=None) -> None:
    rng = random.Random(seed)
    if start_at:
        with trio.fail_after(20):
            while watch() < start_at:
                await trio.sleep(0.02)
    async with connect(url, name, "glade") as hunt:
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
    async with hunt.reconnect() as hunt:
        await steer(hunt, rng, log, END)


async def test_every_tick_clients_decode_equals_the_reference(serve, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = await serve(HUNT, engine={"max_players": 16, "max_treasures": 64},
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
    seen = check_against_reference(data_dir, log)
    assert seen["ticks"] > 4 * END - 40, seen
    for what in ("visible", "discoveries", "leaderboards", "leaves"):
        assert seen[what] > 0, seen
    assert seen["keyframes"] >= 6, seen  # five joins and one resume start with one
