"""Unit tests of the pure-Python reference tick (tickengine._reference) on its own.

Every expectation is computed by hand from docs/rules.md, so these pin the
oracle down before the differential tests compare the Numba engine against it.
Most tests place players and treasures directly in the reference's state and
then run one tick.
"""

from __future__ import annotations

import itertools
import math

import pytest

from tickengine._config import HuntParams
from tickengine._dtypes import JOINED, LEFT
from tickengine._errors import (
    CapacityError,
    ConfigError,
    HuntFullError,
    StalePlayerError,
    UnknownHuntError,
)
from tickengine._reference import ReferenceWorld, splitmix64

# step = player_speed / tick_rate = 5 world units per tick
BASE = dict(
    width=1000.0, height=1000.0, player_speed=100.0, tick_rate=20, treasures=0,
    discovery_radius=5.0, hint_radius=100.0, hint_levels=5, view_radius=150.0,
    respawn_delay=40, leaderboard_size=10, max_players=100, seed=7,
)


_names = itertools.count()


def hunt_params(**kw) -> HuntParams:
    """BASE with ``kw``, under a name no other hunt has (hunt names are unique)."""
    return HuntParams(**{**BASE, "name": f"h{next(_names)}", **kw})


def world(max_players: int = 16, max_treasures: int = 64, max_hunts: int = 4, **kw):
    w = ReferenceWorld(max_players=max_players, max_treasures=max_treasures, max_hunts=max_hunts)
    h = w.add_hunt(hunt_params(**kw))
    return w, h


def place(w: ReferenceWorld, pid: int, x: float, y: float) -> None:
    """Put a player at (x, y), as if it had been standing there for a while."""
    p = w.player(pid)
    p.x = p.x_prev = x
    p.y = p.y_prev = y


def put_treasure(w: ReferenceWorld, row: int, x: float, y: float, value: int = 1) -> None:
    tr = w.treasures[row]
    tr.x, tr.y, tr.value = x, y, value


def draws(state: int, n: int) -> tuple[int, list[float]]:
    us = []
    for _ in range(n):
        state, u = splitmix64(state)
        us.append(u)
    return state, us


# ------------------------------------------------------------------ RNG, setup


def test_splitmix64_matches_published_outputs():
    # splitmix64 seeded with 0 outputs 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, ...
    state, u1 = splitmix64(0)
    _, u2 = splitmix64(state)
    assert state == 0x9E3779B97F4A7C15
    assert u1 == (0xE220A8397B1DCDAF >> 11) * 2.0**-53
    assert u2 == (0x6E789E6AA1B965F4 >> 11) * 2.0**-53


def test_add_hunt_spawns_treasures_in_row_order_point_then_value():
    w = ReferenceWorld(max_players=4, max_treasures=10, max_hunts=3)
    p0 = hunt_params(treasures=3, seed=11, width=200.0, height=50.0,
                     treasure_value_min=3, treasure_value_max=9)
    p1 = hunt_params(treasures=2, seed=12)
    assert w.add_hunt(p0) == 0
    assert w.add_hunt(p1) == 1
    assert [(t.row, t.hunt) for t in w.treasures] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]
    state, us = draws(11, 9)
    for row in range(3):
        ux, uy, uv = us[3 * row : 3 * row + 3]
        tr = w.treasures[row]
        assert (tr.x, tr.y, tr.value) == (ux * 200.0, uy * 50.0, 3 + int(uv * 7))
        assert (tr.state, tr.finder_slot, tr.finder_gen) == ("active", -1, 0)
    assert w.hunts[0].rng_state == state
    _, us = draws(12, 3)
    assert (w.treasures[3].x, w.treasures[3].y) == (us[0] * 1000.0, us[1] * 1000.0)


def test_add_hunt_errors():
    w = ReferenceWorld(max_players=4, max_treasures=5, max_hunts=2)
    w.add_hunt(hunt_params(treasures=3))
    with pytest.raises(ConfigError, match="tick_rate"):
        w.add_hunt(hunt_params(tick_rate=30))
    with pytest.raises(CapacityError):
        w.add_hunt(hunt_params(treasures=3))  # 2 rows left
    w.add_hunt(hunt_params(treasures=2))
    assert len(w.treasures) == 5
    with pytest.raises(CapacityError):
        w.add_hunt(hunt_params(treasures=0))  # out of hunts
    with pytest.raises(CapacityError):  # the hunt count is checked before the tick rate
        w.add_hunt(hunt_params(treasures=0, tick_rate=30))
    w2 = ReferenceWorld(max_players=4, max_treasures=5, max_hunts=2)
    w2.add_hunt(hunt_params(name="cave"))
    with pytest.raises(ConfigError, match="taken"):
        w2.add_hunt(hunt_params(name="cave"))


# --------------------------------------------------------- joins, leaves, ids


def test_join_is_pending_until_step_1_and_spawns_from_the_hunt_rng():
    w, h = world(seed=5, width=400.0, height=300.0)
    a = w.join(h)
    b = w.join(h)
    assert (a, b) == (1 << 32 | 0, 1 << 32 | 1)
    pa = w.player(a)
    assert pa.pending and not pa.active
    res = w.tick()
    _, (u1, u2, u3, u4) = draws(5, 4)
    assert res.tick == 1 and w.tick_number == 1
    assert res.memberships == [
        (JOINED, h, 0, 1, u1 * 400.0, u2 * 300.0),
        (JOINED, h, 1, 1, u3 * 400.0, u4 * 300.0),
    ]
    pa = w.player(0)
    assert pa.active and not pa.pending
    assert (pa.x_prev, pa.y_prev) == (u1 * 400.0, u2 * 300.0) == (pa.x, pa.y)
    assert (pa.score_tick, pa.changed_tick, pa.joined_tick) == (1, 1, 1)
    assert (pa.dx, pa.dy, pa.score, pa.found, pa.last_seq, pa.hint) == (0.0, 0.0, 0, 0, 0, 0)


def test_slot_reuse_is_lifo_with_generation_bump_and_stale_ids_rejected():
    w, h = world()
    ids = [w.join(h) for _ in range(4)]
    assert [i & 0xFFFFFFFF for i in ids] == [0, 1, 2, 3]
    w.tick()
    place(w, ids[1], 10.0, 20.0)
    w.leave(ids[1])
    w.leave(ids[0])
    with pytest.raises(StalePlayerError):
        w.leave(ids[1])  # leaving twice
    assert w.put_move(ids[1], 1, 1.0, 0.0) is False  # already leaving
    res = w.tick()
    left = [m for m in res.memberships if m[0] == LEFT]
    assert left[0] == (LEFT, h, 1, 1, 10.0, 20.0)  # old generation, last position
    assert [m[2:4] for m in left] == [(1, 1), (0, 1)]
    assert not w.players[1].active and w.players[1].gen == 2
    # Last freed first: slot 0, then slot 1, then the never-used slot 4.
    assert [w.join(h) for _ in range(3)] == [2 << 32 | 0, 2 << 32 | 1, 1 << 32 | 4]
    with pytest.raises(StalePlayerError):
        w.leave(ids[0])  # generation 1 of slot 0 is gone, slot 0 now holds gen 2
    with pytest.raises(StalePlayerError):
        w.player(ids[0])
    with pytest.raises(StalePlayerError):
        w.leave(1 << 32 | 9)  # never issued
    with pytest.raises(StalePlayerError):
        w.leave(-1)
    dropped = w.dropped_moves
    assert w.put_move(ids[0], 5, 1.0, 0.0) is False
    assert w.put_move(3 << 32 | 0, 5, 1.0, 0.0) is False  # future generation
    assert w.dropped_moves == dropped + 2


def test_join_then_leave_before_a_tick_joins_then_leaves_at_the_spawn_point():
    w, h = world(seed=9)
    a = w.join(h)
    w.leave(a)
    res = w.tick()
    _, (ux, uy) = draws(9, 2)
    assert res.memberships == [
        (JOINED, h, 0, 1, ux * 1000.0, uy * 1000.0),
        (LEFT, h, 0, 1, ux * 1000.0, uy * 1000.0),
    ]
    assert w.hunts[h].rng_state == draws(9, 2)[0]
    assert not w.players[0].active and w.players[0].gen == 2
    assert w.join(h) == 2 << 32 | 0


def test_hunt_full_counts_pending_and_leaving_players_and_capacity_errors():
    w = ReferenceWorld(max_players=3, max_treasures=4, max_hunts=2)
    h0 = w.add_hunt(hunt_params(max_players=2))
    h1 = w.add_hunt(hunt_params())
    a = w.join(h0)
    w.join(h0)
    with pytest.raises(HuntFullError):
        w.join(h0)  # both pending, still full
    w.tick()
    w.leave(a)
    with pytest.raises(HuntFullError):
        w.join(h0)  # the leave takes effect only at the next tick
    w.join(h1)  # slot 2: the last free slot
    w.tick()
    w.join(h0)  # slot 0 freed by the leave
    with pytest.raises(CapacityError) as info:
        w.join(h1)
    assert not isinstance(info.value, HuntFullError)
    assert issubclass(HuntFullError, CapacityError)
    for bad in (2, -1, True, "0"):
        with pytest.raises(UnknownHuntError):
            w.join(bad)


# ------------------------------------------------------------- moves, movement


def test_move_seq_rules_highest_seq_wins_and_stale_seqs_dropped():
    w, h = world()
    a = w.join(h)
    assert w.put_move(a, 3, 1.0, 0.0) is True  # pending players may send moves
    assert w.put_move(a, 5, 0.0, 1.0) is True
    assert w.put_move(a, 4, -1.0, 0.0) is False  # lower than the kept seq
    assert w.put_move(a, 5, -1.0, 0.0) is False  # equal to the kept seq
    assert w.put_move(a, 0, -1.0, 0.0) is False  # <= last applied (0)
    assert w.put_move(a, 2**63, -1.0, 0.0) is False  # past 2^63 - 1: out of range
    assert w.dropped_moves == 4
    w.tick()
    p = w.player(a)
    assert (p.dx, p.dy, p.last_seq) == (0.0, 1.0, 5)
    assert w.put_move(a, 5, 1.0, 0.0) is False  # <= last applied
    assert w.put_move(a, 6, 1.0, 0.0) is True
    w.tick()
    assert (p.dx, p.dy, p.last_seq) == (1.0, 0.0, 6)
    w.tick()  # no move: keeps its direction
    assert (p.dx, p.dy, p.last_seq) == (1.0, 0.0, 6)
    assert w.dropped_moves == 5


def test_kept_move_is_rechecked_against_last_seq_at_tick_time():
    w, h = world()
    a = w.join(h)
    w.tick()
    assert w.put_move(a, 2, 1.0, 0.0)
    w.player(a).last_seq = 2  # as if seq 2 had been applied meanwhile
    w.tick()
    assert (w.player(a).dx, w.player(a).dy) == (0.0, 0.0)


def test_reused_slot_starts_with_last_seq_zero_at_join_time():
    w, h = world()
    a = w.join(h)
    w.tick()
    w.put_move(a, 50, 1.0, 0.0)
    w.tick()
    w.leave(a)
    w.tick()
    b = w.join(h)  # reuses slot 0 while still pending
    assert b & 0xFFFFFFFF == 0 and w.player(b).last_seq == 0
    assert w.put_move(b, 1, 0.0, -1.0) is True  # the previous occupant's seq 50 is gone
    w.tick()
    assert (w.player(b).dx, w.player(b).dy, w.player(b).last_seq) == (0.0, -1.0, 1)


@pytest.mark.parametrize(
    ("dx", "dy", "expected"),
    [
        (0.3, 0.4, (0.3, 0.4)),
        (1.0, 0.0, (1.0, 0.0)),  # magnitude exactly 1: untouched
        (0.6, 0.8, (0.6, 0.8)),
        (3.0, 4.0, (3.0 / 5.0, 4.0 / 5.0)),
        (-2.0, 0.0, (-1.0, 0.0)),
        (1.0, 1.0, (1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0))),
        (math.nan, 0.0, (0.0, 0.0)),
        (0.5, math.nan, (0.0, 0.0)),
        (math.inf, 0.0, (0.0, 0.0)),
        (0.0, -math.inf, (0.0, 0.0)),
        # Literal rule: dx*dx overflows to inf, m = inf, dx / m = 0.
        (1e200, 0.0, (0.0, 0.0)),
    ],
)
def test_direction_sanitising(dx, dy, expected):
    w, h = world()
    a = w.join(h)
    w.tick()
    w.put_move(a, 1, dx, dy)
    w.tick()
    p = w.player(a)
    assert (p.dx, p.dy) == expected


def test_movement_steps_and_clamps_to_the_map_and_tracks_changed_tick():
    w, h = world(width=100.0, height=50.0)  # step 5
    a, b, c = w.join(h), w.join(h), w.join(h)
    w.tick()
    place(w, a, 2.0, 48.0)
    place(w, b, 30.0, 20.0)
    place(w, c, 0.0, 10.0)
    w.put_move(a, 1, -1.0, 1.0)  # sanitised to (-1/sqrt2, 1/sqrt2)
    w.put_move(b, 1, 0.6, -0.8)
    w.put_move(c, 1, -1.0, 0.0)  # pushes into the left wall
    w.tick()
    pa, pb, pc = w.player(a), w.player(b), w.player(c)
    assert (pa.x, pa.y) == (0.0, 50.0)
    assert (pa.x_prev, pa.y_prev) == (2.0, 48.0)
    assert (pb.x, pb.y) == (30.0 + 0.6 * 5.0, 20.0 + -0.8 * 5.0)
    assert (pc.x, pc.y) == (0.0, 10.0)
    assert (pa.changed_tick, pb.changed_tick, pc.changed_tick) == (2, 2, 1)
    w.tick()
    assert (pa.x, pa.y) == (0.0, 50.0)  # stuck in the corner: unchanged
    assert pa.changed_tick == 2 and pb.changed_tick == 3


# -------------------------------------------------------- discovery, respawns


def test_discovery_nearest_player_wins_ties_go_to_lowest_slot():
    w, h = world(treasures=3, discovery_radius=5.0, respawn_delay=100)
    a, b, c, d = (w.join(h) for _ in range(4))
    w.tick()
    put_treasure(w, 0, 100.0, 100.0, value=7)  # b (3 away) beats a (4 away)
    put_treasure(w, 1, 500.0, 500.0, value=2)  # c and d both 4 away: lower slot c
    put_treasure(w, 2, 900.0, 900.0, value=1)  # nobody near
    place(w, a, 104.0, 100.0)
    place(w, b, 100.0, 97.0)
    place(w, d, 500.0, 504.0)
    place(w, c, 496.0, 500.0)
    res = w.tick()
    assert res.discoveries == [
        (h, 0, 1, 1, 7, 7, 100.0, 100.0),
        (h, 1, 2, 1, 2, 2, 500.0, 500.0),
    ]
    t0, t1, t2 = w.treasures
    assert (t0.state, t0.respawn_tick, t0.finder_slot, t0.finder_gen) == ("waiting", 102, 1, 1)
    assert (t1.state, t1.finder_slot) == ("waiting", 2)
    assert (t2.state, t2.finder_slot) == ("active", -1)
    assert (w.player(b).score, w.player(b).found, w.player(b).score_tick) == (7, 1, 2)
    assert (w.player(a).score, w.player(a).score_tick) == (0, 1)
    assert w.player(d).score == 0


def test_discovery_radius_boundary_uses_movement_and_one_player_finds_several():
    w, h = world(treasures=3, discovery_radius=5.0, respawn_delay=100)
    a, b = w.join(h), w.join(h)
    w.tick()
    put_treasure(w, 0, 200.0, 200.0, value=3)
    put_treasure(w, 1, 200.0, 210.0, value=4)  # both exactly 5 from (200, 205)
    put_treasure(w, 2, 600.0, 600.0, value=5)
    place(w, a, 200.0, 200.0)
    w.put_move(a, 1, 0.0, 1.0)  # moves to (200, 205) before discovery
    place(w, b, 600.0, 605.0 + 1e-9)  # just outside
    res = w.tick()
    assert [(e[1], e[2], e[5]) for e in res.discoveries] == [(0, 0, 3), (1, 0, 7)]
    assert w.player(a).found == 2
    assert w.treasures[2].state == "active"


def test_respawn_timing_and_rng_order_after_joins():
    w, h = world(treasures=2, respawn_delay=3, seed=21, treasure_value_min=2,
                 treasure_value_max=4, width=800.0, height=600.0)
    a = w.join(h)
    w.tick()
    put_treasure(w, 0, 100.0, 100.0)
    put_treasure(w, 1, 700.0, 500.0)
    place(w, a, 100.0, 100.0)
    res = w.tick()  # tick 2: found, respawns at tick 5
    assert [e[1] for e in res.discoveries] == [0]
    assert w.treasures[0].respawn_tick == 5
    place(w, a, 400.0, 50.0)
    state = w.hunts[h].rng_state
    w.tick()
    w.tick()  # ticks 3 and 4: still waiting, no draws
    assert w.treasures[0].state == "waiting"
    assert w.hunts[h].rng_state == state
    w.join(h)  # tick 5: the join's spawn draws come first (step 1), then the respawn
    res = w.tick()
    state, (sx, sy, ux, uy, uv) = draws(state, 5)
    assert res.memberships[0][4:] == (sx * 800.0, sy * 600.0)
    tr = w.treasures[0]
    assert (tr.x, tr.y, tr.value) == (ux * 800.0, uy * 600.0, 2 + int(uv * 3))
    assert (tr.state, tr.finder_slot, tr.finder_gen) == ("active", -1, 0)
    assert w.hunts[h].rng_state == state


def test_respawned_treasure_can_be_found_in_the_same_tick():
    w, h = world(treasures=1, respawn_delay=1, seed=3)
    a = w.join(h)
    w.tick()
    put_treasure(w, 0, 100.0, 100.0)
    place(w, a, 100.0, 100.0)
    w.tick()
    state = w.hunts[h].rng_state
    _, (ux, uy, _) = draws(state, 3)
    place(w, a, ux * 1000.0, uy * 1000.0)  # stand where it will respawn
    res = w.tick()
    assert [(e[1], e[6], e[7]) for e in res.discoveries] == [(0, ux * 1000.0, uy * 1000.0)]


# ------------------------------------------------------------------------ hints


def test_hint_levels_and_boundaries():
    # L = 5, R = 100: hint = 5 - floor(5 * d / 100), clamped to [1, 5]; 0 if d > R.
    w, h = world(treasures=1, hint_radius=100.0, hint_levels=5, discovery_radius=1.0)
    distances = [1.5, 19.0, 20.0, 40.0, 99.0, 100.0, 100.5, 300.0]
    ids = [w.join(h) for _ in distances]
    w.tick()
    put_treasure(w, 0, 500.0, 500.0)
    for pid, d in zip(ids, distances, strict=True):
        place(w, pid, 500.0 + d, 500.0)
    w.tick()
    assert [w.player(p).hint for p in ids] == [5, 5, 4, 3, 1, 1, 0, 0]


def test_hint_uses_nearest_active_treasure_and_ignores_ones_found_this_tick():
    w, h = world(treasures=3, hint_radius=100.0, hint_levels=10, respawn_delay=50)
    a, b, c = w.join(h), w.join(h), w.join(h)
    w.tick()
    put_treasure(w, 0, 100.0, 100.0)
    put_treasure(w, 1, 130.0, 100.0)  # 30 from a's treasure
    put_treasure(w, 2, 900.0, 900.0)
    place(w, a, 100.0, 100.0)  # finds treasure 0; nearest left: treasure 1 at d = 30
    place(w, b, 170.0, 100.0)  # 40 from treasure 1, 70 from treasure 0 (gone)
    place(w, c, 600.0, 600.0)  # nothing within 100
    w.tick()
    assert w.treasures[0].state == "waiting"
    assert (w.player(a).hint, w.player(b).hint, w.player(c).hint) == (7, 6, 0)


def test_hint_is_zero_without_active_treasures():
    w, h = world(treasures=0)
    a = w.join(h)
    w.tick()
    assert w.player(a).hint == 0


# ------------------------------------------------------------------ leaderboard


def test_leaderboard_order_ties_size_and_change_detection():
    w, h = world(treasures=4, leaderboard_size=2, respawn_delay=1000)
    a, b, c = w.join(h), w.join(h), w.join(h)
    res = w.tick()
    assert res.leaderboard_changed == [] and w.leaderboard(h) == []  # nobody scored
    put_treasure(w, 0, 100.0, 100.0, value=5)
    put_treasure(w, 1, 300.0, 100.0, value=5)
    put_treasure(w, 2, 500.0, 100.0, value=5)
    put_treasure(w, 3, 700.0, 100.0, value=9)
    place(w, c, 100.0, 100.0)
    place(w, b, 700.0, 700.0)
    place(w, a, 900.0, 900.0)
    res = w.tick()  # tick 2: c scores 5
    assert res.leaderboard_changed == [h]
    assert w.leaderboard(h) == [(2, 1, 5)]
    place(w, a, 300.0, 100.0)
    place(w, b, 500.0, 100.0)
    res = w.tick()  # tick 3: a and b score 5 too; c reached 5 first, then lowest slot
    assert w.leaderboard(h) == [(2, 1, 5), (0, 1, 5)]
    assert res.leaderboard_changed == [h]
    res = w.tick()  # nothing happens
    assert res.leaderboard_changed == []
    place(w, b, 700.0, 100.0)
    res = w.tick()  # b jumps to 14
    assert w.leaderboard(h) == [(1, 1, 14), (2, 1, 5)]
    assert res.leaderboard_changed == [h]
    w.leave(c)
    res = w.tick()  # a leaver drops off the board
    assert w.leaderboard(h) == [(1, 1, 14), (0, 1, 5)]
    assert res.leaderboard_changed == [h]


def test_leaderboard_changes_are_per_hunt_and_ascending():
    w = ReferenceWorld(max_players=4, max_treasures=4, max_hunts=3)
    hs = [w.add_hunt(hunt_params(treasures=1, respawn_delay=1000))
          for _ in range(3)]
    ids = [w.join(hh) for hh in hs]
    w.tick()
    for row, pid in ((0, ids[0]), (2, ids[2])):
        put_treasure(w, row, 50.0, 50.0, value=1)
        place(w, pid, 50.0, 50.0)
    place(w, ids[1], 50.0, 50.0)
    put_treasure(w, 1, 900.0, 900.0)
    res = w.tick()
    assert res.leaderboard_changed == [0, 2]
    with pytest.raises(UnknownHuntError):
        w.leaderboard(3)


# ------------------------------------------------------------------- visibility


def test_visibility_diff_enter_leave_changed_and_keyframe():
    w = ReferenceWorld(max_players=10, max_treasures=1, max_hunts=2)
    h = w.add_hunt(hunt_params(view_radius=150.0))
    other = w.add_hunt(hunt_params())
    a, b, c, d, e, f = (w.join(h) for _ in range(6))
    g = w.join(other)
    w.tick()
    place(w, a, 100.0, 100.0)
    place(w, b, 255.0, 100.0)  # 155 away, walks in to 150
    place(w, c, 100.0, 240.0)  # 140 away, stays
    place(w, d, 100.0, 245.0)  # 145 away, walks to 150: moved while in view
    place(w, e, 100.0, 248.0)  # 148 away, walks out to 153
    place(w, f, 700.0, 700.0)  # far
    place(w, g, 101.0, 100.0)  # another hunt: never visible
    w.put_move(b, 1, -1.0, 0.0)
    w.put_move(d, 1, 0.0, 1.0)
    w.put_move(e, 1, 0.0, 1.0)
    w.tick()
    assert w.visibility(0) == [
        (1, 1, 1, 250.0, 100.0),
        (3, 1, 1, 100.0, 250.0),
        (4, 1, 0, 100.0, 253.0),
    ]
    assert w.visibility(0, keyframe=True) == [
        (1, 1, 1, 250.0, 100.0),
        (2, 1, 1, 100.0, 240.0),
        (3, 1, 1, 100.0, 250.0),
    ]
    # b moved into a's view: a did not move, but now != before, so b sees a enter.
    assert (0, 1, 1, 100.0, 100.0) in w.visibility(1)
    assert w.visibility(5) == []  # f sees nobody
    assert w.visibility(6) == []  # g is alone in its hunt
    w.tick()  # nobody moves except b, d and e, who keep walking
    assert [r[0] for r in w.visibility(0)] == [1, 3]  # b (moved, in view), d (moved out)
    assert w.visibility(0)[1][2] == 0


def test_visibility_joined_this_tick_sees_everyone_in_view_and_is_seen():
    w, h = world(view_radius=50.0)
    a, b = w.join(h), w.join(h)
    w.tick()
    place(w, a, 100.0, 100.0)
    place(w, b, 120.0, 100.0)
    n = w.join(h)
    w.tick()  # tick 2: n joins at a random point; put it next to a and b
    place(w, n, 100.0, 130.0)
    assert w.player(n).joined_tick == 2
    # a and b did not move and saw each other before: not in each other's diff.
    assert w.visibility(0) == [(2, 1, 1, 100.0, 130.0)]
    assert w.visibility(1) == [(2, 1, 1, 100.0, 130.0)]
    # The newcomer was in nobody's view before and saw nobody: everyone in view is new.
    assert w.visibility(2) == [(0, 1, 1, 100.0, 100.0), (1, 1, 1, 120.0, 100.0)]
    assert w.visibility(2) == w.visibility(2, keyframe=True)


def test_visibility_generation_is_truncated_and_inactive_observers_see_nobody():
    w, h = world()
    a, b = w.join(h), w.join(h)
    w.tick()
    place(w, a, 100.0, 100.0)
    place(w, b, 110.0, 100.0)
    w.player(b).gen = 0x1_0003  # as if the slot had been reused 65538 times
    assert w.visibility(0, keyframe=True) == [(1, 3, 1, 110.0, 100.0)]
    assert w.visibility(5) == []  # never joined
    with pytest.raises(StalePlayerError):
        w.visibility(16)
