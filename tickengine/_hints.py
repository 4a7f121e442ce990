"""Rule step 5: every player's "warmer / colder" hint level.

The only thing a client ever learns about hidden treasures. One parallel pass
over the slots against the grid of active treasures.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._grid import cell_span
from ._state import (
    ACTIVE,
    HF_HINT_R,
    HF_HINT_R2,
    HF_T_INV_X,
    HF_T_INV_Y,
    HI_HINT_LEVELS,
    HI_T_BASE,
    HI_T_NCX,
    HI_T_NCY,
    SCAN_SLACK,
)


@njit(cache=True, inline="always")
def hint_level(d2, r, r2, levels):
    """Hint for squared distance ``d2`` to the nearest treasure (0: none within ``r``)."""
    if d2 > r2:
        return 0
    d = math.sqrt(d2)
    level = levels - math.floor((levels * d) / r)
    if level < 1:
        return 1
    if level > levels:
        return levels
    return level


@njit(cache=True, nogil=True, parallel=True)
def update_hints(n_rows, p_state, p_hunt, p_x, p_y, p_hint, cell_start, t_sorted_x, t_sorted_y,
                 hunt_f, hunt_i):
    """Write the hint level of every active player in rows ``[0, n_rows)``.

    Players are read in slot order and treasures through the grid's sorted
    copies of their positions: both sides stream memory, no gathers.
    """
    for i in prange(n_rows):
        if p_state[i] != ACTIVE:
            continue
        h = p_hunt[i]
        px = p_x[i]
        py = p_y[i]
        r = hunt_f[h, HF_HINT_R]
        r2 = hunt_f[h, HF_HINT_R2]
        scan = r * (1.0 + SCAN_SLACK) + SCAN_SLACK
        ncx = hunt_i[h, HI_T_NCX]
        base = hunt_i[h, HI_T_BASE]
        cx0, cx1 = cell_span(px, scan, hunt_f[h, HF_T_INV_X], ncx)
        cy0, cy1 = cell_span(py, scan, hunt_f[h, HF_T_INV_Y], hunt_i[h, HI_T_NCY])
        best = math.inf
        for cy in range(cy0, cy1 + 1):
            row = base + cy * ncx
            # A row's cells are adjacent, so their members are one run of `order`.
            for k in range(cell_start[row + cx0], cell_start[row + cx1 + 1]):
                ddx = px - t_sorted_x[k]
                ddy = py - t_sorted_y[k]
                d2 = ddx * ddx + ddy * ddy
                best = min(best, d2)
        p_hint[i] = hint_level(best, r, r2, hunt_i[h, HI_HINT_LEVELS])
