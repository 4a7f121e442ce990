"""The world's struct-of-arrays tables, allocated once with a capacity.

A table is a set of NumPy columns sharing one row index. Kernels receive the
columns they need; nothing here runs per tick. ``STATE_COLUMNS`` lists the
columns that make up the game state (hashed and snapshotted); the others are
per-tick scratch rebuilt from them.
"""

from __future__ import annotations

import numpy as np

# Player slot states.
FREE = 0
PENDING = 1  # joined, enters play at the next tick's step 1
ACTIVE = 2

# Treasure row states.
T_UNUSED = 0  # row not owned by any hunt
T_ACTIVE = 1
T_WAITING = 2  # found, waiting to respawn

# Membership request kinds (the queue processed in step 1).
OP_JOIN = 1
OP_LEAVE = 2

# Columns of Hunts.f (float64 per hunt).
HF_WIDTH = 0
HF_HEIGHT = 1
HF_STEP = 2  # world units per tick at full stick
HF_DISC_R = 3
HF_DISC_R2 = 4
HF_HINT_R = 5
HF_HINT_R2 = 6
HF_VIEW_R = 7
HF_VIEW_R2 = 8
HF_P_INV_X = 9  # player grid: cells per world unit
HF_P_INV_Y = 10
HF_T_INV_X = 11  # treasure grid
HF_T_INV_Y = 12
N_HF = 13

# Columns of Hunts.i (int64 per hunt).
HI_VALUE_MIN = 0
HI_VALUE_MAX = 1
HI_HINT_LEVELS = 2
HI_RESPAWN = 3
HI_LB_SIZE = 4
HI_T_START = 5  # first treasure row
HI_T_COUNT = 6
HI_P_NCX = 7
HI_P_NCY = 8
HI_P_BASE = 9  # first cell of the hunt in the player grid
HI_T_NCX = 10
HI_T_NCY = 11
HI_T_BASE = 12
HI_MAX_PLAYERS = 13
N_HI = 14

#: Leaderboard rows kept per hunt (HuntParams.leaderboard_size is at most this).
MAX_LEADERBOARD = 100

#: Search radii are widened by this relative margin so that float rounding in
#: the cell span can never hide a point the exact distance test would accept.
SCAN_SLACK = 1e-9


class Players:
    """Player columns, one row per slot. Positions in world units."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.gen = np.ones(capacity, np.uint32)
        self.hunt = np.zeros(capacity, np.int32)
        self.state = np.zeros(capacity, np.int8)
        self.leaving = np.zeros(capacity, np.bool_)
        self.x = np.zeros(capacity, np.float64)
        self.y = np.zeros(capacity, np.float64)
        self.x_prev = np.zeros(capacity, np.float64)
        self.y_prev = np.zeros(capacity, np.float64)
        self.dx = np.zeros(capacity, np.float64)
        self.dy = np.zeros(capacity, np.float64)
        self.score = np.zeros(capacity, np.int64)
        self.found = np.zeros(capacity, np.int64)
        self.last_seq = np.zeros(capacity, np.int64)
        self.hint = np.zeros(capacity, np.int8)
        self.score_tick = np.zeros(capacity, np.int64)
        self.changed_tick = np.full(capacity, -1, np.int64)
        self.joined_tick = np.full(capacity, -1, np.int64)
        # Scratch: the player-grid cell of each row, rebuilt every tick.
        self.cell = np.zeros(capacity, np.int64)
        # Free slots as a stack; top of stack is free[free_top[0] - 1].
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int32)
        self.free_top = np.array([capacity], np.int64)
        # One past the highest slot ever used: kernels loop over [0, high_water).
        self.high_water = 0

    STATE_COLUMNS = (
        "gen", "hunt", "state", "leaving", "x", "y", "x_prev", "y_prev", "dx", "dy",
        "score", "found", "last_seq", "hint", "score_tick", "changed_tick", "joined_tick",
    )


class Treasures:
    """Treasure columns, one row per treasure. Each hunt owns a contiguous row range."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hunt = np.zeros(capacity, np.int32)
        self.state = np.zeros(capacity, np.int8)
        self.x = np.zeros(capacity, np.float64)
        self.y = np.zeros(capacity, np.float64)
        self.value = np.zeros(capacity, np.int64)
        self.respawn_tick = np.zeros(capacity, np.int64)
        self.finder_slot = np.full(capacity, -1, np.int32)
        self.finder_gen = np.zeros(capacity, np.uint32)
        # Scratch: the nearest player in discovery range this tick (-1: none).
        self.candidate = np.full(capacity, -1, np.int32)
        self.cell = np.zeros(capacity, np.int64)
        # Rows [0, used) belong to hunts.
        self.used = 0

    STATE_COLUMNS = (
        "hunt", "state", "x", "y", "value", "respawn_tick", "finder_slot", "finder_gen",
    )


class Hunts:
    """Per-hunt parameters (as flat float and int tables), RNG streams and leaderboards."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.f = np.zeros((capacity, N_HF), np.float64)
        self.i = np.zeros((capacity, N_HI), np.int64)
        self.rng = np.zeros(capacity, np.uint64)
        # Players in the hunt, pending ones included (for HuntFullError).
        self.players = np.zeros(capacity, np.int64)
        self.board_slot = np.full((capacity, MAX_LEADERBOARD), -1, np.int32)
        self.board_gen = np.zeros((capacity, MAX_LEADERBOARD), np.uint32)
        self.board_score = np.zeros((capacity, MAX_LEADERBOARD), np.int64)
        self.board_len = np.zeros(capacity, np.int64)
        # Round clocks (tickengine._rounds, RS_* columns); all zero for hunts without rounds.
        # Part of the state only in worlds that hold a round hunt (see _snapshot.py).
        self.round = np.zeros((capacity, 7), np.int64)
        self.count = 0

    STATE_COLUMNS = (
        "f", "i", "rng", "players", "board_slot", "board_gen", "board_score", "board_len",
    )
