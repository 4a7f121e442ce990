"""The numbers of the wire protocol: version, message types, error and close codes, limits.

docs/protocol.md is the prose of this module; tests/protocol_vectors.json pins the bytes.
"""

from __future__ import annotations

from enum import IntEnum

#: The version a client puts in HELLO (byte 1). Any change of a layout bumps it.
#: Version 2 differs from 1 in the TICK only (docs/protocol.md, "TICK, version 2").
PROTOCOL_VERSION = 2
#: Versions this implementation speaks: a server answers each connection in its HELLO's.
SUPPORTED_VERSIONS = frozenset({1, PROTOCOL_VERSION})


class MessageType(IntEnum):
    """Byte 0 of every binary frame. Bit 7 is set on the messages the server sends."""

    HELLO = 0x01
    MOVES = 0x02
    BYE = 0x03
    WELCOME = 0x81
    REFUSED = 0x82
    TICK = 0x83
    ERROR = 0x84
    REDIRECT = 0x85
    #: Round-based hunts only: the round's phase and its times (at WELCOME, at each change).
    ROUND = 0x86
    #: Round-based hunts only: a round's final standings.
    RESULTS = 0x87


ALL_TYPES = frozenset(int(t) for t in MessageType)
CLIENT_TYPES = frozenset(t for t in ALL_TYPES if t < 0x80)


class ErrorCode(IntEnum):
    """The ``code`` of ERROR and REFUSED messages and of :class:`ProtocolError`.

    Codes 4000 and up are app-specific and equal to the close code they come with.
    """

    MALFORMED = 1
    UNKNOWN_TYPE = 2
    UNEXPECTED = 3
    INVALID_VALUE = 4
    TOO_BIG = 5
    HANDSHAKE_TIMEOUT = 6
    RATE_LIMITED = 7
    GOING_AWAY = 8
    INTERNAL = 9
    #: A connection spent more than its budget of control frames or bytes per second.
    OVER_BUDGET = 10
    HUNT_FULL = 4001
    UNKNOWN_HUNT = 4002
    BAD_VERSION = 4003
    BAD_NAME = 4004
    RESUME_INVALID = 4005
    SERVER_FULL = 4006
    REPLACED = 4007
    TOO_SLOW = 4008
    #: Scale-out: the hunt stopped on this node (lease lost, handed over); resume through
    #: the entry URL, where any node knows the new owner.
    HUNT_MOVED = 4011
    #: Too many HELLOs from the client's IP address lately: retry after a second or more.
    TOO_MANY_JOINS = 4012
    #: The client's IP address has as many players in this hunt as the server allows.
    ADDRESS_FULL = 4013
    #: The hunt failed on this server (its tick or journal raised: a full disk, an I/O
    #: error, a bug) and stopped at its last durable tick; it restarts (here after a backoff,
    #: or on another node): resume with the token after a delay, through the entry URL.
    HUNT_FAILED = 4014
    #: The server admits only players with a join ticket (``auth = "jwt"``), and this
    #: HELLO carried none: get a ticket from the platform that sent you here.
    TICKET_REQUIRED = 4015
    #: The ticket is not one this server accepts: not a JWT, forged (bad signature), an
    #: algorithm it does not allow (``none`` among them), another audience or issuer, a
    #: claim missing or malformed, or over MAX_TICKET_BYTES. Do not retry with it.
    TICKET_INVALID = 4016
    #: The ticket's ``exp`` has passed: get a fresh ticket from the platform.
    TICKET_EXPIRED = 4017
    #: The ticket's ``nbf`` or ``iat`` lies in the future (beyond the server's leeway):
    #: a clock is wrong, on the platform or on the server.
    TICKET_NOT_YET_VALID = 4018
    #: The ticket is valid but its ``hunts`` claim does not list the HELLO's hunt.
    TICKET_FORBIDDEN = 4019


#: Close code of an ERROR that does not end the connection (a warning).
NOT_FATAL = 0

#: The WebSocket close code (RFC 6455, 7.4) that goes with each error code.
CLOSE_CODES: dict[int, int] = {
    ErrorCode.MALFORMED: 1002,  # protocol error
    ErrorCode.UNKNOWN_TYPE: 1002,
    ErrorCode.UNEXPECTED: 1008,  # policy violation
    ErrorCode.INVALID_VALUE: 1008,
    ErrorCode.TOO_BIG: 1009,  # message too big
    ErrorCode.HANDSHAKE_TIMEOUT: 1008,
    ErrorCode.RATE_LIMITED: NOT_FATAL,
    ErrorCode.GOING_AWAY: 1001,  # going away
    ErrorCode.INTERNAL: 1011,  # internal error
    ErrorCode.OVER_BUDGET: 1008,
    **{code: int(code) for code in ErrorCode if code >= 4000},
}

#: Close code that follows a REDIRECT (not an error: the client goes on to the REDIRECT's url).
CLOSE_REDIRECT = 4010

#: Errors answered to a HELLO with REFUSED rather than ERROR.
REFUSAL_CODES = frozenset({
    ErrorCode.HUNT_FULL, ErrorCode.UNKNOWN_HUNT, ErrorCode.BAD_VERSION,
    ErrorCode.BAD_NAME, ErrorCode.RESUME_INVALID, ErrorCode.SERVER_FULL,
    ErrorCode.TOO_MANY_JOINS, ErrorCode.ADDRESS_FULL, ErrorCode.TICKET_REQUIRED,
    ErrorCode.TICKET_INVALID, ErrorCode.TICKET_EXPIRED, ErrorCode.TICKET_NOT_YET_VALID,
    ErrorCode.TICKET_FORBIDDEN,
})


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may travel in an ERROR/REFUSED frame (0, or sendable per RFC 6455)."""
    return code == NOT_FATAL or 1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999


# Flag bits.
HELLO_RESUME = 0x01
WELCOME_RESUMED = 0x01
TICK_KEYFRAME = 0x01
TICK_LEADERBOARD = 0x02

# Limits and sizes (bytes unless named otherwise).
RESUME_TOKEN_BYTES = 16
TICK_HEADER_BYTES = 64
MAX_NAME_BYTES = 32
MAX_HUNT_BYTES = 256
#: Bytes of a HELLO's join ticket: what a HELLO with the longest name and hunt leaves of
#: MAX_CLIENT_FRAME_BYTES (a JWT signed with RS256 and a 2048-bit key, or EdDSA, fits).
MAX_TICKET_BYTES = 716
MAX_MESSAGE_BYTES = 256
#: UTF-8 bytes of a REDIRECT's url (ws:// or wss://) and of its node id.
MAX_URL_BYTES = 256
MAX_NODE_BYTES = 64
MAX_MOVES_PER_FRAME = 64
MAX_HINT_LEVEL = 15
MAX_LEADERBOARD_ROWS = 255
#: Standings rows a RESULTS carries at most (the hunt's leaderboard_size, <= 100).
MAX_RESULT_ROWS = 100
#: Largest seq of a TICK's or WELCOME's ack: the server's stop moves may go above a client's.
MAX_SEQ = 2**63 - 1
#: Largest seq a client may send; the seqs above it are left to the server's stop moves.
MAX_CLIENT_SEQ = 2**62 - 1
MAX_JSON_MOVE_CHARS = 256
#: Largest frame a client may send (a MOVES of 64 moves); the server's ``max_message_size``.
MAX_CLIENT_FRAME_BYTES = 4 + 16 * MAX_MOVES_PER_FRAME
#: Largest frame the server sends (a keyframe of a million visible players fits).
MAX_SERVER_FRAME_BYTES = 1 << 24
