"""The parallel counting sort against the serial one and against NumPy's stable sort.

Whatever the number of chunks, every cell must list its rows in ascending order
(queries rely on it for determinism), rows with cell -1 stay out, and the
sorted positions must be the rows' positions.
"""

from __future__ import annotations

import numpy as np
import pytest

from tickengine._grid import place_rows, place_rows_parallel


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_chunks", [1, 2, 3, 4])
def test_parallel_sort_equals_serial_and_stable_sort(seed: int, n_chunks: int) -> None:
    rng = np.random.default_rng(seed)
    n_cells = int(rng.integers(1, 400))
    n_rows = int(rng.integers(0, 3000))
    row_cell = rng.integers(-1, n_cells, n_rows + 5).astype(np.int64)
    x = rng.random(n_rows + 5)
    y = rng.random(n_rows + 5)

    def outputs():
        return (np.zeros(n_cells + 1, np.int64), np.full(n_rows + 5, -9, np.int32),
                np.zeros(n_rows + 5), np.zeros(n_rows + 5))

    s_start, s_order, s_x, s_y = outputs()
    n_serial = place_rows(n_rows, row_cell, x, y, s_start, np.zeros(n_cells, np.int64),
                          s_order, s_x, s_y)
    p_start, p_order, p_x, p_y = outputs()
    counts = np.full((4, n_cells), 77, np.int32)
    n_par = place_rows_parallel(n_chunks, n_rows, row_cell, x, y, p_start, counts,
                                p_order, p_x, p_y)
    placed = np.flatnonzero(row_cell[:n_rows] >= 0)
    expected = placed[np.argsort(row_cell[placed], kind="stable")]
    assert n_par == n_serial == placed.shape[0]
    assert np.array_equal(p_start, s_start)
    assert np.array_equal(p_order[:n_par], expected)
    assert np.array_equal(s_order[:n_serial], expected)
    assert np.array_equal(p_x[:n_par], x[expected]) and np.array_equal(p_y[:n_par], y[expected])
    assert np.array_equal(np.diff(p_start), np.bincount(row_cell[placed], minlength=n_cells))
