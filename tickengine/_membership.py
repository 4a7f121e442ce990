"""Rule step 1: queued joins and leaves take effect, in request order.

Serial on purpose: joins draw spawn points from the hunt's RNG stream, and the
order of draws is part of the contract. The queue holds at most one join and
one leave per slot, so it is short next to the player table.
"""

from __future__ import annotations

from numba import njit

from ._dtypes import JOINED, LEFT
from ._rng import uniform
from ._state import ACTIVE, FREE, HF_HEIGHT, HF_WIDTH, OP_JOIN, PENDING


@njit(cache=True, nogil=True)
def apply_membership(
    tick, n_ops, op_kind, op_slot,
    state, gen, hunt, leaving, x, y, x_prev, y_prev, dx, dy,
    score, found, last_seq, hint, score_tick, changed_tick, joined_tick,
    free, free_top, hunt_f, hunt_rng, hunt_players, events,
):
    """Apply ``n_ops`` queued requests for tick ``tick``.

    Writes joined/left records to ``events`` (a ``MEMBERSHIP_DTYPE`` buffer).
    Returns ``(events written, events dropped for lack of room)``.
    """
    n_ev = 0
    dropped = 0
    cap = events.shape[0]
    for k in range(n_ops):
        s = op_slot[k]
        h = hunt[s]
        if op_kind[k] == OP_JOIN:
            if state[s] != PENDING:
                continue
            px = uniform(hunt_rng, h) * hunt_f[h, HF_WIDTH]
            py = uniform(hunt_rng, h) * hunt_f[h, HF_HEIGHT]
            state[s] = ACTIVE
            x[s] = px
            y[s] = py
            x_prev[s] = px
            y_prev[s] = py
            dx[s] = 0.0
            dy[s] = 0.0
            score[s] = 0
            found[s] = 0
            last_seq[s] = 0
            hint[s] = 0
            score_tick[s] = tick
            changed_tick[s] = tick
            joined_tick[s] = tick
            kind = JOINED
        else:
            if state[s] == FREE:
                continue
            if state[s] == PENDING:
                # Never reached through World (a join always precedes its leave in
                # the queue), kept so a hand-built queue cannot leak a slot.
                x[s] = 0.0
                y[s] = 0.0
            state[s] = FREE
            leaving[s] = False
            hunt_players[h] -= 1
            kind = LEFT
        if n_ev < cap:
            ev = events[n_ev]
            ev.kind = kind
            ev.hunt = h
            ev.slot = s
            ev.gen = gen[s]
            ev.x = x[s]
            ev.y = y[s]
            n_ev += 1
        else:
            dropped += 1
        if kind == LEFT:
            # The event carries the generation the player had; the slot moves on.
            gen[s] += 1
            free[free_top[0]] = s
            free_top[0] += 1
    return n_ev, dropped
