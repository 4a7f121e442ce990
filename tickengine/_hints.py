"""Rule step 5: every player's "warmer / colder" hint level.

The only thing a client ever learns about hidden treasures. The players are
walked in player-grid order, one *tile* at a time (a run of adjacent cells of
one grid row, about :data:`TILE_PLAYERS` players long when the hunt is full):
the treasures that can be within the hint radius of anyone in the tile are
gathered once into a small contiguous buffer, then every player of the tile is
tested against that buffer. Neighbours share the work of finding candidates, the inner loop has no
unpredictable branches and runs over contiguous memory on both sides (SIMD),
which costs a quarter of a per-player scan of the treasure grid.

The nearest distance is a minimum, which does not depend on the order in which
candidates are seen, and an extra candidate farther than the radius never
changes it; so the result is exactly the per-player definition of docs/rules.md
whatever the tiling, the treasure grid's cell order or the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._grid import cell_coord, cell_span
from ._state import (
    HF_HINT_R,
    HF_HINT_R2,
    HF_T_INV_X,
    HF_T_INV_Y,
    HI_HINT_LEVELS,
    HI_P_BASE,
    HI_P_NCX,
    HI_T_BASE,
    HI_T_NCX,
    HI_T_NCY,
    SCAN_SLACK,
)

#: Candidate treasures one tile may gather (per thread); a tile with more falls
#: back to a per-player scan of the treasure grid.
TILE_CANDIDATES = 1024
#: Players of a tile processed at once (per-thread scratch of this many distances).
TILE_BLOCK = 64
#: Rows of the per-thread scratch: candidates x, y, then best squared distances.
SCRATCH_ROWS = 3


def hint_scratch_shape(max_threads: int) -> tuple[int, int, int]:
    """Shape of the float64 scratch :func:`update_hints` needs for ``max_threads`` threads."""
    return max_threads, SCRATCH_ROWS, max(TILE_CANDIDATES, TILE_BLOCK)


#: Players a hint tile should hold when its hunt is full (measured best: 40 to 60
#: at the benchmark's density; the vector loop takes TILE_BLOCK at a time).
TILE_PLAYERS = 48


def tile_cells(players_per_cell: float) -> int:
    """Player-grid cells per hint tile, from the players a cell holds in a full hunt; 1 to 64.

    Wider tiles share the gathering of candidates between more players but test
    each player against more candidates (those near the tile's ends).
    """
    return max(1, min(64, round(TILE_PLAYERS / max(players_per_cell, 1e-9))))


@njit(cache=True, inline="always")
def hint_level(d2, r, r2, levels):
    """Hint for squared distance ``d2`` to the nearest treasure (0: none within ``r``).

    Branch-free so that a loop of them vectorises: the clamp runs on floats
    (exact for these small integers) before the conversion, so an infinite
    ``d2`` never reaches it.
    """
    d = math.sqrt(d2)
    level = levels - np.floor((levels * d) / r)  # np.floor stays a float, even for inf
    level = max(min(level, levels), 1.0)
    return 0 if d2 > r2 else int(level)


@njit(cache=True, inline="always")
def _scan_player(px, py, h, t_cells, t_sorted_x, t_sorted_y, hunt_f, hunt_i):
    """Squared distance from ``(px, py)`` to the nearest treasure the grid holds near it."""
    scan = hunt_f[h, HF_HINT_R] * (1.0 + SCAN_SLACK) + SCAN_SLACK
    ncx = hunt_i[h, HI_T_NCX]
    base = hunt_i[h, HI_T_BASE]
    cx0, cx1 = cell_span(px, scan, hunt_f[h, HF_T_INV_X], ncx)
    cy0, cy1 = cell_span(py, scan, hunt_f[h, HF_T_INV_Y], hunt_i[h, HI_T_NCY])
    best = math.inf
    for cy in range(cy0, cy1 + 1):
        row = base + cy * ncx
        for q in range(t_cells[row + cx0], t_cells[row + cx1 + 1]):
            ddx = px - t_sorted_x[q]
            ddy = py - t_sorted_y[q]
            d2 = ddx * ddx + ddy * ddy
            best = d2 if d2 < best else best
    return best


@njit(cache=True, inline="always")
def _gather_candidates(h, xmin, xmax, ymin, ymax, t_cells, t_sorted_x, t_sorted_y,
                       hunt_f, hunt_i, cx, cy):
    """Copy into ``cx, cy`` the treasures within the hint radius of the box; -1 if they overflow.

    The box test is conservative: float subtraction and multiplication round
    monotonically, so a treasure whose distance test passes for some player in
    the box also passes it for the box.
    """
    r2 = hunt_f[h, HF_HINT_R2]
    scan = hunt_f[h, HF_HINT_R] * (1.0 + SCAN_SLACK) + SCAN_SLACK
    ncx = hunt_i[h, HI_T_NCX]
    base = hunt_i[h, HI_T_BASE]
    ix = hunt_f[h, HF_T_INV_X]
    iy = hunt_f[h, HF_T_INV_Y]
    ncy = hunt_i[h, HI_T_NCY]
    c0 = cell_coord(xmin - scan, ix, ncx)
    c1 = cell_coord(xmax + scan, ix, ncx)
    cap = cx.shape[0]
    m = 0
    for row_y in range(cell_coord(ymin - scan, iy, ncy), cell_coord(ymax + scan, iy, ncy) + 1):
        row = base + row_y * ncx
        for q in range(t_cells[row + c0], t_cells[row + c1 + 1]):
            tx = t_sorted_x[q]
            ty = t_sorted_y[q]
            ex = max(max(xmin - tx, tx - xmax), 0.0)
            ey = max(max(ymin - ty, ty - ymax), 0.0)
            if ex * ex + ey * ey <= r2:
                if m == cap:
                    return -1
                cx[m] = tx
                cy[m] = ty
                m += 1
    return m


@njit(cache=True, inline="always")
def _hint_tile(h, k0, k1, p_order, p_sorted_x, p_sorted_y, p_hint, t_cells, t_sorted_x,
               t_sorted_y, hunt_f, hunt_i, cx, cy, best):
    """Hints of the players at grid positions ``[k0, k1)`` (one tile)."""
    xmin = p_sorted_x[k0]
    xmax = xmin
    ymin = p_sorted_y[k0]
    ymax = ymin
    for k in range(k0 + 1, k1):
        xmin = min(xmin, p_sorted_x[k])
        xmax = max(xmax, p_sorted_x[k])
        ymin = min(ymin, p_sorted_y[k])
        ymax = max(ymax, p_sorted_y[k])
    r = hunt_f[h, HF_HINT_R]
    r2 = hunt_f[h, HF_HINT_R2]
    levels = hunt_i[h, HI_HINT_LEVELS]
    m = _gather_candidates(h, xmin, xmax, ymin, ymax, t_cells, t_sorted_x, t_sorted_y,
                           hunt_f, hunt_i, cx, cy)
    if m < 0:  # too many candidates to hold: scan per player
        for k in range(k0, k1):
            d2 = _scan_player(p_sorted_x[k], p_sorted_y[k], h, t_cells, t_sorted_x,
                              t_sorted_y, hunt_f, hunt_i)
            p_hint[p_order[k]] = hint_level(d2, r, r2, levels)
        return
    block = best.shape[0]
    for b0 in range(k0, k1, block):
        nb = min(block, k1 - b0)
        for q in range(nb):
            best[q] = math.inf
        # Candidates outside, players inside: the inner loop is independent per
        # player, so it vectorises without reordering any float operation.
        # Unsigned indices: a signed one makes Numba handle negative indices, which
        # turns the vector loads below into gathers.
        ub0 = np.uint64(b0)
        for c in range(m):
            tx = cx[c]
            ty = cy[c]
            for q in range(nb):
                ddx = p_sorted_x[ub0 + np.uint64(q)] - tx
                ddy = p_sorted_y[ub0 + np.uint64(q)] - ty
                d2 = ddx * ddx + ddy * ddy
                best[q] = d2 if d2 < best[q] else best[q]
        for q in range(nb):
            p_hint[p_order[ub0 + np.uint64(q)]] = hint_level(best[q], r, r2, levels)


@njit(cache=True, nogil=True, parallel=True)
def update_hints(n_chunks, n_hunts, row_base, tile_nx, p_cells, p_order, p_sorted_x,
                 p_sorted_y, p_hint, t_cells, t_sorted_x, t_sorted_y, hunt_f, hunt_i, scratch):
    """Write the hint level of every player placed in the player grid (the active ones).

    ``row_base[h]`` is the first of hunt ``h``'s player-grid rows counted over
    all hunts (``row_base[n_hunts]``: all rows); ``tile_nx[h]`` its tile width
    in cells (:func:`tile_cells`); ``scratch`` has :func:`hint_scratch_shape`.
    The rows are cut into ``n_chunks`` contiguous ranges, one per thread (at most
    ``scratch.shape[0]``), each with its own scratch row.
    """
    n_rows = row_base[n_hunts]
    n_chunks = max(1, min(n_chunks, scratch.shape[0]))
    for chunk in prange(n_chunks):
        cx = scratch[chunk, 0]
        cy = scratch[chunk, 1]
        best = scratch[chunk, 2, :TILE_BLOCK]
        g0 = chunk * n_rows // n_chunks
        g1 = (chunk + 1) * n_rows // n_chunks
        h = 0
        for g in range(g0, g1):
            while g >= row_base[h + 1]:
                h += 1
            ncx = hunt_i[h, HI_P_NCX]
            row = hunt_i[h, HI_P_BASE] + (g - row_base[h]) * ncx
            tile = tile_nx[h]
            for x0 in range(0, ncx, tile):
                k0 = p_cells[row + x0]
                k1 = p_cells[row + min(x0 + tile, ncx)]
                if k1 > k0:
                    _hint_tile(h, k0, k1, p_order, p_sorted_x, p_sorted_y, p_hint, t_cells,
                               t_sorted_x, t_sorted_y, hunt_f, hunt_i, cx, cy, best)
