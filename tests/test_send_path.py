"""The send path and the behaviours of docs/protocol.md it carries, over real sockets.

Issue 11, sections 1 and 2, and two attacks of section 5: bad input arriving
while the tick writes to that client (its ERROR must still precede the close),
and resume/replace races. Each attack runs beside a cohort of good clients that
must get every tick. Raw frames go through trio-websocket so that nothing the
client library checks stands in the way; every wait is bounded. The raw clients
speak version 1, whose TICKs decode one by one (what is tested here is the same in
either version).
"""

from __future__ import annotations

import base64
import math
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from ws_support import raw_ws

from server.client import HuntClient, connect
from server.protocol import (
    MAX_CLIENT_SEQ,
    ErrorCode,
    ErrorMessage,
    Hello,
    Move,
    Moves,
    TickUpdate,
    Welcome,
    decode_server_frame,
    encode,
)
from server.shell import _wsframes as wf

pytestmark = pytest.mark.usefixtures("collect_garbage")

#: Everyone sees everyone; a full step is 10 world units a tick at 25 Hz.
ARENA = {"name": "arena", "width": 4000.0, "height": 4000.0, "tick_rate": 25,
         "player_speed": 250.0, "view_radius": 10000.0, "treasures": 0, "seed": 11}
STEP = 250.0 / 25
#: Every client here comes from 127.0.0.1: the per-address budgets sized for that.
ONE_ADDRESS = {"max_players_per_address": 1000, "hellos_per_second_per_address": 1000.0,
               "hello_burst_per_address": 1000, "connections_per_second_per_address": 1000.0,
               "connection_burst_per_address": 1000}


async def raw_join(ws: WebSocketConnection, name: str, hunt: str = "arena",
                   token: bytes | None = None) -> Welcome:
    await ws.send_message(encode(Hello(name, hunt, 1, resume_token=token)))
    welcome = decode_server_frame(await ws.get_message())
    assert isinstance(welcome, Welcome), welcome
    return welcome


async def until_close(ws: WebSocketConnection) -> tuple[list[Any], int]:
    """Every message until the server's close: (the decoded messages, the close code)."""
    events = []
    try:
        while True:
            events.append(decode_server_frame(await ws.get_message()))
    except ConnectionClosed as exc:
        return events, exc.reason.code


def assert_error_then_close(events: list[Any], code: int, error: int) -> None:
    """docs/protocol.md, message flow 6: the last message is the ERROR of the close; every
    message before it is whole (it decoded) and a TICK."""
    assert events, f"close {code} came without an ERROR before it"
    last = events[-1]
    assert isinstance(last, ErrorMessage), f"close {code} came after {last!r}, not an ERROR"
    assert last.code == error and last.close_code == code
    assert all(isinstance(e, TickUpdate) for e in events[:-1])


def moves(seq: int, dx: float, dy: float = 0.0) -> bytes:
    return encode(Moves((Move(seq, dx, dy),)))


async def with_cohort(url: str, n: int, attack: Callable[[], Awaitable[None]]) -> None:
    """Run ``attack`` while ``n`` good clients read every tick; then check that each got
    every tick in order, none skipped (only the first a keyframe)."""
    received: list[list[tuple[int, bool]]] = [[] for _ in range(n)]

    async def read(c: HuntClient, got: list[tuple[int, bool]]) -> None:
        while True:
            t = await c.next_tick()
            got.append((t.tick, t.keyframe))

    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url, f"good{i}", "arena"))
                   for i in range(n)]
        async with trio.open_nursery() as nursery:
            for c, got in zip(clients, received, strict=True):
                nursery.start_soon(read, c, got)
            await attack()
            nursery.cancel_scope.cancel()
    for got in received:
        numbers = [t for t, _ in got]
        assert len(numbers) > 5
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a tick was lost"
        assert got[0][1] and not any(kf for _, kf in got[1:]), "a good client was skipped"


# ---------------------------------------------------------------------- 1. ERROR before close

#: (frame, ERROR code, close code): errors found by the poller's frame parser, by the
#: move decoder, and by the connection task.
BAD_INPUT = [
    (b"\x02" + bytes(2000), ErrorCode.TOO_BIG, 1009),  # over the WebSocket message limit
    (moves(1, 1.0)[:-1], ErrorCode.MALFORMED, 1002),
    (b"\x02\x00\x01\x00" + bytes(8) + struct.pack("<ff", 0, 0), ErrorCode.INVALID_VALUE, 1008),
    (b"\x7f", ErrorCode.UNKNOWN_TYPE, 1002),
    (encode(Hello("again", "arena")), ErrorCode.UNEXPECTED, 1008),
]


class ThreadClient:
    """A blocking WebSocket client on a bare socket, run in a thread: it answers a TICK
    within microseconds of the kernel getting it, whatever the Trio thread is doing."""

    def __init__(self, port: int, name: str, rcvbuf: int = 0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode() + masked(encode(Hello(name, "arena", 1))))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        self.buf = self.buf[self.buf.index(b"\r\n\r\n") + 4:]
        self.sock.settimeout(10)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError
        return chunk

    def frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); blocks."""
        while True:
            b = self.buf
            if len(b) >= 2:
                n, at = b[1] & 0x7F, 2
                if n == 126:
                    n, at = int.from_bytes(b[2:4], "big"), 4
                elif n == 127:
                    n, at = int.from_bytes(b[2:10], "big"), 10
                if len(b) >= at and len(b) >= at + n:
                    self.buf = b[at + n:]
                    return b[0] & 0x0F, b[at:at + n]
            self.buf += self._recv()

    def attack(self, go: threading.Event, ticks: int, bad: bytes) -> tuple[list[Any], int]:
        """Read TICKs; once ``go`` is set, wait ``ticks`` more and send ``bad`` the moment
        the next one arrives; then read until the close: (messages, close code)."""
        while not go.is_set() or ticks > 0:
            op, _ = self.frame()
            assert op == wf.OP_BINARY
            ticks -= go.is_set()
        self.frame()
        self.sock.sendall(masked(bad))
        return self.until_close()

    def until_close(self) -> tuple[list[Any], int]:
        """Every message until the server's close frame: (messages, close code)."""
        events = []
        try:
            while True:
                op, payload = self.frame()
                if op == wf.OP_CLOSE:
                    return events, int.from_bytes(payload[:2], "big")
                events.append(decode_server_frame(payload))
        finally:
            self.sock.close()


def masked(payload: bytes, opcode: int = wf.OP_BINARY) -> bytes:
    """One client frame, masked as RFC 6455 requires."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126
                                     else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + wf.unmask(payload, mask)


async def test_the_error_precedes_the_close_when_bad_input_meets_the_tick_write(serve) -> None:
    """Bad input sent the moment a client's TICK arrives reaches the server while the tick's
    worker is still writing the frames of the clients after it (the attackers join first,
    so their frames are written first): the ERROR queued then must go out before the
    close, every time."""
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, evict_after_ticks=1000, send_threads=1)
    n_attackers = 24
    attackers = [await trio.to_thread.run_sync(ThreadClient, srv.ports.ws, f"bad{i}")
                 for i in range(n_attackers)]
    go = threading.Event()
    results: list[tuple[int, tuple[list[Any], int]]] = []

    async def run(i: int, c: ThreadClient) -> None:
        bad = BAD_INPUT[i % len(BAD_INPUT)][0]
        results.append((i, await trio.to_thread.run_sync(c.attack, go, 2 + i, bad)))

    async def attack() -> None:
        go.set()  # each attacker strikes a few ticks later, one per tick
        while len(results) < n_attackers:
            await trio.sleep(0.05)

    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for i, c in enumerate(attackers):  # reading their TICKs from now on
                    nursery.start_soon(run, i, c)
                await with_cohort(srv.url, 100, attack)
    finally:
        go.set()
        for c in attackers:
            c.sock.close()
    assert len(results) == n_attackers
    for i, (events, code) in results:
        _, error, want = BAD_INPUT[i % len(BAD_INPUT)]
        assert code == want
        assert_error_then_close(events, code, error)


async def test_the_error_precedes_the_close_behind_a_backlog(serve) -> None:
    """A client that does not read has TICKs queued in the server; its bad input then gets
    the ERROR after a TICK already begun (the others are dropped), then the close."""
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, evict_after_ticks=1000,
                      outbox_messages=64)
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            for i in range(4):  # players walking in view: TICKs of ~130 bytes
                mover = await stack.enter_async_context(connect(srv.url, f"m{i}", "arena"))
                await mover.move(1.0, (-1.0) ** i)
            c = await trio.to_thread.run_sync(ThreadClient, srv.ports.ws, "lazy", 1)
            try:
                conn = None
                while conn is None:
                    await trio.sleep(0.01)
                    conn = next((x.conn for x in srv.hub.sessions.values()
                                 if x.name == "lazy" and not x.welcome_pending), None)
                # Its socket buffers fill (both ends at the kernel's minimum), then its queue.
                conn.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
                while conn.backlog < 3:
                    await trio.sleep(0.02)
                c.sock.sendall(masked(b"\x7f"))
                events, code = await trio.to_thread.run_sync(c.until_close)
            finally:
                c.sock.close()
    assert code == 1002 and isinstance(events[0], Welcome)  # it read nothing before
    assert_error_then_close(events[1:], 1002, ErrorCode.UNKNOWN_TYPE)


async def test_a_replaced_connection_gets_its_error_then_close_4007(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(15):
        async with raw_ws(srv.url) as old, raw_ws(srv.url) as new:
            welcome = await raw_join(old, "twice")
            await raw_join(new, "twice", token=welcome.resume_token)
            events, code = await until_close(old)
    assert code == 4007
    assert_error_then_close(events, 4007, ErrorCode.REPLACED)


# ---------------------------------------------------------------------- 2, 3. WELCOME, replace


async def test_welcome_is_the_state_at_its_tick_and_the_first_tick_follows_it(serve) -> None:
    """Resume (replace) while walking: WELCOME's position, ack and tick are one state, the
    one an observer saw at that tick; the first TICK is WELCOME.tick + 1, a keyframe."""
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(20):
        # The watcher reads float32 positions (version 1), not quantized ones.
        async with (connect(srv.url, "walker", "arena") as walker,
                    connect(srv.url, "watcher", "arena", version=1) as watcher):
            seen: dict[int, tuple[float, float]] = {}  # the watcher's view of the walker

            async def watch() -> None:
                while True:
                    t = await watcher.next_tick()
                    if walker.slot in watcher.others:
                        _, x, y = watcher.others[walker.slot]
                        seen[t.tick] = (x, y)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                seq = await walker.move(1.0, 0.0)
                while walker.ack < seq:
                    await walker.next_tick()
                for _ in range(3):  # walking for a few ticks
                    await walker.next_tick()
                async with raw_ws(srv.url) as ws:
                    welcome = await raw_join(ws, "walker", token=walker.resume_token)
                    first = decode_server_frame(await ws.get_message())
                    second = decode_server_frame(await ws.get_message())
                while max(seen, default=0) < second.tick:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    assert welcome.resumed
    assert isinstance(first, TickUpdate) and first.keyframe
    assert first.tick == welcome.tick + 1 and second.tick == welcome.tick + 2
    # The watcher's record of the walker at WELCOME's tick is WELCOME's position (f32).
    wx, wy = seen[welcome.tick]
    assert math.isclose(welcome.spawn_x, wx, abs_tol=1e-3)
    assert math.isclose(welcome.spawn_y, wy, abs_tol=1e-3)
    # The replace stopped the walker (3.): its ack counts the server's stop move.
    assert welcome.ack == seq + 1 == first.ack
    assert (first.x, first.y) == (second.x, second.y) == (welcome.spawn_x, welcome.spawn_y)


async def test_a_replaced_player_stands_still_until_the_new_connection_moves_it(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(20):
        async with connect(srv.url, "walker", "arena") as walker:
            seq = await walker.move(0.0, 1.0)
            while walker.ack < seq:
                await walker.next_tick()
            async with raw_ws(srv.url) as ws:
                welcome = await raw_join(ws, "walker", token=walker.resume_token)
                ticks = [decode_server_frame(await ws.get_message()) for _ in range(6)]
                assert {(t.x, t.y) for t in ticks} == {(welcome.spawn_x, welcome.spawn_y)}
                # The new connection steers from WELCOME's ack + 1.
                await ws.send_message(moves(welcome.ack + 1, 0.0, -1.0))
                t = ticks[-1]
                while t.ack <= welcome.ack:
                    t = decode_server_frame(await ws.get_message())
                t = decode_server_frame(await ws.get_message())
                assert t.y < welcome.spawn_y


# ---------------------------------------------------------------------- 4. the top of the seqs


async def test_a_client_at_the_top_seq_still_stops_when_its_connection_drops(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, resume_grace=30.0)
    with trio.fail_after(20):
        async with raw_ws(srv.url) as ws:
            welcome = await raw_join(ws, "top")
            await ws.send_message(moves(MAX_CLIENT_SEQ, 1.0))
            t = decode_server_frame(await ws.get_message())
            while t.ack != MAX_CLIENT_SEQ:
                t = decode_server_frame(await ws.get_message())
        async with connect(srv.url, "watcher", "arena") as watcher:
            slot = welcome.player_id & 0xFFFFFFFF
            positions = []
            for _ in range(6):
                await watcher.next_tick()
                positions.append(watcher.others.get(slot))
        assert positions[0] is not None and len(set(positions)) == 1, "it kept walking"
        async with raw_ws(srv.url) as ws:
            back = await raw_join(ws, "top", token=welcome.resume_token)
        assert back.ack == MAX_CLIENT_SEQ + 1  # the server's stop, above every client seq


async def test_a_seq_above_the_client_range_is_refused(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            await raw_join(ws, "greedy")
            frame = bytearray(moves(1, 1.0))
            frame[4:12] = (MAX_CLIENT_SEQ + 1).to_bytes(8, "little")
            await ws.send_message(bytes(frame))
            events, code = await until_close(ws)
    assert code == 1008
    assert_error_then_close(events, 1008, ErrorCode.INVALID_VALUE)
    assert "2**62" in events[-1].message


# ---------------------------------------------------------------------- 5. the doc's gaps


async def test_over_the_rate_limit_the_latest_direction_wins(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, moves_per_second=5.0)
    with trio.fail_after(15):
        async with connect(srv.url, "flood", "arena") as c:
            await c.next_tick()
            for _ in range(40):  # far over the burst of 5, all within a tick or two
                await c.move(1.0, 0.0)
            last = await c.move(0.0, 1.0)
            while c.ack < last:
                await c.next_tick()
            y = c.y
            await c.next_tick()
            assert c.y == pytest.approx(y + STEP)  # walking the last direction
            assert c.rate_limited == 1
    assert srv.metric("hunt_moves_total", fate="dropped") >= 30


async def test_bye_closes_with_1000_and_no_error(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            await raw_join(ws, "leaver")
            await ws.get_message()
            await ws.send_message(b"\x03")
            events, code = await until_close(ws)
    assert code == 1000
    assert all(isinstance(e, TickUpdate) for e in events)


async def test_a_resume_keyframe_resends_every_name(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(15):
        async with connect(srv.url, "anna", "arena"), connect(srv.url, "bert", "arena") as b:
            await b.next_tick()
            await b.websocket.aclose()
            async with raw_ws(srv.url) as ws:
                welcome = await raw_join(ws, "bert", token=b.resume_token)
                first = decode_server_frame(await ws.get_message())
    assert welcome.resumed and first.keyframe and first.tick == welcome.tick + 1
    assert sorted(n.name for n in first.names) == ["anna", "bert"]


@pytest.mark.parametrize(("text", "error", "code"), [
    ('{"seq": 1, "dx": 0, "dy": 0}' + " " * 229, ErrorCode.TOO_BIG, 1009),  # 257 characters
    ("\u00e9" * 200, ErrorCode.MALFORMED, 1002),  # 200 characters (400 bytes): not JSON
])
async def test_json_move_characters_are_code_points(serve, text, error, code) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    with trio.fail_after(10):
        async with raw_ws(srv.url) as ws:
            await raw_join(ws, "json")
            await ws.send_message(text)
            events, closed = await until_close(ws)
    assert closed == code
    assert_error_then_close(events, code, error)


async def test_pings_keep_a_quiet_client_and_silence_ends_it(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, idle_timeout=2.5)
    with trio.fail_after(20):
        async with raw_ws(srv.url) as pinger, raw_ws(srv.url) as silent:
            await raw_join(pinger, "pinger")
            await raw_join(silent, "silent")
            started = trio.current_time()

            async def drain(ws: WebSocketConnection) -> None:
                while True:
                    await ws.get_message()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, pinger)
                events, code, closed_at = [], 0, 0.0

                async def wait_silent() -> None:
                    nonlocal events, code, closed_at
                    events, code = await until_close(silent)
                    closed_at = trio.current_time()

                nursery.start_soon(wait_silent)
                for _ in range(5):  # pings only, for longer than the idle timeout
                    await trio.sleep(1.2)
                    await pinger.ping()
                assert not pinger.closed
                nursery.cancel_scope.cancel()
    assert code == 1000 and 2.4 < closed_at - started < 5.0
    assert_error_then_close(events, 1000, ErrorCode.UNEXPECTED)


async def test_error_precedence_version_first_then_layout_then_values(serve) -> None:
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1)
    cases = [
        # A HELLO of an unknown version with a bad name: the version wins.
        (b"\x01\x09" + bytes(22) + b"\x00", ErrorCode.BAD_VERSION),
        # MOVES with its reserved byte set and a count of 0: the layout wins.
        (b"\x02\x01\x00\x00", ErrorCode.MALFORMED),
        # MOVES whose length disagrees with its count and whose seq is 0: the layout wins.
        (b"\x02\x00\x02\x00" + bytes(16), ErrorCode.MALFORMED),
    ]
    with trio.fail_after(15):
        for frame, error in cases:
            async with raw_ws(srv.url) as ws:
                if frame[0] == 0x01:
                    await ws.send_message(frame)
                else:
                    await raw_join(ws, "order")
                    await ws.send_message(frame)
                events, code = await until_close(ws)
            assert events[-1].code == error, (frame, events[-1])
            assert code == events[-1].close_code


# ---------------------------------------------------------------------- resume/replace races


async def test_resume_and_replace_races_leave_one_playing_connection(serve) -> None:
    """Four connections resume one player at once, six times over, while the playing one
    reads on or drops at that moment: each gets WELCOME (or, overtaken by another resume
    before its WELCOME, ERROR REPLACED), each replaced one ERROR then 4007, a welcomed one
    its first TICK at WELCOME.tick + 1 (a keyframe); the player is never duplicated nor
    left walking, and the good clients get every tick."""
    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, evict_after_ticks=1000, resume_grace=30.0)
    tally = {"answered": 0, "welcomed": 0, "overtaken": 0, "replaced": 0, "dropped": 0}
    playing: list[trio.CancelScope] = []

    async def resumer(token: bytes, pid: int, k: int) -> None:
        async with raw_ws(srv.url) as ws:
            await ws.send_message(encode(Hello("racer", "arena", 1, resume_token=token)))
            first = decode_server_frame(await ws.get_message())
            tally["answered"] += 1
            if isinstance(first, ErrorMessage):  # another resume came first, same tick
                events, code = await until_close(ws)
                assert code == 4007 and not events
                assert first.code == ErrorCode.REPLACED and first.close_code == 4007
                tally["overtaken"] += 1
                return
            assert isinstance(first, Welcome) and first.player_id == pid and first.resumed
            tally["welcomed"] += 1
            events: list[Any] = []
            with trio.CancelScope() as scope:
                playing.append(scope)
                try:
                    while True:
                        events.append(decode_server_frame(await ws.get_message()))
                        if len(events) == 1 and isinstance(events[0], TickUpdate):
                            assert events[0].tick == first.tick + 1 and events[0].keyframe
                            await ws.send_message(moves(first.ack + 1, (-1.0) ** k))
                except ConnectionClosed as exc:
                    assert exc.reason.code == 4007
                    assert_error_then_close(events, 4007, ErrorCode.REPLACED)
                    tally["replaced"] += 1
                    return
            tally["dropped"] += 1  # the test closed it (a drop racing the next resumes)

    async def attack() -> None:
        async with raw_ws(srv.url) as ws:
            welcome = await raw_join(ws, "racer")
            await ws.send_message(moves(1, 1.0))
            await ws.get_message()
        token, pid = welcome.resume_token, welcome.player_id
        hub = srv.hub
        async with trio.open_nursery() as nursery:
            for r in range(6):
                if r % 2:  # the playing connection drops as the resumes arrive
                    for scope in playing:
                        scope.cancel()
                for k in range(4):
                    nursery.start_soon(resumer, token, pid, 4 * r + k)
                while tally["answered"] < 4 * (r + 1) or hub.requests:
                    await trio.sleep(0.01)
                await trio.sleep(0.15)
                assert [x.player_id for x in hub.sessions.values()].count(pid) == 1
            for scope in playing:
                scope.cancel()
        s = next(x for x in hub.sessions.values() if x.player_id == pid)
        for _ in range(100):  # the last drop reaches the hub
            if s.conn is None:
                break
            await trio.sleep(0.02)
        assert s.conn is None and s in hub.sessions.lost
        await trio.sleep(0.1)  # the stop move's tick
        slot = pid & 0xFFFFFFFF
        x0 = float(hub.world.players.x[slot])
        await trio.sleep(0.2)
        assert float(hub.world.players.x[slot]) == x0, "a dropped player kept walking"

    with trio.fail_after(90):
        await with_cohort(srv.url, 60, attack)
    assert tally["welcomed"] + tally["overtaken"] == 24
    assert tally["welcomed"] == tally["replaced"] + tally["dropped"]
    assert tally["replaced"] + tally["overtaken"] >= 18


def test_two_send_threads_write_every_claimed_frame_once() -> None:
    """send_threads = 2: the worker writes the first half of
    the claimed clients and the send thread the second; every socket gets its own frame
    whole, and a client not claimed (fd -1) gets nothing."""
    from types import SimpleNamespace

    from server._config import ServerConfig
    from server._metrics import Metrics
    from server.hunt._broadcast import SPLIT_MIN, Broadcaster
    from tickengine import EngineConfig, World

    n = 2 * SPLIT_MIN + 5
    world = World(EngineConfig(max_players=n, max_treasures=16))
    b = Broadcaster(world, ServerConfig(send_threads=2), Metrics(), None, None,
                    lambda slot: None, lambda *a: None)
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        sizes = np.array([1 + i % 7 for i in range(n)], np.int64)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        out = np.concatenate([np.full(s, i % 251, np.uint8) for i, s in enumerate(sizes)])
        b._fds[:n] = [w.fileno() for w, _ in pairs]
        b._fds[7] = -1  # not claimed: its frame goes through the outbox
        vis = SimpleNamespace(dropped=0, truncated=np.zeros(n, np.uint8))
        b.write(SimpleNamespace(count=n, vis=vis, out=out, offsets=offsets))
        for i, (_, r) in enumerate(pairs):
            r.setblocking(False)
            if i == 7:
                assert b._written[i] == -2
                with pytest.raises(BlockingIOError):
                    r.recv(64)
                continue
            assert b._written[i] == sizes[i]
            assert r.recv(64) == bytes([i % 251]) * int(sizes[i])
    finally:
        b.close()
        for w, r in pairs:
            w.close()
            r.close()
