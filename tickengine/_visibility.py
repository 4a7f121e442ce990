"""Visibility (area of interest): who each observer sees, as CSR slices of one buffer.

Two parallel passes over the observers run the same scan: the first counts
records, a serial prefix sum turns counts into offsets, the second writes each
observer's records into its own slice. No thread writes outside its slice and
nothing is allocated, whatever the number of observers.

The diff rule (docs/rules.md, "Visibility") needs the previous positions too:
a player that left an observer's view is at most ``view_radius + 2 * step``
away now, so diffs scan that far and keyframes scan ``view_radius``.
"""

from __future__ import annotations

from numba import njit, prange

from ._dtypes import VIS_IN_VIEW
from ._grid import cell_span
from ._state import (
    ACTIVE,
    HF_P_INV_X,
    HF_P_INV_Y,
    HF_STEP,
    HF_VIEW_R,
    HF_VIEW_R2,
    HI_P_BASE,
    HI_P_NCX,
    HI_P_NCY,
    SCAN_SLACK,
)


@njit(cache=True, inline="always")
def _scan(s, keyframe, tick, p_state, p_gen, p_hunt, p_x, p_y, p_x_prev, p_y_prev,
          p_changed_tick, p_joined_tick, cell_start, order, p_sorted_x, p_sorted_y,
          hunt_f, hunt_i, out, pos, write):
    """Count (and if ``write``, store from ``out[pos]``) the records of observer ``s``."""
    if p_state[s] != ACTIVE:
        return 0
    h = p_hunt[s]
    ox = p_x[s]
    oy = p_y[s]
    oxp = p_x_prev[s]
    oyp = p_y_prev[s]
    observer_new = p_joined_tick[s] == tick
    r2 = hunt_f[h, HF_VIEW_R2]
    scan = hunt_f[h, HF_VIEW_R]
    if not keyframe:
        scan += 2.0 * hunt_f[h, HF_STEP]
    scan = scan * (1.0 + SCAN_SLACK) + SCAN_SLACK
    ncx = hunt_i[h, HI_P_NCX]
    base = hunt_i[h, HI_P_BASE]
    cx0, cx1 = cell_span(ox, scan, hunt_f[h, HF_P_INV_X], ncx)
    cy0, cy1 = cell_span(oy, scan, hunt_f[h, HF_P_INV_Y], hunt_i[h, HI_P_NCY])
    n = 0
    for cy in range(cy0, cy1 + 1):
        row = base + cy * ncx
        # A row's cells are adjacent, so their members are one run of `order`.
        for k in range(cell_start[row + cx0], cell_start[row + cx1 + 1]):
            j = order[k]
            if j == s:
                continue
            ddx = p_x[j] - ox
            ddy = p_y[j] - oy
            now = ddx * ddx + ddy * ddy <= r2
            if keyframe:
                listed = now
            else:
                before = False
                if not observer_new and p_joined_tick[j] != tick:
                    bdx = p_x_prev[j] - oxp
                    bdy = p_y_prev[j] - oyp
                    before = bdx * bdx + bdy * bdy <= r2
                listed = (p_changed_tick[j] == tick and (now or before)) or now != before
            if listed:
                if write:
                    rec = out[pos + n]
                    rec.slot = j
                    rec.gen = p_gen[j] & 0xFFFF
                    rec.flags = VIS_IN_VIEW if now else 0
                    rec.x = p_x[j]
                    rec.y = p_y[j]
                n += 1
    return n


@njit(cache=True, nogil=True, parallel=True)
def compute_visibility(n_obs, observers, keyframe, tick, p_state, p_gen, p_hunt, p_x, p_y,
                       p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                       cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                       offsets, truncated, out):
    """Fill ``out`` with the records of ``observers[:n_obs]``.

    ``keyframe[o]`` nonzero asks for everything in view instead of the diff.
    Records of observer ``o`` end up in ``out[offsets[o]:offsets[o + 1]]``. An
    observer whose records would not fit in ``out`` gets none and
    ``truncated[o] = 1``. Returns the number of records that did not fit.
    """
    for o in prange(n_obs):
        offsets[o + 1] = _scan(observers[o], keyframe[o] != 0, tick, p_state, p_gen, p_hunt,
                               p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                               cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                               out, 0, False)
    cap = out.shape[0]
    offsets[0] = 0
    dropped = 0
    for o in range(n_obs):
        count = offsets[o + 1]
        if offsets[o] + count > cap:
            truncated[o] = 1
            dropped += count
            count = 0
        else:
            truncated[o] = 0
        offsets[o + 1] = offsets[o] + count
    for o in prange(n_obs):
        if offsets[o + 1] > offsets[o]:
            _scan(observers[o], keyframe[o] != 0, tick, p_state, p_gen, p_hunt,
                  p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                  cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                  out, offsets[o], True)
    return dropped
