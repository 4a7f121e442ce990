"""Rule step 6: each hunt's top players, and whether the board changed.

One serial pass over the slots in slot order ranks every hunt at once: the
reads are sequential, and almost every player fails the first test (no score,
or not better than the current last place), so the pass costs little more than
reading the score column.
"""

from __future__ import annotations

from numba import njit

from ._state import ACTIVE, HI_LB_SIZE


@njit(cache=True, inline="always")
def ranks_before(score_a, tick_a, slot_a, score_b, tick_b, slot_b):
    """Whether a ranks above b: higher score, then earlier score tick, then lower slot."""
    if score_a != score_b:
        return score_a > score_b
    if tick_a != tick_b:
        return tick_a < tick_b
    return slot_a < slot_b


@njit(cache=True, nogil=True)
def rank_hunts(n_rows, n_hunts, p_state, p_hunt, p_gen, p_score, p_score_tick, hunt_i,
               new_slot, new_score, new_tick, new_len,
               board_slot, board_gen, board_score, board_len, changed_hunts):
    """Recompute every board; returns how many hunts' boards changed.

    ``new_*`` are per-hunt scratch rows; ``changed_hunts`` receives the changed
    hunt indices in ascending order.
    """
    for h in range(n_hunts):
        new_len[h] = 0
    for j in range(n_rows):
        s = p_score[j]
        if s <= 0 or p_state[j] != ACTIVE:
            continue
        h = p_hunt[j]
        size = hunt_i[h, HI_LB_SIZE]
        m = new_len[h]
        st = p_score_tick[j]
        if m == size and not ranks_before(
            s, st, j, new_score[h, m - 1], new_tick[h, m - 1], new_slot[h, m - 1]
        ):
            continue
        pos = m if m < size else size - 1
        while pos > 0 and ranks_before(
            s, st, j, new_score[h, pos - 1], new_tick[h, pos - 1], new_slot[h, pos - 1]
        ):
            new_slot[h, pos] = new_slot[h, pos - 1]
            new_score[h, pos] = new_score[h, pos - 1]
            new_tick[h, pos] = new_tick[h, pos - 1]
            pos -= 1
        new_slot[h, pos] = j
        new_score[h, pos] = s
        new_tick[h, pos] = st
        if m < size:
            new_len[h] = m + 1
    n_changed = 0
    for h in range(n_hunts):
        m = new_len[h]
        differs = m != board_len[h]
        if not differs:
            for q in range(m):
                if new_slot[h, q] != board_slot[h, q] or new_score[h, q] != board_score[h, q]:
                    differs = True
                    break
        if not differs:
            continue
        for q in range(m):
            board_slot[h, q] = new_slot[h, q]
            board_gen[h, q] = p_gen[new_slot[h, q]]
            board_score[h, q] = new_score[h, q]
        for q in range(m, board_len[h]):
            board_slot[h, q] = -1
            board_gen[h, q] = 0
            board_score[h, q] = 0
        board_len[h] = m
        changed_hunts[n_changed] = h
        n_changed += 1
    return n_changed
