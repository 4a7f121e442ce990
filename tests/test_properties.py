"""Properties of the engine that must hold for any world and any inputs (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickengine import (
    Bots,
    EngineConfig,
    HuntParams,
    StalePlayerError,
    World,
)
from tickengine._state import ACTIVE, T_ACTIVE

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-1e6, 1e6, allow_nan=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def hunts(draw) -> HuntParams:
    width = draw(st.floats(10, 500))
    height = draw(st.floats(10, 500))
    discovery = draw(st.floats(0.5, min(width, height) / 2))
    vmin = draw(st.integers(1, 50))
    return HuntParams(
        name="p",
        width=width,
        height=height,
        player_speed=draw(st.floats(0, 500)),
        tick_rate=draw(st.integers(1, 60)),
        treasures=draw(st.integers(0, 40)),
        treasure_value_min=vmin,
        treasure_value_max=draw(st.integers(vmin, 100)),
        discovery_radius=discovery,
        hint_radius=draw(st.floats(discovery, 400)),
        hint_levels=draw(st.integers(1, 15)),
        view_radius=draw(st.floats(1, 300)),
        respawn_delay=draw(st.integers(1, 20)),
        leaderboard_size=draw(st.integers(1, 10)),
        seed=draw(st.integers(0, 2**63 - 1)),
    )


def make_world(params: HuntParams, players: int, seed: int) -> tuple[World, Bots]:
    world = World(EngineConfig(max_players=64, max_treasures=64, max_hunts=2, max_visible=4096),
                  [params])
    bots = Bots(world)
    bots.add(0, players // 2, "hunter", seed=seed)
    bots.add(0, players - players // 2, "random", seed=seed + 1)
    return world, bots


@SETTINGS
@given(params=hunts(), players=st.integers(1, 40), seed=st.integers(0, 1000),
       moves=st.lists(st.tuples(st.integers(0, 39), any_float, any_float), max_size=60))
def test_positions_stay_in_bounds(params, players, seed, moves) -> None:
    world, bots = make_world(params, players, seed)
    P = world.players
    seq = 1_000_000
    for tick in range(60):
        bots.decide()
        for slot, dx, dy in moves[tick % 3 :: 3]:
            if slot < players:
                seq += 1
                world.moves.put(world.player_id(slot), seq, dx, dy)
        world.tick()
        live = P.state[: P.high_water] == ACTIVE
        x, y = P.x[: P.high_water][live], P.y[: P.high_water][live]
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
        assert np.all((x >= 0) & (x <= params.width)), "x out of bounds"
        assert np.all((y >= 0) & (y <= params.height)), "y out of bounds"
        assert np.all(np.hypot(P.dx, P.dy) <= 1.0 + 1e-12), "direction longer than 1"


@SETTINGS
@given(params=hunts(), players=st.integers(1, 40), seed=st.integers(0, 1000))
def test_scores_add_up_and_each_spawn_is_found_once(params, players, seed) -> None:
    world, bots = make_world(params, players, seed)
    P, T = world.players, world.treasures
    found_value = 0
    found_count = 0
    waiting_until: dict[int, int] = {}
    for _ in range(120):
        bots.decide()
        result = world.tick()
        for e in result.discoveries:
            r = int(e["treasure"])
            # Found at most once per spawn: a found treasure is out of play until it respawns.
            assert r not in waiting_until or waiting_until[r] <= result.tick, r
            waiting_until[r] = result.tick + params.respawn_delay
            found_value += int(e["value"])
            found_count += 1
        assert int(P.score.sum()) == found_value
        assert int(P.found.sum()) == found_count
        # A treasure is active xor waiting with a respawn tick in the future.
        waiting = T.state[: T.used] != T_ACTIVE
        assert np.all(T.respawn_tick[: T.used][waiting] > result.tick)


@SETTINGS
@given(params=hunts(), players=st.integers(1, 40), seed=st.integers(0, 1000))
def test_hint_levels_agree_with_distances(params, players, seed) -> None:
    world, bots = make_world(params, players, seed)
    P, T = world.players, world.treasures
    L, R = params.hint_levels, params.hint_radius
    for _ in range(25):
        bots.decide()
        world.tick()
    active_t = T.state[: T.used] == T_ACTIVE
    tx, ty = T.x[: T.used][active_t], T.y[: T.used][active_t]
    for s in np.flatnonzero(P.state[: P.high_water] == ACTIVE):
        hint = int(P.hint[s])
        d = float(np.min(np.hypot(tx - P.x[s], ty - P.y[s]))) if tx.size else math.inf
        if d > R * (1 + 1e-12):
            assert hint == 0
        elif d < R * (1 - 1e-12):
            assert 1 <= hint <= L
            # Within one level of the formula (float rounding at a level boundary).
            ideal = L - (L * d) / R
            assert math.floor(ideal) - 1 <= hint <= math.ceil(ideal) + 1
    slots = np.flatnonzero(P.state[: P.high_water] == ACTIVE)
    if tx.size:
        dist = np.array([np.min(np.hypot(tx - P.x[s], ty - P.y[s])) for s in slots])
        order = np.argsort(dist, kind="stable")
        hints = P.hint[slots][order].astype(int)
        assert np.all(np.diff(hints) <= 0), "a nearer player got a colder hint"


@SETTINGS
@given(params=hunts(), seed=st.integers(0, 1000))
def test_stale_ids_are_rejected(params, seed) -> None:
    world = World(EngineConfig(max_players=4, max_treasures=64, max_hunts=1), [params])
    first = world.join(0)
    world.tick()
    world.leave(first)
    with pytest.raises(StalePlayerError):
        world.leave(first)  # already leaving
    world.tick()
    assert not world.is_live(first)
    with pytest.raises(StalePlayerError):
        world.leave(first)
    with pytest.raises(StalePlayerError):
        world.player(first)
    assert world.moves.put(first, 10, 1.0, 0.0) is False
    # The slot is reused under a new generation; the old id still cannot touch it.
    second = world.join(0)
    assert second & 0xFFFFFFFF == first & 0xFFFFFFFF and second != first
    world.tick()
    assert world.moves.put(first, 99, 1.0, 0.0) is False
    assert world.moves.put_many(np.array([first], np.int64), np.array([100], np.int64),
                                np.array([1.0]), np.array([0.0])) == 0
    world.tick()
    assert world.player(second).last_seq == 0
    assert world.player(second).dx == 0.0
    # Never-issued ids are refused too.
    for bogus in (-1, 2**40 + 3, 2**34, 7):
        assert world.moves.put(bogus, 5, 0.0, 1.0) is False
        with pytest.raises(StalePlayerError):
            world.leave(bogus)
