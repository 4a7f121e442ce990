"""Bot players driven by Numba policy kernels, for headless simulation and load.

A bot is an ordinary player whose moves are written straight into a
:class:`~tickengine.MoveBuffer` by a kernel, one bot per iteration. Each bot has
its own RNG stream (separate from the hunts'), so bots are deterministic for a
seed whatever the thread count, and do not disturb the hunts' streams.

Policies:

- ``RANDOM``: walk straight, turn to a random heading now and then, and when
  a wall stops it.
- ``HUNTER``: follow the hint. Warmer: keep going. Colder: turn around (with a
  random jitter). Same level: keep going, turn now and then. No hint: explore
  like ``RANDOM``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._errors import CapacityError
from ._moves import MoveBuffer
from ._rng import mix64, uniform
from ._state import ACTIVE, HF_HEIGHT, HF_WIDTH, PENDING
from ._world import World

RANDOM = 0
HUNTER = 1
#: Bot policy names and their codes.
BOT_POLICIES = {"hunter": HUNTER, "random": RANDOM}

# Bot streams are derived from (seed, bot index) through this domain tag, so a bot
# population seeded like a hunt never replays that hunt's spawn draws.
_BOT_DOMAIN = 0xB07_5EED_0F_B075

#: Chance per tick that an exploring bot picks a new heading.
TURN_CHANCE = 0.02
#: Chance per tick that a hunter on an unchanged hint level turns anyway.
HUNTER_DRIFT = 0.05
#: Largest deviation (radians) from "straight back" when a hunter gets colder.
HUNTER_JITTER = 1.2


@njit(cache=True, inline="always")
def _heading(rng, b):
    a = 2.0 * math.pi * uniform(rng, b)
    return math.cos(a), math.sin(a)


@njit(cache=True, inline="always")
def _steer(b, s, dx, dy, b_gen, b_seq, b_dx, b_dy, move_seq, move_gen, move_dx, move_dy):
    """Bot ``b`` (player slot ``s``) heads for ``(dx, dy)``: remember it, send it as a move."""
    b_dx[b] = dx
    b_dy[b] = dy
    b_seq[b] += 1
    move_seq[s] = b_seq[b]
    move_gen[s] = b_gen[b]
    move_dx[s] = dx
    move_dy[s] = dy


@njit(cache=True, nogil=True, parallel=True)
def decide_moves(n_bots, b_slot, b_gen, b_policy, b_rng, b_last_hint, b_seq, b_dx, b_dy,
                 p_state, p_gen, p_hunt, p_x, p_y, p_hint, hunt_f,
                 move_seq, move_gen, move_dx, move_dy):
    """Choose every live bot's direction; write the changed ones as moves. Returns moves written."""
    written = 0
    for b in prange(n_bots):
        s = b_slot[b]
        st = p_state[s]
        if p_gen[s] != b_gen[b] or (st != ACTIVE and st != PENDING):
            continue
        dx = b_dx[b]
        dy = b_dy[b]
        turn = dx == 0.0 and dy == 0.0
        if st == ACTIVE:
            h = p_hunt[s]
            x = p_x[s]
            y = p_y[s]
            if (x <= 0.0 and dx < 0.0) or (x >= hunt_f[h, HF_WIDTH] and dx > 0.0):
                turn = True
            if (y <= 0.0 and dy < 0.0) or (y >= hunt_f[h, HF_HEIGHT] and dy > 0.0):
                turn = True
            hint = p_hint[s]
            last = b_last_hint[b]
            b_last_hint[b] = hint
            if b_policy[b] == HUNTER and hint > 0 and not turn:
                if hint < last:
                    # Colder: head back the way we came, give or take a jitter.
                    a = math.atan2(-dy, -dx) + HUNTER_JITTER * (2.0 * uniform(b_rng, b) - 1.0)
                    ndx = math.cos(a)
                    ndy = math.sin(a)
                    if ndx != dx or ndy != dy:
                        _steer(b, s, ndx, ndy, b_gen, b_seq, b_dx, b_dy,
                               move_seq, move_gen, move_dx, move_dy)
                        written += 1
                    continue
                if hint == last and uniform(b_rng, b) < HUNTER_DRIFT:
                    turn = True
            elif uniform(b_rng, b) < TURN_CHANCE:
                turn = True
        if turn:
            dx, dy = _heading(b_rng, b)
            _steer(b, s, dx, dy, b_gen, b_seq, b_dx, b_dy, move_seq, move_gen, move_dx, move_dy)
            written += 1
    return written


class Bots:
    """A population of bots in one world. Buffers are allocated once, with a capacity."""

    def __init__(self, world: World, capacity: int | None = None) -> None:
        cap = capacity if capacity is not None else world.players.capacity
        self.world = world
        self.capacity = cap
        self.slot = np.zeros(cap, np.int32)
        self.gen = np.zeros(cap, np.uint32)
        self.policy = np.zeros(cap, np.int8)
        self.rng = np.zeros(cap, np.uint64)
        self.last_hint = np.zeros(cap, np.int8)
        self.seq = np.zeros(cap, np.int64)
        self.dx = np.zeros(cap, np.float64)
        self.dy = np.zeros(cap, np.float64)
        self.count = 0

    def add(
        self, hunt: int | str, count: int, policy: int | str = HUNTER, seed: int = 0
    ) -> np.ndarray:
        """Join ``count`` bots to ``hunt``; returns their player ids (int64 array).

        ``policy`` is ``HUNTER``/``RANDOM`` or their names (:data:`BOT_POLICIES`).
        Bot ``b`` of this population (counting from the first bot ever added)
        gets its own RNG stream, a hash of ``(seed, b)``.
        """
        if isinstance(policy, str):
            if policy not in BOT_POLICIES:
                raise ValueError(
                    f"bot policy must be one of {', '.join(BOT_POLICIES)}, got {policy!r}"
                )
            policy = BOT_POLICIES[policy]
        if self.count + count > self.capacity:
            raise CapacityError(f"room for {self.capacity - self.count} more bots, asked {count}")
        ids = self.world.join_many(hunt, count)
        first, stop = self.count, self.count + count
        self.slot[first:stop] = ids & 0xFFFFFFFF
        self.gen[first:stop] = ids >> 32
        self.policy[first:stop] = policy
        key = mix64(np.array([(seed ^ _BOT_DOMAIN) & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
        self.rng[first:stop] = mix64(key ^ np.arange(first, stop, dtype=np.uint64))
        self.last_hint[first:stop] = 0
        self.seq[first:stop] = 0
        self.dx[first:stop] = 0.0
        self.dy[first:stop] = 0.0
        self.count = stop
        return ids

    def ids(self) -> np.ndarray:
        """Player ids of all bots (those whose player left included)."""
        n = self.count
        return (self.gen[:n].astype(np.int64) << 32) | self.slot[:n].astype(np.int64)

    def decide(self, moves: MoveBuffer | None = None) -> int:
        """Write this tick's moves of every live bot into ``moves`` (default: the world's)."""
        w = self.world
        mv = w.moves if moves is None else moves
        P = w.players
        return decide_moves(self.count, self.slot, self.gen, self.policy, self.rng,
                            self.last_hint, self.seq, self.dx, self.dy,
                            P.state, P.gen, P.hunt, P.x, P.y, P.hint, w.hunts.f,
                            mv.seq, mv.gen, mv.dx, mv.dy)
