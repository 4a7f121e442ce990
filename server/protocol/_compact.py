"""Version 2's compact TICK: the server's reference writer and the client's stateful decoder.

A version-2 TICK carries only what changed since the connection's previous TICK
(docs/protocol.md, "TICK, version 2"): a flags byte says which header fields
follow, integers are LEB128 varints, other players are named by their
hunt-local *index* (announced with their NAME entry) and their positions are
quantized to the hunt's size (two ``u16``). The player's own position stays an
exact ``f64`` pair. Decoding therefore needs the connection's state:
:class:`TickDecoder` keeps it and turns each frame into the same
:class:`TickUpdate` a version-1 TICK decodes to (slots, generations, positions
in world units). :class:`CompactTickWriter` is the one-client reference of the
server's frame kernel (server/hunt/_tickframes.py), held to it byte for byte.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from . import _constants as K
from ._constants import ErrorCode
from ._errors import LocalProtocolError, RemoteProtocolError, malformed, remote_errors, utf8
from ._messages import NameEntry, TickUpdate
from ._records import DISCOVERY_RECORD, LEADER_RECORD, LEAVE_RECORD, VISIBLE_RECORD

# Flags of a version-2 TICK (byte 1).
KEYFRAME, ACK, POSITION, SCORE, HINT, VIEW, EVENTS = (1 << b for b in range(7))
#: The header fields a keyframe always carries.
KEYFRAME_FIELDS = KEYFRAME | ACK | POSITION | SCORE | HINT
# Sections of the hunt part (its first byte).
S_DISCOVERIES, S_LEADERBOARD, S_LEAVES, S_NAMES = (1 << b for b in range(4))
#: Positions travel as ``round(x * QUANT / width)``: 0..QUANT over [0, width].
QUANT = 65535
_XY = struct.Struct("<dd")
_QQ = struct.Struct("<HH")


# ------------------------------------------------------------------ varints

def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (0..2**64-1) as an unsigned LEB128 varint."""
    value = int(value)
    if not 0 <= value < 1 << 64:
        raise LocalProtocolError(f"a varint holds 0..2^64-1, got {value}")
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def zigzag(value: int) -> int:
    """A signed 64-bit integer as an unsigned one: 0, -1, 1, -2... -> 0, 1, 2, 3..."""
    return ((value << 1) ^ (value >> 63)) & ((1 << 64) - 1)


def unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def quantize(value: float, size: float) -> int:
    """A coordinate in world units (a float32 record's value) as 0..QUANT over ``[0, size]``."""
    q = math.floor(value * QUANT / size + 0.5)
    return min(max(q, 0), QUANT)


def dequantize(q: int, size: float) -> float:
    """The position a quantized coordinate stands for, world units (error <= size / 131070)."""
    return q * size / QUANT


class _Reader:
    """Reads a version-2 TICK from the front; every overrun is MALFORMED."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def varint(self) -> int:
        data, at, value, shift = self.data, self.at, 0, 0
        while True:
            if at >= len(data):
                raise malformed("TICK ends inside a varint")
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise malformed("TICK has a varint longer than 10 bytes")
        if value >= 1 << 64:
            raise malformed("TICK has a varint above 2^64 - 1")
        self.at = at
        return value

    def take(self, n: int) -> int:
        at = self.at
        if at + n > len(self.data):
            raise malformed(f"TICK ends inside a field of {n} bytes")
        self.at = at + n
        return at

    def byte(self) -> int:
        return self.data[self.take(1)]


# ------------------------------------------------------------------ the hunt part

def encode_names(names: Iterable[tuple[int, int, int, str | None]]) -> bytes:
    """The NAME section of a version-2 hunt part: ``(index, slot, gen, name)`` of each player
    (``name`` None: unknown to the server), count first; empty for no names."""
    entries = list(names)
    if not entries:
        return b""
    out = bytearray()
    put_varint(out, len(entries))
    for index, slot, gen, name in entries:
        raw = b"" if name is None else name.encode()
        if len(raw) > K.MAX_NAME_BYTES:
            raise LocalProtocolError(f"a player name has at most {K.MAX_NAME_BYTES} bytes")
        for value in (index, slot, gen):
            put_varint(out, value)
        out.append(len(raw))
        out += raw
    return bytes(out)


def encode_hunt_section(index_of: Mapping[int, int], width: float, height: float,
                        discoveries: np.ndarray | None = None,
                        leaderboard: np.ndarray | None = None,
                        leaves: np.ndarray | None = None,
                        names: Iterable[tuple[int, int, int, str | None]] | bytes = ()
                        ) -> bytes:
    """The hunt part of a version-2 TICK (empty when nothing happened), once per hunt per tick.

    ``index_of[slot]``: the hunt-local index of every player named (the finders, the
    leaderboard's rows, those that left). ``width``, ``height``: the hunt's size, world
    units. ``discoveries`` (DISCOVERY_RECORD), ``leaderboard`` (LEADER_RECORD, None: it
    did not change) and ``leaves`` (any array with ``slot``) as in version 1;
    ``names``: ``(index, slot, gen, name)`` of each player to announce (None: name
    unknown), or that list already encoded by :func:`encode_names`.
    """
    # Records are read as tuples (``tolist``): a NumPy record and its fields would each be
    # an object per value, and these loops run once per hunt every tick.
    out = bytearray(1)
    mask = 0
    if discoveries is not None and len(discoveries):
        mask |= S_DISCOVERIES
        put_varint(out, len(discoveries))
        f = discoveries.dtype.names
        slot, hunt, treasure = f.index("slot"), f.index("hunt"), f.index("treasure")
        value, score, x, y = f.index("value"), f.index("score"), f.index("x"), f.index("y")
        for d in discoveries.tolist():
            put_varint(out, index_of[d[slot]])
            put_varint(out, d[hunt])
            put_varint(out, d[treasure])
            put_varint(out, zigzag(d[value]))
            put_varint(out, zigzag(d[score]))
            out += _QQ.pack(quantize(d[x], width), quantize(d[y], height))
    if leaderboard is not None:
        if len(leaderboard) > K.MAX_LEADERBOARD_ROWS:
            raise LocalProtocolError(f"a leaderboard has at most {K.MAX_LEADERBOARD_ROWS} rows")
        mask |= S_LEADERBOARD
        put_varint(out, len(leaderboard))
        f = leaderboard.dtype.names
        slot, score = f.index("slot"), f.index("score")
        for row in leaderboard.tolist():
            put_varint(out, index_of[row[slot]])
            put_varint(out, zigzag(row[score]))
    if leaves is not None and len(leaves):
        mask |= S_LEAVES
        put_varint(out, len(leaves))
        for slot in leaves["slot"].tolist():
            put_varint(out, index_of[slot])
    blob = names if isinstance(names, bytes) else encode_names(names)
    if blob:
        mask |= S_NAMES
        out += blob
    if not mask:
        return b""
    out[0] = mask
    return bytes(out)


# ------------------------------------------------------------------ the server's reference

class CompactTickWriter:
    """One connection's version-2 TICKs, one at a time: the reference of the frame kernel.

    Remembers what the connection was last sent (ack, position, score, hint); a diff
    carries only the fields that changed. A keyframe carries them all and the tick.
    ``index_of[slot]``: hunt-local indices; ``width``, ``height``: the hunt's size.
    """

    def __init__(self, index_of: Mapping[int, int], width: float, height: float) -> None:
        self.index_of, self.width, self.height = index_of, width, height
        self.sent: tuple[int, float, float, int, int] | None = None  # ack, x, y, score, hint

    def write(self, tick: int, ack: int, x: float, y: float, score: int, hint: int,
              visible: np.ndarray, hunt_section: bytes = b"", keyframe: bool = False) -> bytes:
        """One TICK of ``tick``; ``visible``: VISIBLE_RECORD rows as the engine lists them."""
        if not (0 <= hint <= K.MAX_HINT_LEVEL and 0 <= ack <= K.MAX_SEQ
                and math.isfinite(x) and math.isfinite(y)):
            raise LocalProtocolError(f"invalid tick state: hint={hint} ack={ack} x={x} y={y}")
        if not keyframe and self.sent is None:
            raise LocalProtocolError("the first TICK of a connection is a keyframe")
        body = bytearray()
        if keyframe:
            flags = KEYFRAME_FIELDS
            put_varint(body, tick)
            put_varint(body, ack)
        else:
            body.append(tick & 0xFF)
            s_ack, s_x, s_y, s_score, s_hint = self.sent
            flags = ((ACK if ack != s_ack else 0)
                     | (POSITION if _bits(x) != _bits(s_x) or _bits(y) != _bits(s_y) else 0)
                     | (SCORE if score != s_score else 0) | (HINT if hint != s_hint else 0))
            if flags & ACK:
                if ack < s_ack:
                    raise LocalProtocolError(f"ack went back from {s_ack} to {ack}")
                put_varint(body, ack - s_ack)
        if flags & POSITION:
            body += _XY.pack(x, y)
        if flags & SCORE:
            put_varint(body, zigzag(score))
        if flags & HINT:
            body.append(hint)
        if len(visible):
            flags |= VIEW
            put_varint(body, len(visible))
            for r in visible:
                index = self.index_of[int(r["slot"])]
                if r["flags"] & 1:
                    put_varint(body, index << 1 | 1)
                    body += _QQ.pack(quantize(float(r["x"]), self.width),
                                     quantize(float(r["y"]), self.height))
                else:
                    put_varint(body, index << 1)
        if hunt_section:
            flags |= EVENTS
        self.sent = (ack, x, y, score, hint)
        return bytes((K.MessageType.TICK, flags)) + bytes(body) + hunt_section


def _bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", value))[0]


# ------------------------------------------------------------------ the client's decoder

class TickDecoder:
    """A connection's TICK decoder: version 1 frames as they are, version 2 against the
    state of the connection's previous TICKs.

    Build one per connection from its WELCOME (:meth:`for_welcome`), feed it every
    TICK in order (``decode_server_frame(frame, ticks=decoder)``). Version 2 needs it:
    a diff omits the tick (the previous one + 1) and the fields that did not change,
    and names players by hunt-local indices that earlier TICKs announced.
    """

    def __init__(self, version: int = K.PROTOCOL_VERSION, width: float = 1.0,
                 height: float = 1.0) -> None:
        if version not in K.SUPPORTED_VERSIONS:
            raise LocalProtocolError(f"no TICK decoder for version {version}")
        self.version, self.width, self.height = version, float(width), float(height)
        #: hunt-local index -> (slot, generation), as the TICKs announced them.
        self.players: dict[int, tuple[int, int]] = {}
        self.last: TickUpdate | None = None

    @classmethod
    def for_welcome(cls, welcome: object) -> TickDecoder:
        """The decoder of the connection that ``welcome`` (a :class:`Welcome`) opened."""
        return cls(welcome.version, welcome.width, welcome.height)  # type: ignore[attr-defined]

    def decode(self, view: memoryview | bytes) -> TickUpdate:
        from ._tick import decode_tick

        update = decode_tick(memoryview(view)) if self.version == 1 else self._decode2(bytes(view))
        self.last = update
        return update

    def _decode2(self, data: bytes) -> TickUpdate:
        if len(data) < 2:
            raise malformed(f"TICK needs at least 2 bytes, got {len(data)}")
        flags = data[1]
        if flags & 0x80:
            raise malformed("TICK has reserved flag bits set")
        keyframe = bool(flags & KEYFRAME)
        if keyframe and flags & KEYFRAME_FIELDS != KEYFRAME_FIELDS:
            raise malformed("a keyframe TICK must carry ack, position, score and hint")
        last = self.last
        if not keyframe and last is None:
            raise malformed("the first TICK of a connection must be a keyframe")
        r = _Reader(data, 2)
        if keyframe:
            tick, ack = r.varint(), r.varint()
            x = y = 0.0
            score = hint = 0
        else:
            # The tick's low byte: the previous TICK's + 1, unless TICKs were lost on the
            # way (then the tick says how many, for the client to notice and resume).
            tick = last.tick + 1 + ((r.byte() - last.tick - 1) & 0xFF)
            ack = last.ack
            x, y, score, hint = last.x, last.y, last.score, last.hint
            if flags & ACK:
                ack += r.varint()
        if flags & POSITION:
            x, y = _XY.unpack_from(data, r.take(16))
        if flags & SCORE:
            score = unzigzag(r.varint())
        if flags & HINT:
            hint = r.byte()
        view = []
        if flags & VIEW:
            for _ in range(r.varint()):
                code = r.varint()
                if code & 1:
                    qx, qy = _QQ.unpack_from(data, r.take(4))
                    view.append((code >> 1, 1, qx, qy))
                else:
                    view.append((code >> 1, 0, 0, 0))
        mask, discoveries, board, leaves, names = 0, [], None, [], []
        if flags & EVENTS:
            mask = r.byte()
            if not mask or mask & 0xF0:
                raise malformed("TICK hunt part has no section or reserved section bits set")
            if mask & S_DISCOVERIES:
                for _ in range(r.varint()):
                    index, hunt, treasure, value, found = (r.varint() for _ in range(5))
                    qx, qy = _QQ.unpack_from(data, r.take(4))
                    discoveries.append((index, hunt, treasure, unzigzag(value), unzigzag(found),
                                        qx, qy))
            if mask & S_LEADERBOARD:
                board = [(r.varint(), unzigzag(r.varint())) for _ in range(r.varint())]
            if mask & S_LEAVES:
                if keyframe:
                    raise malformed("a keyframe TICK has no leaves section (it names everyone)")
                leaves = [r.varint() for _ in range(r.varint())]
            if mask & S_NAMES:
                for _ in range(r.varint()):
                    index, slot, gen = r.varint(), r.varint(), r.varint()
                    length = r.byte()
                    raw = data[r.take(length):r.at]
                    names.append((index, slot, gen, length, raw))
        if r.at != len(data):
            raise malformed(f"TICK has {len(data) - r.at} bytes after its last section")
        if hint > K.MAX_HINT_LEVEL or ack > K.MAX_SEQ or not (math.isfinite(x)
                                                               and math.isfinite(y)):
            raise RemoteProtocolError("TICK has hint > 15, ack >= 2^63 or a non-finite "
                                      "position", ErrorCode.INVALID_VALUE)
        return self._apply(tick, ack, x, y, score, hint, keyframe, view, discoveries, board,
                           leaves, names)

    def _apply(self, tick, ack, x, y, score, hint, keyframe, view, discoveries, board, leaves,
               names) -> TickUpdate:
        """Resolve indices (leaves first, then the names announced, as the doc orders it)."""
        players = self.players
        if keyframe:
            players.clear()
        left = np.zeros(len(leaves), LEAVE_RECORD)
        for k, index in enumerate(leaves):
            left[k] = self._who(index)
            del players[index]
        entries = []
        for index, slot, gen, length, raw in names:
            if length > K.MAX_NAME_BYTES or slot >= 1 << 32 or gen >= 1 << 32:
                raise RemoteProtocolError("TICK NAME entry out of range", ErrorCode.INVALID_VALUE)
            players[index] = (slot, gen)
            if length:
                name = utf8(raw, "a player name", ErrorCode.INVALID_VALUE)
                with remote_errors():
                    entries.append(NameEntry(slot, gen, name))
        visible = np.zeros(len(view), VISIBLE_RECORD)
        for k, (index, seen, qx, qy) in enumerate(view):
            slot, gen = self._who(index)
            visible[k] = (slot, gen & 0xFFFF, seen, dequantize(qx, self.width) if seen else 0.0,
                          dequantize(qy, self.height) if seen else 0.0)
        found = np.zeros(len(discoveries), DISCOVERY_RECORD)
        for k, (index, hunt, treasure, value, after, qx, qy) in enumerate(discoveries):
            slot, gen = self._who(index)
            found[k] = (hunt, treasure, slot, gen, value, after, dequantize(qx, self.width),
                        dequantize(qy, self.height))
        leaders = None
        if board is not None:
            leaders = np.zeros(len(board), LEADER_RECORD)
            for k, (index, value) in enumerate(board):
                leaders[k] = (*self._who(index), value)
        with remote_errors():
            return TickUpdate(tick, ack, x, y, score, hint, visible, keyframe, found, leaders,
                              left, tuple(entries))

    def _who(self, index: int) -> tuple[int, int]:
        who = self.players.get(index)
        if who is None:
            raise RemoteProtocolError(f"TICK names player index {index}, which no NAME entry "
                                      "announced", ErrorCode.INVALID_VALUE)
        return who
