"""TICK messages: the server's fast writer and the client's decoder.

A TICK frame is a 64-byte header, then the player's visible records, then the
part that is the same for every player of a hunt (discoveries, leaderboard,
leave notices, names: :class:`HuntEvents`, encoded once per hunt per tick).
Writing one is a ``struct.pack_into`` and two memcpys into a reusable buffer.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import _constants as K
from ._constants import TICK_HEADER_BYTES, TICK_KEYFRAME, TICK_LEADERBOARD, ErrorCode
from ._errors import LocalProtocolError, malformed, remote_errors, utf8
from ._messages import NameEntry, TickUpdate
from ._records import DISCOVERY_RECORD, LEADER_RECORD, LEAVE_RECORD, VISIBLE_RECORD

TICK_HEADER = struct.Struct("<BBBBIQQddqIIII")
NAME_ENTRY = struct.Struct("<IIB")
_SECTIONS = (VISIBLE_RECORD, DISCOVERY_RECORD, LEADER_RECORD, LEAVE_RECORD)


@dataclass(frozen=True, slots=True)
class HuntEvents:
    """The encoded tail of a TICK message shared by the players of one hunt in one tick.

    Build it with :func:`encode_hunt_events`. ``leaders`` is None when the
    leaderboard did not change (the TICK's leaderboard flag is then clear).
    """

    discoveries: int = 0
    leaders: int | None = None
    leaves: int = 0
    names: int = 0
    names_bytes: int = 0
    data: bytes = b""


#: No discoveries, leaderboard unchanged, nobody left or joined.
NO_EVENTS = HuntEvents()


def _raw(records: np.ndarray | None, dtype: np.dtype, what: str) -> bytes:
    if records is None:
        return b""
    if not isinstance(records, np.ndarray) or records.ndim != 1 or records.dtype != dtype:
        raise LocalProtocolError(f"{what} must be a 1-D array of {dtype}")
    return records.tobytes()


def encode_hunt_events(
    discoveries: np.ndarray | None = None,
    leaderboard: np.ndarray | None = None,
    leaves: np.ndarray | None = None,
    names: Iterable[NameEntry | tuple[int, int, str]] = (),
) -> HuntEvents:
    """Encode one hunt's events of one tick, once, for all its players' TICK messages.

    ``discoveries``: DISCOVERY_RECORD rows of this hunt (the engine's buffer is
    in treasure row order and a hunt's rows are contiguous: a slice).
    ``leaderboard``: LEADER_RECORD rows if it changed (or for a keyframe), else
    None. ``leaves``: players that left, LEAVE_RECORD or any array with ``slot``
    and ``gen`` fields (the engine's LEFT membership records). ``names``:
    players whose names the clients should learn.
    """
    if leaves is not None and getattr(leaves, "dtype", None) != LEAVE_RECORD:
        if not {"slot", "gen"} <= set(getattr(leaves.dtype, "names", None) or ()):
            raise LocalProtocolError("leaves need 'slot' and 'gen' fields")
        converted = np.zeros(len(leaves), LEAVE_RECORD)
        converted["slot"], converted["gen"] = leaves["slot"], leaves["gen"]
        leaves = converted
    if leaderboard is not None and len(leaderboard) > K.MAX_LEADERBOARD_ROWS:
        raise LocalProtocolError(f"a leaderboard has at most {K.MAX_LEADERBOARD_ROWS} rows")
    entries = [n if isinstance(n, NameEntry) else NameEntry(*n) for n in names]
    blob = b"".join(NAME_ENTRY.pack(n.slot, n.gen, len(raw)) + raw
                    for n in entries for raw in [n.name.encode()])
    data = b"".join([_raw(discoveries, DISCOVERY_RECORD, "discoveries"),
                     _raw(leaderboard, LEADER_RECORD, "leaderboard"),
                     _raw(leaves, LEAVE_RECORD, "leaves"), blob])
    return HuntEvents(0 if discoveries is None else len(discoveries),
                      None if leaderboard is None else len(leaderboard),
                      0 if leaves is None else len(leaves), len(entries), len(blob), data)


def tick_message_size(n_visible: int, events: HuntEvents = NO_EVENTS) -> int:
    """Bytes of a TICK message with ``n_visible`` visible records and ``events``."""
    return TICK_HEADER_BYTES + VISIBLE_RECORD.itemsize * n_visible + len(events.data)


class TickMessageWriter:
    """Writes TICK messages into one reusable buffer, without per-record Python objects.

    The returned memoryview is valid until the next :meth:`write`: send it at
    once, or ``bytes()`` it to queue it. The buffer grows (by replacement, so
    older views stay intact) when a message does not fit.
    """

    def __init__(self, capacity: int = 64 * 1024) -> None:
        self._view = memoryview(bytearray(max(capacity, TICK_HEADER_BYTES)))

    def write(self, tick: int, ack: int, x: float, y: float, score: int, hint: int,
              visible: np.ndarray, events: HuntEvents = NO_EVENTS,
              keyframe: bool = False) -> memoryview:
        """One player's TICK: its state, its visible records as they lie, its hunt's events.

        ``visible`` is a contiguous VISIBLE_RECORD slice (``Visibility.of(i)``);
        ``keyframe``: the records replace the client's view instead of patching it.
        """
        if visible.dtype != VISIBLE_RECORD or visible.ndim != 1:
            raise LocalProtocolError(f"visible must be a 1-D {VISIBLE_RECORD} array")
        if not (0 <= hint <= K.MAX_HINT_LEVEL and 0 <= ack <= K.MAX_SEQ
                and math.isfinite(x) and math.isfinite(y)):
            raise LocalProtocolError(f"invalid tick state: hint={hint} ack={ack} x={x} y={y}")
        end = TICK_HEADER_BYTES + visible.nbytes
        size = end + len(events.data)
        if size > len(self._view):
            if size > K.MAX_SERVER_FRAME_BYTES:
                raise LocalProtocolError(f"a TICK of {size} bytes is too big", ErrorCode.TOO_BIG)
            self._view = memoryview(bytearray(max(size, 2 * len(self._view))))
        view, leaders = self._view, events.leaders
        flags = (TICK_KEYFRAME if keyframe else 0) | (0 if leaders is None else TICK_LEADERBOARD)
        try:
            TICK_HEADER.pack_into(view, 0, K.MessageType.TICK, flags, hint, leaders or 0,
                                  len(visible), tick, ack, x, y, score, events.discoveries,
                                  events.leaves, events.names, events.names_bytes)
            view[TICK_HEADER_BYTES:end] = memoryview(visible).cast("B")
        except (struct.error, TypeError) as exc:
            raise LocalProtocolError(f"cannot write TICK: {exc}") from None
        view[end:size] = events.data
        return view[:size]


def encode_tick(e: TickUpdate) -> bytes:
    events = encode_hunt_events(e.discoveries, e.leaderboard, e.leaves, e.names)
    writer = TickMessageWriter(tick_message_size(len(e.visible), events))
    return bytes(writer.write(e.tick, e.ack, e.x, e.y, e.score, e.hint,
                              np.ascontiguousarray(e.visible), events, e.keyframe))


def decode_tick(view: memoryview) -> TickUpdate:
    size = len(view)
    if size < TICK_HEADER_BYTES:
        raise malformed(f"TICK needs at least {TICK_HEADER_BYTES} bytes, got {size}")
    (_, flags, hint, n_lead, n_vis, tick, ack, x, y, score, n_disc, n_leave, n_names,
     names_bytes) = TICK_HEADER.unpack_from(view)
    if flags & ~(TICK_KEYFRAME | TICK_LEADERBOARD) or (n_lead and not flags & TICK_LEADERBOARD):
        raise malformed("TICK has reserved flag bits set, or rows of a leaderboard it lacks")
    counts = (n_vis, n_disc, n_lead, n_leave)
    expected = TICK_HEADER_BYTES + sum(n * d.itemsize for n, d in zip(counts, _SECTIONS,
                                                                       strict=True))
    if size != expected + names_bytes or n_names * (NAME_ENTRY.size + 1) > names_bytes:
        raise malformed(f"TICK header announces {expected + names_bytes} bytes and {n_names} "
                        f"names in {names_bytes}; the frame has {size} bytes")
    data = bytes(view)  # the arrays below are read-only views of this copy
    arrays, at = [], TICK_HEADER_BYTES
    for n, dtype in zip(counts, _SECTIONS, strict=True):
        arrays.append(np.frombuffer(data, dtype, n, at))
        at += n * dtype.itemsize
    names = []
    with remote_errors():
        for _ in range(n_names):
            if at + NAME_ENTRY.size > size:
                raise malformed("TICK name table is shorter than its count")
            slot, gen, length = NAME_ENTRY.unpack_from(data, at)
            at += NAME_ENTRY.size + length
            if at > size:
                raise malformed("TICK name entry runs past the end of the frame")
            name = utf8(data[at - length:at], "a player name", ErrorCode.INVALID_VALUE)
            names.append(NameEntry(slot, gen, name))
        if at != size:
            raise malformed("TICK name table does not fill names_bytes")
        visible, discoveries, leaderboard, leaves = arrays
        return TickUpdate(tick, ack, x, y, score, hint, visible, bool(flags & TICK_KEYFRAME),
                          discoveries, leaderboard if flags & TICK_LEADERBOARD else None,
                          leaves, tuple(names))
