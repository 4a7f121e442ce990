"""Record layouts (NumPy structured dtypes) of the buffers the engine hands out.

Little-endian and packed, so a slice of a buffer can be sent on the wire as it
lies. Positions in world units, ticks as tick numbers.
"""

from __future__ import annotations

import numpy as np

#: One player another player can see (see docs/rules.md, "Visibility").
#: ``flags`` bit 0 (:data:`VIS_IN_VIEW`): set when the player is inside the view
#: radius, clear when this record says "left your view".
VISIBLE_DTYPE = np.dtype(
    [("slot", "<u4"), ("gen", "<u2"), ("flags", "<u2"), ("x", "<f4"), ("y", "<f4")]
)
VIS_IN_VIEW = 1

#: A treasure found this tick. ``score`` is the finder's score after it.
DISCOVERY_DTYPE = np.dtype(
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

#: A player that joined (``kind`` = :data:`JOINED`, at its spawn point) or left
#: (``kind`` = :data:`LEFT`, at its last position) this tick.
MEMBERSHIP_DTYPE = np.dtype(
    [
        ("kind", "<u4"),
        ("hunt", "<u4"),
        ("slot", "<u4"),
        ("gen", "<u4"),
        ("x", "<f8"),
        ("y", "<f8"),
    ]
)
JOINED = 1
LEFT = 2

#: One row of a hunt's leaderboard, best first. Unused rows have ``slot`` = -1.
LEADER_DTYPE = np.dtype([("slot", "<i4"), ("gen", "<u4"), ("score", "<i8")])

#: A round that ended this tick (docs/rules.md, "Rounds"): its hunt and round number. Its
#: standings are the ``RESULT_DTYPE`` records of that hunt (none when nobody was in play).
ROUND_END_DTYPE = np.dtype([("hunt", "<u4"), ("round", "<u4")])

#: One row of a round's final standings (docs/rules.md, "Rounds"), rank 1 first: the
#: player (slot, generation), its discoveries and score in the round, and the tick of its
#: last discovery (-1: none). Bytes 8-40 of a row are the wire's RESULT record.
RESULT_DTYPE = np.dtype(
    [
        ("hunt", "<u4"),
        ("round", "<u4"),
        ("rank", "<u4"),
        ("slot", "<u4"),
        ("gen", "<u4"),
        ("found", "<u4"),
        ("score", "<i8"),
        ("last_tick", "<i8"),
    ]
)
