"""Preallocated input buffers: the moves kept for the next tick, one row per slot.

"Several moves in one tick: the highest sequence number wins" makes the input a
per-slot register rather than a queue, so storing a move is O(1), needs no
allocation and can never overflow. A server can own two buffers and swap them
(fill one from the sockets while the tick consumes the other).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._errors import StalePlayerError
from ._state import ACTIVE, PENDING, Players

_SLOT_MASK = 0xFFFFFFFF


@njit(cache=True)
def _keep(slot, gen, seq, mdx, mdy, p_state, p_gen, p_leaving, p_last_seq,
          move_seq, move_gen, move_dx, move_dy):
    """The one rule for keeping a move (docs/rules.md, "Between ticks"); True if kept."""
    if slot < 0 or slot >= p_state.shape[0]:
        return False
    st = p_state[slot]
    if ((st != ACTIVE and st != PENDING) or p_gen[slot] != gen or p_leaving[slot]
            or seq <= p_last_seq[slot]):
        return False
    # A move kept under an older generation belongs to a player who left: replace it.
    if move_seq[slot] > 0 and move_gen[slot] == gen and seq <= move_seq[slot]:
        return False
    move_seq[slot] = seq
    move_gen[slot] = gen
    move_dx[slot] = mdx
    move_dy[slot] = mdy
    return True


@njit(cache=True, nogil=True)
def _put_many(ids, seqs, dxs, dys, p_state, p_gen, p_leaving, p_last_seq,
              move_seq, move_gen, move_dx, move_dy):
    kept = 0
    for k in range(ids.shape[0]):
        pid = ids[k]
        if _keep(pid & _SLOT_MASK, pid >> 32, seqs[k], dxs[k], dys[k], p_state, p_gen,
                 p_leaving, p_last_seq, move_seq, move_gen, move_dx, move_dy):
            kept += 1
    return kept


class MoveBuffer:
    """Moves waiting for the next tick, for every slot of one world's players.

    Directions are unitless (magnitude clamped to 1 by the tick); sequence
    numbers are positive integers chosen by the client, increasing.
    """

    def __init__(self, players: Players) -> None:
        cap = players.capacity
        self._players = players
        self.seq = np.zeros(cap, np.int64)
        self.gen = np.zeros(cap, np.uint32)
        self.dx = np.zeros(cap, np.float64)
        self.dy = np.zeros(cap, np.float64)
        #: Moves refused at put time (stale id, or not newer than what is kept/applied).
        self.dropped = 0

    def put(self, player_id: int, seq: int, dx: float, dy: float) -> bool:
        """Keep a move for the next tick. Returns False (and counts it) if it was dropped.

        Dropped: the id is stale or its player is leaving, or ``seq`` is not
        greater than both the player's last applied sequence number and the
        move already kept.
        """
        p = self._players
        if not 0 < seq < 2**63 or player_id < 0 or player_id >= 2**64:
            self.dropped += 1
            return False
        kept = _keep(player_id & _SLOT_MASK, player_id >> 32, seq, float(dx), float(dy),
                     p.state, p.gen, p.leaving, p.last_seq, self.seq, self.gen, self.dx, self.dy)
        if not kept:
            self.dropped += 1
        return kept

    def put_many(self, ids: np.ndarray, seqs: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> int:
        """Keep a batch of moves (int64 ids and seqs, float64 directions); returns how many kept.

        One compiled loop, no allocation: this is the server's ingest path.
        """
        p = self._players
        kept = _put_many(ids, seqs, dx, dy, p.state, p.gen, p.leaving, p.last_seq,
                         self.seq, self.gen, self.dx, self.dy)
        self.dropped += ids.shape[0] - kept
        return kept

    def pending(self) -> int:
        """How many slots have a move kept (O(capacity); for tests and tools)."""
        return int(np.count_nonzero(self.seq))

    def clear(self) -> None:
        self.seq[:] = 0


def check_id(p: Players, player_id: int) -> int:
    """The slot of a live (pending or active) player, or :class:`StalePlayerError`."""
    if not isinstance(player_id, int | np.integer):
        raise StalePlayerError(f"player id must be an integer, got {type(player_id).__name__}")
    player_id = int(player_id)
    slot = player_id & _SLOT_MASK
    gen = player_id >> 32
    if player_id < 0 or slot >= p.capacity:
        raise StalePlayerError(f"player id {player_id} was never issued by this world")
    st = p.state[slot]
    if (st != ACTIVE and st != PENDING) or p.gen[slot] != gen:
        raise StalePlayerError(
            f"player id {player_id} (slot {slot}, generation {gen}) is stale: "
            f"that player left; the slot is now at generation {int(p.gen[slot])}"
        )
    return slot
