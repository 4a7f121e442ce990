"""Round-based hunts on a real server with real clients (docs/protocol.md, "Rounds").

Clients over real WebSockets see lobby, running, results, the next lobby and the end,
each as a ROUND right after the TICK of the tick where the phase began (and one after
WELCOME); a RESULTS after the ROUND that ends a round, ranking every client like the
leaderboard; moves walk the player in every phase, scores count only while running. The
results are the same in the files, over HTTP, in the metrics. Operators' round control
(``Hub.control_round``) starts and ends rounds at the next tick, and is refused where the
phase does not allow it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from test_server_ops import get_json, http_get, metrics

from server.client import HuntClient, connect
from server.protocol import PHASE_LOBBY, PHASE_OVER, PHASE_RESULTS, PHASE_RUNNING, Results, Round

pytestmark = pytest.mark.usefixtures("collect_garbage")

CUP = {"name": "cup", "width": 60.0, "height": 60.0, "treasures": 10, "discovery_radius": 8.0,
       "hint_radius": 60.0, "player_speed": 120.0, "seed": 4,
       "rounds": {"count": 2, "lobby_ticks": 30, "running_ticks": 40, "results_ticks": 15,
                  "treasures": 10, "respawn": False, "end": "time"}}


class Seen:
    """One client's view of the rounds: each ROUND/RESULTS with the tick it followed."""

    def __init__(self, client: HuntClient) -> None:
        self.client = client
        self.events: list[tuple[int, Round | Results]] = []
        self.lobby_ticks = self.lobby_moves = 0
        self.score_at_end: dict[int, int] = {}


async def play(seen: Seen) -> None:
    """Steer around and record until the hunt is over."""
    c = seen.client
    k = last = 0
    x, y = c.x, c.y
    while True:
        k += 1
        await c.move(1.0 if k % 40 < 20 else -1.0, 1.0 if k % 30 < 15 else -1.0)
        before = c.tick  # ROUND and RESULTS come between the TICK of `before` and the next
        update = await c.next_tick()
        events = list(c.round_events)
        seen.events += [(before, e) for e in events[last:]]
        last = len(events)
        r = c.round
        if r.phase == PHASE_LOBBY and r.phase_start < update.tick < r.phase_end:
            seen.lobby_ticks += 1
            assert update.hint == 0 and update.score == 0, "no treasure, no score in a lobby"
            seen.lobby_moves += (update.x, update.y) != (x, y)
        if r.phase == PHASE_RUNNING:
            seen.score_at_end[r.round] = update.score
        x, y = update.x, update.y
        if r.phase == PHASE_OVER:
            return


async def test_clients_follow_lobby_running_results_and_the_end(serve, tmp_path: Path) -> None:
    srv = await serve(CUP, data_dir=str(tmp_path))
    with trio.fail_after(60):
        async with connect(srv.url, "ada", "cup") as a, connect(srv.url, "bob", "cup") as b, \
                connect(srv.url, "cy", "cup") as c:
            seen = [Seen(x) for x in (a, b, c)]
            async with trio.open_nursery() as nursery:
                for s in seen:
                    nursery.start_soon(play, s)
            port = srv.ports.http
            listing = await get_json(port, "/api/hunts/cup/rounds")
            first = await get_json(port, "/api/hunts/cup/rounds/1")
            missing = (await http_get(port, "/api/hunts/cup/rounds/3"))[0]
            unknown = (await http_get(port, "/api/hunts/nope/rounds"))[0]
            scraped = metrics((await http_get(port, "/metrics"))[2])
    for s in seen:
        welcome = s.client.welcome
        (t0, first_round), *changes = s.events
        assert isinstance(first_round, Round) and first_round.tick == welcome.tick == t0
        walk = [(e.round, e.phase) for _, e in s.events if isinstance(e, Round)]
        # From wherever the client came in, every phase in order, to the end.
        order = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (2, 4)]
        assert walk == order[order.index(walk[0]):]
        for t, e in changes:
            if isinstance(e, Round):
                # Right after the TICK of the tick where the phase began.
                assert e.tick == e.phase_start == t, (e, t)
                plan = CUP["rounds"]
                length = {1: plan["lobby_ticks"], 2: plan["running_ticks"],
                          3: plan["results_ticks"]}.get(e.phase)
                assert e.phase_end == (0 if e.phase == PHASE_OVER else e.phase_start + length)
        results = [(i, t, e) for i, (t, e) in enumerate(s.events) if isinstance(e, Results)]
        assert [e.round for _, _, e in results] == [1, 2]
        for i, t, r in results:
            before = s.events[i - 1][1]
            assert isinstance(before, Round) and before.phase == PHASE_RESULTS
            assert r.tick == before.phase_start == t and r.players == 3
            assert 1 <= r.your_rank <= 3
            assert r.your_score == s.score_at_end[r.round], "the score the round ended with"
        assert s.lobby_ticks > 10 and s.lobby_moves > 10, "players walk in the lobby"
    for number in (1, 2):
        ranks = sorted(e.your_rank for s in seen for _, e in s.events
                       if isinstance(e, Results) and e.round == number)
        assert ranks == [1, 2, 3]
    rows = seen[0].client.results.standings
    assert list(rows["rank"]) == [1, 2, 3]
    # The leaderboard's order: score, then who reached it first, then slot.
    key = [(-int(r["score"]), int(r["last_tick"]) if r["found"] else 0, int(r["slot"]))
           for r in rows]
    assert key == sorted(key)
    # HTTP, files and metrics say the same.
    assert [r["round"] for r in listing["rounds"]] == [1, 2]
    assert listing["current"]["phase"] == "over"
    names = {s.client.player_id: s.client._hello.name for s in seen}
    r1 = next(e for _, e in seen[0].events if isinstance(e, Results) and e.round == 1)
    assert [(x["rank"], x["player_id"], x["score"]) for x in first["standings"]] == [
        (int(r["rank"]), int(r["gen"]) << 32 | int(r["slot"]), int(r["score"]))
        for r in r1.standings]
    assert {x["player_id"]: x["name"] for x in first["standings"]} == names
    assert first["key"] == "cup#1" and first["players"] == 3
    on_disk = json.loads((next(tmp_path.glob("hunts/*/rounds/round-000001.json"))).read_text())
    assert on_disk == first
    assert (missing, unknown) == (404, 404)
    assert scraped['hunt_hunt_round_phase{hunt="cup"}'] == PHASE_OVER
    assert scraped['hunt_hunt_round{hunt="cup"}'] == 2
    assert scraped['hunt_hunt_rounds_ended_total{hunt="cup"}'] == 2


async def test_operators_start_and_end_rounds_at_the_next_tick(serve) -> None:
    long_lobby = {**CUP, "rounds": {**CUP["rounds"], "lobby_ticks": 100_000,
                                   "running_ticks": 100_000, "count": 0}}
    srv = await serve(long_lobby)
    hub = srv.app.placement.hub_named("cup")
    with trio.fail_after(30):
        async with connect(srv.url, "ada", "cup") as a:
            await a.next_tick()
            assert a.round.phase == PHASE_LOBBY
            refused = await hub.control_round("cup", "end")
            assert refused.error and "only a running round can be ended" in refused.error
            started = await hub.control_round("cup", "start")
            assert started.error is None and started.state.phase == "running"
            assert started.state.phase_start == started.tick
            again = await hub.control_round("cup", "start")
            assert "running already" in again.error
            ended = await hub.control_round("cup", "end")
            assert ended.error is None and ended.state.phase == "results"
            unknown = await hub.control_round("nope", "start")
            assert unknown.error and "nope" in unknown.error
            phases = []
            while len(phases) < 2:
                await a.next_tick()
                phases = [e.phase for e in a.round_events if isinstance(e, Round)][1:]
            assert phases == [PHASE_RUNNING, PHASE_RESULTS]
            round_events = [e for e in a.round_events if isinstance(e, Round)]
            assert round_events[1].phase_start == started.tick
            assert round_events[2].phase_start == ended.tick
            # A client that comes in while the results show gets them after its ROUND.
            async with connect(srv.url, "late", "cup") as late:
                await late.next_tick()
                assert [type(e) for e in late.round_events] == [Round, Results]
                assert late.results.round == 1 and late.results.your_rank == 0
                assert late.results.players == 1


async def test_bots_keep_playing_across_rounds(serve) -> None:
    """The real ``treasure-hunt bots`` through three short rounds: no error, every round
    counted, a winner each time, and the bots still moving after the rounds ended."""
    import sys

    from test_bots_budgets import summary_rows

    quick = {**CUP, "rounds": {**CUP["rounds"], "count": 0, "lobby_ticks": 5,
                               "running_ticks": 20, "results_ticks": 5}}
    srv = await serve(quick)
    cmd = [sys.executable, "-m", "server", "bots", "--url", srv.url, "--hunt", "cup",
           "--count", "4", "--duration", "7", "--connect-rate", "100", "--quiet"]
    with trio.fail_after(60):
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode() + out
    rows = summary_rows(out)
    assert rows["Bots joined"] == "4 of 4" and rows["Errors"] == "0", out
    ended = int(rows["Rounds ended"].split()[0])
    assert ended >= 2, out  # 7 s at 20 Hz: about four rounds of 30 ticks
    assert rows["Most rounds won"] != "-", out
    assert int(rows["Moves sent"].replace(",", "")) > 4 * 20, out
