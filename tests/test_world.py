"""World API behaviour: configuration, capacities, membership, events and their limits."""

from __future__ import annotations

import numpy as np
import pytest

from tickengine import (
    JOINED,
    LEFT,
    VIS_IN_VIEW,
    CapacityError,
    ConfigError,
    EngineConfig,
    HuntFullError,
    HuntParams,
    StalePlayerError,
    UnknownHuntError,
    World,
    load_config,
    parse_config,
)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("width", 0, r"hunt.width must be in \[1, 1e\+07\], got 0"),
        ("tick_rate", 2.5, r"hunt.tick_rate must be an integer"),
        ("treasure_value_max", 0, r"hunt.treasure_value_max must be in \[1, "),
        ("hint_radius", 1.0, r"hunt.hint_radius must be in \[5, "),
        ("seed", -1, r"hunt.seed must be in"),
        ("name", "", r"hunt.name must be 1-64 characters"),
        ("view_radius", float("nan"), r"hunt.view_radius must be in"),
        ("hint_levels", True, r"hunt.hint_levels must be an integer"),
    ],
)
def test_bad_hunt_params_name_the_field_and_range(field, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        HuntParams(**{field: value})


def test_toml_config_with_defaults_and_errors(tmp_path) -> None:
    path = tmp_path / "world.toml"
    path.write_text(
        "[engine]\nmax_players = 500\n\n[defaults]\nwidth = 300\ntreasures = 7\n\n"
        '[[hunt]]\nname = "forest"\nseed = 4\n\n[[hunt]]\nname = "desert"\nwidth = 900\n'
    )
    config = load_config(path)
    assert config.engine.max_players == 500
    assert [(h.name, h.width, h.treasures) for h in config.hunts] == [
        ("forest", 300.0, 7), ("desert", 900.0, 7)]
    assert isinstance(config.hunts[0].width, float)
    with pytest.raises(ConfigError, match=r"#1: unknown key\(s\) colour"):
        parse_config('[[hunt]]\nname = "x"\ncolour = 3\n')
    with pytest.raises(ConfigError, match="hunt names must be unique"):
        parse_config('[[hunt]]\nname = "x"\n[[hunt]]\nname = "x"\n')
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[[hunt]\n")
    with pytest.raises(ConfigError, match=r"unknown table\(s\) hunts"):
        parse_config("[hunts]\n")


def test_add_hunt_limits() -> None:
    world = World(EngineConfig(max_players=10, max_treasures=10, max_hunts=2))
    world.add_hunt(HuntParams(name="a", treasures=6))
    with pytest.raises(ConfigError, match="taken"):
        world.add_hunt(HuntParams(name="a", treasures=1))
    with pytest.raises(ConfigError, match="tick_rate must be 20"):
        world.add_hunt(HuntParams(name="b", treasures=1, tick_rate=30))
    with pytest.raises(CapacityError, match="only 4 treasure rows are free"):
        world.add_hunt(HuntParams(name="b", treasures=5))
    world.add_hunt(HuntParams(name="b", treasures=4))
    with pytest.raises(CapacityError, match="max_hunts"):
        world.add_hunt(HuntParams(name="c", treasures=0))
    assert world.hunt_index("b") == 1
    with pytest.raises(UnknownHuntError, match="hunts: a, b"):
        world.hunt_index("zzz")
    with pytest.raises(UnknownHuntError):
        world.join(2)


def test_joins_are_pending_until_the_next_tick_and_slots_are_reused_lifo() -> None:
    world = World(EngineConfig(max_players=3, max_treasures=4),
                  [HuntParams(name="a", treasures=2, max_players=2)])
    a = world.join(0)
    b = world.join(0)
    assert (a & 0xFFFFFFFF, b & 0xFFFFFFFF) == (0, 1)
    with pytest.raises(HuntFullError, match="full"):
        world.join(0)
    assert world.player(a).state == "pending"
    assert len(world.active_slots()) == 0
    result = world.tick()
    assert [int(k) for k in result.memberships["kind"]] == [JOINED, JOINED]
    assert world.player(a).state == "active"
    world.leave(a)
    world.leave(b)
    result = world.tick()
    assert [int(k) for k in result.memberships["kind"]] == [LEFT, LEFT]
    # Last freed first: b's slot (1), then a's (0), both at generation 2.
    c = world.join(0)
    d = world.join(0)
    assert (c, d) == ((2 << 32) | 1, (2 << 32) | 0)
    # A join and a leave before the same tick: joins, then leaves, in request order.
    world.leave(c)
    result = world.tick()
    assert [(int(e["kind"]), int(e["slot"])) for e in result.memberships] == [
        (JOINED, 1), (JOINED, 0), (LEFT, 1)]
    with pytest.raises(StalePlayerError, match="stale"):
        world.player(c)


def test_capacity_error_when_all_slots_are_taken() -> None:
    world = World(EngineConfig(max_players=2, max_treasures=1), [HuntParams(treasures=1)])
    world.join(0)
    world.join(0)
    with pytest.raises(CapacityError, match="all 2 player slots"):
        world.join(0)


def test_a_finder_scores_and_everyone_hears_of_it() -> None:
    params = HuntParams(name="a", width=100, height=100, treasures=1, discovery_radius=141.42,
                        hint_radius=200, respawn_delay=3, treasure_value_min=7,
                        treasure_value_max=7)
    world = World(EngineConfig(max_players=4, max_treasures=1), [params])
    me = world.join(0)
    result = world.tick()
    assert len(result.discoveries) == 1  # the whole map is within reach
    event = result.discoveries[0]
    assert (int(event["slot"]), int(event["value"]), int(event["score"])) == (0, 7, 7)
    assert list(result.leaderboard_changed) == [0]
    board = world.leaderboard(0)
    assert [(int(r["slot"]), int(r["score"])) for r in board] == [(0, 7)]
    for _ in range(2):
        assert len(world.tick().discoveries) == 0  # waiting to respawn
    result = world.tick()
    assert result.respawns == 1 and len(result.discoveries) == 1
    assert world.player(me).score == 14 and world.player(me).found == 2


def test_event_overflow_is_counted_not_silent() -> None:
    params = HuntParams(name="a", width=50, height=50, treasures=10, discovery_radius=50,
                        hint_radius=50)
    world = World(EngineConfig(max_players=4, max_treasures=10, max_discoveries=3,
                               max_membership_events=1), [params])
    world.join(0)
    world.join(0)
    result = world.tick()
    assert len(result.memberships) == 1 and len(result.discoveries) == 3
    assert result.dropped_events == 1 + 7
    # State is complete even when events were dropped.
    assert int(world.players.found[:2].sum()) == 10


def test_visibility_truncation_is_reported() -> None:
    params = HuntParams(name="a", width=50, height=50, treasures=0, view_radius=100)
    world = World(EngineConfig(max_players=10, max_treasures=1, max_visible=20), [params])
    for _ in range(6):
        world.join(0)
    world.tick()
    vis = world.visibility(np.arange(6, dtype=np.int32))
    # Each observer sees the 5 others: 30 records for a buffer of 20. At tick 1 the fit is
    # decided from observer (1 * (2654435761 mod 6)) mod 6 = 1 on (docs/rules.md).
    assert list(np.diff(vis.offsets)) == [0, 5, 5, 5, 5, 0]
    assert list(vis.truncated) == [1, 0, 0, 0, 0, 1]
    assert vis.dropped == 10
    assert all(int(f) == VIS_IN_VIEW for f in vis.records[:20]["flags"])
    with pytest.raises(ValueError, match="slots in"):
        world.visibility(np.array([10], np.int32))


def test_put_many_counts_kept_and_dropped() -> None:
    world = World(EngineConfig(max_players=4, max_treasures=1), [HuntParams(treasures=1)])
    ids = np.array([world.join(0), world.join(0)], np.int64)
    world.tick()
    kept = world.moves.put_many(ids, np.array([5, 5], np.int64), np.array([1.0, 0.0]),
                                np.array([0.0, 1.0]))
    assert kept == 2
    # Older or equal sequence numbers lose against the kept move; stale ids are dropped.
    kept = world.moves.put_many(np.array([ids[0], ids[1], 12345], np.int64),
                                np.array([4, 6, 1], np.int64), np.zeros(3), np.zeros(3))
    assert kept == 1 and world.moves.dropped == 2
    result = world.tick()
    assert result.moves_applied == 2
    assert (world.player(int(ids[0])).dx, world.player(int(ids[1])).dy) == (1.0, 0.0)


def test_join_many_is_exactly_many_joins() -> None:
    def world() -> World:
        return World(EngineConfig(max_players=50, max_treasures=10),
                     [HuntParams(name="a", treasures=5, max_players=30)])

    one_by_one, at_once = world(), world()
    ids = [one_by_one.join(0) for _ in range(12)]
    assert list(at_once.join_many(0, 12)) == ids
    for w in (one_by_one, at_once):
        w.tick()
    assert one_by_one.state_hash() == at_once.state_hash()
    with pytest.raises(HuntFullError, match="room for 18 more players, not 19"):
        at_once.join_many(0, 19)
    assert at_once.hunts.players[0] == 12  # all or nothing


def test_bot_streams_are_independent() -> None:
    from tickengine import Bots
    from tickengine._rng import splitmix64_py

    world = World(EngineConfig(max_players=64, max_treasures=1), [HuntParams(treasures=1)])
    bots = Bots(world)
    bots.add(0, 64, "random", seed=12345)
    draws = []
    for state in bots.rng[:64]:
        s, out = int(state), []
        for _ in range(4):
            s, u = splitmix64_py(s)
            out.append(u)
        draws.append(out)
    # No bot's stream is another's shifted by a draw or two.
    firsts = {d[0] for d in draws}
    assert len(firsts) == 64
    assert not any(d[k] in firsts for d in draws for k in (1, 2, 3))
