"""Rule steps 2 and 3: the kept moves become directions, then everyone moves.

One parallel pass over the slots: each iteration touches only its own row, so
the result does not depend on the number of threads. The same pass computes
each player's new player-grid cell while its position is at hand, which the
grid's counting sort then only reads.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._grid import row_cell_of
from ._state import (
    ACTIVE,
    HF_HEIGHT,
    HF_P_INV_X,
    HF_P_INV_Y,
    HF_STEP,
    HF_WIDTH,
    HI_P_BASE,
    HI_P_NCX,
    HI_P_NCY,
)


@njit(cache=True, inline="always")
def sanitise(mx, my):
    """A direction with finite components and magnitude at most 1."""
    if not (math.isfinite(mx) and math.isfinite(my)):
        return 0.0, 0.0
    m2 = mx * mx + my * my
    if m2 > 1.0:
        m = math.sqrt(m2)
        return mx / m, my / m
    return mx, my


@njit(cache=True, nogil=True, parallel=True)
def apply_inputs_and_move(
    tick, n_rows, state, gen, hunt, x, y, x_prev, y_prev, dx, dy, last_seq, changed_tick,
    move_seq, move_gen, move_dx, move_dy, hunt_f, hunt_i, row_cell, counts,
):
    """Consume the kept moves of rows ``[0, n_rows)`` and advance every active player.

    Writes each row's player-grid cell to ``row_cell`` (-1 for rows not in play),
    and ``counts[0]``, ``counts[1]``: moves applied, moves dropped as stale (a
    kept move is stale when its player left since it was kept or it is no newer
    than the last applied).
    """
    applied = 0
    stale = 0
    for i in prange(n_rows):
        seq = move_seq[i]
        if seq > 0:
            move_seq[i] = 0
            if state[i] == ACTIVE and move_gen[i] == gen[i] and seq > last_seq[i]:
                ndx, ndy = sanitise(move_dx[i], move_dy[i])
                dx[i] = ndx
                dy[i] = ndy
                last_seq[i] = seq
                applied += 1
            else:
                stale += 1
        if state[i] != ACTIVE:
            row_cell[i] = -1
            continue
        h = hunt[i]
        step = hunt_f[h, HF_STEP]
        px = x[i]
        py = y[i]
        x_prev[i] = px
        y_prev[i] = py
        nx = min(max(px + dx[i] * step, 0.0), hunt_f[h, HF_WIDTH])
        ny = min(max(py + dy[i] * step, 0.0), hunt_f[h, HF_HEIGHT])
        if nx != px or ny != py:
            x[i] = nx
            y[i] = ny
            changed_tick[i] = tick
        row_cell[i] = row_cell_of(nx, ny, h, hunt_f, hunt_i, HF_P_INV_X, HF_P_INV_Y,
                                  HI_P_NCX, HI_P_NCY, HI_P_BASE)
    counts[0] = applied
    counts[1] = stale
