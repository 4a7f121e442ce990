"""JIT warm-up: compile (or load from Numba's cache) every kernel before real work.

Call :func:`warm_up` at start-up, never inside the first tick: the first call
of a kernel compiles it, which takes seconds the first time after install and
well under a second when Numba's on-disk cache is warm.
"""

from __future__ import annotations

import time

import numpy as np


def warm_up() -> float:
    """Run every kernel once on a tiny world. Returns the seconds it took."""
    from ._bots import HUNTER, RANDOM, Bots
    from ._config import EngineConfig, HuntParams
    from ._world import World

    start = time.perf_counter()
    world = World(EngineConfig(max_players=8, max_treasures=8, max_hunts=2, max_visible=64))
    hunt = world.add_hunt(HuntParams(name="warm-up", width=50, height=50, treasures=4,
                                     discovery_radius=5, hint_radius=20, view_radius=30,
                                     respawn_delay=1, max_players=8))
    bots = Bots(world, capacity=4)
    bots.add(hunt, 2, RANDOM, seed=1)
    bots.add(hunt, 1, HUNTER, seed=2)
    me = world.join(hunt)
    world.moves.put_many(np.array([me], np.int64), np.array([1], np.int64),
                         np.array([0.5]), np.array([0.5]))
    observers = np.arange(4, dtype=np.int32)
    for _ in range(3):
        bots.decide()
        world.tick()
        world.visibility(observers)
        world.visibility(observers, np.ones(4, np.uint8))
    world.leave(me)
    world.tick()
    World.restore(world.snapshot()).state_hash()
    return time.perf_counter() - start
