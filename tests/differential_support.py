"""Comparisons of the Numba engine with the pure-Python reference, shared by the differential tests.

Every function asserts that ``world`` (a :class:`tickengine.World`) and ``ref``
(a :class:`tickengine.reference.ReferenceWorld`) that received the same
requests agree exactly: events, every player and treasure column, boards and
visibility. Positions must be equal bit for bit (both evaluate the same float
expressions in the same order); visibility records carry float32 positions.
The player and treasure comparisons are vectorised so that they stay cheap on
worlds of hundreds of thousands of players.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tickengine import RESULT_DTYPE, World
from tickengine._state import ACTIVE, PENDING, T_ACTIVE
from tickengine.reference import ReferenceWorld, RefTickResult

PLAYER_COLUMNS = ("hunt", "x", "y", "x_prev", "y_prev", "dx", "dy", "score", "found", "last_seq",
                  "hint", "score_tick", "changed_tick", "joined_tick")
TREASURE_COLUMNS = ("hunt", "x", "y", "value", "finder_slot", "finder_gen")


def compare_events(got, want: RefTickResult) -> None:
    """One tick's events: memberships and discoveries in order, changed boards, drops."""
    t = want.tick
    assert got.tick == t
    mem = [(int(e["kind"]), int(e["hunt"]), int(e["slot"]), int(e["gen"]), float(e["x"]),
            float(e["y"])) for e in got.memberships]
    assert mem == [tuple(m) for m in want.memberships], f"tick {t} memberships"
    disc = [(int(e["hunt"]), int(e["treasure"]), int(e["slot"]), int(e["gen"]),
             int(e["value"]), int(e["score"]), float(e["x"]), float(e["y"]))
            for e in got.discoveries]
    assert disc == [tuple(d) for d in want.discoveries], f"tick {t} discoveries"
    assert list(got.leaderboard_changed) == list(want.leaderboard_changed), f"tick {t} boards"
    assert got.dropped_events == want.dropped_events, f"tick {t} dropped events"
    assert list(got.round_changed) == want.round_changed, f"tick {t} round changes"
    ended = [(int(r["hunt"]), int(r["round"])) for r in got.rounds_ended]
    assert ended == want.rounds_ended, f"tick {t} rounds ended"
    results = [tuple(int(r[k]) for k in RESULT_DTYPE.names) for r in got.results]
    assert results == want.results, f"tick {t} round results"


def compare_rounds(world: World, ref: ReferenceWorld, t: int) -> None:
    """Every round hunt's clock: round, phase, its start and scheduled end, queued request."""
    for h, hunt in enumerate(ref.hunts):
        state = world.round_state(h)
        if state is None:
            assert hunt.phase == "none", f"tick {t} hunt {h} rounds"
            continue
        assert (state.number, state.phase, state.phase_start, state.phase_end,
                state.request) == (hunt.round, hunt.phase, hunt.phase_start, hunt.phase_end,
                                   hunt.request), f"tick {t} hunt {h} round clock"

def _first_difference(got: np.ndarray, want: np.ndarray, rows: np.ndarray) -> str:
    bad = np.flatnonzero(got != want)
    k = int(bad[0])
    return f"row {int(rows[k])}: engine {got[k]!r}, reference {want[k]!r} ({bad.size} rows differ)"


def compare_players(world: World, ref: ReferenceWorld, t: int) -> None:
    """Every slot's state and generation; every column of the players in play."""
    P = world.players
    refs = ref.players
    n = len(refs)
    state = P.state[:n]
    active = np.fromiter((p.active for p in refs), bool, n)
    pending = np.fromiter((p.pending for p in refs), bool, n)
    slots = np.arange(n)
    for name, got, want in (("active", state == ACTIVE, active),
                            ("pending", state == PENDING, pending),
                            ("gen", P.gen[:n].astype(np.int64),
                             np.fromiter((p.gen for p in refs), np.int64, n))):
        assert np.array_equal(got, want), f"tick {t} players.{name}: " + _first_difference(
            got, want, slots)
    live = np.flatnonzero(active)
    in_play = [refs[s] for s in live]
    for col in PLAYER_COLUMNS:
        got = getattr(P, col)[live]
        want = np.array([getattr(p, col) for p in in_play], dtype=got.dtype)
        assert np.array_equal(got, want), f"tick {t} players.{col}: " + _first_difference(
            got, want, live)


def compare_treasures(world: World, ref: ReferenceWorld, t: int) -> None:
    """Every allocated treasure row: state, columns, and respawn tick while waiting."""
    T = world.treasures
    assert T.used == len(ref.treasures), f"tick {t} treasure rows"
    n = T.used
    rows = np.arange(n)
    active = T.state[:n] == T_ACTIVE
    want_active = np.fromiter((tr.state == "active" for tr in ref.treasures), bool, n)
    assert np.array_equal(active, want_active), f"tick {t} treasures.state: " + (
        _first_difference(active, want_active, rows))
    for col in TREASURE_COLUMNS:
        got = getattr(T, col)[:n]
        want = np.array([getattr(tr, col) for tr in ref.treasures], dtype=got.dtype)
        assert np.array_equal(got, want), f"tick {t} treasures.{col}: " + _first_difference(
            got, want, rows)
    waiting = np.flatnonzero(~active)
    got = T.respawn_tick[waiting]
    want = np.array([ref.treasures[r].respawn_tick for r in waiting], dtype=got.dtype)
    assert np.array_equal(got, want), f"tick {t} treasures.respawn_tick: " + _first_difference(
        got, want, waiting)


def compare_boards(world: World, ref: ReferenceWorld, t: int) -> None:
    for h in range(world.hunts.count):
        board = [(int(r["slot"]), int(r["gen"]), int(r["score"])) for r in world.leaderboard(h)]
        assert board == ref.leaderboard(h), f"tick {t} hunt {h} board"


def compare_visibility(world: World, ref: ReferenceWorld, observers: Sequence[int],
                       keyframes: Sequence[bool], t: int) -> int:
    """``world.visibility`` of these observers against the reference's, truncation included.

    Records are compared as sets per observer (the engine lists them in grid
    order), positions as float32. Returns the number of records compared.
    """
    obs = np.asarray(observers, np.int32)
    kf = np.asarray(keyframes, np.uint8)
    vis = world.visibility(obs, kf)
    want, truncated, dropped = ref.visibility_many([int(o) for o in obs],
                                                   [bool(k) for k in kf],
                                                   world.config.max_visible)
    assert vis.dropped == dropped, f"tick {t} visibility dropped"
    assert [bool(x) for x in vis.truncated] == truncated, f"tick {t} visibility truncated"
    compared = 0
    for i, o in enumerate(obs.tolist()):
        recs = np.sort(vis.of(i), order="slot")
        got = [(int(r["slot"]), int(r["gen"]), int(r["flags"]), float(r["x"]), float(r["y"]))
               for r in recs]
        exp = [(s, g, f, float(np.float32(x)), float(np.float32(y)))
               for s, g, f, x, y in want[i]]
        assert got == exp, f"tick {t} observer {o} keyframe={bool(kf[i])}"
        compared += len(got)
    return compared


def compare_all(world: World, ref: ReferenceWorld, got, want: RefTickResult) -> None:
    """Events, players, treasures and boards after one tick (visibility is separate)."""
    assert world.tick_number == ref.tick_number == want.tick
    compare_events(got, want)
    compare_players(world, ref, want.tick)
    compare_treasures(world, ref, want.tick)
    compare_boards(world, ref, want.tick)
    compare_rounds(world, ref, want.tick)
