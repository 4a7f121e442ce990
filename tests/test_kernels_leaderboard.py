"""The incremental leaderboard against a brute-force ranking of every slot, tick by tick.

Each tick ranks only last tick's board and this tick's scorers unless a board
member left; these worlds make board members leave often (and their slots be
reused at once) so that both paths run, and compare every board with the rule
of docs/rules.md step 6 evaluated over all players.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from tickengine import Bots, EngineConfig, HuntParams, World
from tickengine._state import ACTIVE


def brute_force_board(world: World, h: int) -> list[tuple[int, int]]:
    P = world.players
    size = world.hunt_params[h].leaderboard_size
    slots = [s for s in range(P.high_water)
             if P.state[s] == ACTIVE and P.hunt[s] == h and P.score[s] > 0]
    slots.sort(key=lambda s: (-int(P.score[s]), int(P.score_tick[s]), s))
    return [(s, int(P.score[s])) for s in slots[:size]]


@pytest.mark.parametrize("seed", range(6))
def test_boards_equal_brute_force_with_board_members_leaving(seed: int) -> None:
    rng = random.Random(seed)
    world = World(EngineConfig(max_players=400, max_treasures=300, max_hunts=2))
    for h in range(2):
        world.add_hunt(HuntParams(name=f"h{h}", width=120, height=100, treasures=120,
                                  discovery_radius=6, hint_radius=40, respawn_delay=2,
                                  leaderboard_size=rng.randint(1, 8), seed=seed * 10 + h,
                                  max_players=200))
    bots = Bots(world)
    for h in range(2):
        bots.add(h, 150, "hunter", seed=seed + h)
    previous = {h: brute_force_board(world, h) for h in range(2)}
    for t in range(80):
        if t % 3 == 2:
            # A board member leaves; a newcomer may take its slot at once.
            h = rng.randrange(2)
            board = world.leaderboard(h)
            if board.shape[0]:
                pick = board[rng.randrange(board.shape[0])]
                world.leave(world.player_id(int(pick["slot"])))
                if rng.random() < 0.5:
                    world.join(h)
        if t == 40:
            world = World.restore(world.snapshot())  # a restored world ranks from scratch
            bots = Bots(world)
            for h in range(2):
                bots.add(h, 20, "hunter", seed=seed + 5 + h)
        bots.decide()
        result = world.tick()
        for h in range(2):
            expected = brute_force_board(world, h)
            got = [(int(r["slot"]), int(r["score"])) for r in world.leaderboard(h)]
            assert got == expected, (t, h)
            assert all(world.player(world.player_id(s)).score == sc for s, sc in got)
            assert (h in result.leaderboard_changed) == (expected != previous[h])
            previous[h] = expected
    assert np.any(world.players.score > 0)
