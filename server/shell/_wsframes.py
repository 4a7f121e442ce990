"""WebSocket frames (RFC 6455, section 5) after the handshake: sans-IO, server side.

Why not trio-websocket's reader for the data phase: it parses every frame
through wsproto's general machinery and hands each message across a memory
channel to another task, a cost per small message that dominates at game rates
(perf/bench_ingest.py measures it against this module in the same run). A hunt
server receives tens of thousands of 20-byte MOVES frames per second, so the
server parses client frames here: one pass over the received bytes, one
``int.from_bytes`` XOR to unmask a small payload. The handshake stays on
wsproto (``server/shell/_conn.py``) and the Python client stays on trio-websocket.

Server frames are never masked, so their header is 2, 4 or 10 bytes:
:func:`frame_header` lays it in front of a pre-encoded message, which is then
sent with one write.

Only what a game server needs: no extensions (RSV bits must be 0), client
frames must be masked, control frames are at most 125 bytes and unfragmented,
data messages may be fragmented and are limited to ``max_message`` bytes and
``max_fragments`` frames.

Budgets (:meth:`FrameParser.set_budgets`): what one client may spend per
second in raw bytes and in control frames, as token buckets. Past a budget the
parser raises :class:`FrameError` with close code 1008 (``OVER_BUDGET``), so a
flood costs the server a few reads, never the other clients' ticks.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_CONTROL = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_DATA = frozenset({OP_TEXT, OP_BINARY})

#: Close codes a peer may send (RFC 6455, 7.4.1 and 7.4.2).
_VALID_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                          1014}) | frozenset(range(3000, 5000))

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class FrameError(Exception):
    """The peer broke RFC 6455 or a budget: close the connection with :attr:`close_code`.

    ``error`` names the protocol's error code of the ERROR sent before the close
    (``server.protocol.ErrorCode``): MALFORMED (1002, 1007), TOO_BIG (1009) or
    OVER_BUDGET (1008).
    """

    def __init__(self, message: str, close_code: int = 1002, error: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code
        self.error = error or {1009: "TOO_BIG", 1008: "OVER_BUDGET"}.get(close_code,
                                                                         "MALFORMED")


class Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up; it starts
    full. Sans-IO: the caller passes the time (seconds, any monotonic clock)."""

    __slots__ = ("burst", "level", "rate", "t")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.t = now

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if the bucket holds them (False: over budget)."""
        level = min(self.burst, self.level + (now - self.t) * self.rate)
        self.t = now
        if level < amount:
            self.level = level
            return False
        self.level = level - amount
        return True


@dataclass(frozen=True, slots=True)
class Message:
    """A complete message or control frame from the client.

    ``opcode`` is OP_TEXT, OP_BINARY, OP_PING, OP_PONG or OP_CLOSE (then
    ``close_code`` and ``reason`` are set; ``close_code`` is 1005 for none).
    """

    opcode: int
    payload: bytes
    close_code: int = 0
    reason: str = ""


def frame_header(length: int, opcode: int = OP_BINARY) -> bytes:
    """The header of one unmasked, final server frame carrying ``length`` payload bytes."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + _U16.pack(length)
    return bytes((first, 127)) + _U64.pack(length)


def header_size(length: int) -> int:
    """Bytes of :func:`frame_header` for a payload of ``length`` bytes."""
    return 2 if length < 126 else 4 if length < 65536 else 10


def frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One complete unmasked server frame."""
    return frame_header(len(payload), opcode) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason cut to fit the 125-byte control limit."""
    raw = reason.encode()[:123]
    while raw:
        try:
            raw.decode()
            break
        except UnicodeDecodeError:  # never cut a character in half
            raw = raw[:-1]
    return frame(_U16.pack(code) + raw, OP_CLOSE)


def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask`` (one big-int XOR, no loop)."""
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class FrameParser:
    """Turns the bytes a client sends into :class:`Message` objects.

    ``feed(data)`` appends received bytes; ``next()`` returns the next complete
    message or None when more bytes are needed. Raises :class:`FrameError` for
    a protocol violation (1002), invalid UTF-8 in a text message (1007), a
    message over ``max_message`` bytes or ``max_fragments`` frames (1009, raised
    as soon as the header announces it, before the payload arrives), or a budget
    overspent (1008, see :meth:`set_budgets`).
    """

    def __init__(self, max_message: int, max_fragments: int = 1 << 30) -> None:
        self.max_message = max_message
        self.max_fragments = max_fragments
        self._buf = bytearray()
        self._pos = 0
        self._frag_opcode = 0
        self._frag_parts: list[bytes] = []
        self._frag_size = 0
        self._bytes_budget: Bucket | None = None
        self._control_budget: Bucket | None = None
        self._clock: Callable[[], float] = time.monotonic
        self._over: FrameError | None = None
        #: The budget this peer overspent ("bytes", "control_frames", "fragments"), else "".
        self.exceeded = ""

    def set_budgets(self, *, max_fragments: int, control_per_second: float,
                    bytes_per_second: float, clock: Callable[[], float] = time.monotonic
                    ) -> None:
        """Cap fragments per message, and the control frames and raw bytes the peer may
        send per second, each with a burst of one second's worth (bytes: at least four
        ``max_message``, so that no legal message is over budget on its own)."""
        now = clock()
        self.max_fragments = max_fragments
        self._clock = clock
        self._control_budget = Bucket(control_per_second, max(1.0, control_per_second), now)
        self._bytes_budget = Bucket(bytes_per_second,
                                    max(bytes_per_second, 4.0 * self.max_message), now)

    def feed(self, data: bytes, *, charged: bool = False) -> None:
        """Append received bytes (over the byte budget: the next :meth:`next` raises).
        ``charged``: bytes already taken from :attr:`bytes_budget` by whoever read them."""
        budget = self._bytes_budget
        if not charged and budget is not None and not budget.take(len(data), self._clock()):
            self._over = FrameError(f"more than {self._bytes_budget.rate:g} bytes per second",
                                    1008)
            self.exceeded = "bytes"
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet parsed."""
        return len(self._buf) - self._pos

    @property
    def bytes_budget(self) -> Bucket | None:
        """The raw-byte budget (None: unlimited); its clock is :attr:`clock`."""
        return self._bytes_budget

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def in_fragment(self) -> bool:
        """A fragmented message has begun and not ended."""
        return bool(self._frag_opcode)

    def take_buffered(self) -> bytes:
        """The bytes received and not yet parsed, removed from the parser (a reader that
        parses the following frames itself takes them over)."""
        rest = bytes(self._buf[self._pos:])
        self._buf.clear()
        self._pos = 0
        return rest

    def next(self) -> Message | None:
        if self._over is not None:
            raise self._over
        while True:
            buf, pos = self._buf, self._pos
            avail = len(buf) - pos
            if avail < 2:
                return None
            b0, b1 = buf[pos], buf[pos + 1]
            fin, opcode, length = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70:
                raise FrameError("RSV bits set: no extension was negotiated")
            if not b1 & 0x80:
                raise FrameError("client frames must be masked (RFC 6455, 5.1)")
            at = pos + 2
            if length == 126:
                if avail < 4:
                    return None
                (length,) = _U16.unpack_from(buf, at)
                at += 2
            elif length == 127:
                if avail < 10:
                    return None
                (length,) = _U64.unpack_from(buf, at)
                at += 8
            if opcode in _CONTROL:
                if not fin or length > 125:
                    raise FrameError("control frames are final and at most 125 bytes")
                budget = self._control_budget
                if budget is not None and not budget.take(1, self._clock()):
                    self._over = FrameError(
                        f"more than {budget.rate:g} control frames (ping, pong) per "
                        "second", 1008)
                    self.exceeded = "control_frames"
                    raise self._over
            elif opcode in _DATA or opcode == OP_CONTINUATION:
                if (opcode == OP_CONTINUATION) != bool(self._frag_opcode):
                    raise FrameError("continuation frame without a message to continue"
                                     if opcode == OP_CONTINUATION else
                                     "new message inside a fragmented one")
                if self._frag_size + length > self.max_message:
                    raise FrameError(f"message over {self.max_message} bytes", 1009)
                # Empty continuations count: an endless run of them is a flood, not a message.
                if not fin and len(self._frag_parts) + 1 >= self.max_fragments:
                    self.exceeded = "fragments"
                    raise FrameError(f"message in more than {self.max_fragments} fragments",
                                     1009)
            else:
                raise FrameError(f"unknown opcode {opcode:#x}")
            end = at + 4 + length
            if len(buf) < end:
                return None
            payload = unmask(memoryview(buf)[at + 4:end], bytes(buf[at:at + 4]))
            self._pos = end
            if opcode in _CONTROL:
                return self._control(opcode, payload)
            if opcode != OP_CONTINUATION and fin:
                return self._data(opcode, payload)
            if opcode != OP_CONTINUATION:
                self._frag_opcode = opcode
            self._frag_parts.append(payload)
            self._frag_size += length
            if fin:
                op, whole = self._frag_opcode, b"".join(self._frag_parts)
                self._frag_opcode, self._frag_parts, self._frag_size = 0, [], 0
                return self._data(op, whole)

    @staticmethod
    def _data(opcode: int, payload: bytes) -> Message:
        if opcode == OP_TEXT:
            try:
                payload.decode()
            except UnicodeDecodeError:
                raise FrameError("text message is not valid UTF-8", 1007) from None
        return Message(opcode, payload)

    @staticmethod
    def _control(opcode: int, payload: bytes) -> Message:
        if opcode != OP_CLOSE:
            return Message(opcode, payload)
        if not payload:
            return Message(OP_CLOSE, b"", 1005)
        if len(payload) == 1:
            raise FrameError("close frame with a 1-byte payload")
        (code,) = _U16.unpack_from(payload)
        if code not in _VALID_CLOSE:
            raise FrameError(f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise FrameError("close reason is not valid UTF-8", 1007) from None
        return Message(OP_CLOSE, payload, code, reason)
