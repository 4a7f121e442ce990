"""Rule step 6: each hunt's top players, and whether the board changed.

Scores only grow while a player is in play, so this tick's top K of a hunt
can only hold last tick's top K and the players who scored this tick: anyone
else was already ranked below K players who have lost nothing since. So a tick
ranks just those few candidates, unless a member of last tick's board left (its
place may go to anyone): then, and after a restore, one serial pass over the
slots ranks every hunt at once, exactly as the rule reads.
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


@njit(cache=True, inline="always")
def _offer(j, p_hunt, p_score, p_score_tick, hunt_i, new_slot, new_key, new_len, check_duplicate):
    """Insert player ``j`` (score > 0, in play) into its hunt's sorted top list if it ranks."""
    s = p_score[j]
    h = p_hunt[j]
    size = hunt_i[h, HI_LB_SIZE]
    m = new_len[h]
    st = p_score_tick[j]
    if m == size and not ranks_before(
        s, st, j, new_key[h, m - 1, 0], new_key[h, m - 1, 1], new_slot[h, m - 1]
    ):
        return
    if check_duplicate:
        for q in range(m):
            if new_slot[h, q] == j:
                return
    pos = m if m < size else size - 1
    while pos > 0 and ranks_before(
        s, st, j, new_key[h, pos - 1, 0], new_key[h, pos - 1, 1], new_slot[h, pos - 1]
    ):
        new_slot[h, pos] = new_slot[h, pos - 1]
        new_key[h, pos, 0] = new_key[h, pos - 1, 0]
        new_key[h, pos, 1] = new_key[h, pos - 1, 1]
        pos -= 1
    new_slot[h, pos] = j
    new_key[h, pos, 0] = s
    new_key[h, pos, 1] = st
    if m < size:
        new_len[h] = m + 1


@njit(cache=True, nogil=True)
def rank_hunts(n_rows, n_hunts, full, scorers, n_scorers, p_state, p_hunt, p_gen, p_score,
               p_score_tick, hunt_i, new_slot, new_key, new_len,
               board_slot, board_gen, board_score, board_len, changed_hunts):
    """Recompute every board; returns how many hunts' boards changed.

    ``scorers[:n_scorers]`` are the slots credited this tick (repeats allowed).
    The boards (``board_*``) must be last tick's, unless ``full`` is true (first
    tick, after a restore): then every slot is ranked. ``new_slot``,
    ``new_key`` (score, score tick) and ``new_len`` are per-hunt scratch rows;
    ``changed_hunts`` receives the changed hunt indices in ascending order.
    """
    for h in range(n_hunts):
        new_len[h] = 0
        for q in range(board_len[h]):
            j = board_slot[h, q]
            if p_state[j] != ACTIVE or p_gen[j] != board_gen[h, q]:
                full = True  # a board member left: anyone may take its place
    if full:
        for j in range(n_rows):
            if p_score[j] > 0 and p_state[j] == ACTIVE:
                _offer(j, p_hunt, p_score, p_score_tick, hunt_i, new_slot, new_key, new_len, False)
    else:
        for h in range(n_hunts):
            for q in range(board_len[h]):
                _offer(board_slot[h, q], p_hunt, p_score, p_score_tick, hunt_i,
                       new_slot, new_key, new_len, False)
        for k in range(n_scorers):
            j = scorers[k]
            if p_score[j] > 0 and p_state[j] == ACTIVE:
                _offer(j, p_hunt, p_score, p_score_tick, hunt_i, new_slot, new_key, new_len, True)
    n_changed = 0
    for h in range(n_hunts):
        m = new_len[h]
        differs = m != board_len[h]
        if not differs:
            for q in range(m):
                if new_slot[h, q] != board_slot[h, q] or new_key[h, q, 0] != board_score[h, q]:
                    differs = True
                    break
        if not differs:
            continue
        for q in range(m):
            board_slot[h, q] = new_slot[h, q]
            board_gen[h, q] = p_gen[new_slot[h, q]]
            board_score[h, q] = new_key[h, q, 0]
        for q in range(m, board_len[h]):
            board_slot[h, q] = -1
            board_gen[h, q] = 0
            board_score[h, q] = 0
        board_len[h] = m
        changed_hunts[n_changed] = h
        n_changed += 1
    return n_changed
