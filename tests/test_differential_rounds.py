"""Rounds: the Numba engine against the pure-Python reference over many seeds.

Random round plans (phase lengths, counts, per-round treasures, values,
respawns and end conditions), players joining and leaving in every phase,
"start" and "end" requests at random (refused alike when the phase does not
allow them), and snapshot/restore mid-round on the engine side. After every
tick: every event including the phase changes and the round results, every
player and treasure column, the boards and the round clocks
(tests/differential_support.py).
"""

from __future__ import annotations

import random

import pytest
from differential_support import compare_all

from tickengine import EngineConfig, HuntParams, RoundError, RoundPlan, RoundSpec, World
from tickengine.reference import ReferenceWorld

MAX_PLAYERS = 24
MAX_TREASURES = 60


def random_spec(rng: random.Random, treasures: int) -> RoundSpec:
    end = rng.choice(["time", "all_found", "score"])
    respawn = end != "all_found" and rng.random() < 0.5
    return RoundSpec(
        treasures=rng.randint(1, treasures),
        treasure_value_min=rng.randint(1, 3), treasure_value_max=rng.randint(3, 8),
        respawn=respawn, end=end, target_score=rng.randint(5, 40) if end == "score" else 0)


def random_round_hunt(rng: random.Random, name: str) -> HuntParams:
    treasures = rng.randint(1, 20)
    plan = RoundPlan(
        count=rng.choice([0, 1, 2, 3]), lobby_ticks=rng.randint(1, 15),
        running_ticks=rng.randint(1, 80), results_ticks=rng.randint(1, 15),
        round=tuple(random_spec(rng, treasures) for _ in range(rng.randint(1, 3))))
    discovery = rng.uniform(3.0, 12.0)
    return HuntParams(
        name=name, width=rng.choice([40.0, 80.0]), height=rng.choice([40.0, 60.0]),
        player_speed=rng.uniform(10.0, 60.0), treasures=treasures, discovery_radius=discovery,
        hint_radius=rng.uniform(discovery, 50.0), view_radius=30.0,
        respawn_delay=rng.randint(1, 10), leaderboard_size=rng.randint(1, 5),
        seed=rng.randrange(2**63), rounds=plan)


class RoundPair:
    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.world = World(EngineConfig(max_players=MAX_PLAYERS, max_treasures=MAX_TREASURES,
                                        max_hunts=3))
        self.ref = ReferenceWorld(max_players=MAX_PLAYERS, max_treasures=MAX_TREASURES,
                                  max_hunts=3)
        plain = HuntParams(name="plain", width=60.0, height=60.0, treasures=5,
                           discovery_radius=6.0, seed=seed)
        hunts = [random_round_hunt(rng, "r0"), plain, random_round_hunt(rng, "r1")]
        for h, params in enumerate(hunts[:rng.randint(2, 3)]):
            assert self.world.add_hunt(params) == self.ref.add_hunt(params) == h
        self.ids: list[int] = []
        self.seq = 0

    def requests(self) -> None:
        rng, world, ref = self.rng, self.world, self.ref
        for _ in range(rng.choice([0, 0, 1, 2])):
            hunt = rng.randrange(world.hunts.count)
            if len(self.ids) < MAX_PLAYERS - 4:
                pid = world.join(hunt)
                assert ref.join(hunt) == pid
                self.ids.append(pid)
        if self.ids and rng.random() < 0.04:
            pid = self.ids.pop(rng.randrange(len(self.ids)))
            world.leave(pid)
            ref.leave(pid)
        if rng.random() < 0.05:
            hunt, action = rng.randrange(world.hunts.count), rng.choice(["start", "end"])
            try:
                world.request_round(hunt, action)
            except RoundError:
                with pytest.raises(RoundError):
                    ref.request_round(hunt, action)
            else:
                ref.request_round(hunt, action)
        self.seq += 1
        for pid in self.ids:
            if rng.random() < 0.3:
                dx, dy = rng.uniform(-1, 1), rng.uniform(-1, 1)
                assert world.moves.put(pid, self.seq, dx, dy) == ref.put_move(pid, self.seq,
                                                                              dx, dy)


SEEDS = range(12)
SEEN = {"changes": 0, "results": 0, "early_ends": 0, "restores": 0}


@pytest.mark.parametrize("seed", SEEDS)
def test_rounds_engine_matches_reference(seed: int) -> None:
    pair = RoundPair(seed)
    for _ in range(300):
        pair.requests()
        scheduled = {h: pair.world.round_state(h) for h in range(pair.world.hunts.count)}
        got, want = pair.world.tick(), pair.ref.tick()
        compare_all(pair.world, pair.ref, got, want)
        SEEN["changes"] += len(got.round_changed)
        SEEN["results"] += len(got.results)
        for h in got.round_changed.tolist():
            if pair.world.round_state(h).phase == "results" and (
                    scheduled[h].phase_end != got.tick):
                SEEN["early_ends"] += 1  # an end condition or an "end" request
        if pair.rng.random() < 0.02:
            before = pair.world.state_hash()
            pair.world = World.restore(pair.world.snapshot())
            assert pair.world.state_hash() == before
            SEEN["restores"] += 1


def test_rounds_differential_was_not_vacuous() -> None:
    if SEEN["changes"] == 0:
        for seed in SEEDS:
            test_rounds_engine_matches_reference(seed)
    assert SEEN["changes"] > 150 and SEEN["results"] > 100 and SEEN["restores"] > 30, SEEN
    assert SEEN["early_ends"] > 10, SEEN
