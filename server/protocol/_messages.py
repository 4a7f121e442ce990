"""The protocol's events: frozen, slotted dataclasses validated in the constructor.

An event that exists is one that can be encoded. Invalid fields raise
:class:`LocalProtocolError` with the code a peer sending them would get; the
decoders turn that into :class:`RemoteProtocolError`. Positions and lengths are
in world units, times in ticks.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _constants as K
from ._constants import ErrorCode
from ._errors import LocalProtocolError
from ._records import DISCOVERY_RECORD, LEADER_RECORD, LEAVE_RECORD, VISIBLE_RECORD

_F32 = struct.Struct("<f")
U32, U64, I64 = 2**32 - 1, 2**64 - 1, 2**63


def _fail(event: object, name: str, what: str, code: int = ErrorCode.INVALID_VALUE) -> None:
    value = getattr(event, name)
    raise LocalProtocolError(f"{type(event).__name__}.{name} must be {what}, got {value!r}", code)


def check_int(event: object, name: str, lo: int, hi: int,
              code: int = ErrorCode.INVALID_VALUE) -> None:
    value = getattr(event, name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        _fail(event, name, f"an integer in [{lo}, {hi}]", code)
    object.__setattr__(event, name, int(value))


def check_float(event: object, name: str, *, lo: float = -math.inf, positive: bool = False,
                f32: bool = False) -> None:
    """A finite number >= lo (> 0 if ``positive``), stored as a float (rounded to float32)."""
    value, number = getattr(event, name), math.nan
    if not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating):
        try:
            number = float(value)
            number = _F32.unpack(_F32.pack(number))[0] if f32 else number
        except OverflowError:  # beyond the range of a float (float32)
            number = math.inf
    if not math.isfinite(number) or number < lo or (positive and number <= 0):
        bound = " > 0" if positive else f" >= {lo:g}" if lo > -math.inf else ""
        _fail(event, name, f"a finite {'float32' if f32 else 'number'}{bound}")
    object.__setattr__(event, name, number)


def check_text(event: object, name: str, max_bytes: int, code: int) -> None:
    """A player or hunt name: 1..max_bytes bytes of UTF-8, printable, no outer spaces."""
    value = getattr(event, name)
    ok = isinstance(value, str) and value.isprintable() and value == value.strip()
    if not ok or not 1 <= len(value.encode()) <= max_bytes:
        _fail(event, name, f"1-{max_bytes} bytes of printable UTF-8 without outer spaces", code)


def check_records(event: object, name: str, dtype: np.dtype, max_rows: int = U32) -> None:
    value = getattr(event, name)
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != dtype:
        _fail(event, name, f"a 1-D array of {dtype}")
    if len(value) > max_rows:
        _fail(event, name, f"at most {max_rows} rows")


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, first message: who joins which hunt, or resumes with a token."""

    name: str
    hunt: str
    version: int = K.PROTOCOL_VERSION
    #: 16 bytes from an earlier WELCOME, to take the same player back after a disconnect.
    resume_token: bytes | None = None
    #: A join ticket from the platform that sent the player ("" : none): opaque to the
    #: protocol, visible ASCII (a JWT's characters), at most MAX_TICKET_BYTES.
    ticket: str = field(default="", repr=False)  # a credential: kept out of reprs and logs

    def __post_init__(self) -> None:
        check_text(self, "name", K.MAX_NAME_BYTES, ErrorCode.BAD_NAME)
        check_text(self, "hunt", K.MAX_HUNT_BYTES, ErrorCode.UNKNOWN_HUNT)
        check_int(self, "version", 0, 255, ErrorCode.BAD_VERSION)
        token = self.resume_token
        if token is not None and not (isinstance(token, bytes) and len(token) == 16):
            _fail(self, "resume_token", "16 bytes or None", ErrorCode.RESUME_INVALID)
        ticket = self.ticket
        if not (isinstance(ticket, str) and len(ticket) <= K.MAX_TICKET_BYTES
                and all("!" <= c <= "~" for c in ticket)):
            _fail(self, "ticket", f"at most {K.MAX_TICKET_BYTES} characters of visible ASCII",
                  ErrorCode.TICKET_INVALID)


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> client: the hello was accepted. Everything a client needs to play."""

    player_id: int
    resume_token: bytes
    #: The server's tick when it accepted; tick messages follow with larger numbers.
    tick: int
    #: The player's last applied move seq (0 on a fresh join): a resumed client goes on from +1.
    ack: int
    width: float
    height: float
    #: World units per second at full stick (for client-side prediction).
    player_speed: float
    tick_rate: int
    discovery_radius: float
    hint_radius: float
    view_radius: float
    hint_levels: int
    #: The spawn point; on a resume, the player's current position.
    spawn_x: float
    spawn_y: float
    resumed: bool = False
    version: int = K.PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for name, lo, hi in (("player_id", 0, U64), ("tick", 0, U64), ("ack", 0, K.MAX_SEQ),
                             ("tick_rate", 1, 65535), ("hint_levels", 1, K.MAX_HINT_LEVEL),
                             ("version", 0, 255)):
            check_int(self, name, lo, hi)
        if not (isinstance(self.resume_token, bytes) and len(self.resume_token) == 16):
            _fail(self, "resume_token", "16 bytes")
        for name in ("width", "height", "discovery_radius", "hint_radius", "view_radius"):
            check_float(self, name, positive=True)
        check_float(self, "player_speed", lo=0.0)
        check_float(self, "spawn_x")
        check_float(self, "spawn_y")
        object.__setattr__(self, "resumed", bool(self.resumed))

    @classmethod
    def from_params(cls, params: Any, *, player_id: int, resume_token: bytes, tick: int,
                    spawn_x: float, spawn_y: float, ack: int = 0,
                    resumed: bool = False, version: int = K.PROTOCOL_VERSION) -> Welcome:
        """Built from a ``tickengine.HuntParams`` (duck-typed: the protocol never imports it)."""
        p = params
        return cls(player_id, resume_token, tick, ack, p.width, p.height, p.player_speed,
                   p.tick_rate, p.discovery_radius, p.hint_radius, p.view_radius, p.hint_levels,
                   spawn_x, spawn_y, resumed, version)


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """Server -> client: something went wrong. ``close_code`` 0: a warning, the connection stays.

    ``close_code`` defaults to the one :data:`CLOSE_CODES` gives the code.
    """

    code: int
    message: str
    close_code: int | None = None

    def __post_init__(self) -> None:
        check_int(self, "code", 1, 65535)
        if self.close_code is None:
            if self.code not in K.CLOSE_CODES:
                _fail(self, "close_code", f"given for the unknown code {self.code}")
            object.__setattr__(self, "close_code", K.CLOSE_CODES[self.code])
        check_int(self, "close_code", 0, 65535)
        if not K.is_valid_close_code(self.close_code):
            _fail(self, "close_code", "0, 1000-1003, 1007-1011 or 3000-4999")
        try:
            size = len(self.message.encode()) if isinstance(self.message, str) else -1
        except UnicodeEncodeError:  # lone surrogates
            size = -1
        if not 0 <= size <= K.MAX_MESSAGE_BYTES:
            _fail(self, "message", f"a str of at most {K.MAX_MESSAGE_BYTES} bytes of UTF-8")


@dataclass(frozen=True, slots=True)
class Refused(ErrorMessage):
    """Server -> client, instead of WELCOME: the hello was refused. Always fatal.

    A subclass of :class:`ErrorMessage` (same fields, same layout, its own type byte).
    """

    def __post_init__(self) -> None:
        ErrorMessage.__post_init__(self)
        if self.close_code == K.NOT_FATAL:
            _fail(self, "close_code", "nonzero (a refusal ends the connection)")


def check_url(event: object, name: str) -> None:
    """A WebSocket URL: ws:// or wss:// and more, 1..MAX_URL_BYTES bytes, no space or control."""
    value = getattr(event, name)
    ok = (isinstance(value, str) and value.startswith(("ws://", "wss://"))
          and value.rstrip("/") not in ("ws:", "wss:") and value.isprintable()
          and " " not in value)
    if not ok or not 1 <= len(value.encode("utf-8", "replace")) <= K.MAX_URL_BYTES:
        _fail(event, name, f"a ws:// or wss:// URL of 1-{K.MAX_URL_BYTES} bytes without spaces")


@dataclass(frozen=True, slots=True)
class Redirect:
    """Server -> client, instead of WELCOME: another node owns this hunt (scale-out).

    The client sends the same HELLO (same resume token) to ``url``; the server
    closes this connection with :data:`CLOSE_REDIRECT` (4010) right after.
    ``hunt`` is the HELLO's hunt; ``node`` the owner's node id (0..64 bytes, for logs).
    """

    url: str
    hunt: str
    node: str = ""

    def __post_init__(self) -> None:
        check_url(self, "url")
        check_text(self, "hunt", K.MAX_HUNT_BYTES, ErrorCode.INVALID_VALUE)
        node = self.node
        ok = isinstance(node, str) and node.isprintable() and node == node.strip()
        if not ok or len(node.encode("utf-8", "replace")) > K.MAX_NODE_BYTES:
            _fail(self, "node", f"0-{K.MAX_NODE_BYTES} bytes of printable UTF-8 without outer "
                                "spaces")


@dataclass(frozen=True, slots=True)
class Move:
    """One steering command. ``dx, dy`` are rounded to float32 (what the wire carries).

    The engine scales a direction longer than 1 down to length 1.
    """

    seq: int
    dx: float
    dy: float

    def __post_init__(self) -> None:
        check_int(self, "seq", 1, K.MAX_CLIENT_SEQ)
        check_float(self, "dx", f32=True)
        check_float(self, "dy", f32=True)


@dataclass(frozen=True, slots=True)
class Moves:
    """Client -> server: 1..MAX_MOVES_PER_FRAME moves in one frame (the highest seq wins)."""

    moves: tuple[Move, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "moves", tuple(self.moves))
        if not (1 <= len(self.moves) <= K.MAX_MOVES_PER_FRAME
                and all(isinstance(m, Move) for m in self.moves)):
            _fail(self, "moves", f"1-{K.MAX_MOVES_PER_FRAME} Move objects")


@dataclass(frozen=True, slots=True)
class Bye:
    """Client -> server: leave the hunt for good (the resume token dies)."""


@dataclass(frozen=True, slots=True)
class NameEntry:
    """The name of a player, so clients can label it."""

    slot: int
    gen: int
    name: str

    def __post_init__(self) -> None:
        check_int(self, "slot", 0, U32)
        check_int(self, "gen", 0, U32)
        check_text(self, "name", K.MAX_NAME_BYTES, ErrorCode.INVALID_VALUE)


def _no(dtype: np.dtype) -> Any:
    return field(default_factory=lambda: np.zeros(0, dtype))


@dataclass(frozen=True, slots=True, eq=False)
class TickUpdate:
    """Server -> client, once per tick: a decoded TICK message (for clients and tests).

    The server writes these with :class:`TickMessageWriter` instead, straight
    from the engine's buffers. ``leaderboard`` is None when it did not change.
    """

    tick: int
    ack: int
    x: float
    y: float
    score: int
    hint: int
    visible: np.ndarray = _no(VISIBLE_RECORD)  # noqa: RUF009
    keyframe: bool = False
    discoveries: np.ndarray = _no(DISCOVERY_RECORD)  # noqa: RUF009
    leaderboard: np.ndarray | None = None
    leaves: np.ndarray = _no(LEAVE_RECORD)  # noqa: RUF009
    names: tuple[NameEntry, ...] = ()

    def __post_init__(self) -> None:
        check_int(self, "tick", 0, U64)
        check_int(self, "ack", 0, K.MAX_SEQ)
        check_int(self, "score", -I64, I64 - 1)
        check_int(self, "hint", 0, K.MAX_HINT_LEVEL)
        check_float(self, "x")
        check_float(self, "y")
        object.__setattr__(self, "keyframe", bool(self.keyframe))
        check_records(self, "visible", VISIBLE_RECORD)
        check_records(self, "discoveries", DISCOVERY_RECORD)
        check_records(self, "leaves", LEAVE_RECORD)
        if self.leaderboard is not None:
            check_records(self, "leaderboard", LEADER_RECORD, K.MAX_LEADERBOARD_ROWS)
        object.__setattr__(self, "names", tuple(self.names))
        if not all(isinstance(n, NameEntry) for n in self.names):
            _fail(self, "names", "NameEntry objects")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TickUpdate):
            return NotImplemented
        return all(
            (a is None and b is None) or (a is not None and b is not None
                                          and a.tobytes() == b.tobytes())
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b
            for a, b in ((getattr(self, f), getattr(other, f)) for f in self.__slots__))

    __hash__ = None  # type: ignore[assignment]
