"""Rule step 0: the round clock of hunts with a round plan (docs/rules.md, "Rounds").

A round hunt's clock is one row of ``Hunts.round`` (int64 columns ``RS_*``),
part of the hashed state. Each tick one kernel finds the hunts due for a phase
change (a scheduled end, a queued request, a running round's end condition on
the state the last tick left); the few changes then run here in plain NumPy,
since they happen a handful of times per round, not per tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ._discovery import spawn_rows
from ._roundplan import END_CONDITIONS, RoundSpec
from ._state import (
    ACTIVE,
    HI_RESPAWN,
    HI_T_COUNT,
    HI_T_START,
    HI_VALUE_MAX,
    HI_VALUE_MIN,
    T_ACTIVE,
    T_UNUSED,
)

if TYPE_CHECKING:
    from ._world import World

# Phases (the same numbers as the wire's ROUND message). 0: the hunt has no rounds.
NO_ROUNDS = 0
LOBBY = 1
RUNNING = 2
RESULTS = 3
OVER = 4
PHASE_NAMES = {NO_ROUNDS: "none", LOBBY: "lobby", RUNNING: "running", RESULTS: "results",
               OVER: "over"}

# Round control requests (queued between ticks, applied at step 0).
REQ_NONE = 0
REQ_START = 1
REQ_END = 2
REQUESTS = {"start": REQ_START, "end": REQ_END}

# Columns of Hunts.round.
RS_PHASE = 0
RS_NUMBER = 1  # the round number, 1, 2, ...
RS_START = 2  # first tick of the phase
RS_END = 3  # first tick of the next phase as scheduled; 0 when over
RS_REQUEST = 4
RS_END_KIND = 5  # the current round's end condition (END_CONDITIONS)
RS_TARGET = 6  # its target score
N_RS = 7

#: The respawn delay of a round without respawns: a found treasure waits past any round's end.
NO_RESPAWN_DELAY = 2**62

_ALL_FOUND = END_CONDITIONS["all_found"]
_SCORE = END_CONDITIONS["score"]


@dataclass(frozen=True, slots=True)
class RoundState:
    """Where a round hunt stands as of the last tick. Times are tick numbers."""

    #: The round number, 1, 2, ... (a lobby and a results phase belong to their round).
    number: int
    #: "lobby", "running", "results" or "over".
    phase: str
    #: The first tick of the phase.
    phase_start: int
    #: The first tick of the next phase as scheduled (a running phase may end sooner);
    #: None when the hunt is over.
    phase_end: int | None
    #: Rounds in the plan (0: forever).
    count: int
    #: What this round plays.
    spec: RoundSpec
    #: A control request queued for the next tick: None, "start" or "end".
    request: str | None

    @property
    def phase_code(self) -> int:
        """The phase as the wire's ROUND carries it (1 lobby ... 4 over)."""
        return {v: k for k, v in PHASE_NAMES.items()}[self.phase]


@njit(cache=True, nogil=True)
def rounds_due(t, n_hunts, rounds, t_state, hunt_i, board_len, board_score, out):
    """Step 0's test: write to ``out`` the hunts due for a phase change at tick ``t``.

    Due: a queued request, the scheduled end ``t``, or (running) the round's end
    condition on the state the last tick left. Returns how many.
    """
    n = 0
    for h in range(n_hunts):
        phase = rounds[h, RS_PHASE]
        if phase == NO_ROUNDS:
            continue
        due = rounds[h, RS_REQUEST] != REQ_NONE or (phase != OVER and rounds[h, RS_END] == t)
        if not due and phase == RUNNING:
            kind = rounds[h, RS_END_KIND]
            if kind == _ALL_FOUND:
                due = True
                first = hunt_i[h, HI_T_START]
                for r in range(first, first + hunt_i[h, HI_T_COUNT]):
                    if t_state[r] == T_ACTIVE:
                        due = False
                        break
            elif kind == _SCORE:
                due = board_len[h] > 0 and board_score[h, 0] >= rounds[h, RS_TARGET]
        if due:
            out[n] = h
            n += 1
    return n


def begin_rounds(world: World, h: int) -> None:
    """Open round 1's lobby for a hunt just added (its first tick is the world's next)."""
    plan = world.hunt_params[h].rounds
    row = world.hunts.round[h]
    row[:] = 0
    t = world.tick_number + 1
    _enter(world, h, t, 1, LOBBY, plan.lobby_ticks)
    # Out of play until the round runs: rows are allocated, none is placed.
    world.treasures.state[world.treasure_rows(h)] = T_UNUSED


def request(world: World, h: int, action: str) -> None:
    """Queue ``action`` ("start" or "end") for hunt ``h``'s next step 0, or raise RoundError."""
    from ._errors import RoundError

    name = world.hunt_params[h].name
    plan = world.hunt_params[h].rounds
    if plan is None:
        raise RoundError(f"hunt {name!r} has no round plan: nothing to start or end")
    if action not in REQUESTS:
        raise RoundError(f"a round request is 'start' or 'end', got {action!r}")
    row = world.hunts.round[h]
    phase, number = int(row[RS_PHASE]), int(row[RS_NUMBER])
    if action == "start":
        if phase == RUNNING:
            raise RoundError(f"round {number} of hunt {name!r} is running already; end it first")
        if phase == OVER or (phase == RESULTS and plan.count and number >= plan.count):
            raise RoundError(f"hunt {name!r} has played its {plan.count} rounds: no next round")
    elif phase != RUNNING:
        raise RoundError(f"hunt {name!r} is in its {PHASE_NAMES[phase]} phase: only a running "
                         "round can be ended")
    row[RS_REQUEST] = REQUESTS[action]


def advance(world: World, h: int, t: int, results: np.ndarray, n_results: int) -> int:
    """Step 0 for one due hunt at tick ``t``: change its phase, write the standings of a round
    that ends into ``results`` from row ``n_results``. Returns the rows written."""
    plan = world.hunt_params[h].rounds
    row = world.hunts.round[h]
    phase, number = int(row[RS_PHASE]), int(row[RS_NUMBER])
    req = int(row[RS_REQUEST])
    row[RS_REQUEST] = REQ_NONE
    on_time = phase != OVER and int(row[RS_END]) == t
    last = plan.count and number >= plan.count
    if phase == LOBBY and (req == REQ_START or on_time):
        _enter(world, h, t, number, RUNNING, plan.running_ticks)
    elif phase == RUNNING and (req == REQ_END or on_time or _condition_met(world, h)):
        written = _standings(world, h, number, results, n_results)
        _enter(world, h, t, number, RESULTS, plan.results_ticks)
        return written
    elif phase == RESULTS and req == REQ_START and not last:
        _enter(world, h, t, number + 1, RUNNING, plan.running_ticks)
    elif phase == RESULTS and on_time:
        if last:
            _enter(world, h, t, number, OVER, 0)
        else:
            _enter(world, h, t, number + 1, LOBBY, plan.lobby_ticks)
    return 0


def _condition_met(world: World, h: int) -> bool:
    """Whether a running round's end condition holds on the state the last tick left."""
    row = world.hunts.round[h]
    kind = int(row[RS_END_KIND])
    if kind == _ALL_FOUND:
        return not bool(np.any(world.treasures.state[world.treasure_rows(h)] == T_ACTIVE))
    if kind == _SCORE:
        H = world.hunts
        return bool(H.board_len[h] > 0 and H.board_score[h, 0] >= row[RS_TARGET])
    return False


def _enter(world: World, h: int, t: int, number: int, phase: int, length: int) -> None:
    """Begin ``phase`` of round ``number`` at tick ``t`` (docs/rules.md, "Rounds")."""
    H, T, P = world.hunts, world.treasures, world.players
    plan = world.hunt_params[h].rounds
    spec = plan.spec(number)
    row = H.round[h]
    row[RS_PHASE] = phase
    row[RS_NUMBER] = number
    row[RS_START] = t
    row[RS_END] = 0 if phase == OVER else t + length
    row[RS_END_KIND] = END_CONDITIONS[spec.end]
    row[RS_TARGET] = spec.target_score
    rows = world.treasure_rows(h)
    if phase in (LOBBY, RUNNING):
        n = P.high_water
        mine = np.flatnonzero((P.state[:n] == ACTIVE) & (P.hunt[:n] == h))
        P.score[mine] = 0
        P.found[mine] = 0
        P.score_tick[mine] = t
        world._lb_full = True  # scores fell: rank every slot again
    if phase == RUNNING:
        hi = H.i[h]
        hi[HI_VALUE_MIN] = spec.treasure_value_min
        hi[HI_VALUE_MAX] = spec.treasure_value_max
        hi[HI_RESPAWN] = (world.hunt_params[h].respawn_delay if spec.respawn
                          else NO_RESPAWN_DELAY)
        T.state[rows] = T_UNUSED
        spawn_rows(rows.start, rows.start + spec.treasures, T.hunt, T.state, T.x, T.y, T.value,
                   T.finder_slot, T.finder_gen, H.f, H.i, H.rng)
    else:
        T.state[rows] = T_UNUSED


def _standings(world: World, h: int, number: int, out: np.ndarray, at: int) -> int:
    """The final standings of hunt ``h``'s round ``number`` into ``out[at:]``; returns rows."""
    P = world.players
    n = P.high_water
    slots = np.flatnonzero((P.state[:n] == ACTIVE) & (P.hunt[:n] == h))
    score, tick = P.score[slots], P.score_tick[slots]
    # The leaderboard's order: score (higher first), score tick (earlier), slot (lower).
    order = slots[np.lexsort((slots, tick, -score))]
    rows = out[at:at + len(order)]
    rows["hunt"] = h
    rows["round"] = number
    rows["rank"] = np.arange(1, len(order) + 1)
    rows["slot"] = order
    rows["gen"] = P.gen[order]
    rows["found"] = P.found[order]
    rows["score"] = P.score[order]
    rows["last_tick"] = np.where(P.found[order] > 0, P.score_tick[order], -1)
    return len(order)


def round_state(world: World, h: int) -> RoundState | None:
    """Hunt ``h``'s round clock as of the last tick (None for a hunt without rounds)."""
    plan = world.hunt_params[h].rounds
    if plan is None:
        return None
    row = world.hunts.round[h]
    phase = int(row[RS_PHASE])
    req = int(row[RS_REQUEST])
    return RoundState(
        number=int(row[RS_NUMBER]), phase=PHASE_NAMES[phase], phase_start=int(row[RS_START]),
        phase_end=None if phase == OVER else int(row[RS_END]), count=plan.count,
        spec=plan.spec(int(row[RS_NUMBER])),
        request={REQ_START: "start", REQ_END: "end"}.get(req),
    )
