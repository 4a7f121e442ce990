"""JIT warm-up: compile (or load from Numba's cache) every kernel before real work.

Call :func:`warm_up` at start-up, never inside the first tick: the first call
of a kernel compiles it, which takes seconds the first time after install and
well under a second when Numba's on-disk cache is warm.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from numba.core.registry import CPUDispatcher


@dataclass(frozen=True, slots=True)
class WarmUpReport:
    """What :func:`warm_up` did."""

    #: Wall-clock seconds it took.
    seconds: float
    #: Kernel signatures compiled now (they are cached on disk for the next process).
    compiled: int
    #: Kernel signatures loaded from Numba's on-disk cache.
    loaded: int

    @property
    def from_cache(self) -> bool:
        """True when nothing had to be compiled."""
        return self.compiled == 0


def _kernels() -> list[CPUDispatcher]:
    return [obj for name, mod in list(sys.modules.items()) if name.startswith("tickengine.")
            for obj in vars(mod).values() if isinstance(obj, CPUDispatcher)]


def _counts() -> tuple[int, int]:
    compiled = loaded = 0
    for kernel in {id(k): k for k in _kernels()}.values():
        compiled += sum(kernel.stats.cache_misses.values())
        loaded += sum(kernel.stats.cache_hits.values())
    return compiled, loaded


def warm_up() -> WarmUpReport:
    """Run every kernel once on a tiny world; report the time and what was compiled."""
    from ._bots import HUNTER, RANDOM, Bots
    from ._config import EngineConfig, HuntParams
    from ._grid import assign_cells_parallel, place_rows_parallel
    from ._roundplan import RoundPlan
    from ._state import ACTIVE, HF_P_INV_X, HF_P_INV_Y, HI_P_BASE, HI_P_NCX, HI_P_NCY
    from ._visibility import _copy_rows_parallel
    from ._world import World

    start = time.perf_counter()
    compiled0, loaded0 = _counts()
    world = World(EngineConfig(max_players=8, max_treasures=8, max_hunts=2, max_visible=64))
    hunt = world.add_hunt(HuntParams(name="warm-up", width=50, height=50, treasures=4,
                                     discovery_radius=5, hint_radius=20, view_radius=30,
                                     respawn_delay=1, max_players=8))
    # A round hunt, for step 0's kernel (its lobby ends after the first tick).
    world.add_hunt(HuntParams(name="warm-up rounds", width=50, height=50, treasures=2,
                              discovery_radius=5, hint_radius=20, view_radius=30,
                              max_players=8, rounds=RoundPlan(lobby_ticks=1)))
    bots = Bots(world, capacity=4)
    bots.add(hunt, 2, RANDOM, seed=1)
    bots.add(hunt, 1, HUNTER, seed=2)
    me = world.join(hunt)
    world.moves.put(me, 1, 0.5, 0.5)
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
    world.join_many(hunt, 1)
    # Kernels a tiny world leaves to their serial twins (see PARALLEL_MIN_ROWS).
    P, H = world.players, world.hunts
    assign_cells_parallel(P.high_water, P.state, ACTIVE, P.hunt, P.x, P.y, H.f, H.i,
                          HF_P_INV_X, HF_P_INV_Y, HI_P_NCX, HI_P_NCY, HI_P_BASE, P.cell)
    counts = np.zeros((2, world._p_cells.shape[0] - 1), np.int32)
    place_rows_parallel(2, P.high_water, P.cell, P.x, P.y, world._p_cells, counts,
                        world._p_order, world._p_sorted_x, world._p_sorted_y)
    g = world._vis_scratch
    _copy_rows_parallel(int(world._p_cells[-1]), world.tick_number, world._p_order, P.gen,
                        P.x_prev, P.y_prev, P.changed_tick, P.joined_tick, world._p_sorted_x,
                        world._p_sorted_y, g.x_prev, g.y_prev, g.head, g.xy, g.fresh)
    compiled1, loaded1 = _counts()
    return WarmUpReport(seconds=time.perf_counter() - start, compiled=compiled1 - compiled0,
                        loaded=loaded1 - loaded0)
