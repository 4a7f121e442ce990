"""The World: many hunts in one set of buffers, advanced one batched tick at a time.

``World`` owns the tables and orchestrates the kernels; it holds no rules of its
own (those live in the kernel modules, step by step as docs/rules.md lists them).
Every buffer is allocated in the constructor or in :meth:`World.add_hunt`. A
tick allocates nothing per player or per event: a handful of small Python objects
(the result, its views) and a constant number of small blocks inside Numba's
parallel runtime (about 135, measured by perf/bench_tick.py), however many players.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

from ._config import EngineConfig, HuntParams
from ._discovery import find_finders, respawn_due, score_discoveries, spawn_rows
from ._dtypes import (
    DISCOVERY_DTYPE,
    LEADER_DTYPE,
    MEMBERSHIP_DTYPE,
    RESULT_DTYPE,
    ROUND_END_DTYPE,
    VISIBLE_DTYPE,
)
from ._errors import CapacityError, ConfigError, HuntFullError, StalePlayerError, UnknownHuntError
from ._grid import (
    MAX_SORT_CHUNKS,
    PARALLEL_MIN_ROWS,
    PARALLEL_SORT_MIN_ROWS,
    assign_cells,
    assign_cells_parallel,
    build_grid,
    grid_shape,
    place_rows,
    place_rows_parallel,
)
from ._hints import hint_scratch_shape, tile_cells, update_hints
from ._leaderboard import rank_hunts
from ._membership import apply_membership
from ._movement import apply_inputs_and_move
from ._moves import MoveBuffer, check_id
from ._rounds import (
    RESULTS,
    RS_NUMBER,
    RS_PHASE,
    RUNNING,
    RoundState,
    advance,
    begin_rounds,
    round_state,
    rounds_due,
)
from ._rounds import request as request_round
from ._state import (
    ACTIVE,
    HF_DISC_R,
    HF_DISC_R2,
    HF_HEIGHT,
    HF_HINT_R,
    HF_HINT_R2,
    HF_P_INV_X,
    HF_P_INV_Y,
    HF_STEP,
    HF_T_INV_X,
    HF_T_INV_Y,
    HF_VIEW_R,
    HF_VIEW_R2,
    HF_WIDTH,
    HI_HINT_LEVELS,
    HI_LB_SIZE,
    HI_MAX_PLAYERS,
    HI_P_BASE,
    HI_P_NCX,
    HI_P_NCY,
    HI_RESPAWN,
    HI_T_BASE,
    HI_T_COUNT,
    HI_T_NCX,
    HI_T_NCY,
    HI_T_START,
    HI_VALUE_MAX,
    HI_VALUE_MIN,
    MAX_LEADERBOARD,
    OP_JOIN,
    OP_LEAVE,
    PENDING,
    T_ACTIVE,
    T_WAITING,
    Hunts,
    Players,
    Treasures,
)
from ._visibility import compute_visibility, vis_scratch

#: Names of the tick's phases, in order, as timed in :attr:`TickResult.phase_ns`.
PHASES = ("membership", "movement", "grid", "discovery", "hints", "leaderboard")

_STATE_NAMES = {0: "free", 1: "pending", 2: "active"}
#: A tick no world reaches.
_NEVER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick produced. The arrays are views of the world's buffers:
    valid until the next tick, copy them to keep them."""

    #: The tick just run (the first tick is 1).
    tick: int
    #: ``DISCOVERY_DTYPE`` records, in treasure row order.
    discoveries: np.ndarray
    #: ``MEMBERSHIP_DTYPE`` records (joined / left), in request order.
    memberships: np.ndarray
    #: Indices of the hunts whose leaderboard changed, ascending.
    leaderboard_changed: np.ndarray
    #: Moves that became a player's direction this tick.
    moves_applied: int
    #: Kept moves dropped at tick time (the player left meanwhile).
    moves_stale: int
    #: Treasures that reappeared this tick.
    respawns: int
    #: Events that did not fit their buffer (0 unless capacities were lowered).
    dropped_events: int
    #: Nanoseconds spent in each of :data:`PHASES`.
    phase_ns: np.ndarray
    #: Indices of the round hunts whose phase changed this tick (step 0), ascending.
    round_changed: np.ndarray
    #: ``ROUND_END_DTYPE`` records: the rounds that ended this tick (step 0), by hunt.
    rounds_ended: np.ndarray
    #: ``RESULT_DTYPE`` records: the final standings of the rounds that ended this tick,
    #: by hunt, rank 1 first (a round nobody was in play for has none).
    results: np.ndarray


@dataclass(frozen=True, slots=True)
class Visibility:
    """Visibility records for a list of observers, in CSR layout.

    Observer ``o``'s records (``VISIBLE_DTYPE``) are
    ``records[offsets[o]:offsets[o + 1]]``. Views of the world's buffers: valid
    until the next call.
    """

    offsets: np.ndarray
    records: np.ndarray
    #: Nonzero where an observer's records did not fit (it got none: send it a keyframe later).
    truncated: np.ndarray
    #: Records that did not fit.
    dropped: int

    def of(self, o: int) -> np.ndarray:
        """Records of the ``o``-th observer."""
        return self.records[self.offsets[o] : self.offsets[o + 1]]


@dataclass(frozen=True, slots=True)
class PlayerInfo:
    """A copy of one player's row. Positions in world units."""

    id: int
    slot: int
    gen: int
    hunt: int
    state: str
    x: float
    y: float
    dx: float
    dy: float
    score: int
    found: int
    last_seq: int
    hint: int
    score_tick: int
    changed_tick: int
    joined_tick: int


def make_player_id(slot: int, gen: int) -> int:
    """The public id of the player in ``slot`` at generation ``gen``."""
    return (int(gen) << 32) | int(slot)


class World:
    """Hunts, players and treasures in struct-of-arrays buffers, and the tick that advances them.

    >>> world = World(EngineConfig(max_players=100, max_treasures=100))
    >>> hunt = world.add_hunt(HuntParams(name="cave", treasures=10, seed=1))
    >>> me = world.join(hunt)
    >>> world.moves.put(me, seq=1, dx=1.0, dy=0.0)
    True
    >>> result = world.tick()
    >>> world.player(me).last_seq
    1

    Thread safety: none. A server that runs :meth:`tick` in a worker thread must
    not call other methods meanwhile; it fills a second :class:`MoveBuffer`
    (from :meth:`new_move_buffer`) and passes it to the next tick.
    """

    def __init__(self, config: EngineConfig | None = None,
                 hunts: tuple[HuntParams, ...] | list[HuntParams] = ()) -> None:
        self.config = config = config if config is not None else EngineConfig()
        P = config.max_players
        T = config.max_treasures
        H = config.max_hunts
        self.players = Players(P)
        self.treasures = Treasures(T)
        self.hunts = Hunts(H)
        self.hunt_params: list[HuntParams] = []
        self._tick = 0
        # Membership requests since the last tick: at most one join and one leave per slot.
        self._op_kind = np.zeros(2 * P, np.int8)
        self._op_slot = np.zeros(2 * P, np.int32)
        self._n_ops = 0
        self.moves = MoveBuffer(self.players)
        # Grids (their cell arrays grow when a hunt is added, never during a tick).
        self._p_cells = np.zeros(1, np.int64)
        self._p_cursor = np.zeros(0, np.int64)
        # Per-thread cell counters of the parallel sort (only for worlds that can use it).
        self._sort_chunks = min(numba.config.NUMBA_NUM_THREADS, MAX_SORT_CHUNKS)
        self._p_counts = np.zeros((1, 0), np.int32)
        self._p_order = np.zeros(P, np.int32)
        self._p_sorted_x = np.zeros(P, np.float64)
        self._p_sorted_y = np.zeros(P, np.float64)
        self._t_cells = np.zeros(1, np.int64)
        self._t_cursor = np.zeros(0, np.int64)
        self._t_order = np.zeros(T, np.int32)
        self._t_sorted_x = np.zeros(T, np.float64)
        self._t_sorted_y = np.zeros(T, np.float64)
        # The treasure grid holds _t_placed treasures; rebuilt only when treasures changed
        # (a discovery, a respawn, a round's step, a new hunt, a restore).
        self._t_placed = 0
        self._t_grid_stale = True
        # The earliest respawn tick of a waiting treasure (none waiting: never).
        self._next_respawn = _NEVER
        # Hints: hunt h's player-grid rows are rows [_p_row_base[h], _p_row_base[h + 1]) of
        # all hunts' rows; its hint tiles are _hint_tile[h] cells wide.
        self._p_row_base = np.zeros(H + 1, np.int64)
        self._hint_tile = np.ones(H, np.int64)
        self._hint_scratch = np.zeros(hint_scratch_shape(numba.config.NUMBA_NUM_THREADS))
        # Events.
        n_disc = config.max_discoveries if config.max_discoveries is not None else T
        n_mem = config.max_membership_events if config.max_membership_events is not None else 2 * P
        self._discoveries = np.zeros(n_disc, DISCOVERY_DTYPE)
        self._memberships = np.zeros(n_mem, MEMBERSHIP_DTYPE)
        self._lb_len = np.zeros(H, np.int64)
        self._changed_hunts = np.zeros(H, np.int32)
        self._lb_slot = np.zeros((H, MAX_LEADERBOARD), np.int32)
        self._lb_key = np.zeros((H, MAX_LEADERBOARD, 2), np.int64)  # score, score tick
        self._move_counts = np.zeros(2, np.int64)  # moves applied, moves stale
        # Slots credited this tick, and whether the boards must be ranked from every slot
        # (true until the first tick and after a restore; see _leaderboard.py).
        self._scorers = np.zeros(T, np.int32)
        self._lb_full = True
        self._phase_ns = np.zeros(len(PHASES), np.int64)
        # Whether no player was in play at the end of the last tick (None: not known yet,
        # as after a hunt was added or a restore). Such a world's next tick without joins,
        # leaves, kept moves or rounds leaves every player column, grid and candidate as
        # it was, so its player steps are skipped (an idle hunt's tick is mostly their calls).
        self._empty: bool | None = None
        #: Ticks that skipped the player steps so (for tests and tools).
        self.idle_ticks = 0
        # Rounds: how many hunts have a plan, step 0's scratch, the standings buffer (sized
        # when the first round hunt is added).
        self._round_hunts = 0
        self._round_due = np.zeros(H, np.int32)
        self._round_changed = np.zeros(H, np.int32)
        self._rounds_ended = np.zeros(H, ROUND_END_DTYPE)
        self._results = np.zeros(0, RESULT_DTYPE)
        # Visibility.
        self._vis_records = np.zeros(config.max_visible, VISIBLE_DTYPE)
        self._vis_offsets = np.zeros(P + 1, np.int64)
        self._vis_truncated = np.zeros(P, np.uint8)
        self._vis_no_keyframe = np.zeros(P, np.uint8)
        self._vis_words = self._vis_records.view(np.uint64)
        self._vis_scratch = vis_scratch(P, numba.config.NUMBA_NUM_THREADS)
        for params in hunts:
            self.add_hunt(params)

    # ------------------------------------------------------------------ hunts

    @property
    def tick_number(self) -> int:
        """Ticks run so far (0 before the first)."""
        return self._tick

    @property
    def tick_rate(self) -> int | None:
        """Ticks per second shared by all hunts (None while there are none)."""
        return self.hunt_params[0].tick_rate if self.hunt_params else None

    def add_hunt(self, params: HuntParams) -> int:
        """Create a hunt, place its treasures, and return its index.

        Raises :class:`CapacityError` when the world has no room for another hunt
        or its treasures, and :class:`ConfigError` for a duplicate name or a tick
        rate different from the other hunts'.
        """
        if not isinstance(params, HuntParams):
            raise TypeError(f"add_hunt takes HuntParams, got {type(params).__name__}")
        H, T = self.hunts, self.treasures
        if H.count >= H.capacity:
            raise CapacityError(f"the world holds {H.capacity} hunts already (engine.max_hunts)")
        if any(p.name == params.name for p in self.hunt_params):
            raise ConfigError(f"hunt.name {params.name!r} is taken; hunt names must be unique")
        if self.hunt_params and params.tick_rate != self.tick_rate:
            raise ConfigError(
                f"hunt.tick_rate must be {self.tick_rate} like the other hunts of this world, "
                f"got {params.tick_rate}; run hunts with another tick rate in another World"
            )
        if T.used + params.treasures > T.capacity:
            raise CapacityError(
                f"hunt {params.name!r} needs {params.treasures} treasures but only "
                f"{T.capacity - T.used} treasure rows are free (engine.max_treasures)"
            )
        h = H.count
        f, i = H.f[h], H.i[h]
        f[HF_WIDTH] = params.width
        f[HF_HEIGHT] = params.height
        f[HF_STEP] = params.step
        f[HF_DISC_R] = params.discovery_radius
        f[HF_DISC_R2] = params.discovery_radius * params.discovery_radius
        f[HF_HINT_R] = params.hint_radius
        f[HF_HINT_R2] = params.hint_radius * params.hint_radius
        f[HF_VIEW_R] = params.view_radius
        f[HF_VIEW_R2] = params.view_radius * params.view_radius
        i[HI_VALUE_MIN] = params.treasure_value_min
        i[HI_VALUE_MAX] = params.treasure_value_max
        i[HI_HINT_LEVELS] = params.hint_levels
        i[HI_RESPAWN] = params.respawn_delay
        i[HI_LB_SIZE] = params.leaderboard_size
        i[HI_T_START] = T.used
        i[HI_T_COUNT] = params.treasures
        i[HI_MAX_PLAYERS] = params.max_players
        # Cells about one query radius wide: a scan then covers 3-4 rows of 3-4 cells.
        pcx, pcy = grid_shape(
            params.width, params.height,
            max(params.view_radius, params.discovery_radius),
            max(1024, 4 * min(params.max_players, self.players.capacity)),
        )
        tcx, tcy = grid_shape(
            params.width, params.height, 2 * params.hint_radius, max(64, 4 * params.treasures)
        )
        i[HI_P_NCX], i[HI_P_NCY], i[HI_P_BASE] = pcx, pcy, self._p_cells.shape[0] - 1
        i[HI_T_NCX], i[HI_T_NCY], i[HI_T_BASE] = tcx, tcy, self._t_cells.shape[0] - 1
        f[HF_P_INV_X] = pcx / params.width
        f[HF_P_INV_Y] = pcy / params.height
        f[HF_T_INV_X] = tcx / params.width
        f[HF_T_INV_Y] = tcy / params.height
        self._p_row_base[h + 1] = self._p_row_base[h] + pcy
        self._hint_tile[h] = tile_cells(
            min(params.max_players, self.players.capacity) / (pcx * pcy))
        n_p = self._p_cells.shape[0] - 1 + pcx * pcy
        n_t = self._t_cells.shape[0] - 1 + tcx * tcy
        self._p_cells, self._p_cursor = np.zeros(n_p + 1, np.int64), np.zeros(n_p, np.int64)
        if self.players.capacity >= PARALLEL_SORT_MIN_ROWS and self._sort_chunks > 1:
            self._p_counts = np.zeros((self._sort_chunks, n_p), np.int32)
        self._t_cells, self._t_cursor = np.zeros(n_t + 1, np.int64), np.zeros(n_t, np.int64)
        H.rng[h] = np.uint64(params.seed)
        first, stop = T.used, T.used + params.treasures
        T.hunt[first:stop] = h
        if params.rounds is None:
            spawn_rows(first, stop, T.hunt, T.state, T.x, T.y, T.value, T.finder_slot,
                       T.finder_gen, H.f, H.i, H.rng)
        T.used = stop
        H.count += 1
        self.hunt_params.append(params)
        if params.rounds is not None:
            if not self._round_hunts:
                self._results = np.zeros(self.players.capacity, RESULT_DTYPE)
            self._round_hunts += 1
            begin_rounds(self, h)
        self._rebuild_grids()
        return h

    def hunt_index(self, hunt: int | str) -> int:
        """The index of a hunt given by index or name; :class:`UnknownHuntError` otherwise."""
        if isinstance(hunt, str):
            for h, p in enumerate(self.hunt_params):
                if p.name == hunt:
                    return h
            names = ", ".join(p.name for p in self.hunt_params) or "none"
            raise UnknownHuntError(f"no hunt named {hunt!r} (hunts: {names})")
        if isinstance(hunt, bool) or not isinstance(hunt, int | np.integer):
            raise UnknownHuntError(f"a hunt is an index or a name, got {hunt!r}")
        if not 0 <= hunt < self.hunts.count:
            raise UnknownHuntError(f"no hunt {hunt}; this world has {self.hunts.count}")
        return int(hunt)

    # ------------------------------------------------------------------ players

    def join(self, hunt: int | str) -> int:
        """Reserve a slot in ``hunt`` and return the new player's id.

        The player enters play at the next tick's step 1 (docs/rules.md).
        Raises :class:`HuntFullError` or :class:`CapacityError` when there is no room.
        """
        return int(self.join_many(hunt, 1)[0])

    def join_many(self, hunt: int | str, count: int) -> np.ndarray:
        """Reserve ``count`` slots in ``hunt`` at once; returns the ids (int64 array).

        Exactly what ``count`` calls of :meth:`join` would do, in one vectorised
        step. All or nothing: if they do not all fit, nothing is reserved.
        """
        h = self.hunt_index(hunt)
        P, H = self.players, self.hunts
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        room = int(H.i[h, HI_MAX_PLAYERS] - H.players[h])
        if count > room:
            raise HuntFullError(
                f"hunt {self.hunt_params[h].name!r} is full: room for {room} more players, "
                f"not {count} (max_players)"
            )
        top = int(P.free_top[0])
        if count > top:
            taken = "all" if top == 0 else f"{P.capacity - top} of"
            raise CapacityError(
                f"{taken} {P.capacity} player slots are taken, {count} more asked "
                "(engine.max_players)"
            )
        slots = P.free[top - count : top][::-1].copy()
        P.free_top[0] = top - count
        P.state[slots] = PENDING
        P.hunt[slots] = h
        P.leaving[slots] = False
        P.last_seq[slots] = 0
        H.players[h] += count
        if count:
            P.high_water = max(P.high_water, int(slots.max()) + 1)
        n = self._n_ops
        self._op_kind[n : n + count] = OP_JOIN
        self._op_slot[n : n + count] = slots
        self._n_ops = n + count
        return (P.gen[slots].astype(np.int64) << 32) | slots.astype(np.int64)

    def leave(self, player_id: int) -> None:
        """Queue the player's departure for the next tick.

        Raises :class:`StalePlayerError` if the id is stale or already leaving.
        """
        slot = check_id(self.players, player_id)
        if self.players.leaving[slot]:
            raise StalePlayerError(f"player id {player_id} is already leaving")
        self.players.leaving[slot] = True
        self._queue(OP_LEAVE, slot)

    def _queue(self, kind: int, slot: int) -> None:
        n = self._n_ops
        self._op_kind[n] = kind
        self._op_slot[n] = slot
        self._n_ops = n + 1

    def is_live(self, player_id: int) -> bool:
        """Whether the id addresses a pending or active player."""
        try:
            check_id(self.players, player_id)
        except StalePlayerError:
            return False
        return True

    def player(self, player_id: int) -> PlayerInfo:
        """A copy of a live player's row (:class:`StalePlayerError` if the id is stale)."""
        s = check_id(self.players, player_id)
        P = self.players
        return PlayerInfo(
            id=int(player_id), slot=s, gen=int(P.gen[s]), hunt=int(P.hunt[s]),
            state=_STATE_NAMES[int(P.state[s])], x=float(P.x[s]), y=float(P.y[s]),
            dx=float(P.dx[s]), dy=float(P.dy[s]), score=int(P.score[s]), found=int(P.found[s]),
            last_seq=int(P.last_seq[s]), hint=int(P.hint[s]), score_tick=int(P.score_tick[s]),
            changed_tick=int(P.changed_tick[s]), joined_tick=int(P.joined_tick[s]),
        )

    def player_id(self, slot: int) -> int:
        """The current id of the player in ``slot``."""
        return make_player_id(slot, self.players.gen[slot])

    def active_slots(self, hunt: int | None = None) -> np.ndarray:
        """Slots of the players in play (optionally of one hunt), ascending. Allocates."""
        P = self.players
        n = P.high_water
        mask = P.state[:n] == ACTIVE
        if hunt is not None:
            mask &= P.hunt[:n] == self.hunt_index(hunt)
        return np.flatnonzero(mask).astype(np.int32)

    def new_move_buffer(self) -> MoveBuffer:
        """Another input buffer for this world (for double buffering)."""
        return MoveBuffer(self.players)

    # ------------------------------------------------------------------ the tick

    def tick(self, moves: MoveBuffer | None = None, threads: int | None = None) -> TickResult:
        """Run one tick of every hunt (docs/rules.md, steps 1-7) and return its events.

        ``moves`` defaults to :attr:`moves`; its kept moves are consumed. ``threads``: the
        calling thread's ``numba.get_num_threads()``, if the caller knows it already.
        """
        mv = self.moves if moves is None else moves
        P, T, H = self.players, self.treasures, self.hunts
        t = self._tick + 1
        clock = time.perf_counter_ns
        ph = self._phase_ns
        c0 = clock()
        n_round_changed = n_ended = n_results = 0
        if self._round_hunts:
            n_round_changed, n_ended, n_results = self._step_rounds(t)
        # Steps the tick's inputs make no-ops are skipped (most ticks of a small hunt:
        # no join or leave, no treasure due, no score changed).
        n_mem = drop_mem = 0
        ops = self._n_ops
        # A move can be kept only for a player in play or joining, so after a tick that
        # ended with nobody in play, the buffer is empty unless it was filled before that
        # tick and handed in again (a caller's own buffer): checked, not assumed.
        idle = (self._empty and not ops and not self._round_hunts
                and not (P.high_water and np.count_nonzero(mv.seq[: P.high_water])))
        if ops:
            n_mem, drop_mem = apply_membership(
                t, self._n_ops, self._op_kind, self._op_slot,
                P.state, P.gen, P.hunt, P.leaving, P.x, P.y, P.x_prev, P.y_prev, P.dx, P.dy,
                P.score, P.found, P.last_seq, P.hint, P.score_tick, P.changed_tick,
                P.joined_tick, P.free, P.free_top, H.f, H.rng, H.players, self._memberships,
            )
            self._n_ops = 0
        c1 = clock()
        n = P.high_water
        if idle:  # what the two steps would report and leave: no move, an empty grid
            self._move_counts[:] = 0
            self.idle_ticks += 1
            c2 = clock()
        else:
            apply_inputs_and_move(
                t, n, P.state, P.gen, P.hunt, P.x, P.y, P.x_prev, P.y_prev, P.dx, P.dy,
                P.last_seq, P.changed_tick, mv.seq, mv.gen, mv.dx, mv.dy, H.f, H.i, P.cell,
                self._move_counts,
            )
            c2 = clock()
            if threads is None:
                threads = numba.get_num_threads()
            if n >= PARALLEL_SORT_MIN_ROWS and threads > 1 and self._p_counts.shape[1]:
                place_rows_parallel(min(threads, self._sort_chunks), n, P.cell, P.x, P.y,
                                    self._p_cells, self._p_counts, self._p_order,
                                    self._p_sorted_x, self._p_sorted_y)
            else:
                place_rows(n, P.cell, P.x, P.y, self._p_cells, self._p_cursor, self._p_order,
                           self._p_sorted_x, self._p_sorted_y)
        c3 = clock()
        respawns = 0
        if t >= self._next_respawn or self._round_hunts:
            respawns = respawn_due(t, T.used, T.hunt, T.state, T.x, T.y, T.value,
                                   T.respawn_tick, T.finder_slot, T.finder_gen, H.f, H.i, H.rng)
        # Treasures never move: the grid changes only when one leaves or enters play.
        if respawns or self._t_grid_stale or self._round_hunts:
            self._t_placed = self._build_treasure_grid()
        n_disc = drop_disc = 0
        if not idle:  # nobody in play finds anything; every candidate is still -1
            n_placed = self._t_placed
            find_finders(n_placed, self._t_order, self._t_sorted_x, self._t_sorted_y, T.hunt,
                         T.candidate, self._p_cells, self._p_order, self._p_sorted_x,
                         self._p_sorted_y, H.f, H.i)
            n_disc, drop_disc = score_discoveries(
                t, T.used, T.hunt, T.state, T.x, T.y, T.value, T.respawn_tick,
                T.finder_slot, T.finder_gen, T.candidate,
                P.gen, P.score, P.found, P.score_tick, H.i, self._discoveries, self._scorers,
            )
        # A find moved its treasure out of the grid's positions; it leaves the grid next tick.
        self._t_grid_stale = found = n_disc + drop_disc > 0
        if found or respawns:
            self._next_respawn = self._earliest_respawn()
        c4 = clock()
        if not idle:  # hints are per player in play
            update_hints(threads, H.count, self._p_row_base, self._hint_tile,
                         self._p_cells, self._p_order, self._p_sorted_x, self._p_sorted_y,
                         P.hint, self._t_cells, self._t_sorted_x, self._t_sorted_y, H.f, H.i,
                         self._hint_scratch)
        c5 = clock()
        n_changed = 0
        # A board changes only with a score, a player leaving play, or a round's reset.
        if self._lb_full or found or n_mem or drop_mem or self._round_hunts:
            n_changed = rank_hunts(
                n, H.count, self._lb_full, self._scorers, n_disc + drop_disc,
                P.state, P.hunt, P.gen, P.score, P.score_tick, H.i,
                self._lb_slot, self._lb_key, self._lb_len,
                H.board_slot, H.board_gen, H.board_score, H.board_len, self._changed_hunts,
            )
            self._lb_full = False
        c6 = clock()
        # One item at a time: assigning a tuple to the slice costs several times more.
        ph[0] = c1 - c0
        ph[1] = c2 - c1
        ph[2] = c3 - c2
        ph[3] = c4 - c3
        ph[4] = c5 - c4
        ph[5] = c6 - c5
        self._tick = t
        if ops or self._empty is None:  # who is in play changes only with joins and leaves
            self._empty = not H.players[: H.count].any()
        return TickResult(
            tick=t,
            discoveries=self._discoveries[:n_disc],
            memberships=self._memberships[:n_mem],
            leaderboard_changed=self._changed_hunts[:n_changed],
            moves_applied=int(self._move_counts[0]),
            moves_stale=int(self._move_counts[1]),
            respawns=respawns,
            dropped_events=drop_mem + drop_disc,
            phase_ns=ph,
            round_changed=self._round_changed[:n_round_changed],
            rounds_ended=self._rounds_ended[:n_ended],
            results=self._results[:n_results],
        )

    def _step_rounds(self, t: int) -> tuple[int, int, int]:
        """Step 0 (docs/rules.md, "Rounds"): returns (hunts whose phase changed, rounds
        that ended, result rows)."""
        H, T = self.hunts, self.treasures
        k = rounds_due(t, H.count, H.round, T.state, H.i, H.board_len, H.board_score,
                       self._round_due)
        changed = ended = written = 0
        for q in range(k):
            h = int(self._round_due[q])
            before = (int(H.round[h, RS_PHASE]), int(H.round[h, RS_NUMBER]))
            written += advance(self, h, t, self._results, written)
            after = (int(H.round[h, RS_PHASE]), int(H.round[h, RS_NUMBER]))
            if after != before:
                self._round_changed[changed] = h
                changed += 1
            if before[0] == RUNNING and after[0] == RESULTS:
                self._rounds_ended[ended] = (h, before[1])
                ended += 1
        return changed, ended, written

    def _earliest_respawn(self) -> int:
        """The first tick at which a waiting treasure respawns (none waiting: never)."""
        T = self.treasures
        due = T.respawn_tick[: T.used][T.state[: T.used] == T_WAITING]
        return int(due.min()) if len(due) else _NEVER

    def _build_treasure_grid(self) -> int:
        """Sort the active treasures into the treasure grid; returns how many were placed."""
        T, H = self.treasures, self.hunts
        assign = assign_cells_parallel if T.used >= PARALLEL_MIN_ROWS else assign_cells
        assign(T.used, T.state, T_ACTIVE, T.hunt, T.x, T.y, H.f, H.i,
               HF_T_INV_X, HF_T_INV_Y, HI_T_NCX, HI_T_NCY, HI_T_BASE, T.cell)
        return place_rows(T.used, T.cell, T.x, T.y, self._t_cells, self._t_cursor,
                          self._t_order, self._t_sorted_x, self._t_sorted_y)

    def _rebuild_grids(self) -> None:
        """Rebuild both grids from the tables (after adding a hunt or restoring).

        The next tick then ranks the leaderboards from every slot.
        """
        P, H = self.players, self.hunts
        self._lb_full = True
        self._empty = None
        build_grid(P.high_water, P.state, ACTIVE, P.hunt, P.x, P.y, H.f, H.i,
                   HF_P_INV_X, HF_P_INV_Y, HI_P_NCX, HI_P_NCY, HI_P_BASE,
                   P.cell, self._p_cells, self._p_cursor, self._p_order,
                   self._p_sorted_x, self._p_sorted_y)
        self._t_placed = self._build_treasure_grid()
        self._t_grid_stale = False
        self._next_respawn = self._earliest_respawn()

    # ------------------------------------------------------------------ queries

    def visibility(self, observers: np.ndarray, keyframe: np.ndarray | None = None,
                   threads: int | None = None, check: bool = True) -> Visibility:
        """Who each observer sees after the last tick (docs/rules.md, "Visibility").

        ``observers``: slots (int32 or int64 array); an observer not in play gets
        no records. ``keyframe``: per observer, nonzero for everything in view
        instead of the diff (uint8 array; default all diffs). ``threads``: the calling
        thread's ``numba.get_num_threads()``, if the caller knows it already.
        ``check=False``: the caller vouches that every observer is a slot in
        ``[0, engine.max_players)`` (the kernel reads their rows unchecked).
        """
        n = observers.shape[0]
        if n > self.players.capacity:
            raise ValueError(f"at most {self.players.capacity} observers, got {n}")
        if check and n and (observers.min() < 0 or observers.max() >= self.players.capacity):
            raise ValueError("observers must be slots in [0, engine.max_players)")
        kf = self._vis_no_keyframe if keyframe is None else keyframe
        if kf.shape[0] < n:
            raise ValueError(f"keyframe has {kf.shape[0]} entries for {n} observers")
        if n == 0:  # no observer: nothing to compute (a hunt nobody watches)
            self._vis_offsets[0] = 0
            return Visibility(offsets=self._vis_offsets[:1], records=self._vis_records,
                              truncated=self._vis_truncated[:0], dropped=0)
        P, H = self.players, self.hunts
        if threads is None:
            threads = numba.get_num_threads()
        dropped = compute_visibility(
            threads, n, observers, kf, self._tick, P.state, P.gen, P.hunt,
            P.x, P.y, P.x_prev, P.y_prev, P.changed_tick, P.joined_tick, self._p_cells,
            self._p_order, self._p_sorted_x, self._p_sorted_y, H.f, H.i,
            self._vis_offsets, self._vis_truncated, self._vis_words, self._vis_scratch,
        )
        return Visibility(
            offsets=self._vis_offsets[: n + 1],
            records=self._vis_records,
            truncated=self._vis_truncated[:n],
            dropped=int(dropped),
        )

    def leaderboard(self, hunt: int | str) -> np.ndarray:
        """A copy of a hunt's board (``LEADER_DTYPE`` rows, best first) as of the last tick."""
        h = self.hunt_index(hunt)
        H = self.hunts
        m = int(H.board_len[h])
        out = np.zeros(m, LEADER_DTYPE)
        out["slot"] = H.board_slot[h, :m]
        out["gen"] = H.board_gen[h, :m]
        out["score"] = H.board_score[h, :m]
        return out

    @property
    def has_rounds(self) -> bool:
        """Whether any hunt of this world has a round plan."""
        return self._round_hunts > 0

    def round_state(self, hunt: int | str) -> RoundState | None:
        """A hunt's round clock as of the last tick (None: the hunt has no round plan)."""
        return round_state(self, self.hunt_index(hunt))

    def request_round(self, hunt: int | str, action: str) -> None:
        """Queue a round change for the next tick's step 0 (docs/rules.md, "Rounds"):
        ``"start"`` the next round now (from a lobby, or from the results phase, skipping
        the next lobby), or ``"end"`` the running round now. A later request before the
        tick replaces an earlier one.

        Raises :class:`RoundError` when the hunt has no plan or its phase does not allow
        the action (nothing is queued then).
        """
        request_round(self, self.hunt_index(hunt), action)

    def treasure_rows(self, hunt: int | str) -> slice:
        """The rows of ``world.treasures`` that belong to a hunt."""
        h = self.hunt_index(hunt)
        start = int(self.hunts.i[h, HI_T_START])
        return slice(start, start + int(self.hunts.i[h, HI_T_COUNT]))

    # ------------------------------------------------------------------ persistence

    def state_hash(self) -> str:
        """A hex digest of everything that decides the future of this world."""
        from ._snapshot import state_hash

        return state_hash(self)

    def snapshot(self) -> bytes:
        """The whole engine state as bytes (see :meth:`restore`). Kept moves are not included."""
        from ._snapshot import snapshot

        return snapshot(self)

    @classmethod
    def restore(cls, data: bytes) -> World:
        """A world equal to the one that made ``data`` (same :meth:`state_hash`)."""
        from ._snapshot import restore

        return restore(cls, data)
