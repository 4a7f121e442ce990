"""The journal's byte format: one checksummed record per tick, bytes in and bytes out.

No files here (see :mod:`._files`): :func:`encode_tick` turns one tick's inputs
into one record, :func:`scan` walks a segment's bytes and stops at the first
record it cannot prove (bad magic, impossible length, short read, CRC mismatch),
and :func:`decode_tick` turns a proven record back into arrays. All integers are
little-endian; docs/durability.md draws the layout.

Record::

    0   4  magic b"THJ1"
    4   4  payload length in bytes (u32)
    8   8  tick (i64): the tick the record describes (the segment's first tick for a header)
    16  1  kind (u8): 0 segment header, 1 tick
    17  3  zero
    20  4  CRC-32 (zlib) of bytes 4..20 followed by the payload
    24  n  payload

A tick payload is a fixed part (``TICK_FIXED``: counts, flags, the raw 16-byte
state hash) then raw arrays, each ``count`` items long, in this order: move ids
(i8), move sequence numbers (i8), move dx (f8), move dy (f8), join player ids
(i8), join hunts (i4), join name lengths in bytes (u4), join token hashes (16
bytes each: :func:`token_hash`; segment format 1 held the tokens themselves), join
names (UTF-8, concatenated), leaves (i8 player ids), hunts added (a
JSON list of ``HuntParams.to_dict()``), server events (a JSON list).

A round request (``World.request_round``, an operator's "start the next round now" or
"end the round now") travels in the events list as ``{"round": "start" | "end",
"hunt": <hunt index>}``; recovery and replay apply it before the tick's moves. A
journal without any (every older one) replays as before.

The joins' user ids (ticket mode, server/auth) travel in the events list, as one event
``{"join_users": [user of join 0, user of join 1, ...]}`` ("" for an anonymous join),
written only when some join has a user: a journal without it (every older one) reads
as anonymous joins, and an older reader takes it for a server event it ignores.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"THJ1"
#: magic, payload length, tick, kind, CRC-32.
HEADER = struct.Struct("<4sIqB3xI")
KIND_SEGMENT = 0
KIND_TICK = 1
#: Move, join and leave counts, name bytes, hunts JSON bytes, events JSON bytes, flags,
#: state hash (raw digest; zeros when absent).
TICK_FIXED = struct.Struct("<7I16s")
FLAG_HASH = 1
#: Bytes of a resume token, and of the hash of one that the journal stores instead.
TOKEN_BYTES = 16
#: Bytes of a raw state hash (``World.state_hash()`` is this many bytes in hex).
HASH_BYTES = 16
#: Largest payload a reader accepts (bytes): a length above it is corruption, not data.
MAX_PAYLOAD = 1 << 30
#: 2: join tokens are stored as :func:`token_hash` (1: in plaintext; still read, and
#: hashed on the way in, so a data dir of an older server recovers).
SEGMENT_FORMAT = 2
READABLE_FORMATS = (1, 2)

#: The key of a round request event (see the module docstring).
ROUND_EVENT = "round"
#: The key of the event that carries the joins' user ids (see the module docstring).
JOIN_USERS = "join_users"

_I8, _I4, _U4, _F8 = np.dtype("<i8"), np.dtype("<i4"), np.dtype("<u4"), np.dtype("<f8")


def token_hash(token: bytes) -> bytes:
    """What the journal and snapshots keep of a resume token: the first 16 bytes of its
    SHA-256. A leaked data dir then holds no token that resumes a player."""
    return hashlib.sha256(token).digest()[:TOKEN_BYTES]


class FormatError(ValueError):
    """A record passed its checksum but does not decode (a bug of the writer, or a
    checksum collision): the reader treats it like corruption."""


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One tick's inputs as read back from the journal. Arrays are private copies."""

    tick: int
    #: ``HuntParams.to_dict()`` of the hunts added before this tick.
    hunts: list[dict[str, Any]]
    join_ids: np.ndarray
    join_hunts: np.ndarray
    join_names: list[str]
    join_tokens: list[bytes]
    #: Each join's user id (ticket mode), "" for an anonymous one.
    join_users: list[str]
    leaves: np.ndarray
    move_ids: np.ndarray
    move_seqs: np.ndarray
    move_dx: np.ndarray
    move_dy: np.ndarray
    #: Hex state hash recorded after the tick, or None.
    state_hash: str | None
    #: The server's JSON-able events of this tick (resumes and the like).
    events: list[Any]


def _frame(kind: int, tick: int, parts: list[bytes]) -> bytes:
    length = sum(len(p) for p in parts)
    if length > MAX_PAYLOAD:
        raise ValueError(f"a journal record holds at most {MAX_PAYLOAD} bytes, not {length}")
    head = HEADER.pack(MAGIC, length, tick, kind, 0)
    crc = zlib.crc32(head[4:20])
    for p in parts:
        crc = zlib.crc32(p, crc)
    return b"".join([HEADER.pack(MAGIC, length, tick, kind, crc), *parts])


def encode_segment_header(first_tick: int, info: dict[str, Any]) -> bytes:
    """The record that opens a segment: its first tick and a JSON description."""
    body = {"format": SEGMENT_FORMAT, "first_tick": first_tick, **info}
    return _frame(KIND_SEGMENT, first_tick, [json.dumps(body).encode()])


def encode_tick(tick: int, *, hunts: list[dict[str, Any]], join_ids: np.ndarray,
                join_hunts: np.ndarray, join_names: list[bytes], join_tokens: list[bytes],
                leaves: np.ndarray, moves: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                state_hash: bytes | None, events: list[Any] | None,
                join_users: list[str] | None = None) -> bytes:
    """One tick record. Arrays must already have the record's dtypes (see module doc);
    ``join_users``: each join's user id ("" anonymous), None when all are anonymous."""
    ids, seqs, dx, dy = moves
    if join_users is not None and any(join_users):
        if len(join_users) != join_ids.shape[0]:
            raise ValueError("join_users must give one user id (or \"\") per join")
        events = [*(events or ()), {JOIN_USERS: list(join_users)}]
    hunts_json = json.dumps(hunts).encode() if hunts else b""
    events_json = json.dumps(events).encode() if events else b""
    names = b"".join(join_names)
    fixed = TICK_FIXED.pack(
        ids.shape[0], join_ids.shape[0], leaves.shape[0], len(names), len(hunts_json),
        len(events_json), FLAG_HASH if state_hash is not None else 0,
        state_hash if state_hash is not None else bytes(HASH_BYTES),
    )
    parts = [fixed, ids.tobytes(), seqs.tobytes(), dx.tobytes(), dy.tobytes()]
    if join_ids.shape[0]:
        lengths = np.fromiter((len(n) for n in join_names), _U4, join_ids.shape[0])
        parts += [join_ids.tobytes(), join_hunts.tobytes(), lengths.tobytes(),
                  b"".join(join_tokens), names]
    if leaves.shape[0]:
        parts.append(leaves.tobytes())
    parts += [hunts_json, events_json]
    return _frame(KIND_TICK, tick, parts)


@dataclass(frozen=True, slots=True)
class Scan:
    """What :func:`scan` proved about a segment's bytes."""

    #: ``(kind, tick, payload start, payload end)`` of each proven record, in file order.
    records: list[tuple[int, int, int, int]]
    #: Bytes of the proven prefix (the offset where a torn or corrupt part starts).
    valid_end: int
    #: Why reading stopped before the end of the data (None: every byte was proven).
    problem: str | None


def scan(data: bytes | bytearray | memoryview) -> Scan:
    """Walk records from offset 0 and stop at the first one that cannot be proven."""
    view = memoryview(data)
    end = len(view)
    records: list[tuple[int, int, int, int]] = []
    pos = 0
    problem = None
    while pos < end:
        if end - pos < HEADER.size:
            problem = f"partial record header ({end - pos} of {HEADER.size} bytes)"
            break
        magic, length, tick, kind, crc = HEADER.unpack_from(view, pos)
        if magic != MAGIC:
            problem = "bad record magic"
            break
        if kind not in (KIND_SEGMENT, KIND_TICK) or length > MAX_PAYLOAD:
            problem = "bad record header"
            break
        stop = pos + HEADER.size + length
        if stop > end:
            problem = f"partial record ({end - pos} of {HEADER.size + length} bytes)"
            break
        if zlib.crc32(view[pos + HEADER.size : stop], zlib.crc32(view[pos + 4 : pos + 20])) != crc:
            problem = "checksum mismatch"
            break
        records.append((kind, tick, pos + HEADER.size, stop))
        pos = stop
    return Scan(records, pos, problem)


def decode_segment_header(payload: bytes | memoryview) -> dict[str, Any]:
    try:
        info = json.loads(bytes(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"segment header is not JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") not in READABLE_FORMATS:
        raise FormatError(f"segment format {info.get('format') if isinstance(info, dict) else '?'}"
                          f" is not one of {READABLE_FORMATS}")
    return info


def decode_tick(tick: int, payload: bytes | memoryview) -> TickRecord:
    """The tick record's inputs; :class:`FormatError` if the payload does not add up."""
    view = memoryview(payload)
    if len(view) < TICK_FIXED.size:
        raise FormatError(f"tick {tick}: payload shorter than its fixed part")
    n_moves, n_joins, n_leaves, n_names, n_hunts, n_events, flags, digest = (
        TICK_FIXED.unpack_from(view, 0))
    expected = (TICK_FIXED.size + 32 * n_moves + n_joins * (8 + 4 + 4 + TOKEN_BYTES)
                + n_names + 8 * n_leaves + n_hunts + n_events)
    if expected != len(view):
        raise FormatError(f"tick {tick}: counts add up to {expected} bytes, payload has "
                          f"{len(view)}")
    pos = TICK_FIXED.size

    def take(dtype: np.dtype, count: int) -> np.ndarray:
        nonlocal pos
        # A copy: aligned, writable, native (what the engine's kernels are compiled for).
        arr = np.frombuffer(view, dtype, count, pos).astype(dtype.newbyteorder("="))
        pos += count * dtype.itemsize
        return arr

    move_ids, move_seqs = take(_I8, n_moves), take(_I8, n_moves)
    move_dx, move_dy = take(_F8, n_moves), take(_F8, n_moves)
    join_ids, join_hunts, lengths = take(_I8, n_joins), take(_I4, n_joins), take(_U4, n_joins)
    tokens = [bytes(view[pos + k * TOKEN_BYTES : pos + (k + 1) * TOKEN_BYTES])
              for k in range(n_joins)]
    pos += n_joins * TOKEN_BYTES
    if int(lengths.sum()) != n_names:
        raise FormatError(f"tick {tick}: join name lengths do not add up")
    names = []
    try:
        for n in lengths.tolist():
            names.append(str(view[pos : pos + n], "utf-8"))
            pos += n
    except UnicodeDecodeError as exc:
        raise FormatError(f"tick {tick}: a join name is not UTF-8") from exc
    leaves = take(_I8, n_leaves)
    try:
        hunts = json.loads(bytes(view[pos : pos + n_hunts])) if n_hunts else []
        pos += n_hunts
        events = json.loads(bytes(view[pos : pos + n_events])) if n_events else []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"tick {tick}: hunts or events are not JSON: {exc}") from exc
    if not isinstance(hunts, list) or not isinstance(events, list):
        raise FormatError(f"tick {tick}: hunts and events must be JSON lists")
    users = [""] * n_joins
    for k, event in enumerate(events):
        if isinstance(event, dict) and JOIN_USERS in event:
            users = event[JOIN_USERS]
            if not (isinstance(users, list) and len(users) == n_joins
                    and all(isinstance(u, str) for u in users)):
                raise FormatError(f"tick {tick}: join_users does not match the joins")
            del events[k]
            break
    return TickRecord(
        tick=tick, hunts=hunts, join_ids=join_ids, join_hunts=join_hunts, join_names=names,
        join_tokens=tokens, join_users=users, leaves=leaves, move_ids=move_ids, move_seqs=move_seqs,
        move_dx=move_dx, move_dy=move_dy,
        state_hash=digest.hex() if flags & FLAG_HASH else None, events=events,
    )
