"""Record layouts (NumPy structured dtypes) of the arrays inside frames.

Little-endian and packed. The tick-message records are byte-for-byte the
engine's buffers (``tickengine.VISIBLE_DTYPE`` and friends; a test holds them
equal), so the server copies record slices into frames as they lie. They are
defined here again so that the protocol never imports the engine.
"""

from __future__ import annotations

import numpy as np

#: A move inside a MOVES frame: sequence number (1..2**62-1), direction (unitless).
MOVE_RECORD = np.dtype([("seq", "<u8"), ("dx", "<f4"), ("dy", "<f4")])

#: A player in view (flags bit 0 set) or that left the view (clear). Position in world units.
VISIBLE_RECORD = np.dtype(
    [("slot", "<u4"), ("gen", "<u2"), ("flags", "<u2"), ("x", "<f4"), ("y", "<f4")]
)

#: A treasure found this tick in the player's hunt; ``score`` is the finder's score after it.
DISCOVERY_RECORD = np.dtype(
    [
        ("hunt", "<u4"),
        ("treasure", "<u4"),
        ("slot", "<u4"),
        ("gen", "<u4"),
        ("value", "<i8"),
        ("score", "<i8"),
        ("x", "<f8"),
        ("y", "<f8"),
    ]
)

#: One row of the hunt's leaderboard, best first.
LEADER_RECORD = np.dtype([("slot", "<i4"), ("gen", "<u4"), ("score", "<i8")])

#: A player that left the hunt (full 32-bit generation).
LEAVE_RECORD = np.dtype([("slot", "<u4"), ("gen", "<u4")])

#: One row of a round's final standings (RESULTS), best first: rank (1 = winner; ties
#: broken as the leaderboard breaks them), the player, its discoveries in the round,
#: its score, and the tick of its last discovery (-1: none).
RESULT_RECORD = np.dtype(
    [
        ("rank", "<u4"),
        ("slot", "<u4"),
        ("gen", "<u4"),
        ("found", "<u4"),
        ("score", "<i8"),
        ("last_tick", "<i8"),
    ]
)
