"""The round clock in the engine (docs/rules.md, "Rounds"): phases, requests, end conditions,
standings, and a restore mid-round that plays on identically."""

from __future__ import annotations

import numpy as np
import pytest

from tickengine import EngineConfig, HuntParams, RoundError, RoundPlan, RoundSpec, World


def cup(**plan) -> HuntParams:
    spec = plan.pop("spec", RoundSpec())
    return HuntParams(name="cup", width=40.0, height=40.0, treasures=6, discovery_radius=8.0,
                      hint_radius=30.0, player_speed=40.0, seed=3,
                      rounds=RoundPlan(**{"lobby_ticks": 3, "running_ticks": 20,
                                          "results_ticks": 2, "round": (spec,), **plan}))


def ticks(world: World, count: int, ids=(), seq=None):
    """Tick ``count`` times, every player steering along its own curve; yields the results."""
    seq = seq if seq is not None else [world.tick_number]
    for _ in range(count):
        seq[0] += 1
        for k, pid in enumerate(ids):
            world.moves.put(pid, seq[0], np.cos(seq[0] / 7 + k), np.sin(seq[0] / 5 + k))
        yield world.tick()


def run(world: World, count: int, ids=(), seq=None) -> list:
    return list(ticks(world, count, ids, seq))


def test_a_plan_walks_lobby_running_results_and_ends_over():
    world = World(EngineConfig(max_players=16, max_treasures=16))
    h = world.add_hunt(cup(count=2))
    ids = [world.join(h) for _ in range(4)]
    rows = world.treasure_rows(h)
    phases = []
    for result in ticks(world, 60, ids):
        state = world.round_state(h)
        phases.append((result.tick, state.number, state.phase))
        if state.phase != "running":
            assert not np.any(world.treasures.state[rows] == 1), "no treasure outside a run"
            assert not np.any(world.players.hint[:4]), "no hint outside a run"
    changes = [p for i, p in enumerate(phases) if i == 0 or p[1:] != phases[i - 1][1:]]
    assert changes == [(1, 1, "lobby"), (4, 1, "running"), (24, 1, "results"), (26, 2, "lobby"),
                       (29, 2, "running"), (49, 2, "results"), (51, 2, "over")]
    assert world.round_state(h).phase_end is None


def test_standings_rank_like_the_leaderboard_and_scores_reset_when_a_round_begins():
    world = World(EngineConfig(max_players=16, max_treasures=16))
    h = world.add_hunt(cup(count=0))
    ids = [world.join(h) for _ in range(6)]
    results = [r.results.copy() for r in ticks(world, 24, ids) if len(r.results)]
    (standings,) = results
    assert list(standings["rank"]) == list(range(1, 7))
    key = [(-int(r["score"]), int(r["last_tick"]) if r["found"] else 4, int(r["slot"]))
           for r in standings]
    assert key == sorted(key)
    assert int(standings["score"].sum()) > 0, "somebody found something"
    scores = world.players.score[:6].copy()
    run(world, 1, ids)  # tick 25, the results phase's last: scores kept
    assert np.array_equal(world.players.score[:6], scores)
    run(world, 1, ids)  # tick 26, round 2's lobby: every score back to 0
    assert not world.players.score[:6].any() and len(world.leaderboard(h)) == 0


def test_end_conditions_and_requests_end_a_round_early():
    world = World(EngineConfig(max_players=16, max_treasures=32))
    found = world.add_hunt(cup(spec=RoundSpec(treasures=2, respawn=False, end="all_found"),
                               running_ticks=10_000))
    score = world.add_hunt(cup(spec=RoundSpec(end="score", target_score=8),
                               running_ticks=10_000).replace(name="score"))
    timed = world.add_hunt(cup(running_ticks=10_000).replace(name="timed"))
    ids = [world.join(h) for h in (found, score, timed) for _ in range(5)]
    with pytest.raises(RoundError, match="only a running round can be ended"):
        world.request_round(timed, "end")
    world.request_round(timed, "start")  # skip the lobby
    run(world, 1, ids)
    assert world.round_state(timed).phase == "running"
    with pytest.raises(RoundError, match="running already"):
        world.request_round(timed, "start")
    ended = {}
    for result in ticks(world, 3000, ids):
        for h in result.round_changed.tolist():
            if world.round_state(h).phase == "results":
                ended.setdefault(h, result)
        if len(ended) == 2:
            break
    assert set(ended) == {found, score}
    assert max(ended[score].results["score"]) >= 8
    assert world.round_state(timed).phase == "running"
    world.request_round(timed, "end")
    assert world.round_state(timed).request == "end"
    (last,) = run(world, 1, ids)
    assert world.round_state(timed).phase == "results" and len(last.results) == 5
    with pytest.raises(RoundError, match="no round plan"):
        World(EngineConfig(max_players=4, max_treasures=4),
              [HuntParams(treasures=1)]).request_round(0, "start")


def test_a_restored_world_continues_the_same_round_with_the_same_hash():
    world = World(EngineConfig(max_players=16, max_treasures=16))
    h = world.add_hunt(cup(count=3))
    ids = [world.join(h) for _ in range(5)]
    run(world, 10, ids, seq=[0])
    copy = World.restore(world.snapshot())
    assert copy.round_state(h) == world.round_state(h)
    for a, b in zip(run(world, 50, ids, seq=[10]), run(copy, 50, ids, seq=[10]), strict=True):
        assert a.results.tobytes() == b.results.tobytes()
    assert copy.state_hash() == world.state_hash()
