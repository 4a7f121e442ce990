"""Every client's TICK message of one tick, WebSocket header included, in one kernel pass.

The tick's output for N clients is N frames laid one after the other in one
preallocated byte buffer: ``out[offsets[i]:offsets[i + 1]]`` is client i's
complete WebSocket frame (2-10 byte header, then the TICK message of
docs/protocol.md), ready for one ``write``. Python then only slices and sends.

Per client the kernel writes the 64-byte TICK header from the player columns,
copies the client's visibility records as they lie and appends its hunt's
shared tail (discoveries, leaderboard, leaves, names: encoded once per hunt by
``server.protocol.encode_hunt_events``). ``server.protocol.TickMessageWriter``
writes the same bytes one message at a time; tests/test_tickframes.py holds the
two to each other byte for byte.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import njit

from ..protocol import TICK_HEADER_BYTES, HuntEvents
from ..protocol._constants import TICK_KEYFRAME, TICK_LEADERBOARD, MessageType

#: Columns of the ``tails`` table: one row per encoded tail.
TAIL_START, TAIL_END, TAIL_DISC, TAIL_LEADERS, TAIL_LEAVES, TAIL_NAMES, TAIL_NAMES_BYTES = range(7)
N_TAIL_COLS = 7


@njit(cache=True, inline="always")
def _put(out, at, value, nbytes):
    for k in range(nbytes):
        out[at + k] = (value >> (8 * k)) & 0xFF


@njit(cache=True, nogil=True)
def frame_sizes(n, vis_off, obs_tail, tails, sizes):
    """Bytes of each client's frame (header included) into ``sizes``; returns their sum."""
    total = 0
    for i in range(n):
        t = obs_tail[i]
        length = TICK_HEADER_BYTES + (vis_off[i + 1] - vis_off[i]) * 16 + (
            tails[t, TAIL_END] - tails[t, TAIL_START])
        head = 2 if length < 126 else (4 if length < 65536 else 10)
        sizes[i] = head + length
        total += head + length
    return total


@njit(cache=True, nogil=True)
def write_frames(n, tick, slots, keyframe, vis_off, vis_bytes, obs_tail, tails, tail_bytes,
                 last_seq, x_bits, y_bits, score, hint, out, offsets):
    """Write the frames of clients ``0..n-1`` into ``out``; ``offsets[i]`` is where frame i starts.

    ``x_bits``/``y_bits`` are the players' float64 positions viewed as int64
    (the bytes are copied, not converted). ``tails[t]`` describes tail ``t``:
    its byte range in ``tail_bytes`` and the TICK header's counts
    (``TAIL_LEADERS`` is -1 when the tail has no leaderboard). The caller sizes
    ``out`` with :func:`frame_sizes`. Returns the bytes written.
    """
    at = 0
    for i in range(n):
        offsets[i] = at
        s = slots[i]
        t = obs_tail[i]
        v0 = vis_off[i]
        n_vis = vis_off[i + 1] - v0
        t0 = tails[t, TAIL_START]
        t1 = tails[t, TAIL_END]
        length = TICK_HEADER_BYTES + n_vis * 16 + (t1 - t0)
        # WebSocket header: FIN + binary opcode, unmasked, 7/16/64-bit length.
        out[at] = 0x82
        if length < 126:
            out[at + 1] = length
            at += 2
        elif length < 65536:
            out[at + 1] = 126
            out[at + 2] = (length >> 8) & 0xFF
            out[at + 3] = length & 0xFF
            at += 4
        else:
            out[at + 1] = 127
            for k in range(8):
                out[at + 2 + k] = (length >> (8 * (7 - k))) & 0xFF
            at += 10
        leaders = tails[t, TAIL_LEADERS]
        flags = 0
        if keyframe[i]:
            flags |= TICK_KEYFRAME
        if leaders >= 0:
            flags |= TICK_LEADERBOARD
        out[at] = MessageType.TICK
        out[at + 1] = flags
        out[at + 2] = hint[s]
        out[at + 3] = leaders if leaders > 0 else 0
        _put(out, at + 4, n_vis, 4)
        _put(out, at + 8, tick, 8)
        _put(out, at + 16, last_seq[s], 8)
        _put(out, at + 24, x_bits[s], 8)
        _put(out, at + 32, y_bits[s], 8)
        _put(out, at + 40, score[s], 8)
        _put(out, at + 48, tails[t, TAIL_DISC], 4)
        _put(out, at + 52, tails[t, TAIL_LEAVES], 4)
        _put(out, at + 56, tails[t, TAIL_NAMES], 4)
        _put(out, at + 60, tails[t, TAIL_NAMES_BYTES], 4)
        at += TICK_HEADER_BYTES
        # Slice copies, not byte loops: a memcpy per client, not a loop per byte.
        m = n_vis * 16
        out[at:at + m] = vis_bytes[v0 * 16:v0 * 16 + m]
        at += m
        out[at:at + t1 - t0] = tail_bytes[t0:t1]
        at += t1 - t0
    offsets[n] = at
    return at


class TailTable:
    """The encoded tails of one tick (one or two per hunt: diff and keyframe), packed for
    :func:`write_frames`. Grows by replacement; never shrinks."""

    def __init__(self, rows: int = 16, nbytes: int = 4096) -> None:
        self.rows = np.zeros((rows, N_TAIL_COLS), np.int64)
        self.data = np.zeros(nbytes, np.uint8)
        self.count = 0
        self.used = 0

    def clear(self) -> None:
        self.count = 0
        self.used = 0

    def add(self, events: HuntEvents) -> int:
        """Append one tail; returns its row index."""
        if self.count == self.rows.shape[0]:
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
        raw = events.data
        end = self.used + len(raw)
        if end > self.data.shape[0]:
            grown = np.zeros(max(end, 2 * self.data.shape[0]), np.uint8)
            grown[: self.used] = self.data[: self.used]
            self.data = grown
        self.data[self.used:end] = np.frombuffer(raw, np.uint8)
        row = self.rows[self.count]
        row[:] = (self.used, end, events.discoveries,
                  -1 if events.leaders is None else events.leaders,
                  events.leaves, events.names, events.names_bytes)
        self.used = end
        self.count += 1
        return self.count - 1


def warm_up() -> None:
    """Compile the kernels (or load them from Numba's cache) before the first tick."""
    n = 1
    slots = np.zeros(1, np.int32)
    kf = np.zeros(1, np.uint8)
    off = np.zeros(2, np.int64)
    vis = np.zeros(16, np.uint8)
    tails = TailTable()
    tails.add(HuntEvents())
    obs_tail = np.zeros(1, np.int32)
    sizes = np.zeros(1, np.int64)
    total = frame_sizes(n, off, obs_tail, tails.rows, sizes)
    out = np.zeros(total, np.uint8)
    f = np.zeros(1, np.float64)
    i8 = np.zeros(1, np.int64)
    write_frames_to_sockets(1, np.full(1, -1, np.int64), out.ctypes.data, np.zeros(2, np.int64),
                            np.zeros(1, np.int64))
    write_frames(n, 1, slots, kf, off, vis, obs_tail, tails.rows, tails.data, i8,
                 f.view(np.int64), f.view(np.int64), i8, np.zeros(1, np.int8), out,
                 np.zeros(2, np.int64))


# --------------------------------------------------------------------------- the writes

_libc = ctypes.CDLL(None)
_write = _libc.write
# The buffer's address as an integer: the same register as a pointer on every ABI we run.
_write.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t)
_write.restype = ctypes.c_ssize_t


@njit(nogil=True)  # not cached: Numba cannot cache a ctypes function pointer
def write_frames_to_sockets(n, fds, base, offsets, written):
    """``write(2)`` frame i to ``fds[i]`` for every ``fds[i] >= 0``, without the GIL.

    ``base`` is the address of the frame buffer. ``written[i]``: bytes the socket
    took (0 when it took none: would block, or an error the writer task will
    meet), -2 where ``fds[i] < 0`` (not written here).
    """
    for i in range(n):
        fd = fds[i]
        if fd < 0:
            written[i] = -2
            continue
        a = offsets[i]
        r = _write(fd, base + a, offsets[i + 1] - a)
        written[i] = r if r > 0 else 0
