"""The server over real sockets (127.0.0.1, port 0), played by the Python client (issue 3, 6).

Gameplay: join and move, view radius, discoveries and the leaderboard, resume,
BYE, and 200 concurrent clients. Limits and bad input are in
test_server_limits.py; HTTP and the ``serve`` process in test_server_ops.py.
Every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack

import numpy as np
import pytest
import trio

from server.client import HuntClient, JoinRefused, connect

pytestmark = pytest.mark.usefixtures("collect_garbage")

#: A corridor 400 wide: a full step is 40 world units a tick (800 u/s at 20 Hz).
CORRIDOR = {"name": "corridor", "width": 400.0, "height": 100.0, "player_speed": 800.0,
            "view_radius": 150.0, "treasures": 0, "seed": 3}
#: A small field full of treasures found from afar: discoveries within a few ticks.
FIELD = {"name": "field", "width": 60.0, "height": 60.0, "player_speed": 120.0,
         "treasures": 200, "discovery_radius": 12.0, "hint_radius": 30.0, "respawn_delay": 5,
         "view_radius": 500.0, "seed": 5}


async def ticks_of(client: HuntClient, n: int) -> list[dict]:
    """The next ``n`` ticks as snapshots of the client's state after each."""
    out = []
    for _ in range(n):
        t = await client.next_tick()
        out.append({"tick": t.tick, "x": client.x, "y": client.y, "score": client.score,
                    "others": dict(client.others), "keyframe": t.keyframe,
                    "discoveries": t.discoveries.copy(), "board": client.leaderboard.copy(),
                    "board_sent": t.leaderboard is not None})
    return out


async def together(clients: list[HuntClient], n: int) -> list[list[dict]]:
    """``ticks_of`` for every client at once (each reads its own socket)."""
    results: list[list[dict]] = [[] for _ in clients]

    async def one(i: int) -> None:
        results[i] = await ticks_of(clients[i], n)

    async with trio.open_nursery() as nursery:
        for i in range(len(clients)):
            nursery.start_soon(one, i)
    return results


def by_tick(history: list[dict]) -> dict[int, dict]:
    return {h["tick"]: h for h in history}


async def test_join_and_see_own_position_move(serve) -> None:
    srv = await serve(CORRIDOR)
    with trio.fail_after(10):
        async with connect(srv.url, "alice", "corridor") as alice:
            w = alice.welcome
            assert not w.resumed and w.tick_rate == 20 and w.width == 400.0
            assert alice.player_id >> 32 >= 1  # generation >= 1
            first = await alice.next_tick()
            assert first.keyframe and first.tick == w.tick + 1
            assert (alice.x, alice.y) == (w.spawn_x, w.spawn_y)
            assert alice.names == {alice.slot: "alice"}
            x0, y0 = alice.x, alice.y
            seq = await alice.move(-1.0, 0.0)
            while alice.ack < seq:
                await alice.next_tick()
            applied_at = alice.tick
            await alice.next_tick()
            step = w.player_speed / w.tick_rate
            # Each tick moves a full step west until the wall (docs/rules.md, movement).
            assert alice.x == pytest.approx(max(0.0, x0 - step * (alice.tick - applied_at + 1)))
            assert alice.x < x0 and alice.y == y0
            previous = alice.tick
            for update in [await alice.next_tick() for _ in range(3)]:
                assert update.tick == previous + 1 and not update.keyframe
                previous = update.tick


@pytest.mark.parametrize("version", [1, 2])
async def test_clients_see_each_other_within_the_view_radius_only(serve, version) -> None:
    srv = await serve(CORRIDOR)
    radius = CORRIDOR["view_radius"]
    # Version 1 carries float32 positions; version 2 quantizes them to the hunt's size
    # (docs/protocol.md: within half of width / 65535, float32 aside).
    step = 0.0 if version == 1 else CORRIDOR["width"] / 131070 + 1e-4
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(srv.url, name, "corridor",
                                                               version=version))
                       for name in ("west1", "east", "west2")]
            for c, dx in zip(clients, (-1.0, 1.0, -1.0), strict=True):
                await c.move(dx, 0.0)
            # 400 units at 40 a tick: after 15 ticks everyone stands at its wall.
            histories = await together(clients, 15)
    west1, east, west2 = clients
    slots = [c.slot for c in clients]
    # Every tick, each client sees exactly the others within view_radius of it, at the
    # positions they report themselves (float32 on the wire).
    ticks = set.intersection(*(set(by_tick(h)) for h in histories))
    assert len(ticks) >= 12
    checked_in = checked_out = 0
    for t in sorted(ticks):
        states = [by_tick(h)[t] for h in histories]
        for i, me in enumerate(states):
            expected = {}
            for j, other in enumerate(states):
                if i != j and math.dist((me["x"], me["y"]), (other["x"], other["y"])) <= radius:
                    expected[slots[j]] = (np.float32(other["x"]), np.float32(other["y"]))
            seen = {slot: (np.float32(x), np.float32(y))
                    for slot, (_, x, y) in me["others"].items()}
            assert seen.keys() == expected.keys(), f"tick {t}, client {i}"
            for slot, (x, y) in seen.items():
                ex, ey = expected[slot]
                assert abs(x - ex) <= step and abs(y - ey) <= step, f"tick {t}, client {i}"
            checked_in += len(expected)
            checked_out += len(states) - 1 - len(expected)
    assert checked_in and checked_out
    # At the end the two western players see each other, and nobody sees the eastern one.
    assert west1.x == west2.x == 0.0 and east.x == 400.0
    assert set(west1.others) == {west2.slot} and set(west2.others) == {west1.slot}
    assert east.others == {}
    assert west1.names[east.slot] == "east"  # names are known even out of view


async def test_a_discovery_is_seen_by_everyone_and_the_leaderboard_updates(serve) -> None:
    srv = await serve(FIELD)
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(srv.url, f"p{i}", "field"))
                       for i in range(3)]
            for c, (dx, dy) in zip(clients, ((1, 0), (0, 1), (-1, -1)), strict=True):
                await c.move(dx, dy)
            histories = await together(clients, 25)
    slots = {c.slot for c in clients}
    common = sorted(set.intersection(*(set(by_tick(h)) for h in histories)))
    found = 0
    for t in common:
        states = [by_tick(h)[t] for h in histories]
        records = [s["discoveries"].tobytes() for s in states]
        assert records.count(records[0]) == len(records), f"tick {t}: not the same discoveries"
        for d in states[0]["discoveries"]:
            found += 1
            assert int(d["slot"]) in slots
            finder = clients[[c.slot for c in clients].index(int(d["slot"]))]
            finder_state = by_tick(histories[clients.index(finder)])[t]
            assert finder_state["score"] >= int(d["score"]) >= int(d["value"]) > 0
            # The leaderboard of that tick names the finder with the score it reached.
            assert any(s["board_sent"] for s in states)
            for s in states:
                board = {int(r["slot"]): int(r["score"]) for r in s["board"]}
                assert board[int(d["slot"])] == finder_state["score"]
    assert found, "no treasure found in 25 ticks: make FIELD denser"
    final = {c.slot: c.score for c in clients}
    for c in clients:
        assert {int(r["slot"]): int(r["score"]) for r in c.leaderboard} == final
        scores = [int(r["score"]) for r in c.leaderboard]
        assert scores == sorted(scores, reverse=True)


async def _score_then_leave(url: str, *, stop: bool) -> tuple[bytes, int, int, tuple]:
    """Play in FIELD until a treasure is found, optionally stop, then close without BYE."""
    async with connect(url, "rita", "field") as rita:
        await rita.move(1.0, 0.5)
        while rita.score == 0:
            await rita.next_tick()
        if stop:
            seq = await rita.move(0.0, 0.0)
            while rita.ack < seq:
                await rita.next_tick()
        await rita.next_tick()
        return rita.resume_token, rita.player_id, rita.seq, (rita.x, rita.y, rita.score, rita.tick)


async def test_resume_keeps_id_score_and_position_and_starts_with_a_keyframe(serve) -> None:
    srv = await serve({**FIELD, "player_speed": 40.0})
    with trio.fail_after(20):
        token, pid, seq, left_at = await _score_then_leave(srv.url, stop=True)
        await trio.sleep(0.2)  # a few ticks without the player's connection
        async with connect(srv.url, "ignored", "ignored", resume_token=token) as back:
            w = back.welcome
            assert w.resumed and back.player_id == pid and w.resume_token == token
            # The server stopped the player with the next seq when its connection dropped.
            assert w.ack == seq + 1 and back.seq == w.ack
            assert w.tick > left_at[3]
            first = await back.next_tick()
            assert first.keyframe
            assert back.score >= left_at[2] > 0
            assert (w.spawn_x, w.spawn_y) == (back.x, back.y) == left_at[:2]
            assert back.names[back.slot] == "rita"
            nxt = await back.move(-1.0, 0.0)
            assert nxt == w.ack + 1
            while back.ack < nxt:
                await back.next_tick()
            await back.next_tick()
            assert back.x < left_at[0]


async def test_a_disconnected_player_stands_still_until_it_resumes(serve) -> None:
    srv = await serve({"name": "plain", "width": 1000.0, "height": 1000.0, "treasures": 0,
                       "player_speed": 20.0})
    with trio.fail_after(10):
        async with connect(srv.url, "walker", "plain") as walker:
            await walker.next_tick()
            seq = await walker.move(-1.0 if walker.x > 500 else 1.0, 0.0)
            while walker.ack < seq:
                await walker.next_tick()
            token, left_at = walker.resume_token, (walker.x, walker.y)
        await trio.sleep(0.3)  # 6 ticks of 1 world unit, were it still walking
        async with connect(srv.url, "walker", "plain", resume_token=token) as back:
            await back.next_tick()
            again = await back.next_tick()
    # At most the one step of a tick already under way when the connection dropped.
    assert abs(back.x - left_at[0]) <= 1.0 + 1e-9 and back.y == left_at[1]
    assert (again.x, again.y) == (back.x, back.y)


async def test_bye_frees_the_player_and_others_see_it_leave(serve) -> None:
    srv = await serve(CORRIDOR)
    with trio.fail_after(15):
        async with connect(srv.url, "stays", "corridor") as stays:
            async with connect(srv.url, "goes", "corridor") as goes:
                await stays.next_tick()
                while goes.slot not in stays.names:
                    await stays.next_tick()
                players = len(srv.hub.sessions)
                token, slot = goes.resume_token, goes.slot
                await goes.bye()
            left = False
            for _ in range(10):
                update = await stays.next_tick()
                if slot in update.leaves["slot"]:
                    left = True
                    break
            assert left, "no LEAVE record for the player that said BYE"
            assert slot not in stays.others and slot not in stays.names
            assert len(srv.hub.sessions) == players - 1
        with pytest.raises(JoinRefused) as refused:
            async with connect(srv.url, "goes", "corridor", resume_token=token):
                pass
        assert refused.value.name == "RESUME_INVALID" and refused.value.close_code == 4005


async def test_200_concurrent_clients_all_get_ticks(serve) -> None:
    n = 200
    # All from 127.0.0.1: the per-address join limits sized for them.
    srv = await serve({"name": "crowd", "width": 2000.0, "height": 2000.0, "tick_rate": 10,
                       "view_radius": 100.0, "treasures": 50}, max_players_per_address=n,
                      hello_burst_per_address=n, connection_burst_per_address=n)
    got: dict[int, list[int]] = {}

    async def play(i: int, ready: trio.Event, go: trio.Event) -> None:
        async with connect(srv.url, f"c{i}", "crowd", connect_timeout=20) as c:
            ready.set()
            await go.wait()
            await c.move(math.cos(i), math.sin(i))
            got[i] = [(await c.next_tick()).tick for _ in range(5)]

    with trio.fail_after(45):
        go = trio.Event()
        async with trio.open_nursery() as nursery:
            readies = []
            for i in range(n):
                ready = trio.Event()
                readies.append(ready)
                nursery.start_soon(play, i, ready, go)
                if i % 20 == 19:
                    await trio.sleep(0.05)  # stagger the handshakes a little
            for ready in readies:
                await ready.wait()
            assert srv.hub.world.hunts.players[0] == n
            go.set()
    assert len(got) == n
    for ticks in got.values():
        assert ticks == list(range(ticks[0], ticks[0] + 5))
    assert srv.hub.evictions == 0
