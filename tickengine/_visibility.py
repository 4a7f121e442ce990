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
keyframes scan ``view_radius``. Every observer reads the same few hundred
players around it, so the call first copies what the rule and the record need
of every placed player into grid order (:class:`VisScratch`): the scan then
reads contiguous memory only. Each run of adjacent cells is scanned twice: a
first loop keeps the players within the scan radius (one distance, on the
grid's own position copies), then the rule runs on those alone and writes each
one's record, counted only if listed. Neither loop branches on a player's
outcome: about a third of a run passes the first test, in no order a branch
predictor could learn, so a branch there would be mispredicted at every few
players; a record is stored always and the count moves on only if it is listed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ._grid import PARALLEL_MIN_ROWS, cell_span
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

#: Players a thread takes from one run of cells at a time (its ``picked`` row).
PICK_BLOCK = 512
#: Bits of :attr:`VisScratch.fresh`: the player moved (changed) this tick, joined this tick.
FRESH_CHANGED = 1
FRESH_JOINED = 2


class VisScratch(NamedTuple):
    """What :func:`compute_visibility` copies of the placed players into grid order (index
    ``k`` of the grid's ``order``), and its per-thread scratch; sized once per World."""

    x_prev: np.ndarray  # float64, world units: the previous position
    y_prev: np.ndarray
    head: np.ndarray  # uint64: a record's first 8 bytes, flags clear (slot | gen << 32)
    xy: np.ndarray  # uint64: a record's last 8 bytes (x, y as float32)
    fresh: np.ndarray  # uint8: FRESH_CHANGED | FRESH_JOINED
    picked: np.ndarray  # int32, threads x PICK_BLOCK: grid indices within the scan radius
    chunk_len: np.ndarray  # int64 per thread: records its share holds (-1: full)


def vis_scratch(players: int, threads: int) -> VisScratch:
    """A :class:`VisScratch` for ``players`` slots and up to ``threads`` threads."""
    return VisScratch(np.zeros(players), np.zeros(players), np.zeros(players, np.uint64),
                      np.zeros(players, np.uint64), np.zeros(players, np.uint8),
                      np.zeros((threads, PICK_BLOCK), np.int32), np.zeros(threads, np.int64))


@njit(cache=True, inline="always")
def _copy_row(k, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
              p_sorted_x, p_sorted_y, x_prev, y_prev, head, xy32, fresh):
    j = order[k]
    x_prev[k] = p_x_prev[j]
    y_prev[k] = p_y_prev[j]
    head[k] = np.uint64(j) | (np.uint64(p_gen[j] & 0xFFFF) << np.uint64(32))
    xy32[2 * k] = np.float32(p_sorted_x[k])
    xy32[2 * k + 1] = np.float32(p_sorted_y[k])
    fresh[k] = ((FRESH_CHANGED if p_changed_tick[j] == tick else 0)
                | (FRESH_JOINED if p_joined_tick[j] == tick else 0))


@njit(cache=True, nogil=True)
def _copy_rows(n, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
               p_sorted_x, p_sorted_y, x_prev, y_prev, head, xy, fresh):
    xy32 = xy.view(np.float32)
    for k in range(n):
        _copy_row(k, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                  p_sorted_x, p_sorted_y, x_prev, y_prev, head, xy32, fresh)


@njit(cache=True, nogil=True, parallel=True)
def _copy_rows_parallel(n, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick,
                        p_joined_tick, p_sorted_x, p_sorted_y, x_prev, y_prev, head, xy, fresh):
    xy32 = xy.view(np.float32)
    for k in prange(n):
        _copy_row(k, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                  p_sorted_x, p_sorted_y, x_prev, y_prev, head, xy32, fresh)


@njit(cache=True, inline="always")
def _scan(s, keyframe, tick, p_state, p_hunt, p_x, p_y, p_x_prev, p_y_prev, p_joined_tick,
          cell_start, p_sorted_x, p_sorted_y, g, picked, hunt_f, hunt_i, out_words, pos, end,
          write):
    """Records of observer ``s``: their count, stored from record ``pos`` if ``write``.

    Returns -1 (and stores a part only) when writing would reach record ``end``.
    Writes anywhere in records ``pos..end-1``, also past the records it counts.
    """
    if p_state[s] != ACTIVE:
        return 0
    h = p_hunt[s]
    ox = p_x[s]
    oy = p_y[s]
    oxp = p_x_prev[s]
    oyp = p_y_prev[s]
    observer_old = p_joined_tick[s] != tick
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
    me = np.uint64(s)
    low32 = np.uint64(0xFFFFFFFF)
    n = 0
    for cy in range(cy0, cy1 + 1):
        row = base + cy * ncx
        # A row's cells are adjacent, so their members are one run of the grid's order.
        k0 = cell_start[row + cx0]
        k_end = cell_start[row + cx1 + 1]
        while k0 < k_end:
            k1 = min(k0 + PICK_BLOCK, k_end)
            # Unsigned indices below: no negative-index wraparound at every access.
            m = np.uint64(0)
            for k in range(np.uint64(k0), np.uint64(k1)):
                ddx = p_sorted_x[k] - ox
                ddy = p_sorted_y[k] - oy
                picked[m] = k
                m += np.uint64(ddx * ddx + ddy * ddy <= scan2)  # else neither now nor before
            # Room for every picked record: no check per record (the usual case).
            roomy = pos + n + np.int64(m) <= end
            for q in range(m):
                k = np.uint64(picked[q])
                ddx = p_sorted_x[k] - ox
                ddy = p_sorted_y[k] - oy
                now = ddx * ddx + ddy * ddy <= r2
                if keyframe:
                    listed = now
                else:
                    fresh = g.fresh[k]
                    bdx = g.x_prev[k] - oxp
                    bdy = g.y_prev[k] - oyp
                    before = ((bdx * bdx + bdy * bdy <= r2) & observer_old
                              & ((fresh & FRESH_JOINED) == 0))
                    listed = (((fresh & FRESH_CHANGED) != 0) & (now | before)) | (now != before)
                head = g.head[k]
                listed = listed & ((head & low32) != me)
                if write:
                    if not roomy and pos + n >= end:
                        if listed:
                            return -1
                        continue
                    w = np.uint64(2 * (pos + n))
                    out_words[w] = head | (np.uint64(now) << np.uint64(48))
                    out_words[w + np.uint64(1)] = g.xy[k]
                n += listed
            k0 = k1
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
def _two_passes(n_chunks, n_obs, observers, keyframe, tick, p_state, p_hunt, p_x, p_y,
                p_x_prev, p_y_prev, p_joined_tick, cell_start, p_sorted_x, p_sorted_y,
                hunt_f, hunt_i, offsets, truncated, out_words, g):
    """Count every observer's records, decide who fits (in the rotated order of
    :func:`cut_start`), then write each observer's records in observer order."""
    cap = out_words.shape[0] // 2
    picked_rows = g.picked
    for c in prange(n_chunks):
        for o in range(c * n_obs // n_chunks, (c + 1) * n_obs // n_chunks):
            offsets[o + 1] = _scan(observers[o], keyframe[o] != 0, tick, p_state, p_hunt,
                                   p_x, p_y, p_x_prev, p_y_prev, p_joined_tick, cell_start,
                                   p_sorted_x, p_sorted_y, g, picked_rows[c], hunt_f, hunt_i,
                                   out_words, 0, 0, False)
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
    for c in prange(n_chunks):
        for o in range(c * n_obs // n_chunks, (c + 1) * n_obs // n_chunks):
            if offsets[o + 1] > offsets[o]:
                _scan(observers[o], keyframe[o] != 0, tick, p_state, p_hunt, p_x, p_y,
                      p_x_prev, p_y_prev, p_joined_tick, cell_start, p_sorted_x, p_sorted_y,
                      g, picked_rows[c], hunt_f, hunt_i, out_words, offsets[o], offsets[o + 1],
                      True)
    return dropped


@njit(cache=True, nogil=True, parallel=True)
def compute_visibility(n_chunks, n_obs, observers, keyframe, tick, p_state, p_gen, p_hunt,
                       p_x, p_y, p_x_prev, p_y_prev, p_changed_tick, p_joined_tick,
                       cell_start, order, p_sorted_x, p_sorted_y, hunt_f, hunt_i,
                       offsets, truncated, out_words, scratch):
    """Fill ``out_words`` (``VISIBLE_DTYPE`` records viewed as ``uint64``, two words a
    record) with the records of ``observers[:n_obs]``.

    ``keyframe[o]`` nonzero asks for everything in view instead of the diff.
    Records of observer ``o`` end up in records ``offsets[o]:offsets[o + 1]``. An
    observer whose records would not fit gets none and ``truncated[o] = 1``.
    Returns the number of records that did not fit. ``scratch`` is the World's
    :class:`VisScratch`; ``n_chunks`` (threads) is capped by its rows.
    """
    g = scratch
    n_placed = cell_start[cell_start.shape[0] - 1]
    # (Arrays, not the tuple: Numba 0.68 loses writes made through a tuple's field in a
    # parallel loop.)
    if n_placed >= PARALLEL_MIN_ROWS:
        _copy_rows_parallel(n_placed, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick,
                            p_joined_tick, p_sorted_x, p_sorted_y, g.x_prev, g.y_prev, g.head,
                            g.xy, g.fresh)
    else:
        _copy_rows(n_placed, tick, order, p_gen, p_x_prev, p_y_prev, p_changed_tick,
                   p_joined_tick, p_sorted_x, p_sorted_y, g.x_prev, g.y_prev, g.head, g.xy,
                   g.fresh)
    cap = out_words.shape[0] // 2
    offsets[0] = 0
    chunk_len = g.chunk_len
    picked_rows = g.picked
    n_chunks = max(1, min(n_chunks, n_obs, chunk_len.shape[0], picked_rows.shape[0]))
    for c in prange(n_chunks):
        o0 = c * n_obs // n_chunks
        o1 = (c + 1) * n_obs // n_chunks
        start = c * cap // n_chunks
        end = (c + 1) * cap // n_chunks
        pos = start
        picked = picked_rows[c]
        for o in range(o0, o1):
            count = _scan(observers[o], keyframe[o] != 0, tick, p_state, p_hunt, p_x, p_y,
                          p_x_prev, p_y_prev, p_joined_tick, cell_start, p_sorted_x,
                          p_sorted_y, g, picked, hunt_f, hunt_i, out_words, pos, end, True)
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
    return _two_passes(n_chunks, n_obs, observers, keyframe, tick, p_state, p_hunt, p_x, p_y,
                       p_x_prev, p_y_prev, p_joined_tick, cell_start, p_sorted_x, p_sorted_y,
                       hunt_f, hunt_i, offsets, truncated, out_words, g)
