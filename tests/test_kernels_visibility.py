"""The one-pass visibility kernel against a brute-force pure-Python visibility.

The kernel writes each thread's observers into its own share of the buffer and
compacts them, or starts over in two passes when a share fills up. Whatever
the number of chunks and the capacity, every observer's records, the offsets
and the truncation flags must be those of docs/rules.md ("Visibility"), with
observers that do not fit decided in observer order.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from tickengine import Bots, EngineConfig, HuntParams, World
from tickengine._dtypes import VISIBLE_DTYPE
from tickengine._state import ACTIVE
from tickengine._visibility import compute_visibility, vis_scratch


def brute_force_records(world: World, s: int, keyframe: bool) -> list[tuple]:
    P, t = world.players, world.tick_number
    if P.state[s] != ACTIVE:
        return []
    h = int(P.hunt[s])
    params = world.hunt_params[h]
    r2 = params.view_radius * params.view_radius
    out = []
    for j in range(P.high_water):
        if j == s or P.state[j] != ACTIVE or P.hunt[j] != h:
            continue
        now = (P.x[j] - P.x[s]) ** 2 + (P.y[j] - P.y[s]) ** 2 <= r2
        before = (P.joined_tick[s] != t and P.joined_tick[j] != t
                  and (P.x_prev[j] - P.x_prev[s]) ** 2 + (P.y_prev[j] - P.y_prev[s]) ** 2 <= r2)
        changed = P.changed_tick[j] == t
        listed = now if keyframe else ((changed and (now or before)) or now != before)
        if listed:
            out.append((j, int(P.gen[j]) & 0xFFFF, int(now), np.float32(P.x[j]),
                        np.float32(P.y[j])))
    return sorted(out)


def random_world(seed: int) -> World:
    rng = random.Random(seed)
    world = World(EngineConfig(max_players=500, max_treasures=50, max_hunts=2))
    bots = Bots(world)
    for h in range(rng.randint(1, 2)):
        world.add_hunt(HuntParams(name=f"h{h}", width=rng.choice([80.0, 300.0]), height=120.0,
                                  treasures=10, view_radius=rng.uniform(3.0, 60.0),
                                  player_speed=rng.uniform(5.0, 200.0), seed=seed + h,
                                  max_players=250))
        bots.add(h, rng.randint(1, 250), rng.choice(["hunter", "random"]), seed=seed)
    for _ in range(rng.randint(1, 4)):
        bots.decide()
        world.tick()
    world.join_many(0, 1)
    bots.decide()
    world.tick()  # someone joined this tick
    return world


@pytest.mark.parametrize("seed", range(8))
def test_visibility_equals_brute_force_for_any_chunking_and_capacity(seed: int) -> None:
    world = random_world(seed)
    rng = np.random.default_rng(seed)
    P, H = world.players, world.hunts
    observers = rng.permutation(P.high_water + 3)[: max(1, P.high_water // 2)].astype(np.int32)
    observers = np.minimum(observers, P.capacity - 1)
    keyframe = (rng.random(observers.shape[0]) < 0.3).astype(np.uint8)
    wanted = [brute_force_records(world, int(s), bool(k))
              for s, k in zip(observers, keyframe, strict=True)]
    total = sum(len(w) for w in wanted)
    for cap in (4 * total + 4, total + 1, total, max(1, total // 2), max(1, total // 5), 1):
        records = np.zeros(cap, VISIBLE_DTYPE)
        # Observers decided in the rotated order of docs/rules.md (from observer s, round
        # the list): one that does not fit gets nothing.
        n = len(wanted)
        s = (world.tick_number % n) * (2654435761 % n) % n
        expected_trunc, used = [0] * n, 0
        for k in range(n):
            o = (s + k) % n
            fits = used + len(wanted[o]) <= cap
            expected_trunc[o] = 0 if fits else 1
            used += len(wanted[o]) if fits else 0
        for n_chunks in (1, 2, 3, 4):
            offsets = np.full(observers.shape[0] + 1, -7, np.int64)
            truncated = np.full(observers.shape[0], 9, np.uint8)
            dropped = compute_visibility(
                n_chunks, observers.shape[0], observers, keyframe, world.tick_number,
                P.state, P.gen, P.hunt, P.x, P.y, P.x_prev, P.y_prev, P.changed_tick,
                P.joined_tick, world._p_cells, world._p_order, world._p_sorted_x,
                world._p_sorted_y, H.f, H.i, offsets, truncated, records.view(np.uint64),
                vis_scratch(P.capacity, 4))
            assert list(truncated) == expected_trunc, (cap, n_chunks)
            assert offsets[0] == 0
            assert dropped == sum(len(w) for w, t in zip(wanted, expected_trunc, strict=True) if t)
            for o, w in enumerate(wanted):
                got = records[offsets[o]:offsets[o + 1]]
                want = [] if expected_trunc[o] else w
                assert sorted((int(r["slot"]), int(r["gen"]), int(r["flags"]), r["x"], r["y"])
                              for r in got) == want, (cap, n_chunks, o)


def test_a_full_visibility_buffer_cuts_different_observers_each_tick() -> None:
    """A crowd that needs more records than the buffer holds, the same observers every
    tick: the cut rotates (no observer is cut every tick, consecutive ticks cut different
    sets), the engine agrees with the reference, whatever the thread count."""
    import numba
    from differential_support import compare_visibility
    from test_differential import Pair

    pair = Pair(3, max_visible=40)
    for _ in range(30):
        pair.requests()
        pair.tick_and_compare()
    observers = [int(s) for s in pair.world.active_slots()]
    cut_sets, ever_fit = [], set()
    for _ in range(12):
        pair.tick_and_compare()
        t = pair.world.tick_number
        keyframes = [True] * len(observers)
        compare_visibility(pair.world, pair.ref, observers, keyframes, t)
        obs = np.asarray(observers, np.int32)
        kf = np.ones(len(observers), np.uint8)
        cuts = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            cuts.append(pair.world.visibility(obs, kf).truncated.copy())
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert (cuts[0] == cuts[-1]).all(), "the cut depends on the thread count"
        cut_sets.append(frozenset(np.flatnonzero(cuts[0]).tolist()))
        ever_fit |= set(np.flatnonzero(cuts[0] == 0).tolist())
    assert any(cut_sets), "the buffer never overflowed: the test proves nothing"
    assert all(a != b for a, b in itertools.pairwise(cut_sets) if a or b)
    assert not frozenset.intersection(*cut_sets), "an observer was cut every tick"
    assert len(ever_fit) == len(observers)
