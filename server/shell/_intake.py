"""One hub's playing sockets read in one nogil kernel pass: moves straight into the batch.

Why: a MOVES frame handled in Python costs 40-50 allocation calls (a bytes object per
``read``, the frame parser's objects, the decode's tuples, ints and floats, the rate
limit's floats) and as many microseconds of the Trio thread; at thousands of clients
moving ten times a second that is most of the thread (perf/README.md, "Allocation
calls"). Here one call of :func:`ingest_pass` takes every ready socket of the hub's
``epoll`` set: ``epoll_wait`` and ``read(2)`` through libc into a per-connection staging
buffer, the byte budget, the WebSocket unmasking, the MOVES checks of docs/protocol.md,
the move rate limit (token buckets per player slot, keeping the newest move over the
limit) and the rows of the tick's :class:`~server.protocol.MoveBatch`, with no Python
object per frame, per read or per socket.

Only what is certainly a valid MOVES frame is taken here. From the first byte of
anything else (a text move, BYE, a ping, a close, a fragment, a bad or oversized frame,
a read that over-spends the byte budget, the end of the stream), the connection's
unread bytes are handed to its :class:`~server.shell._wsframes.FrameParser`, and the
poller goes on with the ordinary code path: the errors, their order and their codes are
that path's, unchanged. The kernel's results for Python are flags per connection
(:data:`HANDOVER`, :data:`WARN`, :data:`BUMP`) in a short list; usually it is empty.

Ownership: the intake's arrays are touched by the Trio thread only (the kernel runs on
it, without the GIL but synchronously); the hub's batch it writes is the current one,
never the batch the tick's worker holds.
"""

from __future__ import annotations

import ctypes
import math
import platform
from typing import NamedTuple

import numpy as np
from numba import njit

from ..protocol import MAX_CLIENT_FRAME_BYTES, MAX_CLIENT_SEQ, MAX_MOVES_PER_FRAME

#: Bytes of a connection's staging buffer: a whole frame of the largest size a client
#: may send (header 8 + mask 4 + MAX_CLIENT_FRAME_BYTES) always fits after a partial one.
STAGE_BYTES = 2048
#: Reads of one socket per pass at most (a flooding client waits for the next pass).
MAX_READS = 4
#: Events taken per ``epoll_wait`` (the pass loops while the array comes back full).
MAX_EVENTS = 1024

# Flags of a connection for the Python side after a pass (bits of ``Entries.flags``).
#: Its unread bytes must go to the frame parser (``Entries.rest``: from which stage byte).
HANDOVER = 1
#: Over the move rate limit, and not warned for a second: send RATE_LIMITED.
WARN = 2
#: Its idle deadline is near and frames came since it was set: move it.
BUMP = 4
#: ``read`` returned an error (or EAGAIN): Python reads the socket to tell which.
READ_ERROR = 8
#: ``read`` returned 0: the end of the stream.
EOF = 16
#: Mid-fragment in the parser: every read goes to it (kept until the message ends).
SLOW = 32
#: The flags that put a connection on the list for Python.
ATTENTION = HANDOVER | WARN | BUMP | READ_ERROR | EOF

_BUFFER_OK = 0x82  # FIN + binary opcode, no RSV bits

# struct epoll_event is packed on x86-64 (12 bytes), naturally aligned elsewhere (16).
_EV_SIZE = 12 if platform.machine() in ("x86_64", "AMD64", "i386", "i686") else 16
_EV_DATA = _EV_SIZE - 8

_libc = ctypes.CDLL(None, use_errno=True)
_read = _libc.read
_read.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t)
_read.restype = ctypes.c_ssize_t
_epoll_wait = _libc.epoll_wait
_epoll_wait.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int, ctypes.c_int)
_epoll_wait.restype = ctypes.c_int


# Columns of ``Entries.i`` (int64), one row per polled connection (FD < 0: a free row).
FD, SLOT, PLAYER, HUNT, GEN, HAVE, REST, OWED, FLAGS = range(9)
#   FD the socket; SLOT, PLAYER, HUNT the player's slot in the hub, id and hunt index;
#   GEN the slot's connection generation when polled (Rates: R_GEN), -1 for a replaced
#   connection; HAVE bytes in the staging buffer; REST (HANDOVER) the stage bytes from
#   there on go to the parser, OWED of which the last ones not charged to the budget yet.
# Columns of ``Entries.f`` (float64).
LEVEL, REFILL, BYTE_RATE, BURST, LAST, DEADLINE = range(6)
#   the byte budget: LEVEL bytes, last REFILL (time.monotonic, s), BYTE_RATE (bytes/s),
#   BURST (bytes); LAST Trio time of the last read with data; DEADLINE the idle deadline
#   as last set (Trio time, s).
# Columns of ``Rates.f`` (float64) and ``Rates.i`` (int64), one row per player slot:
BUCKET, BUCKET_T, WARNED = range(3)
#   the move rate limit (docs/protocol.md, "Move rate limit"): BUCKET moves the player
#   may still send, BUCKET_T its last refill, WARNED the last RATE_LIMITED (Trio time, s).
HIGH_SEQ, R_GEN = range(2)
#   HIGH_SEQ the highest seq received (a stop move goes above it); R_GEN bumped when
#   another connection takes the player over.


class Entries(NamedTuple):
    """The polled connections: ``i`` and ``f`` (columns above), each one's staging buffer
    (``stage``, uint8 rows of STAGE_BYTES) and the row of each fd (``of_fd``, -1: none)."""

    i: np.ndarray
    f: np.ndarray
    stage: np.ndarray
    of_fd: np.ndarray


class Rates(NamedTuple):
    """A hub's move rate limit per player slot (columns above)."""

    f: np.ndarray
    i: np.ndarray


def new_rates(capacity: int) -> Rates:
    f = np.zeros((capacity, 3))
    f[:, WARNED] = -math.inf
    return Rates(f, np.zeros((capacity, 2), np.int64))


def new_entries(capacity: int, fds: int) -> Entries:
    i = np.zeros((capacity, 9), np.int64)
    i[:, FD] = -1
    return Entries(i, np.zeros((capacity, 6)), np.zeros((capacity, STAGE_BYTES), np.uint8),
                   np.full(fds, -1, np.int64))


@njit(cache=True, inline="always")
def _seq(buf, at):
    """The little-endian u64 at ``at`` as int64 (a seq >= 2**63 reads negative)."""
    v = np.int64(0)
    for k in range(8):
        v |= np.int64(buf[at + k]) << (8 * k)
    return v


@njit(cache=True, nogil=True)
def take_frames(e, ent, rates, ids, seqs, dx, dy, count, cap, dropped, out, now, rate, scratch,
                max_message):
    """Take the complete MOVES frames at the head of row ``e``'s staging buffer into the
    batch columns from row ``count`` on; returns the new count. Stops at the first frame
    that is not certainly a valid MOVES frame (HANDOVER from it) or is incomplete (kept,
    moved to the buffer's start)."""
    stage = ent.stage[e]
    f32 = scratch.view(np.float32)  # record i's dx, dy: f32[3 + 4 i], f32[4 + 4 i]
    row = ent.i[e]
    have = row[HAVE]
    slot = row[SLOT]
    rf = rates.f[slot]
    ignore = row[GEN] != rates.i[slot, R_GEN]
    pos = 0
    while have - pos >= 2:
        b0 = stage[pos]
        b1 = stage[pos + 1]
        length = b1 & 0x7F
        head = 6
        if b0 != _BUFFER_OK or not b1 & 0x80 or length == 127:
            row[FLAGS] |= HANDOVER
            row[REST] = pos
            return count
        if length == 126:
            if have - pos < 4:
                break
            length = (np.int64(stage[pos + 2]) << 8) | stage[pos + 3]
            head = 8
        if length > max_message or length < 20 or (length - 4) % 16:
            row[FLAGS] |= HANDOVER
            row[REST] = pos
            return count
        if have - pos < head + length:
            break
        at = pos + head
        for k in range(length):  # unmask into the scratch: the stage keeps the raw bytes
            scratch[k] = stage[at + k] ^ stage[pos + head - 4 + (k & 3)]
        n = (length - 4) // 16
        if scratch[0] != 2 or scratch[1] or (scratch[2] | (np.int64(scratch[3]) << 8)) != n:
            row[FLAGS] |= HANDOVER
            row[REST] = pos
            return count
        bad = False
        top = np.int64(0)
        for i in range(n):
            r = 4 + 16 * i
            seq = _seq(scratch, r)
            if seq <= 0 or seq > MAX_CLIENT_SEQ:
                bad = True
                break
            if not (np.isfinite(f32[3 + 4 * i]) and np.isfinite(f32[4 + 4 * i])):
                bad = True
                break
            top = max(top, seq)
        if bad:  # the parser and the decoder say why, as for any bad frame
            row[FLAGS] |= HANDOVER
            row[REST] = pos
            return count
        pos += head + length
        if ignore:  # a connection replaced by a resume: its moves are not the player's
            continue
        bucket = min(rate, rf[BUCKET] + (now - rf[BUCKET_T]) * rate)
        rf[BUCKET_T] = now
        if cap - count < MAX_MOVES_PER_FRAME:  # the tick's batch is full: drop the frame
            rf[BUCKET] = bucket
            _dropped(row, dropped, out)
            _warn(row, rf, now)
            continue
        if top > rates.i[slot, HIGH_SEQ]:
            rates.i[slot, HIGH_SEQ] = top
        if bucket >= 1.0:
            rf[BUCKET] = bucket - n
            for i in range(n):
                r = 4 + 16 * i
                ids[count] = row[PLAYER]
                seqs[count] = _seq(scratch, r)
                dx[count] = f32[3 + 4 * i]
                dy[count] = f32[4 + 4 * i]
                count += 1
            continue
        # Over the limit: the frame's newest move replaces the player's pending row of
        # this batch (if older), or takes one row (docs/protocol.md, "Move rate limit").
        rf[BUCKET] = bucket
        _dropped(row, dropped, out)
        best = 0
        for i in range(n):
            if _seq(scratch, 4 + 16 * i) == top:
                best = i
                break
        pid = row[PLAYER]
        pend = -1
        for j in range(count):
            if ids[j] == pid and (pend < 0 or seqs[j] > seqs[pend]):
                pend = j
        if pend < 0:
            pend = count
            ids[pend] = pid
            seqs[pend] = -1
            count += 1
        if top > seqs[pend]:
            seqs[pend] = top
            dx[pend] = f32[3 + 4 * best]
            dy[pend] = f32[4 + 4 * best]
        _warn(row, rf, now)
    if pos:  # the incomplete frame to the buffer's start (forward: source after target)
        for k in range(have - pos):
            stage[k] = stage[pos + k]
        row[HAVE] = have - pos
    return count


@njit(cache=True, inline="always")
def _dropped(row, dropped, out):
    out[1] += 1
    h = row[HUNT]
    if h < dropped.shape[0]:
        dropped[h] += 1


@njit(cache=True, inline="always")
def _warn(row, rf, now):
    if now - rf[WARNED] >= 1.0:
        rf[WARNED] = now
        row[FLAGS] |= WARN


@njit(nogil=True)  # not cached: Numba cannot cache a ctypes function pointer
def ingest_pass(epfd, events, ent, rates, ids, seqs, dx, dy, count, dropped, now, mono, rate,
                idle, step, margin, scratch, todo, out):
    """One pass over the hub's ready sockets; see the module docstring.

    ``now``: Trio time, ``mono``: ``time.monotonic()`` (the byte budgets' clock), seconds.
    ``rate``: moves per second per player. ``idle`` + ``step``: the idle timeout and its
    step (seconds); a deadline within ``margin`` seconds is moved (BUMP) if a frame
    came since it was set. Rows of the connections with flags go to ``todo``; returns
    their number, the batch's new count in ``out[0]``; frames dropped (over the limit,
    or the batch full) are added to ``out[1]`` and per hunt index to ``dropped``.
    """
    cap = ids.shape[0]
    n_todo = 0
    base = events.ctypes.data
    st = ent.stage.ctypes.data
    for _ in range(8):
        n_ev = _epoll_wait(epfd, base, MAX_EVENTS, 0)
        for k in range(max(n_ev, 0)):
            at = k * _EV_SIZE + _EV_DATA
            fd = np.int64(events[at]) | (np.int64(events[at + 1]) << 8) | (
                np.int64(events[at + 2]) << 16) | (np.int64(events[at + 3]) << 24)
            if fd < 0 or fd >= ent.of_fd.shape[0]:
                continue
            e = ent.of_fd[fd]
            if e < 0:
                continue
            row = ent.i[e]
            if row[FD] != fd or row[FLAGS] & (HANDOVER | EOF | READ_ERROR):
                continue
            fl = ent.f[e]
            before = row[FLAGS] & ATTENTION
            for r in range(MAX_READS):
                have = row[HAVE]
                room = STAGE_BYTES - have
                got = _read(fd, st + e * STAGE_BYTES + have, room)
                if got <= 0:
                    if r == 0:  # else: drained (EAGAIN), or the end comes next pass
                        row[FLAGS] |= EOF if got == 0 else READ_ERROR
                        row[REST] = 0
                        row[OWED] = 0
                    break
                fl[LAST] = now
                level = min(fl[BURST], fl[LEVEL] + (mono - fl[REFILL]) * fl[BYTE_RATE])
                fl[REFILL] = mono
                row[HAVE] = have + got
                if level < got:  # over the byte budget: the parser refuses it, as it would
                    fl[LEVEL] = level
                    row[FLAGS] |= HANDOVER
                    row[REST] = 0
                    row[OWED] = got
                    break
                fl[LEVEL] = level - got
                if row[FLAGS] & SLOW:
                    row[FLAGS] |= HANDOVER
                    row[REST] = 0
                    break
                count = take_frames(e, ent, rates, ids, seqs, dx, dy, count, cap, dropped,
                                    out, now, rate, scratch, MAX_CLIENT_FRAME_BYTES)
                if row[FLAGS] & HANDOVER or got < room:
                    break
            if row[FLAGS] & ATTENTION and not before:
                todo[n_todo] = e
                n_todo += 1
        if n_ev < MAX_EVENTS:
            break
    # Idle deadlines: moved only when near, to the last frame + idle + step.
    for e in range(ent.i.shape[0]):
        row = ent.i[e]
        fl = ent.f[e]
        if row[FD] < 0 or now < fl[DEADLINE] - margin:
            continue
        if fl[LAST] + idle + step > fl[DEADLINE] and not row[FLAGS] & BUMP:
            if not row[FLAGS] & ATTENTION:
                todo[n_todo] = e
                n_todo += 1
            row[FLAGS] |= BUMP
    out[0] = count
    return n_todo



def warm_up() -> None:
    """Compile :func:`ingest_pass` (not cacheable: it calls libc through ctypes) at
    start-up rather than in the first pass: a pass over an empty epoll set."""
    import select

    ep = select.epoll()
    try:
        ingest_pass(ep.fileno(), np.zeros(MAX_EVENTS * _EV_SIZE, np.uint8), new_entries(1, 1),
                    new_rates(1), np.zeros(64, np.int64), np.zeros(64, np.int64),
                    np.zeros(64), np.zeros(64), 0, np.zeros(1, np.int64), 0.0, 0.0, 1.0, 1.0,
                    1.0, 1.0, np.zeros(MAX_CLIENT_FRAME_BYTES + 16, np.uint8),
                    np.zeros(1, np.int64), np.zeros(2, np.int64))
    finally:
        ep.close()
