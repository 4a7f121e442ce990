"""Visibility (area of interest): who each observer sees, as CSR slices of one buffer.

One parallel pass: the observers are cut into one contiguous range per thread,
and each thread writes its observers' records, one after another, into its own
share of the output buffer; a serial step then turns the counts into offsets
and slides each share down behind the previous one (a copy of the records
only). If a share fills up, the call starts over with two passes, the first
counting and the second writing, which also decides exactly which observers
do not fit. Nothing is allocated, whatever the number of observers.

The diff rule (docs/rules.md, "Visibility") needs the previous positions too:
a player that left an observer's view is at most ``view_radius + 2 * step``
away now (each of the two moved at most ``step``), so diffs scan that far and
keyframes scan ``view_radius``. Candidates are first tested against that
radius on the grid's contiguous copies of the positions; only the few that
pass read the player columns.
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
          hunt_f, hunt_i, out, pos, end, write):
    """Records of observer ``s``: their count, stored from ``out[pos]`` if ``write``.

    Returns -1 (and stores a part only) when writing would reach ``out[end]``.
    Writes anywhere in ``out[pos:end]``, also past the records it counts.
    """
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
    scan2 = scan * scan
    ncx = hunt_i[h, HI_P_NCX]
    base = hunt_i[h, HI_P_BASE]
    cx0, cx1 = cell_span(ox, scan, hunt_f[h, HF_P_INV_X], ncx)
    cy0, cy1 = cell_span(oy, scan, hunt_f[h, HF_P_INV_Y], hunt_i[h, HI_P_NCY])
    n = 0
    for cy in range(cy0, cy1 + 1):
        row = base + cy * ncx
        # A row's cells are adjacent, so their members are one run of `order`.
        for k in range(cell_start[row + cx0], cell_start[row + cx1 + 1]):
            ddx = p_sorted_x[k] - ox
            ddy = p_sorted_y[k] - oy
            d2 = ddx * ddx + ddy * ddy
            if d2 > scan2:
                continue  # neither in view now nor before
            j = order[k]
            now = d2 <= r2
            # The rule without branches (they would be mispredicted half the time):
            # a record is stored at out[pos + n] always, and counted only if listed.
            if keyframe:
                listed = now
            else:
                bdx = p_x_prev[j] - oxp
                bdy = p_y_prev[j] - oyp
                before = ((bdx * bdx + bdy * bdy <= r2) & (not observer_new)
                          & (p_joined_tick[j] != tick))
                listed = ((p_changed_tick[j] == tick) & (now | before)) | (now != before)
            listed = listed & (j != s)
            if write:
                if pos + n >= end:
                    if listed:
                        return -1
                    continue
                rec = out[pos + n]
                rec.slot = j
                rec.gen = p_gen[j] & 0xFFFF
                rec.flags = VIS_IN_VIEW if now else 0
                rec.x = p_sorted_x[k]
                rec.y = p_sorted_y[k]
            n += listed
    return n


@njit(cache=True, inline="always")
def cut_start(tick, n_obs):
    """The observer the fit decision starts from at ``tick`` (docs/rules.md, "Visibility"):
    ``(tick mod n) * (2654435761 mod n) mod n``, a different one each tick, far from the
    last, so that a full buffer cuts different observers from one tick to the next."""
    if n_obs == 0:
        return 0
    return ((tick % n_obs) * (2654435761 % n_obs)) % n_obs


@njit(cache=True, nogil=True, parallel=True)
def _two_passes(n_obs, observers, keyframe, tick, p_state, p_gen, p_hunt, p_x, p_y,
                p_x_prev, p_y_prev, p_changed_tick, p_joined_tick, cell_start, order,
                p_sorted_x, p_sorted_y, hunt_f, hunt_i, offsets, truncated, out):
    """Count every observer's records, decide who fits (in the rotated order of
    :func:`cut_start`), then write each observer's records in observer order."""
    cap = out.shape[0]
    for o in prange(n_obs):
        offsets[o + 1] = _scan(observers[o], keyframe[o] != 0, tick, p_state, p_gen, p_hunt,
                               p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                               cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                               out, 0, 0, False)
    offsets[0] = 0
    dropped = 0
    room = cap
    start = cut_start(tick, n_obs)
    for k in range(n_obs):
        o = start + k
        if o >= n_obs:
            o -= n_obs
        count = offsets[o + 1]
        if count > room:
            truncated[o] = 1
            dropped += count
            offsets[o + 1] = 0
        else:
            truncated[o] = 0
            room -= count
    for o in range(n_obs):
        offsets[o + 1] += offsets[o]
    for o in prange(n_obs):
        if offsets[o + 1] > offsets[o]:
            _scan(observers[o], keyframe[o] != 0, tick, p_state, p_gen, p_hunt,
                  p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                  cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                  out, offsets[o], offsets[o + 1], True)
    return dropped


@njit(cache=True, nogil=True, parallel=True)
def compute_visibility(n_chunks, n_obs, observers, keyframe, tick, p_state, p_gen, p_hunt,
                       p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                       cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                       offsets, truncated, out, out_words, chunk_len):
    """Fill ``out`` with the records of ``observers[:n_obs]``.

    ``keyframe[o]`` nonzero asks for everything in view instead of the diff.
    Records of observer ``o`` end up in ``out[offsets[o]:offsets[o + 1]]``. An
    observer whose records would not fit in ``out`` gets none and
    ``truncated[o] = 1``. Returns the number of records that did not fit.
    ``out_words`` is ``out`` viewed as ``uint64`` (two words a record), for
    copying; ``chunk_len`` has a slot per chunk (``n_chunks`` at most: one per
    thread).
    """
    cap = out.shape[0]
    offsets[0] = 0
    n_chunks = max(1, min(n_chunks, n_obs, chunk_len.shape[0]))
    for c in prange(n_chunks):
        o0 = c * n_obs // n_chunks
        o1 = (c + 1) * n_obs // n_chunks
        start = c * cap // n_chunks
        end = (c + 1) * cap // n_chunks
        pos = start
        for o in range(o0, o1):
            count = _scan(observers[o], keyframe[o] != 0, tick, p_state, p_gen, p_hunt,
                          p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                          cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                          out, pos, end, True)
            if count < 0:
                pos = -1
                break
            offsets[o + 1] = count
            pos += count
        chunk_len[c] = pos - start if pos >= 0 else -1
    fits = True
    for c in range(n_chunks):
        if chunk_len[c] < 0:
            fits = False
    if fits:
        for o in range(n_obs):
            offsets[o + 1] += offsets[o]
            truncated[o] = 0
        for c in range(1, n_chunks):
            src = 2 * (c * cap // n_chunks)
            dst = 2 * offsets[c * n_obs // n_chunks]
            # dst <= src: a forward copy never overwrites what it has still to read.
            for w in range(2 * chunk_len[c]):
                out_words[dst + w] = out_words[src + w]
        return 0
    return _two_passes(n_obs, observers, keyframe, tick, p_state, p_gen, p_hunt, p_x, p_y,
                       p_x_prev, p_y_prev, p_changed_tick, p_joined_tick, cell_start, order,
                       p_sorted_x, p_sorted_y, hunt_f, hunt_i, offsets, truncated, out)
