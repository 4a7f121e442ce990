"""splitmix64: the per-hunt RNG stream, as Numba helpers over an explicit state array.

The state is data (one uint64 per hunt), never a global, so a tick is a pure
function of its buffers and snapshots capture the stream exactly. Every constant
is a ``np.uint64``: mixing signed and unsigned 64-bit integers makes Numba
compute in float64, which would silently break determinism.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(cache=True, inline="always")
def next_u64(state, i):
    """Advance stream ``i`` of ``state`` and return its next 64-bit output."""
    s = state[i] + _GOLDEN
    state[i] = s
    z = (s ^ (s >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def uniform(state, i):
    """A float64 in [0, 1) from stream ``i`` (53 random bits)."""
    return np.float64(next_u64(state, i) >> _S11) * _INV_2_53


def splitmix64_py(state: int) -> tuple[int, float]:
    """Pure-Python twin of :func:`uniform` for one draw: returns (new state, u)."""
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return state, (z >> 11) * _INV_2_53


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array: distinct inputs, unrelated outputs.

    Used to derive independent RNG states (one per bot) from one seed, so that
    no two streams are the same stream shifted by a few draws.
    """
    z = values.astype(np.uint64)
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)
