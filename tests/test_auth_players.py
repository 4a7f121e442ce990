"""Ticket mode's players, on real servers and sockets: one player per user per hunt (a
second HELLO of the user takes the player over, whatever token it carries), a ticket that
expires while its player plays ends nothing, and a server killed with SIGKILL comes back
with every player's user (snapshot and journal), so that a fresh ticket finds the player
and replay names the users."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from auth_support import AUDIENCE, SECRET, jwt_server
from redis_server import RedisServer, redis_server  # noqa: F401
from test_cluster_nodes import _play_all, all_placed, start_nodes, until
from test_crash_recovery import _start, _stop

from server.auth import mint_ticket
from server.client import JoinRefused, ServerError, connect
from server.cluster import ClusterStore
from server.protocol import ErrorCode

pytestmark = pytest.mark.usefixtures("collect_garbage")


def ticket(user: str, name: str = "", **kw) -> str:
    return mint_ticket(SECRET, user=user, name=name or user.upper(), audience=AUDIENCE, **kw)


async def ticks(hunt, n: int) -> None:
    with trio.fail_after(10 + n):
        for _ in range(n):
            await hunt.next_tick()


async def test_the_same_user_twice_takes_the_player_over(serve, tmp_path) -> None:
    srv = await serve(**jwt_server(tmp_path))
    async with connect(srv.url, "x", "demo", ticket=ticket("u-1", "Ada")) as first:
        await ticks(first, 2)
        await first.move(1.0, 0.0)
        await ticks(first, 3)
        # Another device of the same user, with a resume token of nobody: the same player.
        async with connect(srv.url, "y", "demo", ticket=ticket("u-1", "Ada 2")) as second:
            assert second.welcome.resumed and second.player_id == first.player_id
            with trio.fail_after(10), pytest.raises(ServerError) as replaced:
                while True:
                    await first.next_tick()
            assert (replaced.value.code, replaced.value.close_code) == (ErrorCode.REPLACED,
                                                                        4007)
            await ticks(second, 2)
            assert second.names[second.slot] == "Ada"  # the player keeps its name
            # Another user is another player.
            async with connect(srv.url, "z", "demo", ticket=ticket("u-2")) as other:
                assert not other.welcome.resumed and other.player_id != second.player_id
                assert len(srv.hub.sessions) == 2
                rows = await srv.app.placement.leaderboard(10)  # /leaderboard: users
                assert sorted((r["user"], r["name"]) for r in rows) == [("u-1", "Ada"),
                                                                       ("u-2", "U-2")]
    assert srv.metric("hunt_tickets_total", result="ok") == 3


async def test_a_ticket_that_expires_while_playing_ends_nothing(serve, tmp_path) -> None:
    srv = await serve(**jwt_server(tmp_path, auth_leeway=0, resume_grace=30.0))
    async with connect(srv.url, "x", "demo", ticket=ticket("u-1", ttl=2)) as hunt:
        await ticks(hunt, 1)
        await trio.sleep(3)  # the ticket has expired
        await ticks(hunt, 5)  # still playing
    # The block closed the connection without BYE, as a dropped one.
    async with hunt.reconnect() as back:  # the resume token, no ticket: still the player
        assert back.welcome.resumed and back.player_id == hunt.player_id
        await ticks(back, 2)
    with trio.fail_after(10), pytest.raises(JoinRefused) as refused:  # a join needs a ticket
        async with connect(srv.url, "x", "demo", ticket=ticket("u-1", ttl=-60)):
            pass
    assert refused.value.code == ErrorCode.TICKET_EXPIRED


@pytest.mark.slow
async def test_users_survive_a_crash_and_replay_names_them(tmp_path: Path) -> None:
    (tmp_path / "auth-secret").write_text(SECRET)
    config = tmp_path / "serve.toml"
    config.write_text(f"""
[server]
auth = "jwt"
auth_secret_file = "{tmp_path / 'auth-secret'}"
auth_audience = "{AUDIENCE}"
snapshot_every = 10
resume_grace = 120.0
[engine]
max_players = 16
[[hunt]]
name = "demo"
""")
    data = tmp_path / "data"
    proc, url, _ = _start(data, config)
    try:
        async with connect(url, "x", "demo", ticket=ticket("u-ada", "Ada")) as ada:
            with trio.fail_after(30):
                while ada.tick < 25:  # past two snapshots: Ada is in the snapshot's meta
                    await ada.next_tick()
            async with connect(url, "x", "demo", ticket=ticket("u-bo", "Bo")) as bo:
                await ticks(bo, 3)  # Bo only in the journal after the last snapshot
                ids = {"u-ada": ada.player_id, "u-bo": bo.player_id}
                _stop(proc, signal.SIGKILL)
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise
    proc, url, recovered = _start(data, config)
    tokens = {}
    try:
        assert recovered, "the restart recovered nothing"
        for user, name in (("u-ada", "Ada"), ("u-bo", "Bo")):
            # A fresh ticket, no token: the recovered player of that user.
            async with connect(url, "x", "demo", ticket=ticket(user, name)) as back:
                assert back.welcome.resumed and back.player_id == ids[user], user
                await ticks(back, 2)
                assert back.names[back.slot] == name
                tokens[user] = back.resume_token  # a new one: the old was the client's
        _stop(proc, signal.SIGKILL)
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise
    proc, url, _ = _start(data, config)
    try:  # the tokens handed out at the takeovers were journaled: they resume, no ticket
        for user, token in tokens.items():
            async with connect(url, "x", "demo", resume_token=token) as back:
                assert back.welcome.resumed and back.player_id == ids[user], user
    finally:
        _stop(proc, signal.SIGINT)
    out = tmp_path / "replay.json"
    done = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "server", "replay", str(data), "--json", str(out)],
        capture_output=True, text=True, timeout=300))
    assert done.returncode == 0, done.stderr
    standings = json.loads(out.read_text())["hunts"][0]["standings"]
    assert {r["user"]: r["player_id"] for r in standings} == ids


@pytest.mark.slow
async def test_the_cluster_leaderboard_ranks_users_by_their_best_hunt(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """A real ``serve --redis`` node in ticket mode and a real redis-server: one user plays
    two hunts, another one; /leaderboard lists users with their best score in any hunt, and
    the discoveries stream names them."""
    secret = tmp_path / "auth-secret"
    secret.write_text(SECRET)
    (node,) = start_nodes(tmp_path, redis_server.url, "a", "--auth", "jwt", "--auth-secret-file",
                          str(secret), "--auth-audience", AUDIENCE)
    try:
        await until(lambda: all_placed(node, {"a"}), 15, "placement")
        async with connect(node.ws_url, "x", "alpha", ticket=ticket("u-ada", "Ada")) as a1, \
                connect(node.ws_url, "x", "beta", ticket=ticket("u-ada", "Ada")) as a2, \
                connect(node.ws_url, "x", "alpha", ticket=ticket("u-bo", "Bo")) as b1:
            clients = [a1, a2, b1]
            best: dict[str, int] = {}
            board: dict[str, int] | None = None
            with trio.move_on_after(40):
                while True:
                    await _play_all(clients, 1.0)
                    best = {"u-ada": max(a1.score, a2.score), "u-bo": b1.score}
                    if not (a1.score and a2.score and b1.score):
                        continue  # until every player has scored
                    for c in clients:
                        await c.move(0.0, 0.0)
                    for _ in range(10):
                        await c.next_tick()
                    best = {"u-ada": max(a1.score, a2.score), "u-bo": b1.score}
                    body = await trio.to_thread.run_sync(node.try_get, "/leaderboard")
                    rows = body["leaderboard"] if body else []
                    board = {r["user"]: r["score"] for r in rows}
                    if board == best:
                        break
            assert board == best and set(best) == {"u-ada", "u-bo"}, (board, best)
            assert {r["user"]: r["name"] for r in rows} == {"u-ada": "Ada", "u-bo": "Bo"}
        async with ClusterStore.open(redis_server.url, timeout=2.0) as store:
            found = await store.recent_discoveries(100)
        assert found and {d["user"] for d in found} == {"u-ada", "u-bo"}
    finally:
        node.kill()


async def test_ticks_of_ticket_players_and_a_takeover_equal_the_reference(serve,
                                                                          tmp_path: Path):
    """Ticket mode changes who holds a player, never the rules: every TICK the clients
    decode, across a takeover by a fresh ticket of a dropped player, equals the pure-Python
    reference run on the journal."""
    from test_wire_reference import END, HUNT
    from wire_support import Log, check_against_reference, steer

    data_dir = tmp_path / "data"
    srv = await serve(HUNT, engine={"max_players": 16, "max_treasures": 64}, http_port=-1,
                      data_dir=str(data_dir), fsync="off", snapshot_every=0,
                      **jwt_server(tmp_path))
    log = Log()

    async def player(user: str, seed: int, drop_at: int | None = None) -> None:
        rng = random.Random(seed)
        async with connect(srv.url, "x", "glade", ticket=ticket(user)) as hunt:
            await steer(hunt, rng, log, drop_at or END)
            first = hunt.player_id
        if drop_at is None:
            return
        with trio.fail_after(20):
            while srv.hub.world.tick_number < drop_at + 5:
                await trio.sleep(0.02)
        async with connect(srv.url, "x", "glade", ticket=ticket(user)) as hunt:  # no token
            assert hunt.welcome.resumed and hunt.player_id == first
            await steer(hunt, rng, log, END)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(player, "u-ana", 1)
            nursery.start_soon(player, "u-bo", 2)
            nursery.start_soon(player, "u-cy", 3, 20)
    seen = check_against_reference(data_dir, log)
    assert seen["ticks"] > 3 * END - 30 and seen["keyframes"] >= 4, seen
