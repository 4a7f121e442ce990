"""The finder search on the treasure grid against a brute-force search, serial and parallel.

Worlds with more active treasures than ``PARALLEL_MIN_TREASURES`` take the
parallel path; the small worlds of the differential tests take the serial one.
Both must find, for every active treasure, the nearest active player of its
hunt within the discovery radius (ties: lowest slot), and move found treasures
out of the hint query.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tickengine import Bots, EngineConfig, HuntParams, World
from tickengine._discovery import PARALLEL_MIN_TREASURES, find_finders
from tickengine._state import ACTIVE, T_ACTIVE


def brute_force_finders(world: World) -> np.ndarray:
    P, T = world.players, world.treasures
    out = np.full(T.used, -1, np.int32)
    slots = np.flatnonzero(P.state[: P.high_water] == ACTIVE)
    for r in range(T.used):
        if T.state[r] != T_ACTIVE:
            continue
        h = int(T.hunt[r])
        r2 = world.hunt_params[h].discovery_radius ** 2
        best, best_d2 = -1, math.inf
        for s in slots:
            if P.hunt[s] != h:
                continue
            d2 = (float(P.x[s]) - float(T.x[r])) ** 2 + (float(P.y[s]) - float(T.y[r])) ** 2
            if d2 <= r2 and d2 < best_d2:  # slots ascend: the first of equals stays
                best, best_d2 = int(s), d2
        out[r] = best
    return out


@pytest.mark.parametrize(("treasures", "seed"), [(40, 1), (600, 2), (2500, 3), (2500, 4)])
def test_finders_equal_brute_force(treasures: int, seed: int) -> None:
    world = World(EngineConfig(max_players=3000, max_treasures=2 * treasures, max_hunts=2))
    bots = Bots(world)
    for h in range(2):
        world.add_hunt(HuntParams(name=f"h{h}", width=300 + 100 * h, height=250,
                                  treasures=treasures, discovery_radius=3.0 + 2 * h,
                                  view_radius=20.0, seed=seed + h, max_players=1500))
        bots.add(h, 1500, "random", seed=seed)
    for _ in range(2):  # the joins, then one move: most treasures are still there
        bots.decide()
        world.tick()
    # A tie on purpose: two players of the hunt at the same distance of a treasure.
    T, P = world.treasures, world.players
    r = int(np.flatnonzero(T.state[: T.used] == T_ACTIVE)[0])
    T.x[r], T.y[r] = 100.0, 100.0
    for s, x in ((900, 99.5), (40, 100.5)):
        assert P.hunt[s] == T.hunt[r] and P.state[s] == ACTIVE
        P.x[s], P.y[s] = x, 100.0
    world._rebuild_grids()
    expected = brute_force_finders(world)
    n_placed = world._build_treasure_grid()
    assert n_placed == int(np.count_nonzero(T.state[: T.used] == T_ACTIVE))
    assert (n_placed >= PARALLEL_MIN_TREASURES) == (treasures >= 2500)
    T.candidate[:] = -1
    find_finders(n_placed, world._t_order, world._t_sorted_x, world._t_sorted_y, T.hunt,
                 T.candidate, world._p_cells, world._p_order, world._p_sorted_x,
                 world._p_sorted_y, world.hunts.f, world.hunts.i)
    assert np.array_equal(T.candidate[: T.used], expected)
    assert np.any(expected >= 0)
    assert T.candidate[r] == 40
    # Found treasures left the hint query's positions; the others kept theirs.
    found = np.isinf(world._t_sorted_x[:n_placed])
    assert np.array_equal(np.sort(world._t_order[:n_placed][found]), np.flatnonzero(expected >= 0))
    kept = world._t_order[:n_placed][~found]
    assert np.array_equal(world._t_sorted_x[:n_placed][~found], T.x[kept])
