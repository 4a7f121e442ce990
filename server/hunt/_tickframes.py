"""Every client's TICK message of one tick, WebSocket header included, in one kernel pass.

The tick's output for N clients is N frames laid one after the other in one
preallocated byte buffer: ``out[offsets[i]:offsets[i + 1]]`` is client i's
complete WebSocket frame (2-10 byte header, then the TICK message of
docs/protocol.md), ready for one ``write``. Python then only slices and sends.

Each client gets a TICK of its connection's protocol version. Version 1: the
kernel writes the 64-byte header from the player columns, copies the client's
visibility records as they lie and appends its hunt's shared tail (discoveries,
leaderboard, leaves, names: encoded once per hunt by
``server.protocol.encode_hunt_events``). Version 2 (compact): the header fields
that changed since the slot's last TICK, each record as a hunt-local index and
two quantized coordinates, then the hunt's part (``encode_hunt_section``, once
per hunt). ``server.protocol.TickMessageWriter`` and ``CompactTickWriter`` write
the same bytes one message at a time; tests/test_tickframes.py and
tests/test_compact_frames.py hold them to each other byte for byte.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np
from numba import njit

from ..protocol import TICK_HEADER_BYTES, HuntEvents
from ..protocol._constants import TICK_KEYFRAME, TICK_LEADERBOARD, MessageType

#: Columns of the ``tails`` table: one row per encoded tail.
TAIL_START, TAIL_END, TAIL_DISC, TAIL_LEADERS, TAIL_LEAVES, TAIL_NAMES, TAIL_NAMES_BYTES = range(7)
N_TAIL_COLS = 7
#: Bytes of a version-2 TICK header at most: type, flags, tick, ack, x, y, score, hint, count.
V2_HEADER_MAX = 2 + 10 + 10 + 16 + 10 + 1 + 5
#: Bytes of a version-2 VISIBLE record at most (an index below 2**31).
V2_RECORD_MAX = 5 + 4


class Players(NamedTuple):
    """The player columns a TICK header is written from, indexed by slot."""

    last_seq: np.ndarray  # int64: the ack
    x_bits: np.ndarray  # int64: the float64 position's bytes (copied, not converted)
    y_bits: np.ndarray
    score: np.ndarray  # int64
    hint: np.ndarray  # int8


class Seen(NamedTuple):
    """The visibility records (``VISIBLE_DTYPE``) in CSR layout, as bytes and as columns."""

    offsets: np.ndarray  # int64, observer i's records are [offsets[i], offsets[i + 1])
    raw: np.ndarray  # uint8: the records' bytes, copied as they lie into version-1 TICKs
    words: np.ndarray  # uint64: the same bytes, two words a record
    slot: np.ndarray  # uint32 column
    flags: np.ndarray  # uint16 column: bit 0, in view
    x: np.ndarray  # float32 columns, world units
    y: np.ndarray


class Compact(NamedTuple):
    """What version-2 TICKs need beyond the players: indices, hunt sizes, what was sent."""

    index: np.ndarray  # int32 per slot: the player's hunt-local index (-1: none)
    width: np.ndarray  # float64 per hunt, world units: the quantization ranges
    height: np.ndarray
    sent_ack: np.ndarray  # int64 per slot: the header fields of the slot's last TICK
    sent_x: np.ndarray  # int64 (float64 bits)
    sent_y: np.ndarray
    sent_score: np.ndarray  # int64
    sent_hint: np.ndarray  # int16 (-1: none yet)
    q_tick: np.ndarray  # int64 per slot: the tick of ``q_rec`` (-1: none)
    #: int64 per slot: its in-view VISIBLE record at that tick as wire bytes, little-endian
    #: (the index varint, qx, qy), and how many bytes that is (uint8; 0: more than 8).
    q_rec: np.ndarray
    q_len: np.ndarray


def seen_of(vis) -> Seen:
    """The :class:`Seen` of a ``tickengine.Visibility``."""
    r = vis.records
    return Seen(vis.offsets, r.view(np.uint8), r.view(np.uint64), r["slot"], r["flags"],
                r["x"], r["y"])


@njit(cache=True, inline="always")
def _put(out, at, value, nbytes):
    # An unsigned index: no negative-index wraparound per byte, so the compiler merges
    # the byte stores into one.
    a = np.uint64(at)
    for k in range(nbytes):
        out[a + np.uint64(k)] = (value >> (8 * k)) & 0xFF


@njit(cache=True, inline="always")
def _varint_len(value):
    v = np.uint64(value)
    n = 1
    while v >= np.uint64(0x80):
        v = v >> np.uint64(7)
        n += 1
    return n


@njit(cache=True, inline="always")
def _put_varint(out, at, value):
    v = np.uint64(value)
    while v >= np.uint64(0x80):
        out[at] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
        v = v >> np.uint64(7)
        at += 1
    out[at] = np.uint8(v)
    return at + 1


@njit(cache=True, inline="always")
def _zigzag(value):
    return np.uint64((value << np.int64(1)) ^ (value >> np.int64(63)))


@njit(cache=True, inline="always")
def _quantize(value, size):
    # The reference's arithmetic (server.protocol._compact.quantize), in float64.
    q = np.floor(np.float64(value) * 65535.0 / size + 0.5)
    if q < 0.0:
        return 0
    if q > 65535.0:
        return 65535
    return int(q)


@njit(cache=True, inline="always")
def _ws_header(out, at, length):
    """WebSocket header: FIN + binary opcode, unmasked, 7/16/64-bit length."""
    out[at] = 0x82
    if length < 126:
        out[at + 1] = length
        return at + 2
    if length < 65536:
        out[at + 1] = 126
        out[at + 2] = (length >> 8) & 0xFF
        out[at + 3] = length & 0xFF
        return at + 4
    out[at + 1] = 127
    for k in range(8):
        out[at + 2 + k] = (length >> (8 * (7 - k))) & 0xFF
    return at + 10


@njit(cache=True, nogil=True)
def frame_sizes(n, version, vis_off, obs_tail, tails, sizes):
    """Bytes of each client's frame (header included) into ``sizes``; returns their sum.

    Exact for version 1; for version 2 an upper bound (what changed is decided while
    writing), which :func:`write_frames` replaces with the exact size.
    """
    total = 0
    for i in range(n):
        t = obs_tail[i]
        n_vis = vis_off[i + 1] - vis_off[i]
        tail = tails[t, TAIL_END] - tails[t, TAIL_START]
        if version[i] == 1:
            length = TICK_HEADER_BYTES + n_vis * 16 + tail
        else:
            length = V2_HEADER_MAX + n_vis * V2_RECORD_MAX + tail
        head = 2 if length < 126 else (4 if length < 65536 else 10)
        sizes[i] = head + length
        total += head + length
    return total


@njit(cache=True, inline="always")
def _write_v1(out, at, tick, s, kf, n_vis, v0, seen, t, tails, tail_bytes, pl):
    t0 = tails[t, TAIL_START]
    t1 = tails[t, TAIL_END]
    length = TICK_HEADER_BYTES + n_vis * 16 + (t1 - t0)
    at = _ws_header(out, at, length)
    leaders = tails[t, TAIL_LEADERS]
    flags = 0
    if kf:
        flags |= TICK_KEYFRAME
    if leaders >= 0:
        flags |= TICK_LEADERBOARD
    out[at] = MessageType.TICK
    out[at + 1] = flags
    out[at + 2] = pl.hint[s]
    out[at + 3] = leaders if leaders > 0 else 0
    _put(out, at + 4, n_vis, 4)
    _put(out, at + 8, tick, 8)
    _put(out, at + 16, pl.last_seq[s], 8)
    _put(out, at + 24, pl.x_bits[s], 8)
    _put(out, at + 32, pl.y_bits[s], 8)
    _put(out, at + 40, pl.score[s], 8)
    _put(out, at + 48, tails[t, TAIL_DISC], 4)
    _put(out, at + 52, tails[t, TAIL_LEAVES], 4)
    _put(out, at + 56, tails[t, TAIL_NAMES], 4)
    _put(out, at + 60, tails[t, TAIL_NAMES_BYTES], 4)
    at += TICK_HEADER_BYTES
    # Slice copies, not byte loops: a memcpy per client, not a loop per byte.
    m = n_vis * 16
    out[at:at + m] = seen.raw[v0 * 16:v0 * 16 + m]
    at += m
    out[at:at + t1 - t0] = tail_bytes[t0:t1]
    return at + t1 - t0


@njit(cache=True)
def _in_view_bytes(index, q):
    """A VISIBLE record in view (docs/protocol.md) of the player at hunt-local ``index``
    with quantized position ``q`` (``qx | qy << 16``): up to 8 bytes, little-endian, and
    their count; a count of 0 when it takes more (the value is then ``q`` alone).

    Not inlined: a loop in the caller's inner loop keeps Numba from pruning the
    reference counts of the caller's arrays (an atomic update each, every record)."""
    v = np.int64(index) * 2 + 1
    rec = 0
    n = 0
    while v >= 0x80:
        rec |= ((v & 0x7F) | 0x80) << (8 * n)
        v >>= 7
        n += 1
    rec |= v << (8 * n)
    n += 1
    if n > 4:
        return q, 0
    return rec | (q << (8 * n)), n + 4


@njit(cache=True, nogil=True)
def write_frames(n, tick, slots, hunts, version, keyframe, seen, obs_tail, tails, tail_bytes,
                 players, compact, out, offsets, sizes):
    """Write the frames of clients ``0..n-1`` into ``out``; ``offsets[i]`` is where frame i starts.

    Client i gets a TICK of ``version[i]`` (1 or 2) for the player at ``slots[i]`` in
    hunt ``hunts[i]``, with its records ``seen`` and tail ``obs_tail[i]``. ``tails[t]``
    describes tail ``t``: its byte range in ``tail_bytes`` and the version-1 header's
    counts (``TAIL_LEADERS`` is -1 when the tail has no leaderboard). The caller sizes
    ``out`` with :func:`frame_sizes`; ``sizes[i]`` receives each frame's exact size.
    A version-2 frame records what it sent in ``compact``. Returns the bytes written.

    A version-2 TICK (docs/protocol.md) holds only what changed since the slot's last
    TICK. It is written in one pass after a 4-byte WebSocket header (the usual one for
    126..65535 bytes), then moved 2 bytes back for a shorter one, or 6 on for a longer one
    (``frame_sizes`` leaves room for the 10-byte header). A player's in-view record is
    made once per tick (``compact.q_*``): every in-view record of a player carries the
    same float32 position in one tick, and its index does not change within a tick.

    The version-2 writer is this loop's body, on the arrays taken out of the named tuples
    once, rather than a helper: a helper called per client with arrays for arguments,
    even inlined, pays reference-count updates on each of them at every call, which
    took about half of this function's time (perf/README.md, "The frame kernel's
    version-2 loop").
    """
    last_seq, x_bits, y_bits, score, hint_col = players
    (index, width, height, sent_ack, sent_x, sent_y, sent_score, sent_hint, q_tick, q_rec,
     q_len) = compact
    words, xs, ys, vis_off = seen.words, seen.x, seen.y, seen.offsets
    low32 = np.uint64(0xFFFFFFFF)
    in_view = np.uint64(1 << 48)
    at = 0
    for i in range(n):
        offsets[i] = at
        v0 = vis_off[i]
        n_vis = vis_off[i + 1] - v0
        if version[i] == 1:
            at = _write_v1(out, at, tick, slots[i], keyframe[i], n_vis, v0, seen, obs_tail[i],
                           tails, tail_bytes, players)
            sizes[i] = at - offsets[i]
            continue
        s = slots[i]
        kf = keyframe[i]
        ack = last_seq[s]
        sc = score[s]
        hint = np.int16(hint_col[s])
        if kf:
            flags = 0x1F  # KEYFRAME | ACK | POSITION | SCORE | HINT
        else:
            flags = 0
            if ack != sent_ack[s]:
                flags |= 0x02
            if x_bits[s] != sent_x[s] or y_bits[s] != sent_y[s]:
                flags |= 0x04
            if sc != sent_score[s]:
                flags |= 0x08
            if hint != sent_hint[s]:
                flags |= 0x10
        if n_vis:
            flags |= 0x20
        t = obs_tail[i]
        t0 = tails[t, TAIL_START]
        t1 = tails[t, TAIL_END]
        if t1 > t0:
            flags |= 0x40
        start = at + 4
        at = start
        out[at] = MessageType.TICK
        out[at + 1] = flags
        at += 2
        if kf:
            at = _put_varint(out, at, tick)
            at = _put_varint(out, at, ack)
        else:
            out[at] = tick & 0xFF
            at += 1
            if flags & 0x02:
                at = _put_varint(out, at, ack - sent_ack[s])
        if flags & 0x04:
            _put(out, at, x_bits[s], 8)
            _put(out, at + 8, y_bits[s], 8)
            at += 16
        if flags & 0x08:
            at = _put_varint(out, at, _zigzag(sc))
        if flags & 0x10:
            out[at] = hint
            at += 1
        if n_vis:
            at = _put_varint(out, at, n_vis)
            h = hunts[i]
            w = width[h]
            ht = height[h]
            # A record's words: slot | gen << 32 | flags << 48, then x and y (unsigned
            # indices: no negative-index wraparound).
            for k in range(np.uint64(v0), np.uint64(v0 + n_vis)):
                head = words[np.uint64(2) * k]
                slot = head & low32
                if head & in_view:
                    if q_tick[slot] != tick:
                        q_tick[slot] = tick
                        q_rec[slot], q_len[slot] = _in_view_bytes(
                            index[slot], _quantize(xs[k], w) | (_quantize(ys[k], ht) << 16))
                    nb = np.int64(q_len[slot])
                    if nb:
                        # One 8-byte store: the bytes past the record are written over by
                        # what follows (the next record, the tail, the next frame), and
                        # frame_sizes leaves 9 bytes a record.
                        _put(out, at, q_rec[slot], 8)
                        at += nb
                    else:
                        at = _put_varint(out, at, index[slot] * 2 + 1)
                        _put(out, at, q_rec[slot], 4)
                        at += 4
                else:
                    at = _put_varint(out, at, index[slot] * 2)
        out[at:at + t1 - t0] = tail_bytes[t0:t1]
        at += t1 - t0
        sent_ack[s] = ack
        sent_x[s] = x_bits[s]
        sent_y[s] = y_bits[s]
        sent_score[s] = sc
        sent_hint[s] = hint
        length = at - start
        head_at = start - 4
        if length < 126:  # a 2-byte header: the message moves 2 bytes back
            for k in range(length):
                out[head_at + 2 + k] = out[start + k]
        elif length >= 65536:  # a 10-byte header: 6 bytes on, copied from the end
            for k in range(length - 1, -1, -1):
                out[head_at + 10 + k] = out[start + k]
        at = _ws_header(out, head_at, length) + length
        sizes[i] = at - offsets[i]
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
        """Append one version-1 tail; returns its row index."""
        return self.add_raw(events.data, events.discoveries,
                            -1 if events.leaders is None else events.leaders, events.leaves,
                            events.names, events.names_bytes)

    def add_raw(self, raw: bytes, discoveries: int = 0, leaders: int = -1, leaves: int = 0,
                names: int = 0, names_bytes: int = 0) -> int:
        """Append one tail's bytes (a version-2 hunt part: no counts); returns its row index."""
        if self.count == self.rows.shape[0]:
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
        end = self.used + len(raw)
        if end > self.data.shape[0]:
            grown = np.zeros(max(end, 2 * self.data.shape[0]), np.uint8)
            grown[: self.used] = self.data[: self.used]
            self.data = grown
        self.data[self.used:end] = np.frombuffer(raw, np.uint8)
        row = self.rows[self.count]
        row[:] = (self.used, end, discoveries, leaders, leaves, names, names_bytes)
        self.used = end
        self.count += 1
        return self.count - 1


def compact_state(players: int, hunts: int) -> Compact:
    """A fresh :class:`Compact` for ``players`` slots and ``hunts`` hunts (nothing sent yet):
    the engine's capacities (``world.players.capacity``, ``world.hunts.capacity``)."""
    return Compact(np.full(players, -1, np.int32), np.ones(hunts), np.ones(hunts),
                   np.zeros(players, np.int64), np.zeros(players, np.int64),
                   np.zeros(players, np.int64), np.zeros(players, np.int64),
                   np.full(players, -1, np.int16), np.full(players, -1, np.int64),
                   np.zeros(players, np.int64), np.zeros(players, np.uint8))


def warm_up() -> None:
    """Compile the kernels (or load them from Numba's cache) before the first tick."""
    from ..protocol import VISIBLE_RECORD

    n = 2
    slots = np.zeros(n, np.int32)
    hunts = np.zeros(n, np.int32)
    version = np.array([1, 2], np.uint8)
    kf = np.zeros(n, np.uint8)
    records = np.zeros(2, VISIBLE_RECORD)
    records["flags"] = [1, 0]

    class Vis:
        offsets = np.array([0, 1, 2], np.int64)

    Vis.records = records
    seen = seen_of(Vis)
    tails = TailTable()
    tails.add(HuntEvents())
    obs_tail = np.zeros(n, np.int32)
    sizes = np.zeros(n, np.int64)
    total = frame_sizes(n, version, seen.offsets, obs_tail, tails.rows, sizes)
    out = np.zeros(total, np.uint8)
    f = np.zeros(1, np.float64)
    i8 = np.zeros(1, np.int64)
    players = Players(i8, f.view(np.int64), f.view(np.int64), i8, np.zeros(1, np.int8))
    compact = compact_state(1, 1)
    compact.index[0] = 0
    write_frames_to_sockets(1, np.full(1, -1, np.int64), out.ctypes.data, np.zeros(2, np.int64),
                            np.zeros(1, np.int64))
    write_frames(n, 1, slots, hunts, version, kf, seen, obs_tail, tails.rows, tails.data,
                 players, compact, out, np.zeros(n + 1, np.int64), sizes)


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
