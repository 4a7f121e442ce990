"""The round plan's configuration: TOML and JSON forms, validation, round trips."""

from __future__ import annotations

import json

import pytest

from tickengine import ConfigError, HuntParams, RoundPlan, RoundSpec, parse_config

CUP = """
[[hunt]]
name = "cup"
treasures = 40

[hunt.rounds]
count = 3
lobby_ticks = 100
running_ticks = 600
results_ticks = 50
treasures = 30
respawn = false
end = "all_found"

[[hunt.rounds.round]]

[[hunt.rounds.round]]
treasures = 10
respawn = true
end = "score"
target_score = 50
"""


def test_toml_plan_folds_round_defaults_into_each_entry():
    hunt = parse_config(CUP).hunts[0]
    plan = hunt.rounds
    assert (plan.count, plan.lobby_ticks, plan.running_ticks, plan.results_ticks) == (
        3, 100, 600, 50)
    first, second = plan.round
    assert first == RoundSpec(30, 1, 10, False, "all_found", 0)
    assert second == RoundSpec(10, 1, 10, True, "score", 50)
    assert [plan.spec(n) for n in (1, 2, 3, 4)] == [first, second, first, second]


def test_json_form_round_trips_and_a_hunt_without_rounds_writes_no_key():
    hunt = parse_config(CUP).hunts[0]
    data = json.loads(json.dumps(hunt.to_dict()))
    assert data["rounds"]["round"][1]["target_score"] == 50
    assert HuntParams.from_dict(data) == hunt
    assert RoundPlan.from_dict(hunt.rounds.to_dict()) == hunt.rounds
    assert "rounds" not in HuntParams().to_dict()
    assert HuntParams.from_dict(HuntParams().to_dict()) == HuntParams()


def test_unset_round_values_are_the_hunts():
    hunt = HuntParams(treasures=12, treasure_value_min=3, treasure_value_max=4,
                      rounds=RoundPlan())
    assert hunt.rounds.round == (RoundSpec(12, 3, 4, True, "time", 0),)


@pytest.mark.parametrize(("rounds", "words"), [
    ({"end": "sudden"}, "end must be one of"),
    ({"end": "all_found"}, "needs respawn = false"),
    ({"end": "score"}, "target_score must be an integer in [1"),
    ({"target_score": 5}, "target_score must be an integer in [0, 0]"),
    ({"treasures": 41}, "at most the hunt's treasures"),
    ({"lobby_ticks": 0}, "lobby_ticks must be an integer in [1"),
    ({"count": -1}, "count must be an integer"),
    ({"round": []}, "1-1000 round entries"),
    ({"bogus": 1}, "unknown key(s) bogus"),
    ({"round": [{"bogus": 1}]}, "round #1: unknown key(s) bogus"),
    ({"respawn": "no"}, "respawn must be true or false"),
    ({"treasure_value_min": 5, "treasure_value_max": 4}, "treasure_value_max"),
])
def test_bad_plans_are_refused_naming_the_key(rounds, words):
    with pytest.raises(ConfigError) as info:
        HuntParams.from_dict({"treasures": 40, "rounds": rounds})
    assert words in str(info.value)
