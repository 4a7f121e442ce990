"""Encoders and decoders of every message, routed by the type byte.

Pure functions on bytes, layouts in docs/protocol.md. A decoder checks the
length before it reads, every count against the frame's length, reserved bytes
(must be 0) and every value; it raises only :class:`RemoteProtocolError`.
TICK messages have their own module (``_tick``), for the server's fast writer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _constants as K
from ._compact import TickDecoder
from ._constants import ErrorCode, MessageType
from ._errors import LocalProtocolError, RemoteProtocolError, malformed, remote_errors, utf8
from ._messages import (
    Bye,
    ErrorMessage,
    Hello,
    Move,
    Moves,
    Redirect,
    Refused,
    TickUpdate,
    Welcome,
)
from ._records import MOVE_RECORD
from ._rounds import Results, Round, decode_results, decode_round, encode_results, encode_round
from ._tick import decode_tick, encode_tick

HELLO = struct.Struct("<BBBBHH16s")
WELCOME = struct.Struct("<BBBBHHQ16sQQdddddddd")
NOTICE = struct.Struct("<BBHHH")
REDIRECT = struct.Struct("<BBHHH")
MOVES_HEADER = struct.Struct("<BBH")
_NO_TOKEN = bytes(K.RESUME_TOKEN_BYTES)

Frame = bytes | bytearray | memoryview
ClientEvent = Hello | Moves | Bye
ServerEvent = Welcome | Refused | Redirect | ErrorMessage | TickUpdate | Round | Results


def byte_view(frame: Frame, limit: int | None = None) -> memoryview:
    """A flat byte view of a binary frame, after checking it is not empty nor over ``limit``."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"a binary frame must be bytes-like, got {type(frame).__name__}")
    view = memoryview(frame)
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except TypeError:
            raise LocalProtocolError("a frame must be a C-contiguous buffer") from None
    if not view.nbytes:
        raise malformed("empty frame")
    if limit is not None and view.nbytes > limit:
        raise RemoteProtocolError(f"frame of {view.nbytes} bytes exceeds the limit of {limit}",
                                  ErrorCode.TOO_BIG)
    return view


def check_length(view: bytes | memoryview, expected: int, what: str) -> None:
    if len(view) != expected:
        raise malformed(f"{what} must be {expected} bytes, got {len(view)}")


def encode_hello(e: Hello) -> bytes:
    name, hunt = e.name.encode(), e.hunt.encode()
    flags = K.HELLO_RESUME if e.resume_token is not None else 0
    ticket = e.ticket.encode("ascii")
    return HELLO.pack(MessageType.HELLO, e.version, flags, len(name), len(hunt), len(ticket),
                      e.resume_token or _NO_TOKEN) + name + hunt + ticket


def decode_hello(view: memoryview) -> Hello:
    # The version is read first: a HELLO of another version may have another layout,
    # and deserves BAD_VERSION, not MALFORMED.
    version = view[1] if len(view) > 1 else 0
    if version not in K.SUPPORTED_VERSIONS:
        raise RemoteProtocolError(f"protocol version {version} is not supported; this server "
                                  f"speaks {sorted(K.SUPPORTED_VERSIONS)}", ErrorCode.BAD_VERSION)
    if len(view) < HELLO.size:
        raise malformed(f"HELLO needs at least {HELLO.size} bytes, got {len(view)}")
    _, _, flags, name_len, hunt_len, ticket_len, token = HELLO.unpack_from(view)
    if flags & ~K.HELLO_RESUME:
        raise malformed("HELLO has reserved bits set")
    if not flags & K.HELLO_RESUME and token != _NO_TOKEN:
        raise malformed("HELLO carries a resume token without the resume flag")
    check_length(view, HELLO.size + name_len + hunt_len + ticket_len, "this HELLO")
    at = HELLO.size + name_len
    name = utf8(view[HELLO.size:at], "the player name", ErrorCode.BAD_NAME)
    hunt = utf8(view[at:at + hunt_len], "the hunt name", ErrorCode.UNKNOWN_HUNT)
    # Latin-1 never fails: Hello refuses what is not visible ASCII (TICKET_INVALID), after
    # the name and the hunt, the order docs/protocol.md gives.
    ticket = bytes(view[at + hunt_len:]).decode("latin-1")
    with remote_errors():
        return Hello(name, hunt, version, token if flags else None, ticket)


def encode_welcome(e: Welcome) -> bytes:
    return WELCOME.pack(
        MessageType.WELCOME, e.version, K.WELCOME_RESUMED if e.resumed else 0, e.hint_levels,
        e.tick_rate, 0, e.player_id, e.resume_token, e.tick, e.ack, e.width, e.height,
        e.player_speed, e.discovery_radius, e.hint_radius, e.view_radius, e.spawn_x, e.spawn_y)


def decode_welcome(view: memoryview) -> Welcome:
    check_length(view, WELCOME.size, "WELCOME")
    (_, version, flags, hint_levels, tick_rate, reserved, player_id, token, tick, ack, width,
     height, speed, discovery, hint, view_radius, spawn_x, spawn_y) = WELCOME.unpack_from(view)
    if flags & ~K.WELCOME_RESUMED or reserved:
        raise malformed("WELCOME has reserved bits set")
    with remote_errors():
        return Welcome(player_id, token, tick, ack, width, height, speed, tick_rate, discovery,
                       hint, view_radius, hint_levels, spawn_x, spawn_y, bool(flags), version)


def encode_notice(e: ErrorMessage) -> bytes:
    kind = MessageType.REFUSED if isinstance(e, Refused) else MessageType.ERROR
    text = e.message.encode()
    return NOTICE.pack(kind, 0, e.code, e.close_code, len(text)) + text


def decode_notice(view: memoryview) -> ErrorMessage:
    if len(view) < NOTICE.size:
        raise malformed(f"ERROR/REFUSED needs {NOTICE.size} bytes, got {len(view)}")
    kind, reserved, code, close_code, length = NOTICE.unpack_from(view)
    if reserved:
        raise malformed("ERROR/REFUSED has reserved bits set")
    check_length(view, NOTICE.size + length, "this ERROR/REFUSED")
    text = utf8(view[NOTICE.size:], "the error message")
    with remote_errors():
        return (Refused if kind == MessageType.REFUSED else ErrorMessage)(code, text, close_code)


def encode_redirect(e: Redirect) -> bytes:
    url, hunt, node = e.url.encode(), e.hunt.encode(), e.node.encode()
    return REDIRECT.pack(MessageType.REDIRECT, len(node), len(url), len(hunt), 0) + url + hunt \
        + node


def decode_redirect(view: memoryview) -> Redirect:
    if len(view) < REDIRECT.size:
        raise malformed(f"REDIRECT needs at least {REDIRECT.size} bytes, got {len(view)}")
    _, node_len, url_len, hunt_len, reserved = REDIRECT.unpack_from(view)
    if reserved:
        raise malformed("REDIRECT has reserved bits set")
    check_length(view, REDIRECT.size + url_len + hunt_len + node_len, "this REDIRECT")
    at = REDIRECT.size
    url = utf8(view[at:at + url_len], "the redirect URL")
    hunt = utf8(view[at + url_len:at + url_len + hunt_len], "the hunt name")
    node = utf8(view[at + url_len + hunt_len:], "the node id")
    with remote_errors():
        return Redirect(url, hunt, node)


def encode_moves(e: Moves) -> bytes:
    records = np.array([(m.seq, m.dx, m.dy) for m in e.moves], MOVE_RECORD)
    return MOVES_HEADER.pack(MessageType.MOVES, 0, len(e.moves)) + records.tobytes()


def moves_records(view: bytes | memoryview) -> np.ndarray:
    """The MOVE_RECORD array of a MOVES frame (a view, no copy); values not yet checked."""
    if not len(view):
        raise malformed("empty frame")
    if view[0] != MessageType.MOVES:
        raise RemoteProtocolError(f"expected MOVES, got type {view[0]:#04x}", ErrorCode.UNEXPECTED
                                  if view[0] in K.CLIENT_TYPES else ErrorCode.UNKNOWN_TYPE)
    if len(view) < MOVES_HEADER.size:
        raise malformed(f"MOVES needs at least {MOVES_HEADER.size} bytes, got {len(view)}")
    _, reserved, count = MOVES_HEADER.unpack_from(view)
    if reserved:
        raise malformed("MOVES has reserved bits set")
    if not 1 <= count <= K.MAX_MOVES_PER_FRAME:
        raise RemoteProtocolError(f"MOVES must carry 1-{K.MAX_MOVES_PER_FRAME} moves, got {count}",
                                  ErrorCode.INVALID_VALUE)
    check_length(view, MOVES_HEADER.size + count * MOVE_RECORD.itemsize, f"MOVES of {count}")
    return np.frombuffer(view, MOVE_RECORD, count, MOVES_HEADER.size)


def decode_moves(view: memoryview) -> Moves:
    records = moves_records(view)
    with remote_errors():
        return Moves(tuple(Move(int(r["seq"]), float(r["dx"]), float(r["dy"])) for r in records))


def decode_move_json(text: str) -> Move:
    """The JSON text form of one move: ``{"seq": 1, "dx": 0.5, "dy": -1}``, same rules."""
    if len(text) > K.MAX_JSON_MOVE_CHARS:
        raise RemoteProtocolError(f"JSON move of {len(text)} characters exceeds the limit of "
                                  f"{K.MAX_JSON_MOVE_CHARS}", ErrorCode.TOO_BIG)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise malformed("text frame is not JSON") from None
    if not isinstance(obj, dict) or obj.keys() != {"seq", "dx", "dy"}:
        raise malformed('a JSON move is {"seq": <int>, "dx": <number>, "dy": <number>}')
    with remote_errors():
        return Move(obj["seq"], obj["dx"], obj["dy"])


def decode_bye(view: memoryview) -> Bye:
    check_length(view, 1, "BYE")
    return Bye()


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Hello: encode_hello, Moves: encode_moves, Bye: lambda e: bytes([MessageType.BYE]),
    Welcome: encode_welcome, Refused: encode_notice, ErrorMessage: encode_notice,
    TickUpdate: encode_tick, Redirect: encode_redirect, Round: encode_round,
    Results: encode_results,
}
_DECODERS: dict[str, dict[int, Callable[[memoryview], Any]]] = {
    "client": {MessageType.HELLO: decode_hello, MessageType.MOVES: decode_moves,
               MessageType.BYE: decode_bye},
    "server": {MessageType.WELCOME: decode_welcome, MessageType.REFUSED: decode_notice,
               MessageType.ERROR: decode_notice, MessageType.TICK: decode_tick,
               MessageType.REDIRECT: decode_redirect, MessageType.ROUND: decode_round,
               MessageType.RESULTS: decode_results},
}


def encode(event: ClientEvent | ServerEvent) -> bytes:
    """The binary frame of an event (the server writes TICKs with TickMessageWriter instead)."""
    encoder = _ENCODERS.get(type(event))
    if encoder is None:
        raise LocalProtocolError(f"not a protocol event: {type(event).__name__}")
    return encoder(event)


def frame_type(frame: Frame | str) -> MessageType:
    """The type of a frame, read from byte 0; a text frame is a JSON move (MOVES).

    For the server's dispatch: MOVES frames go to :class:`MoveBatch`, the rest
    to :func:`decode_client_frame`.
    """
    if isinstance(frame, str):
        return MessageType.MOVES
    kind = byte_view(frame)[0]
    if kind not in K.ALL_TYPES:
        raise RemoteProtocolError(f"unknown message type {kind:#04x}", ErrorCode.UNKNOWN_TYPE)
    return MessageType(kind)


def _route(frame: Frame, side: str, limit: int) -> Any:
    view = byte_view(frame, limit)
    decoder = _DECODERS[side].get(view[0])
    if decoder is None:
        why = f", a {side} does not send it" if view[0] in K.ALL_TYPES else ""
        raise RemoteProtocolError(f"unexpected message type {view[0]:#04x}{why}",
                                  ErrorCode.UNKNOWN_TYPE)
    return decoder(view)


def decode_client_frame(frame: Frame | str) -> ClientEvent:
    """Decode what a client sent: HELLO, MOVES (binary or JSON text) or BYE.

    Raises :class:`RemoteProtocolError` (code and close code inside) for anything else.
    """
    if isinstance(frame, str):
        return Moves((decode_move_json(frame),))
    return _route(frame, "client", K.MAX_CLIENT_FRAME_BYTES)


def decode_server_frame(frame: Frame | str, ticks: TickDecoder | None = None) -> ServerEvent:
    """Decode what the server sent: WELCOME, REFUSED, REDIRECT, ERROR, TICK, ROUND or RESULTS
    (binary only).

    ``ticks``: the connection's :class:`TickDecoder` (built from its WELCOME), which
    decodes TICKs of the connection's version; without it a TICK is read as version 1.
    """
    if isinstance(frame, str):
        raise RemoteProtocolError("the server sends binary frames only", ErrorCode.UNKNOWN_TYPE)
    if ticks is not None:
        view = byte_view(frame, K.MAX_SERVER_FRAME_BYTES)
        if view[0] == MessageType.TICK:
            return ticks.decode(view)
    return _route(frame, "server", K.MAX_SERVER_FRAME_BYTES)
