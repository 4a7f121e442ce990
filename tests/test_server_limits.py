"""What protects the server and the other players, over real sockets (issue 3, section 6).

A stalled client is evicted while the others get every tick; a move flood is
rate-limited; an oversized frame, garbage and messages at the wrong time get an
ERROR and the close code of docs/protocol.md's table; refused HELLOs get
REFUSED and their close code. Raw frames go through trio-websocket (or, for
the stalled client, a bare TCP socket) so that nothing the client library
checks stands in the way.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
import struct
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs
from trio_websocket import ConnectionClosed, WebSocketConnection
from ws_support import raw_ws

from server.client import JoinRefused, connect
from server.protocol import (
    MAX_CLIENT_FRAME_BYTES,
    ErrorCode,
    ErrorMessage,
    Hello,
    Move,
    Moves,
    Refused,
    TickUpdate,
    Welcome,
    decode_server_frame,
    encode,
)
from server.shell import _wsframes as wf

pytestmark = pytest.mark.usefixtures("collect_garbage")

HELLO = struct.Struct("<BBBBHH16s")


def hello_frame(name: bytes = b"raw", hunt: bytes = b"demo", version: int = 1,
                token: bytes | None = None) -> bytes:
    """A HELLO built by hand: it may break rules the Hello event would refuse to encode."""
    return HELLO.pack(1, version, 1 if token else 0, len(name), len(hunt), 0,
                      token or bytes(16)) + name + hunt


async def error_then_close(ws: WebSocketConnection) -> tuple[Any, int | None, list[Any]]:
    """Read until the ERROR/REFUSED, then until the close: (that event, close code, the
    events before it)."""
    before = []
    while True:
        event = decode_server_frame(await ws.get_message())
        if isinstance(event, ErrorMessage):
            break
        before.append(event)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return event, closed.value.reason.code, before


# ---------------------------------------------------------------------- slow clients


def masked(payload: bytes, opcode: int = wf.OP_BINARY) -> bytes:
    """One client frame, masked as RFC 6455 requires."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126
                                     else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + wf.unmask(payload, mask)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames after the HTTP upgrade response."""
    at = data.index(b"\r\n\r\n") + 4
    frames = []
    while at + 2 <= len(data):
        opcode, n = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if n == 126:
            n, at = int.from_bytes(data[at:at + 2], "big"), at + 2
        elif n == 127:
            n, at = int.from_bytes(data[at:at + 8], "big"), at + 8
        if at + n > len(data):
            break
        frames.append((opcode, data[at:at + n]))
        at += n
    return frames


async def stalled_client(port: int, name: str) -> trio.socket.SocketType:
    """A bare TCP client that upgrades, sends HELLO, and then never reads (tiny SO_RCVBUF).

    It speaks version 1: its TICKs are the larger ones, and they decode one by one."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
    await sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    await sock.send(request + masked(encode(Hello(name, "arena", 1))))
    return sock


async def test_a_stalled_client_is_evicted_while_the_others_get_every_tick(serve) -> None:
    rate = 50
    arena = {"name": "arena", "width": 1000.0, "height": 1000.0, "tick_rate": rate,
             "treasures": 0, "player_speed": 10.0, "view_radius": 5000.0}
    with capture_logs() as logs:
        # Eight players always moving in everyone's view make every TICK ~200 bytes.
        srv = await serve(arena, outbox_messages=2, evict_after_ticks=5, http_port=-1)
        received: list[list[tuple[int, float, bool]]] = [[] for _ in range(8)]

        async def read(i: int, client: Any) -> None:
            while True:
                t = await client.next_tick()
                received[i].append((t.tick, time.perf_counter(), t.keyframe))

        with trio.fail_after(30):
            async with AsyncExitStack() as stack:
                good = [await stack.enter_async_context(connect(srv.url, f"g{i}", "arena"))
                        for i in range(8)]
                for i, c in enumerate(good):
                    await c.move(1.0 if i % 2 else -1.0, 0.3)
                sock = await stalled_client(srv.ports.ws, "stall")
                with sock:
                    async with trio.open_nursery() as nursery:
                        for i, c in enumerate(good):
                            nursery.start_soon(read, i, c)
                        while srv.hub.evictions == 0:
                            await trio.sleep(0.01)
                        await trio.sleep(0.2)
                        nursery.cancel_scope.cancel()
                    data = bytearray()
                    while chunk := await sock.recv(65536):
                        data += chunk
    # The stalled client: evicted, counted, logged; its socket ends with close 4008.
    assert srv.hub.evictions == 1 and srv.metric("hunt_evictions_total") == 1
    evicts = [e for e in logs if e["event"] == "evict"]
    assert len(evicts) == 1 and evicts[0]["name"] == "stall" and evicts[0]["skipped_ticks"] == 5
    frames = server_frames(bytes(data))
    assert frames[-1][0] == wf.OP_CLOSE
    assert int.from_bytes(frames[-1][1][:2], "big") == 4008
    events = [decode_server_frame(p) for _, p in frames[:-1]]
    if isinstance(events[-1], ErrorMessage):  # an ERROR TOO_SLOW may announce the close
        assert events.pop().code == ErrorCode.TOO_SLOW
    assert isinstance(events[0], Welcome)
    assert all(isinstance(e, TickUpdate) for e in events[1:])  # whole frames, none cut
    # The others: every tick, in order, on time, no keyframe after the first.
    for ticks in received:
        numbers = [t for t, _, _ in ticks]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert ticks[0][2] and not any(kf for _, _, kf in ticks[1:])  # never skipped
        gaps = [b - a for (_, a, _), (_, b, _) in itertools.pairwise(ticks)]
        assert max(gaps) < 0.5, "a tick reached a good client late"
        assert (ticks[-1][1] - ticks[0][1]) / (len(ticks) - 1) < 2.0 / rate  # ~50 Hz
    assert srv.hub.skipped_total >= 5


# ---------------------------------------------------------------------- moves


async def test_a_move_flood_is_rate_limited_and_the_connection_stays(serve) -> None:
    srv = await serve(moves_per_second=10.0, http_port=-1)
    with trio.fail_after(15):
        async with connect(srv.url, "flood", "demo") as c:
            await c.next_tick()
            for _ in range(99):
                await c.move(1.0, 0.0)
            last = await c.move(-1.0, 0.0)
            while c.rate_limited == 0:
                await c.next_tick()
            for _ in range(3):
                await c.next_tick()
            warning = c.warnings[-1]
            assert warning.code == ErrorCode.RATE_LIMITED and warning.close_code == 0
            # The older moves are what is dropped: the latest direction wins.
            assert c.ack == last
            assert srv.metric("hunt_moves_total", fate="dropped") >= 50
            # Still connected: once the bucket refills, moves count again.
            await trio.sleep(0.3)
            seq = await c.move(0.0, 1.0)
            while c.ack < seq:
                await c.next_tick()
            assert c.rate_limited == 1  # at most one warning a second


async def test_a_json_text_move_is_applied(serve) -> None:
    srv = await serve(http_port=-1)
    with trio.fail_after(10):
        async with connect(srv.url, "texter", "demo") as c:
            await c.next_tick()
            await c.websocket.send_message('{"seq": 7, "dx": 0, "dy": 1}')
            while c.ack < 7:
                await c.next_tick()
            y = c.y
            await c.next_tick()
            assert c.y > y or c.y == c.welcome.height


# ---------------------------------------------------------------------- bad input


async def test_an_oversized_frame_gets_close_1009(serve) -> None:
    srv = await serve(http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            await ws.send_message(hello_frame())
            assert isinstance(decode_server_frame(await ws.get_message()), Welcome)
            await ws.send_message(encode(Moves((Move(1, 0.0, 0.0),))) + bytes(
                MAX_CLIENT_FRAME_BYTES))
            event, code, _ = await error_then_close(ws)
    assert code == 1009
    assert event.code == ErrorCode.TOO_BIG and event.close_code == 1009


@pytest.mark.parametrize(("first", "payload", "error", "close"), [
    pytest.param(True, b"\xee\x01\x02", ErrorCode.UNKNOWN_TYPE, 1002, id="unknown-type"),
    pytest.param(True, b"\x02\x00\x01\x00" + bytes(15), ErrorCode.MALFORMED, 1002,
                 id="short-moves"),
    pytest.param(True, "this is not JSON", ErrorCode.MALFORMED, 1002, id="text-not-json"),
    pytest.param(True, b"\x02\x00\x01\x00" + bytes(16), ErrorCode.INVALID_VALUE, 1008,
                 id="seq-zero"),
    pytest.param(True, hello_frame(), ErrorCode.UNEXPECTED, 1008, id="second-hello"),
    pytest.param(False, encode(Moves((Move(1, 1.0, 0.0),))), ErrorCode.UNEXPECTED, 1008,
                 id="moves-before-hello"),
    pytest.param(False, b"\x81\x00", ErrorCode.UNKNOWN_TYPE, 1002, id="server-type-first"),
])
async def test_bad_input_gets_an_error_then_its_close_code(serve, first, payload, error,
                                                           close) -> None:
    srv = await serve(http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            if first:
                await ws.send_message(hello_frame())
            await ws.send_message(payload)
            event, code, before = await error_then_close(ws)
    assert type(event) is ErrorMessage
    assert (event.code, event.close_code, code) == (error, close, close)
    assert event.message
    assert [type(e) for e in before[:1]] == ([Welcome] if first else [])
    assert srv.metric("hunt_protocol_errors_total", code=ErrorCode(error).name) == 1


async def test_no_hello_within_the_handshake_timeout(serve) -> None:
    srv = await serve(handshake_timeout=0.3, http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            event, code, _ = await error_then_close(ws)
    assert (event.code, code) == (ErrorCode.HANDSHAKE_TIMEOUT, 1008)


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("hello", "error"), [
    pytest.param(hello_frame(hunt=b"nowhere"), ErrorCode.UNKNOWN_HUNT, id="unknown-hunt"),
    pytest.param(hello_frame(version=3), ErrorCode.BAD_VERSION, id="bad-version"),
    pytest.param(hello_frame(name=b"tab\there"), ErrorCode.BAD_NAME, id="control-char"),
    pytest.param(hello_frame(name=b" padded"), ErrorCode.BAD_NAME, id="outer-space"),
    pytest.param(hello_frame(name=b"\xff\xfe"), ErrorCode.BAD_NAME, id="bad-utf8"),
    pytest.param(hello_frame(token=os.urandom(16)), ErrorCode.RESUME_INVALID, id="bad-token"),
])
async def test_a_refused_hello_gets_refused_and_its_close_code(serve, hello, error) -> None:
    srv = await serve(http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            await ws.send_message(hello)
            event, code, before = await error_then_close(ws)
    assert before == []
    assert type(event) is Refused
    assert (event.code, event.close_code, code) == (error, int(error), int(error))


async def test_a_full_hunt_refuses_the_next_player(serve) -> None:
    srv = await serve({"name": "tiny", "max_players": 2}, http_port=-1)
    with trio.fail_after(10):
        async with connect(srv.url, "one", "tiny"), connect(srv.url, "two", "tiny"):
            with pytest.raises(JoinRefused) as refused:
                async with connect(srv.url, "three", "tiny"):
                    pass
    assert refused.value.name == "HUNT_FULL"
    assert refused.value.code == refused.value.close_code == 4001
    assert "max_players" in refused.value.message or "full" in refused.value.message
