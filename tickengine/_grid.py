"""Uniform spatial grids rebuilt every tick by a counting sort.

All hunts share one flat cell array: hunt ``h`` owns cells
``[base[h], base[h] + ncx[h] * ncy[h])``, so one sort serves every hunt and the
members of one hunt lie together in ``order``. Within a cell, members are in
ascending row order, which keeps every query deterministic.

A cell's coordinates are ``int(x * inv_x)`` clamped to ``[0, ncx - 1]`` with
``inv_x = ncx / width``. That map is monotonic in ``x``, so the cells spanning
``[x - r, x + r]`` always hold every point whose distance test passes.
"""

from __future__ import annotations

import math

from numba import njit, prange

#: Largest cell count a hunt's grid may have (memory and per-tick clearing cost).
MAX_CELLS_PER_HUNT = 4_000_000
#: Below this many rows a pass runs on one thread: starting a parallel region
#: costs 10-20 us on two threads, more than the pass itself.
PARALLEL_MIN_ROWS = 16_384
#: From this many rows the counting sort itself runs on all threads
#: (:func:`place_rows_parallel`); below, the serial sort is as fast.
PARALLEL_SORT_MIN_ROWS = 200_000
#: Most threads :func:`place_rows_parallel` splits the rows between (each needs a
#: row of per-cell counters).
MAX_SORT_CHUNKS = 8


def grid_shape(width: float, height: float, target_cell: float, max_cells: int) -> tuple[int, int]:
    """Cells along x and y for cells about ``target_cell`` world units wide.

    The count is capped at ``max_cells`` (cells grow instead), so a tiny radius
    on a huge map cannot blow up memory.
    """
    max_cells = max(1, min(max_cells, MAX_CELLS_PER_HUNT))
    cell = max(target_cell, math.sqrt(width * height / max_cells))
    ncx = max(1, min(int(width / cell), max_cells))
    ncy = max(1, min(int(height / cell), max_cells // ncx))
    return ncx, ncy


@njit(cache=True, inline="always")
def cell_coord(v, inv, n):
    """Cell index along one axis of coordinate ``v`` (world units)."""
    c = int(v * inv)
    if c < 0:
        return 0
    if c >= n:
        return n - 1
    return c


@njit(cache=True, inline="always")
def row_cell_of(px, py, h, hunt_f, hunt_i, col_inv_x, col_inv_y, col_ncx, col_ncy, col_base):
    """The grid cell of a point of hunt ``h`` (geometry read from the hunt tables' columns)."""
    ncx = hunt_i[h, col_ncx]
    cx = cell_coord(px, hunt_f[h, col_inv_x], ncx)
    cy = cell_coord(py, hunt_f[h, col_inv_y], hunt_i[h, col_ncy])
    return hunt_i[h, col_base] + cy * ncx + cx


@njit(cache=True, inline="always")
def _assign_row(i, state, live_state, hunt, x, y, hunt_f, hunt_i,
                col_inv_x, col_inv_y, col_ncx, col_ncy, col_base, row_cell):
    if state[i] == live_state:
        row_cell[i] = row_cell_of(x[i], y[i], hunt[i], hunt_f, hunt_i,
                                  col_inv_x, col_inv_y, col_ncx, col_ncy, col_base)
    else:
        row_cell[i] = -1


@njit(cache=True, nogil=True)
def assign_cells(n_rows, state, live_state, hunt, x, y, hunt_f, hunt_i,
                 col_inv_x, col_inv_y, col_ncx, col_ncy, col_base, row_cell):
    """Set ``row_cell[i]`` for rows ``i < n_rows``: its cell if ``state[i] == live_state``, else -1.

    The grid's geometry per hunt is read from columns of the hunt tables
    (``hunt_f[h, col_inv_x]`` and so on), so one kernel serves both grids.
    """
    for i in range(n_rows):
        _assign_row(i, state, live_state, hunt, x, y, hunt_f, hunt_i,
                    col_inv_x, col_inv_y, col_ncx, col_ncy, col_base, row_cell)


@njit(cache=True, nogil=True, parallel=True)
def assign_cells_parallel(n_rows, state, live_state, hunt, x, y, hunt_f, hunt_i,
                          col_inv_x, col_inv_y, col_ncx, col_ncy, col_base, row_cell):
    """:func:`assign_cells` on all threads (for :data:`PARALLEL_MIN_ROWS` rows and more)."""
    for i in prange(n_rows):
        _assign_row(i, state, live_state, hunt, x, y, hunt_f, hunt_i,
                    col_inv_x, col_inv_y, col_ncx, col_ncy, col_base, row_cell)


@njit(cache=True, nogil=True)
def build_grid(n_rows, state, live_state, hunt, x, y, hunt_f, hunt_i,
               col_inv_x, col_inv_y, col_ncx, col_ncy, col_base,
               row_cell, cell_start, cursor, order, sorted_x, sorted_y):
    """Counting sort of the rows ``i < n_rows`` with ``state[i] == live_state`` into cells.

    :func:`assign_cells` then :func:`place_rows`; returns the number of rows placed.
    """
    assign_cells(n_rows, state, live_state, hunt, x, y, hunt_f, hunt_i,
                 col_inv_x, col_inv_y, col_ncx, col_ncy, col_base, row_cell)
    return place_rows(n_rows, row_cell, x, y, cell_start, cursor, order, sorted_x, sorted_y)


@njit(cache=True, nogil=True)
def place_rows(n_rows, row_cell, x, y, cell_start, cursor, order, sorted_x, sorted_y):
    """Counting sort of the rows ``i < n_rows`` into their cells ``row_cell[i]`` (-1: none).

    Writes ``cell_start`` (length cells + 1: the members of cell ``c`` are
    ``order[cell_start[c]:cell_start[c + 1]]``, in ascending row order) and the
    members' positions in that same order (``sorted_x[k] == x[order[k]]``), so
    that a query reads contiguous memory instead of gathering. Returns the
    number of rows placed.
    """
    n_cells = cell_start.shape[0] - 1
    for c in range(n_cells + 1):
        cell_start[c] = 0
    for i in range(n_rows):
        c = row_cell[i]
        if c >= 0:
            cell_start[c + 1] += 1
    for c in range(n_cells):
        cell_start[c + 1] += cell_start[c]
        cursor[c] = cell_start[c]
    for i in range(n_rows):
        c = row_cell[i]
        if c >= 0:
            order[cursor[c]] = i
            cursor[c] += 1
    n_placed = cell_start[n_cells]
    if n_placed >= PARALLEL_MIN_ROWS:
        gather(n_placed, order, x, y, sorted_x, sorted_y)
    else:
        for k in range(n_placed):
            sorted_x[k] = x[order[k]]
            sorted_y[k] = y[order[k]]
    return n_placed


@njit(cache=True, nogil=True, parallel=True)
def place_rows_parallel(n_chunks, n_rows, row_cell, x, y, cell_start, counts, order,
                        sorted_x, sorted_y):
    """:func:`place_rows` with the rows cut into ``n_chunks`` contiguous ranges, one per thread.

    Each chunk counts its rows per cell in its own row of ``counts`` (int32,
    ``n_chunks`` x cells); a serial prefix sum over (cell, chunk) gives every
    chunk its own cursor per cell, after those of lower chunks, so each cell
    still lists its rows in ascending order: the output is exactly
    :func:`place_rows`'s.
    """
    n_cells = cell_start.shape[0] - 1
    for ch in prange(n_chunks):
        own = counts[ch]
        for c in range(n_cells):
            own[c] = 0
        for i in range(ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks):
            c = row_cell[i]
            if c >= 0:
                own[c] += 1
    run = 0
    for c in range(n_cells):
        cell_start[c] = run
        for ch in range(n_chunks):
            count = counts[ch, c]
            counts[ch, c] = run
            run += count
    cell_start[n_cells] = run
    for ch in prange(n_chunks):
        cursor = counts[ch]
        for i in range(ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks):
            c = row_cell[i]
            if c >= 0:
                k = cursor[c]
                order[k] = i
                cursor[c] = k + 1
    gather(run, order, x, y, sorted_x, sorted_y)
    return run


@njit(cache=True, nogil=True, parallel=True)
def gather(n, order, x, y, sorted_x, sorted_y):
    """``sorted_x[k] = x[order[k]]`` for ``k < n`` (and likewise y), on all threads."""
    for k in prange(n):
        i = order[k]
        sorted_x[k] = x[i]
        sorted_y[k] = y[i]


@njit(cache=True, inline="always")
def cell_span(v, r, inv, n):
    """First and last cell along one axis that a disc of radius ``r`` at ``v`` touches."""
    return cell_coord(v - r, inv, n), cell_coord(v + r, inv, n)
