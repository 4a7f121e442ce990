"""watch_payload: the operator view's JSON, built from a real (small) World."""

from __future__ import annotations

import json

import numpy as np
import pytest

from server.shell._watch import MAX_RECENT, watch_payload
from tickengine import EngineConfig, HuntParams, World

STATS = {"tick": 5, "tick_ms_p50": 0.4, "tick_ms_p99": 1.2, "clients": 2}


@pytest.fixture
def world() -> World:
    """Two hunts; 'meadow' is tiny and full of treasures so that discoveries come at once."""
    w = World(EngineConfig(max_players=64, max_treasures=200, max_hunts=2))
    w.add_hunt(HuntParams(name="meadow", width=100.0, height=80.0, treasures=60,
                          discovery_radius=20.0, hint_radius=40.0, seed=3))
    w.add_hunt(HuntParams(name="cave", width=500.0, height=500.0, treasures=10, seed=4))
    return w


def test_lists_active_players_of_the_hunt_only_with_rounded_positions(world: World):
    meadow = [world.join("meadow") for _ in range(3)]
    world.join("cave")
    world.tick()
    pending = world.join("meadow")  # joined after the tick: not in play yet
    payload = watch_payload(world, 0, {m & 0xFFFFFFFF: f"p{i}" for i, m in enumerate(meadow)},
                            [], STATS)
    slots = sorted(m & 0xFFFFFFFF for m in meadow)
    assert payload["players"]["slot"] == slots
    assert pending & 0xFFFFFFFF not in payload["players"]["slot"]
    P = world.players
    assert payload["players"]["x"] == [round(float(P.x[s]), 1) for s in slots]
    assert payload["players"]["y"] == [round(float(P.y[s]), 1) for s in slots]
    assert payload["players"]["gen"] == [int(P.gen[s]) for s in slots]
    assert payload["players"]["score"] == [int(P.score[s]) for s in slots]
    assert payload["names"] == {str(m & 0xFFFFFFFF): f"p{i}" for i, m in enumerate(meadow)}
    assert payload["hunt"] == "meadow" and payload["tick"] == 1
    assert payload["params"]["width"] == 100.0 and payload["params"]["height"] == 80.0
    assert payload["stats"] == STATS
    json.dumps(payload, allow_nan=False)  # plain JSON, no NumPy scalars


def test_treasures_leaderboard_and_recent_discoveries(world: World):
    me = world.join("meadow")
    slot = me & 0xFFFFFFFF
    found = []
    for t in range(40):
        world.moves.put(me, seq=t + 1, dx=1.0, dy=0.5)
        result = world.tick()
        found += [{"tick": result.tick, "slot": int(d["slot"]), "value": int(d["value"]),
                   "x": float(d["x"]) + 0.04321, "y": float(d["y"])}
                  for d in result.discoveries]
        if found:
            break
    assert found, "a tiny map full of treasures gives a discovery within 40 ticks"
    payload = watch_payload(world, "meadow", {slot: "Ada"}, found, STATS)

    rows = world.treasure_rows("meadow")
    treasures = payload["treasures"]
    assert len(treasures["x"]) == len(treasures["value"]) == len(treasures["active"]) == 60
    assert treasures["active"].count(0) == len(found)  # found ones wait to respawn
    T = world.treasures
    assert treasures["value"] == T.value[rows].tolist()
    assert treasures["x"] == np.round(T.x[rows], 1).tolist()

    assert payload["leaderboard"] == [
        {"slot": slot, "gen": 1, "score": world.player(me).score, "name": "Ada"}]
    assert payload["recent"][-1]["name"] == "Ada"
    assert payload["recent"][-1]["x"] == round(found[-1]["x"], 1)
    assert "name" not in found[-1], "the caller's dicts are not modified"
    json.dumps(payload, allow_nan=False)


def test_keeps_only_the_newest_discoveries_and_unknown_names_are_null(world: World):
    world.join("cave")
    world.tick()
    recent = [{"tick": i, "slot": 999, "value": 1} for i in range(MAX_RECENT + 7)]
    payload = watch_payload(world, "cave", {}, recent, STATS)
    assert [e["tick"] for e in payload["recent"]] == list(range(7, MAX_RECENT + 7))
    assert payload["recent"][0]["name"] is None
    assert payload["names"] == {}
    assert len(payload["treasures"]["x"]) == 10


def test_an_empty_hunt_is_a_valid_payload(world: World):
    payload = watch_payload(world, 1, {}, [], {})
    assert payload["players"] == {"slot": [], "gen": [], "x": [], "y": [], "score": []}
    assert payload["leaderboard"] == []
    json.dumps(payload, allow_nan=False)


def test_a_round_hunt_reports_its_clock_and_others_none():
    from tickengine import RoundPlan

    w = World(EngineConfig(max_players=16, max_treasures=64, max_hunts=2))
    w.add_hunt(HuntParams(name="cup", treasures=10, tick_rate=20,
                          rounds=RoundPlan(count=3, lobby_ticks=30, running_ticks=100)))
    w.add_hunt(HuntParams(name="open", treasures=5))
    for _ in range(10):
        w.tick()
    clock = watch_payload(w, "cup", {}, [], STATS)["round"]
    assert clock["number"] == 1 and clock["phase"] == "lobby" and clock["count"] == 3
    assert clock["phase_end"] == clock["phase_start"] + 30
    assert clock["ticks_left"] == clock["phase_end"] - w.tick_number
    assert clock["seconds_left"] == clock["ticks_left"] / 20
    assert watch_payload(w, "open", {}, [], STATS)["round"] is None
    json.dumps(clock, allow_nan=False)


def test_recent_discoveries_keep_each_hunts_newest_with_the_name_at_the_time():
    """The broadcaster's record of discoveries (the watch view's ``recent``), from the
    tick's DISCOVERY_RECORD array: per hunt, oldest first, at most ``keep``."""
    from server.hunt._broadcast import RecentDiscoveries
    from server.protocol._records import DISCOVERY_RECORD

    recent = RecentDiscoveries(keep=3)
    names = {7: "Ada"}
    for tick in (1, 2):
        d = np.zeros(3, DISCOVERY_RECORD)
        d["hunt"] = [0, 1, 0]
        d["slot"] = [7, 9, 7]
        d["value"] = [10 * tick, -5, 3]
        d["x"], d["y"] = [1.26, 2.0, 3.0], [4.0, 5.04, 6.0]
        recent.add(tick, d, names.get)
        names[7] = "Bea"  # a later name does not rewrite what was recorded
    assert recent[0] == [
        {"tick": 1, "slot": 7, "name": "Ada", "value": 3, "x": 3.0, "y": 6.0},
        {"tick": 2, "slot": 7, "name": "Bea", "value": 20, "x": 1.3, "y": 4.0},
        {"tick": 2, "slot": 7, "name": "Bea", "value": 3, "x": 3.0, "y": 6.0}]
    assert recent[1][-1] == {"tick": 2, "slot": 9, "name": "?", "value": -5, "x": 2.0,
                             "y": 5.0}
    assert recent[5] == []
    json.dumps(recent[0], allow_nan=False)  # plain Python values
