"""The slow pure-Python reference of docs/rules.md: the oracle the Numba kernels are tested against.

Plain objects and brute-force loops, written for obviousness, not speed (a
1,000-player tick takes about a second). Use it on small worlds.
"""

from ._reference import ReferenceWorld as ReferenceWorld
from ._reference import RefPlayer as RefPlayer
from ._reference import RefTickResult as RefTickResult
from ._reference import RefTreasure as RefTreasure
