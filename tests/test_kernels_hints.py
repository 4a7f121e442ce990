"""The tiled hint kernel against a brute-force pure-Python hint, on small random worlds.

The kernel's tiling (tile width, scratch capacity and its per-player fallback,
number of chunks) must never change a hint: each case recomputes the hints of a
ticked world with other settings and compares every active player's hint with
the rule of docs/rules.md step 5 evaluated over all treasures of its hunt.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tickengine import Bots, EngineConfig, HuntParams, World
from tickengine._hints import hint_scratch_shape, update_hints
from tickengine._state import ACTIVE, T_ACTIVE


def brute_force_hints(world: World) -> np.ndarray:
    P, T = world.players, world.treasures
    out = np.zeros(P.capacity, np.int8)
    for s in range(P.high_water):
        if P.state[s] != ACTIVE:
            continue
        h = int(P.hunt[s])
        params = world.hunt_params[h]
        best = math.inf
        for r in range(world.treasures.used):
            if T.hunt[r] == h and T.state[r] == T_ACTIVE:
                d2 = (float(P.x[s]) - float(T.x[r])) ** 2 + (float(P.y[s]) - float(T.y[r])) ** 2
                best = min(best, d2)
        R, L = params.hint_radius, params.hint_levels
        if best <= R * R:
            out[s] = min(max(L - math.floor((L * math.sqrt(best)) / R), 1), L)
    return out


def random_world(seed: int) -> World:
    rng = random.Random(seed)
    world = World(EngineConfig(max_players=600, max_treasures=400, max_hunts=3))
    bots = Bots(world)
    for h in range(rng.randint(1, 3)):
        width = rng.choice([60.0, 150.0, 400.0])
        params = HuntParams(
            name=f"h{h}", width=width, height=rng.choice([50.0, 200.0]),
            treasures=rng.randint(0, 120), discovery_radius=rng.uniform(0.5, 3.0),
            hint_radius=rng.uniform(3.0, 90.0), hint_levels=rng.randint(1, 9),
            view_radius=rng.uniform(2.0, 40.0), seed=rng.randrange(2**32), max_players=200,
        )
        world.add_hunt(params)
        bots.add(h, rng.randint(0, 200), rng.choice(["hunter", "random"]), seed=seed + h)
    for _ in range(rng.randint(1, 6)):
        bots.decide()
        world.tick()
    return world


def recompute(world: World, n_chunks: int, scratch: np.ndarray, tile: int | None) -> None:
    P, H = world.players, world.hunts
    tiles = world._hint_tile.copy()
    if tile is not None:
        tiles[:] = tile
    P.hint[:] = -1
    update_hints(n_chunks, H.count, world._p_row_base, tiles, world._p_cells, world._p_order,
                 world._p_sorted_x, world._p_sorted_y, P.hint, world._t_cells,
                 world._t_sorted_x, world._t_sorted_y, H.f, H.i, scratch)


@pytest.mark.parametrize("seed", range(12))
def test_tiled_hints_equal_brute_force_whatever_the_tiling(seed: int) -> None:
    world = random_world(seed)
    P = world.players
    active = P.state[: P.high_water] == ACTIVE
    expected = brute_force_hints(world)[: P.high_water]
    # The tick's own hints.
    assert np.array_equal(P.hint[: P.high_water][active], expected[active])
    settings = [
        (1, np.zeros(hint_scratch_shape(1)), None),
        (3, np.zeros(hint_scratch_shape(4)), 1),
        (2, np.zeros(hint_scratch_shape(2)), 7),
        (2, np.zeros((2, 3, 2)), None),  # at most 2 candidates: most tiles fall back
        (1, np.zeros((1, 3, 1)), 32),    # blocks of one player
    ]
    for n_chunks, scratch, tile in settings:
        recompute(world, n_chunks, scratch, tile)
        assert np.array_equal(P.hint[: P.high_water][active], expected[active]), (n_chunks, tile)
        # Players not in play are never written.
        assert np.all(P.hint[: P.high_water][~active] == -1)
