"""Rule step 4: respawns, then discovery of treasures by the nearest player.

The search for each treasure's finder walks the treasure grid (built after the
respawns) in parallel, one treasure per iteration writing only its own
``candidate`` entry; scoring then runs serially in treasure row order, since
several treasures may credit the same player and events must come out in a
fixed order.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._grid import cell_span
from ._rng import uniform
from ._state import (
    HF_DISC_R,
    HF_DISC_R2,
    HF_HEIGHT,
    HF_P_INV_X,
    HF_P_INV_Y,
    HF_WIDTH,
    HI_P_BASE,
    HI_P_NCX,
    HI_P_NCY,
    HI_RESPAWN,
    HI_VALUE_MAX,
    HI_VALUE_MIN,
    SCAN_SLACK,
    T_ACTIVE,
    T_WAITING,
)

#: Below this many active treasures the finders are searched on one thread (each
#: search costs ~50 ns; a parallel region costs 10-20 us on two threads).
PARALLEL_MIN_TREASURES = 1_000


@njit(cache=True, inline="always")
def spawn_treasure(r, t_hunt, t_x, t_y, t_value, hunt_f, hunt_i, hunt_rng):
    """Draw a point, then a value, for treasure row ``r`` from its hunt's stream."""
    h = t_hunt[r]
    t_x[r] = uniform(hunt_rng, h) * hunt_f[h, HF_WIDTH]
    t_y[r] = uniform(hunt_rng, h) * hunt_f[h, HF_HEIGHT]
    lo = hunt_i[h, HI_VALUE_MIN]
    span = hunt_i[h, HI_VALUE_MAX] - lo + 1
    t_value[r] = lo + int(uniform(hunt_rng, h) * span)


@njit(cache=True, nogil=True)
def spawn_rows(first, stop, t_hunt, t_state, t_x, t_y, t_value, t_finder_slot, t_finder_gen,
               hunt_f, hunt_i, hunt_rng):
    """Spawn treasure rows ``[first, stop)`` in row order (a new hunt's initial placement)."""
    for r in range(first, stop):
        spawn_treasure(r, t_hunt, t_x, t_y, t_value, hunt_f, hunt_i, hunt_rng)
        t_state[r] = T_ACTIVE
        t_finder_slot[r] = -1
        t_finder_gen[r] = 0


@njit(cache=True, nogil=True)
def respawn_due(tick, n_rows, t_hunt, t_state, t_x, t_y, t_value, t_respawn_tick,
                t_finder_slot, t_finder_gen, hunt_f, hunt_i, hunt_rng):
    """Step 4.1: waiting treasures whose respawn tick has come spawn again. Returns how many."""
    n = 0
    for r in range(n_rows):
        if t_state[r] == T_WAITING and t_respawn_tick[r] <= tick:
            spawn_treasure(r, t_hunt, t_x, t_y, t_value, hunt_f, hunt_i, hunt_rng)
            t_state[r] = T_ACTIVE
            t_finder_slot[r] = -1
            t_finder_gen[r] = 0
            n += 1
    return n


@njit(cache=True, inline="always")
def _finder(tx, ty, h, cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i):
    """The nearest player within the discovery radius of ``(tx, ty)`` (ties: lowest slot), or -1."""
    r2 = hunt_f[h, HF_DISC_R2]
    scan = hunt_f[h, HF_DISC_R] * (1.0 + SCAN_SLACK) + SCAN_SLACK
    ncx = hunt_i[h, HI_P_NCX]
    base = hunt_i[h, HI_P_BASE]
    cx0, cx1 = cell_span(tx, scan, hunt_f[h, HF_P_INV_X], ncx)
    cy0, cy1 = cell_span(ty, scan, hunt_f[h, HF_P_INV_Y], hunt_i[h, HI_P_NCY])
    best = -1
    best_d2 = 0.0
    for cy in range(cy0, cy1 + 1):
        row = base + cy * ncx
        # A row's cells are adjacent, so their members are one run of `order`.
        for k in range(cell_start[row + cx0], cell_start[row + cx1 + 1]):
            ddx = p_sorted_x[k] - tx
            ddy = p_sorted_y[k] - ty
            d2 = ddx * ddx + ddy * ddy
            if d2 <= r2:
                j = order[k]
                if best < 0 or d2 < best_d2 or (d2 == best_d2 and j < best):
                    best = j
                    best_d2 = d2
    return best


@njit(cache=True, inline="always")
def _find_at(q, t_order, t_sorted_x, t_sorted_y, t_hunt, t_candidate,
             cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i):
    r = t_order[q]
    best = _finder(t_sorted_x[q], t_sorted_y[q], t_hunt[r], cell_start, order,
                   p_sorted_x, p_sorted_y, hunt_f, hunt_i)
    t_candidate[r] = best
    if best >= 0:
        # Found: out of the hint query, which runs on this grid after scoring.
        t_sorted_x[q] = math.inf
        t_sorted_y[q] = math.inf


@njit(cache=True, nogil=True)
def find_finders(n_placed, t_order, t_sorted_x, t_sorted_y, t_hunt, t_candidate,
                 cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i):
    """Step 4.2: for each active treasure, the nearest player in range (lowest slot on ties).

    Walks the treasure grid (the active treasures, after respawns), so that
    treasures next to each other in memory look at the same player cells.
    Writes the finder's slot, or -1, to ``t_candidate`` of each active treasure
    (other rows keep -1: :func:`score_discoveries` resets the ones it credits)
    and moves found treasures to infinity in the grid's sorted positions.
    """
    if n_placed >= PARALLEL_MIN_TREASURES:
        _find_finders_parallel(n_placed, t_order, t_sorted_x, t_sorted_y, t_hunt, t_candidate,
                               cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i)
        return
    for q in range(n_placed):
        _find_at(q, t_order, t_sorted_x, t_sorted_y, t_hunt, t_candidate,
                 cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i)


@njit(cache=True, nogil=True, parallel=True)
def _find_finders_parallel(n_placed, t_order, t_sorted_x, t_sorted_y, t_hunt, t_candidate,
                           cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i):
    # No count of hits: a reduction would cost the tick a runtime allocation.
    for q in prange(n_placed):
        _find_at(q, t_order, t_sorted_x, t_sorted_y, t_hunt, t_candidate,
                 cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i)


@njit(cache=True, nogil=True)
def score_discoveries(tick, n_rows, t_hunt, t_state, t_x, t_y, t_value, t_respawn_tick,
                      t_finder_slot, t_finder_gen, t_candidate,
                      p_gen, p_score, p_found, p_score_tick, hunt_i, events, scorers):
    """Step 4.3: credit finders in treasure row order and emit discovery events.

    ``scorers`` (one entry per treasure row) receives the finders' slots, one per
    discovery, for the leaderboard. Returns ``(events written, events dropped
    for lack of room)``; their sum is the number of ``scorers``.
    """
    n_ev = 0
    dropped = 0
    cap = events.shape[0]
    for r in range(n_rows):
        j = t_candidate[r]
        if j < 0:
            continue
        h = t_hunt[r]
        p_score[j] += t_value[r]
        p_found[j] += 1
        p_score_tick[j] = tick
        t_state[r] = T_WAITING
        t_respawn_tick[r] = tick + hunt_i[h, HI_RESPAWN]
        t_finder_slot[r] = j
        t_finder_gen[r] = p_gen[j]
        t_candidate[r] = -1  # ready for the next tick (find_finders writes active rows only)
        scorers[n_ev + dropped] = j
        if n_ev < cap:
            ev = events[n_ev]
            ev.hunt = h
            ev.treasure = r
            ev.slot = j
            ev.gen = p_gen[j]
            ev.value = t_value[r]
            ev.score = p_score[j]
            ev.x = t_x[r]
            ev.y = t_y[r]
            n_ev += 1
        else:
            dropped += 1
    return n_ev, dropped
