"""One hunt's tick (docs/rules.md steps 2-6) in plain vectorised NumPy: the engine's baseline.

This is the program a competent NumPy programmer would write before reaching for
Numba: whole-array operations, no Python loop over players or treasures, and a
uniform grid (``np.argsort`` + ``np.bincount`` + ``np.cumsum``) for each of the
two neighbour queries (treasure -> nearest player within the discovery radius,
player -> nearest treasure within the hint radius), so the work grows with the
number of close pairs, not with players x treasures.

Step 1 (joins and leaves) and visibility are not implemented: the baseline
starts from an engine world's state (:meth:`NumpyHunt.from_world`) whose
players are all in play, and only ticks.

Random draws replay the engine's splitmix64 stream exactly. splitmix64 is
counter based (draw ``k`` from state ``s`` is ``mix(s + k * golden)``), so the
draws of all of a tick's respawns come from one vectorised expression. With
the same moves, the baseline therefore plays the same game as the engine, bit
for bit, which :func:`lockstep` checks tick by tick.

Units: lengths in world units, time in ticks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

import tickengine
from tickengine import Bots, EngineConfig, HuntParams, World

# Treasure state codes are not re-exported by tickengine; only from_world needs one.
from tickengine._state import T_ACTIVE

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def bench_hunt(players: int, seed: int = 1) -> HuntParams:
    """The benchmark's hunt: constant density whatever the number of players.

    One player per 400 square world units (side = sqrt(players * 400)), one
    treasure per ten players, discovery radius 2, hint radius 40, view radius 30.
    """
    side = math.sqrt(players * 400.0)
    return HuntParams(
        name="bench", width=side, height=side, player_speed=100.0, tick_rate=20,
        treasures=max(1, players // 10), discovery_radius=2.0, hint_radius=40.0,
        view_radius=30.0, respawn_delay=20, max_players=players, seed=seed,
    )


def bench_world(players: int, seed: int = 1, bot_seed: int = 3) -> tuple[World, Bots]:
    """An engine world with one :func:`bench_hunt` full of "hunter" bots, joined, not ticked."""
    params = bench_hunt(players, seed)
    world = World(EngineConfig(max_players=players, max_treasures=params.treasures, max_hunts=1))
    hunt = world.add_hunt(params)
    bots = Bots(world)
    bots.add(hunt, players, tickengine.HUNTER, seed=bot_seed)
    return world, bots


def splitmix64_uniform(state: int, n: int) -> tuple[int, np.ndarray]:
    """The next ``n`` draws of a splitmix64 stream as floats in [0, 1); returns (new state, u)."""
    k = np.arange(1, n + 1, dtype=np.uint64)
    # uint64 array arithmetic wraps modulo 2^64, exactly what splitmix64 needs.
    z = np.uint64(state) + k * np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return (state + n * _GOLDEN) & _MASK64, u


@dataclass(frozen=True, slots=True)
class GridShape:
    """A uniform grid over ``[0, width] x [0, height]`` whose cells are at least one radius wide.

    With cells that wide, everything within the radius of a point lies in the
    3 x 3 block of cells around the point's cell.
    """

    ncx: int
    ncy: int
    inv_x: float  # cells per world unit
    inv_y: float

    @classmethod
    def for_radius(cls, width: float, height: float, radius: float, items: int) -> GridShape:
        # Cells one radius wide, unless that makes more than ~4 cells per item.
        cell = max(radius * (1.0 + 1e-9), math.sqrt(width * height / max(4 * items, 1)))
        ncx = max(1, int(width / cell))
        ncy = max(1, int(height / cell))
        return cls(ncx, ncy, ncx / width, ncy / height)

    def cells_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell column and row of points (positions are >= 0, so truncation is floor)."""
        cx = np.minimum((x * self.inv_x).astype(np.intp), self.ncx - 1)
        cy = np.minimum((y * self.inv_y).astype(np.intp), self.ncy - 1)
        return cx, cy

    def build(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sort points into cells: returns ``(order, start)``.

        The members of cell ``c`` are ``order[start[c]:start[c + 1]]``, in
        ascending index order (the sort is stable).
        """
        cx, cy = self.cells_of(x, y)
        cell = cy * self.ncx + cx
        order = np.argsort(cell, kind="stable")
        start = np.zeros(self.ncx * self.ncy + 1, np.intp)
        np.cumsum(np.bincount(cell, minlength=self.ncx * self.ncy), out=start[1:])
        return order, start

    def pairs(self, order: np.ndarray, start: np.ndarray, qx: np.ndarray, qy: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, member) pair in the 3 x 3 block of cells around each query.

        Returns ``(query, member, per_query)``, grouped by query in ascending
        order. The three cells of a block row are adjacent, so their members
        are one run of ``order``: three runs per query.
        """
        cx, cy = self.cells_of(qx, qy)
        x0 = np.maximum(cx - 1, 0)[:, None]
        x1 = np.minimum(cx + 1, self.ncx - 1)[:, None]
        rows = cy[:, None] + np.array([-1, 0, 1], np.intp)
        inside = (rows >= 0) & (rows < self.ncy)
        base = np.clip(rows, 0, self.ncy - 1) * self.ncx
        lo = start[base + x0]
        lens = np.where(inside, start[base + x1 + 1] - lo, 0).ravel()
        per_query = lens.reshape(-1, 3).sum(axis=1)
        run_at = np.cumsum(lens) - lens
        pos = np.arange(int(lens.sum()), dtype=np.intp) + np.repeat(lo.ravel() - run_at, lens)
        query = np.repeat(np.arange(qx.shape[0], dtype=np.intp), per_query)
        return query, order[pos], per_query


def min_per_group(values: np.ndarray, per_group: np.ndarray) -> np.ndarray:
    """Minimum of each consecutive group of ``values`` (``inf`` for an empty group)."""
    out = np.full(per_group.shape[0], np.inf)
    full = per_group > 0
    if values.shape[0]:
        first = np.cumsum(per_group) - per_group
        out[full] = np.minimum.reduceat(values, first[full])
    return out


@dataclass(frozen=True, slots=True)
class NumpyTickResult:
    """Events of one tick. Discoveries are in treasure row order."""

    tick: int
    #: Treasure rows found, the finders' slots, the treasures' values, finders' score after it.
    treasure: np.ndarray
    finder_slot: np.ndarray
    value: np.ndarray
    score_after: np.ndarray
    respawns: int
    moves_applied: int
    leaderboard_changed: bool


class NumpyHunt:
    """One hunt whose players are all in play, as NumPy columns; :meth:`tick` runs steps 2-6.

    Player row ``i`` is slot ``slots[i]`` (ascending, so "lowest slot" is "lowest row").
    """

    def __init__(self, params: HuntParams, slots: np.ndarray, x: np.ndarray, y: np.ndarray,
                 tx: np.ndarray, ty: np.ndarray, value: np.ndarray, rng_state: int,
                 tick: int = 0) -> None:
        n, m = slots.shape[0], tx.shape[0]
        self.params = params
        self.t = tick
        self.rng_state = int(rng_state)
        self.slots = slots.astype(np.int64)
        self.x, self.y = x.astype(np.float64), y.astype(np.float64)
        self.x_prev, self.y_prev = self.x.copy(), self.y.copy()
        self.dx, self.dy = np.zeros(n), np.zeros(n)
        self.last_seq = np.zeros(n, np.int64)
        self.score = np.zeros(n, np.int64)
        self.found = np.zeros(n, np.int64)
        self.score_tick = np.full(n, tick, np.int64)
        self.changed_tick = np.full(n, tick, np.int64)
        self.hint = np.zeros(n, np.int8)
        # Kept moves for the next tick (seq 0: none).
        self.move_seq = np.zeros(n, np.int64)
        self.move_dx, self.move_dy = np.zeros(n), np.zeros(n)
        self.tx, self.ty = tx.astype(np.float64), ty.astype(np.float64)
        self.value = value.astype(np.int64)
        self.t_active = np.ones(m, bool)
        self.respawn_tick = np.zeros(m, np.int64)
        self.t_finder = np.full(m, -1, np.int64)
        self.board_slot = np.zeros(0, np.int64)
        self.board_score = np.zeros(0, np.int64)
        p = params
        self.player_grid = GridShape.for_radius(p.width, p.height, p.discovery_radius, n)
        self.treasure_grid = GridShape.for_radius(p.width, p.height, p.hint_radius, m)

    @classmethod
    def from_world(cls, world: World, hunt: int = 0) -> NumpyHunt:
        """A copy of an engine hunt's state between two ticks (its pending players are ignored)."""
        params = world.hunt_params[hunt]
        slots = world.active_slots(hunt).astype(np.int64)
        P, T = world.players, world.treasures
        rows = world.treasure_rows(hunt)
        self = cls(params, slots, P.x[slots], P.y[slots], T.x[rows], T.y[rows], T.value[rows],
                   int(world.hunts.rng[hunt]), world.tick_number)
        for name in ("x_prev", "y_prev", "dx", "dy", "last_seq", "score", "found",
                     "score_tick", "changed_tick", "hint"):
            getattr(self, name)[:] = getattr(P, name)[slots]
        self.t_active[:] = T.state[rows] == T_ACTIVE
        self.respawn_tick[:] = T.respawn_tick[rows]
        self.t_finder[:] = T.finder_slot[rows]
        board = world.leaderboard(hunt)
        self.board_slot = board["slot"].astype(np.int64)
        self.board_score = board["score"].astype(np.int64)
        return self

    def put_moves(self, seq: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> None:
        """Keep one move per player row for the next tick (seq 0: no move)."""
        self.move_seq[:] = seq
        self.move_dx[:] = dx
        self.move_dy[:] = dy

    def tick(self) -> NumpyTickResult:
        """Run steps 2-6 of docs/rules.md for the next tick."""
        self.t += 1
        applied = self._inputs_and_movement()
        respawns = self._respawns()
        found = self._discovery_and_scoring()
        self._hints()
        changed = self._leaderboard()
        return NumpyTickResult(self.t, *found, respawns, applied, changed)

    def _inputs_and_movement(self) -> int:
        p = self.params
        rows = np.flatnonzero(self.move_seq > self.last_seq)
        mdx, mdy = self.move_dx[rows], self.move_dy[rows]
        finite = np.isfinite(mdx) & np.isfinite(mdy)
        mdx, mdy = np.where(finite, mdx, 0.0), np.where(finite, mdy, 0.0)
        m2 = mdx * mdx + mdy * mdy
        long = m2 > 1.0
        m = np.sqrt(m2[long])
        mdx[long] = mdx[long] / m
        mdy[long] = mdy[long] / m
        self.dx[rows], self.dy[rows] = mdx, mdy
        self.last_seq[rows] = self.move_seq[rows]
        self.move_seq[:] = 0
        step = p.step
        self.x_prev, self.x = self.x, np.clip(self.x + self.dx * step, 0.0, p.width)
        self.y_prev, self.y = self.y, np.clip(self.y + self.dy * step, 0.0, p.height)
        self.changed_tick[(self.x != self.x_prev) | (self.y != self.y_prev)] = self.t
        return rows.shape[0]

    def _respawns(self) -> int:
        p = self.params
        rows = np.flatnonzero(~self.t_active & (self.respawn_tick <= self.t))
        if rows.shape[0]:
            # Row order, three draws each: x, y, value.
            self.rng_state, u = splitmix64_uniform(self.rng_state, 3 * rows.shape[0])
            u = u.reshape(-1, 3)
            self.tx[rows] = u[:, 0] * p.width
            self.ty[rows] = u[:, 1] * p.height
            span = p.treasure_value_max - p.treasure_value_min + 1
            self.value[rows] = p.treasure_value_min + (u[:, 2] * span).astype(np.int64)
            self.t_active[rows] = True
            self.t_finder[rows] = -1
        return rows.shape[0]

    def _discovery_and_scoring(self) -> tuple[np.ndarray, ...]:
        p = self.params
        live = np.flatnonzero(self.t_active)
        tx, ty = self.tx[live], self.ty[live]
        order, start = self.player_grid.build(self.x, self.y)
        q, j, _ = self.player_grid.pairs(order, start, tx, ty)
        ddx = self.x[j] - tx[q]
        ddy = self.y[j] - ty[q]
        d2 = ddx * ddx + ddy * ddy
        near = d2 <= p.discovery_radius * p.discovery_radius
        q, j, d2 = q[near], j[near], d2[near]
        # Nearest first, lowest row (= slot) on equal distance; keep each treasure's first.
        best = np.lexsort((j, d2, q))
        q, j = q[best], j[best]
        first = np.ones(q.shape[0], bool)
        first[1:] = q[1:] != q[:-1]
        rows, finders = live[q[first]], j[first]
        values = self.value[rows]
        # Scoring in treasure row order; a player may find several treasures at once.
        before = self.score[finders]
        np.add.at(self.score, finders, values)
        np.add.at(self.found, finders, 1)
        self.score_tick[finders] = self.t
        self.t_active[rows] = False
        self.respawn_tick[rows] = self.t + p.respawn_delay
        self.t_finder[rows] = self.slots[finders]
        by_player = np.argsort(finders, kind="stable")
        run = np.cumsum(values[by_player])
        new_player = np.ones(by_player.shape[0], bool)
        new_player[1:] = finders[by_player][1:] != finders[by_player][:-1]
        earlier = np.maximum.accumulate(np.where(new_player, run - values[by_player], 0))
        score_after = np.empty_like(values)
        score_after[by_player] = before[by_player] + run - earlier
        return rows, self.slots[finders], values, score_after

    def _hints(self) -> None:
        p = self.params
        live = np.flatnonzero(self.t_active)
        tx, ty = self.tx[live], self.ty[live]
        order, start = self.treasure_grid.build(tx, ty)
        q, k, per_player = self.treasure_grid.pairs(order, start, self.x, self.y)
        ddx = self.x[q] - tx[k]
        ddy = self.y[q] - ty[k]
        best = min_per_group(ddx * ddx + ddy * ddy, per_player)
        warm = best <= p.hint_radius * p.hint_radius
        levels = p.hint_levels
        level = levels - np.floor((levels * np.sqrt(best[warm])) / p.hint_radius)
        self.hint[:] = 0
        self.hint[warm] = np.clip(level, 1, levels)

    def _leaderboard(self) -> bool:
        size = self.params.leaderboard_size
        scored = np.flatnonzero(self.score > 0)
        if scored.shape[0] > size:
            # Only players at least as good as the size-th best score can make the board.
            cut = np.partition(self.score[scored], scored.shape[0] - size)[-size]
            scored = scored[self.score[scored] >= cut]
        rank = np.lexsort((scored, self.score_tick[scored], -self.score[scored]))[:size]
        top = scored[rank]
        slots, scores = self.slots[top], self.score[top]
        changed = not (np.array_equal(slots, self.board_slot)
                       and np.array_equal(scores, self.board_score))
        self.board_slot, self.board_score = slots, scores
        return changed


@dataclass(slots=True)
class Agreement:
    """How often the baseline and the engine agreed while playing the same game."""

    ticks: int = 0
    player_ticks: int = 0
    hints_equal: int = 0
    discoveries_engine: int = 0
    discoveries_numpy: int = 0
    discoveries_common: int = 0
    boards_equal: int = 0
    positions_equal: int = 0

    @property
    def hints(self) -> float:
        return self.hints_equal / max(1, self.player_ticks)

    @property
    def discoveries(self) -> float:
        union = self.discoveries_engine + self.discoveries_numpy - self.discoveries_common
        return self.discoveries_common / union if union else 1.0

    @property
    def leaderboard(self) -> float:
        return self.boards_equal / max(1, self.ticks)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "ticks": self.ticks, "player_ticks": self.player_ticks,
            "hints": self.hints, "discoveries": self.discoveries,
            "discoveries_engine": self.discoveries_engine,
            "discoveries_numpy": self.discoveries_numpy,
            "leaderboard": self.leaderboard,
            "positions": self.positions_equal / max(1, self.ticks),
        }


def lockstep(world: World, bots: Bots, hunt: NumpyHunt, ticks: int,
             agreement: Agreement | None = None) -> tuple[np.ndarray, Agreement]:
    """Play ``ticks`` ticks on both with the bots' moves; time the baseline's ticks.

    The bots decide from the engine's state; the baseline gets a copy of the same
    moves. Returns the baseline's tick times (ns) and the agreement so far.
    """
    agr = agreement if agreement is not None else Agreement()
    slots = hunt.slots
    h = int(world.players.hunt[slots[0]]) if slots.shape[0] else 0
    P, mv = world.players, world.moves
    times = np.zeros(ticks, np.int64)
    for k in range(ticks):
        bots.decide()
        hunt.put_moves(mv.seq[slots], mv.dx[slots], mv.dy[slots])
        start = time.perf_counter_ns()
        mine = hunt.tick()
        times[k] = time.perf_counter_ns() - start
        theirs = world.tick().discoveries
        agr.ticks += 1
        agr.player_ticks += slots.shape[0]
        agr.hints_equal += int(np.count_nonzero(hunt.hint == P.hint[slots]))
        first = world.treasure_rows(h).start
        a = set(zip((theirs["treasure"] - first).tolist(), theirs["slot"].tolist(), strict=True))
        b = set(zip(mine.treasure.tolist(), mine.finder_slot.tolist(), strict=True))
        agr.discoveries_engine += len(a)
        agr.discoveries_numpy += len(b)
        agr.discoveries_common += len(a & b)
        board = world.leaderboard(h)
        agr.boards_equal += int(np.array_equal(board["slot"], hunt.board_slot)
                                and np.array_equal(board["score"], hunt.board_score))
        agr.positions_equal += int(np.array_equal(P.x[slots], hunt.x)
                                   and np.array_equal(P.y[slots], hunt.y))
    return times, agr


def self_check(players: int = 2000, ticks: int = 100) -> Agreement:
    """Play a small :func:`bench_hunt` on the engine and on the baseline; return their agreement.

    Compares, every tick, each player's hint level, the set of (treasure, finder)
    discoveries, the leaderboard and the positions.
    """
    world, bots = bench_world(players)
    world.tick()  # the joins (step 1, which the baseline does not implement)
    hunt = NumpyHunt.from_world(world)
    return lockstep(world, bots, hunt, ticks)[1]


if __name__ == "__main__":
    tickengine.warm_up()
    agr = self_check()
    print(f"numpy baseline vs engine over {agr.ticks} ticks: hints {agr.hints:.2%}, "
          f"discoveries {agr.discoveries:.2%} ({agr.discoveries_engine} engine / "
          f"{agr.discoveries_numpy} numpy), leaderboards {agr.leaderboard:.2%}")
