"""Attacks on a running server, over real sockets, while good clients play (issue 11).

Each test starts a cohort of good clients (the Python client, from 127.0.0.1) that move and
read every TICK, runs one attack from another loopback address (127.0.0.2 and up: a
different IP address to the server, so per-address budgets tell them apart), and asserts
that the attacker got the answer docs/server.md documents and that every good client got
every tick, in order, during the attack (the client raises TickGap on a missing one).
Timings are never asserted: perf/attacks.py measures the latency under the same attacks.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from server.client import connect
from server.protocol import (
    ErrorCode,
    ErrorMessage,
    Hello,
    Move,
    Moves,
    decode_server_frame,
    encode,
)
from server.shell import _wsframes as wf

pytestmark = pytest.mark.usefixtures("collect_garbage")

RATE = 20  # ticks per second
COHORT = 6
ARENA = {"name": "demo", "width": 800.0, "height": 800.0, "treasures": 20, "tick_rate": RATE,
         "view_radius": 2000.0}


# ---------------------------------------------------------------------- raw attacker sockets

def masked(payload: bytes, opcode: int = wf.OP_BINARY, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455, 5.3), fragment flag as given."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
    return head + mask + wf.unmask(payload, mask)


def upgrade_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


async def tcp_from(source: str, port: int) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:``port`` from the loopback address ``source``."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


class Raw:
    """A hand-driven WebSocket client: it sends what it likes and reads server frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def open(cls, source: str, port: int, hello: bool = True) -> Raw:
        raw = cls(await tcp_from(source, port))
        await raw.stream.send_all(upgrade_request(port))
        while b"\r\n\r\n" not in raw.buf:
            data = await raw.stream.receive_some(65536)
            assert data, "closed during the upgrade"
            raw.buf += data
        head, _, rest = bytes(raw.buf).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        raw.buf = bytearray(rest)
        if hello:
            await raw.send(masked(encode(Hello("attacker", "demo"))))
        return raw

    async def send(self, data: bytes) -> bool:
        """False once the server has closed or reset the connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def frame(self) -> tuple[int, bytes] | None:
        """The next server frame (opcode, payload), None at the end of the stream."""
        while True:
            buf = self.buf
            if len(buf) >= 2:
                n, at = buf[1] & 0x7F, 2
                if n == 126:
                    n, at = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    n, at = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) >= at + n:
                    out = (buf[0] & 0x0F, bytes(buf[at:at + n]))
                    del buf[:at + n]
                    return out
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return None
            buf += data

    async def error_and_close(self) -> tuple[ErrorMessage, int]:
        """Skip TICKs and WELCOME to the ERROR/REFUSED, then read the close code that follows."""
        error = None
        while True:
            got = await self.frame()
            assert got is not None, f"the stream ended without a close frame (error: {error})"
            opcode, payload = got
            if opcode == wf.OP_CLOSE:
                assert error is not None, "a close without an ERROR before it"
                return error, int.from_bytes(payload[:2], "big")
            if opcode == wf.OP_BINARY and payload[:1] in (b"\x82", b"\x84"):
                error = decode_server_frame(payload)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.aclose()


# ---------------------------------------------------------------------- the good clients

class Cohort:
    """Good clients playing until :meth:`stop`: they move every 100 ms and read every TICK.
    ``ticks[i]`` are the tick numbers client ``i`` received."""

    def __init__(self, url: str, n: int = COHORT) -> None:
        self.url = url
        self.n = n
        self.ticks: list[list[int]] = [[] for _ in range(n)]
        self.ready = 0
        self.all_ready = trio.Event()
        self.done = trio.Event()

    async def play(self, i: int) -> None:
        async with connect(self.url, f"good{i}", "demo") as hunt:
            self.ready += 1
            if self.ready == self.n:
                self.all_ready.set()
            k = 0
            while not self.done.is_set():
                update = await hunt.next_tick()  # raises TickGap if a tick is missing
                self.ticks[i].append(update.tick)
                k += 1
                if k % 2 == 0:
                    await hunt.move((-1) ** (k // 2 % 2), 0.5)

    def received_since(self, marks: list[int]) -> list[int]:
        return [len(t) - m for t, m in zip(self.ticks, marks, strict=True)]


@asynccontextmanager
async def cohort_playing(url: str) -> AsyncIterator[Cohort]:
    """Good clients playing for the block's duration; on exit they stop, and every one must
    have read a gap-free run of ticks."""
    cohort = Cohort(url)
    async with trio.open_nursery() as nursery:
        for i in range(cohort.n):
            nursery.start_soon(cohort.play, i)
        with trio.fail_after(30):
            await cohort.all_ready.wait()
        yield cohort
        cohort.done.set()
    for run in cohort.ticks:
        assert run == list(range(run[0], run[0] + len(run))), "a good client missed a tick"


async def under_attack(cohort: Cohort, attack: Callable[[], Awaitable[Any]],
                       seconds: float = 30.0) -> Any:
    """Run ``attack`` (bounded by ``seconds``) and check the cohort kept playing meanwhile:
    every good client received ticks during it (gaps would have raised)."""
    marks = [len(t) for t in cohort.ticks]
    with trio.fail_after(seconds):
        result = await attack()
        # Two more ticks each after the attack: the cohort is still served.
        target = [m + 2 for m in [len(t) for t in cohort.ticks]]
        while any(len(t) < g for t, g in zip(cohort.ticks, target, strict=True)):
            await trio.sleep(0.02)
    assert all(n > 0 for n in cohort.received_since(marks))
    return result


async def answer_to(source: str, port: int, data: bytes, hello: bool = True
                    ) -> tuple[ErrorMessage, int]:
    """Send ``data`` in one write, then read the ERROR and the close. One write that the
    server reads whole: a socket closed with bytes still unread would be reset, and a reset
    drops what the attacker had not read yet (the answer)."""
    raw = await Raw.open(source, port, hello)
    if hello:
        while (got := await raw.frame()) is not None and got[1][:1] != b"\x81":
            pass  # to WELCOME
    await raw.send(data)
    try:
        return await raw.error_and_close()
    finally:
        await raw.aclose()


async def flood(source: str, port: int, chunk: bytes, n: int = 4, limit: int = 2000) -> int:
    """``n`` connections writing ``chunk`` without reading, until the server ends each one
    (at most ``limit`` writes each). Returns how many were ended."""
    ended = 0

    async def one() -> None:
        nonlocal ended
        raw = await Raw.open(source, port)
        for _ in range(limit):
            if not await raw.send(chunk):
                ended += 1
                break
            await trio.sleep(0)  # the server's tasks run between two writes
        await raw.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return ended


async def start(serve, **server: Any):
    return await serve(ARENA, handshake_timeout=1.0, **server)


# ---------------------------------------------------------------------- the attacks

async def test_ping_flood_gets_over_budget_and_1008(serve) -> None:
    srv = await start(serve)
    port = srv.ports.ws
    ping = masked(b"x" * 100, wf.OP_PING)
    async with cohort_playing(srv.url) as cohort:
        ended = await under_attack(cohort, lambda: flood("127.0.0.2", port, ping * 50))
        error, code = await under_attack(cohort, lambda: answer_to("127.0.0.3", port,
                                                                  ping * 30))
    assert ended == 4
    assert (error.code, error.close_code, code) == (ErrorCode.OVER_BUDGET, 1008, 1008)
    assert "control frames" in error.message
    assert srv.metric("hunt_limit_hits_total", limit="control_frames") == 5


async def test_empty_fragment_flood_is_cut_at_the_fragment_cap(serve) -> None:
    srv = await start(serve)
    port = srv.ports.ws
    first = masked(b"\x02", wf.OP_BINARY, fin=False)
    empty = masked(b"", wf.OP_CONTINUATION, fin=False)
    async with cohort_playing(srv.url) as cohort:
        ended = await under_attack(cohort, lambda: flood("127.0.0.2", port,
                                                         first + empty * 500))
        error, code = await under_attack(cohort, lambda: answer_to("127.0.0.3", port,
                                                                  first + empty * 30))
    assert ended == 4
    assert (error.code, error.close_code, code) == (ErrorCode.TOO_BIG, 1009, 1009)
    assert "fragments" in error.message
    assert srv.metric("hunt_limit_hits_total", limit="fragments") == 5


async def test_oversized_frames_and_byte_floods_are_refused(serve) -> None:
    """A frame announcing a megabyte: TOO_BIG from its header. More bytes than the budget in
    valid MOVES frames (the move rate drops them unread): OVER_BUDGET."""
    srv = await start(serve, bytes_per_second=8192)
    port = srv.ports.ws
    moves = masked(encode(Moves(tuple(Move(i + 1, 1.0, 0.0) for i in range(64)))))
    async with cohort_playing(srv.url) as cohort:
        big = await under_attack(cohort, lambda: answer_to(
            "127.0.0.2", port, b"\x82\xff" + struct.pack("!Q", 1 << 20) + os.urandom(4)))
        ended = await under_attack(cohort, lambda: flood("127.0.0.2", port, moves * 16))
        over = await under_attack(cohort, lambda: answer_to("127.0.0.3", port, moves * 12))
    assert (big[0].code, big[1]) == (ErrorCode.TOO_BIG, 1009)
    assert ended == 4
    assert (over[0].code, over[0].close_code, over[1]) == (ErrorCode.OVER_BUDGET, 1008, 1008)
    assert "bytes per second" in over[0].message
    assert srv.metric("hunt_limit_hits_total", limit="bytes") == 5


async def test_slowloris_frames_meet_the_handshake_timeout(serve) -> None:
    """A HELLO dribbled a byte at a time, and an upgrade request that never ends: both are
    cut at handshake_timeout (1 s here), the first with ERROR HANDSHAKE_TIMEOUT, 1008."""
    srv = await start(serve)
    async with cohort_playing(srv.url) as cohort:
        async def slow_hello() -> tuple[ErrorMessage, int]:
            raw = await Raw.open("127.0.0.2", srv.ports.ws, hello=False)
            frame = masked(encode(Hello("slow", "demo")))

            async def dribble() -> None:
                for b in frame[:-1]:
                    if not await raw.send(bytes((b,))):
                        return
                    await trio.sleep(0.2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble)
                result = await raw.error_and_close()
                nursery.cancel_scope.cancel()
            await raw.aclose()
            return result

        async def slow_upgrade() -> bytes:
            stream = await tcp_from("127.0.0.3", srv.ports.ws)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            got = b""
            with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
                while not got:  # a header line now and then, never the end of the request
                    with trio.move_on_after(0.2):
                        got = await stream.receive_some(4096) or b"closed"
                    await stream.send_all(b"X-Slow: 1\r\n")
            await stream.aclose()
            return got

        error, code = await under_attack(cohort, slow_hello)
        assert (error.code, code) == (ErrorCode.HANDSHAKE_TIMEOUT, 1008)
        with trio.fail_after(4):  # cut at 1 s, not held
            await under_attack(cohort, slow_upgrade)


async def test_hello_churn_from_one_address_is_capped(serve) -> None:
    """HELLO then disconnect, again and again, from one address: after the burst HELLOs are
    REFUSED TOO_MANY_JOINS (4012), players of that address never exceed the cap (ADDRESS_FULL,
    4013, once it is reached), and the good clients (another address) play on."""
    cap = 8
    srv = await start(serve, hello_burst_per_address=12, hellos_per_second_per_address=2,
                      max_players_per_address=cap, resume_grace=30.0)
    async with cohort_playing(srv.url) as cohort:
        async def churn() -> list[int]:
            codes = []
            for _ in range(40):
                raw = await Raw.open("127.0.0.2", srv.ports.ws)
                got = await raw.frame()
                assert got is not None
                codes.append(got[1][0])
                if got[1][:1] == b"\x82":
                    codes[-1] = decode_server_frame(got[1]).code
                await raw.aclose()
                players = [n for (h, a), n in srv.hub.address_players.items()
                           if a == "127.0.0.2"]
                assert sum(players) <= cap
                await trio.sleep(0.01)
            return codes

        codes = await under_attack(cohort, churn)
    assert codes.count(0x81) == cap  # WELCOMEs: up to the cap
    assert ErrorCode.ADDRESS_FULL in codes and ErrorCode.TOO_MANY_JOINS in codes
    assert srv.metric("hunt_limit_hits_total", limit="players_per_address") >= 1
    assert srv.metric("hunt_limit_hits_total", limit="hellos_per_address") >= 1
    assert srv.hub.address_players[0, "127.0.0.1"] == COHORT


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


async def test_connection_storm_on_both_ports(serve) -> None:
    """Two thousand idle sockets on each port from one address: past the caps they get 503 at
    once (or a reset), while the admitted ones are held to their timeouts (60 s here, longer
    than the test waits even when a loaded machine takes tens of seconds to open 4,000
    sockets); a new good client from another address still joins."""
    storm = 2000
    raise_fd_limit(4 * storm + 1024)
    srv = await serve(ARENA, handshake_timeout=60.0, max_connections_per_address=100,
                      connection_burst_per_address=100, http_max_connections=50,
                      http_request_burst_per_address=1000, http_timeout=60.0)
    async with cohort_playing(srv.url) as cohort:
        held: list[trio.SocketStream] = []
        answers: dict[str, int] = {"503": 0, "reset": 0, "open": 0}

        async def wait_answer(stream: trio.SocketStream) -> None:
            data = b""
            with trio.move_on_after(4):
                try:
                    data = await stream.receive_some(256) or b"closed"
                except trio.BrokenResourceError:
                    data = b"reset"
            answers["503" if data.startswith(b"HTTP/1.1 503") else "open" if not data
                    else "reset"] += 1

        async def storm_both() -> None:
            for k in range(storm):
                for port in (srv.ports.ws, srv.ports.http):
                    try:
                        held.append(await tcp_from("127.0.0.2", port))
                    except OSError:
                        answers["reset"] += 1
                if k % 50 == 49:
                    await trio.sleep(0.005)
            async with trio.open_nursery() as nursery:
                for stream in held:
                    nursery.start_soon(wait_answer, stream)
                # While the caps are full: a good client from another address joins.
                async with connect(srv.url, "late", "demo") as late:
                    await late.next_tick()

        try:
            await under_attack(cohort, storm_both, seconds=90)
        finally:
            for stream in held:
                with contextlib.suppress(Exception):
                    await stream.aclose()
    assert answers["open"] == 100 + 50  # exactly what the caps admit stays open
    assert answers["503"] + answers["reset"] == 2 * storm - 150
    assert answers["503"] > 0
    assert srv.metric("hunt_limit_hits_total", limit="connections_per_address") > 0
    assert srv.metric("hunt_limit_hits_total", limit="http_connections") > 0


async def test_stats_hammer_is_capped_cached_and_rate_limited(serve) -> None:
    """GET /api/stats?ticks=8192 from eight tasks of one address: past the burst, 429 at
    once; the answers served hold at most stats_max_ticks ticks. Undecodable static paths
    are 404s."""
    srv = await start(serve, stats_max_ticks=20, http_request_burst_per_address=40)
    async with cohort_playing(srv.url) as cohort:
        with trio.fail_after(10):
            while srv.hub.ring_count < 20:
                await trio.sleep(0.05)

        async def get(path: str, source: str = "127.0.0.2") -> bytes:
            stream = await tcp_from(source, srv.ports.http)
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            with contextlib.suppress(trio.BrokenResourceError):  # a 429 may come as a reset
                while chunk := await stream.receive_some(65536):
                    data += chunk
            await stream.aclose()
            return data

        async def hammer() -> list[bytes]:
            answers: list[bytes] = []

            async def worker() -> None:
                for _ in range(25):
                    answers.append(await get("/api/stats?ticks=8192"))

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(worker)
            return answers

        answers = await under_attack(cohort, hammer)
        plain = await get("/api/stats", "127.0.0.3")
        bad = await get("/static/%00", "127.0.0.3")
        undecodable = await get("/static/%ff%fe", "127.0.0.3")

    served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
    limited = [a for a in answers if not a.startswith(b"HTTP/1.1 200")]
    assert 40 <= len(served) < len(answers) and len(limited) > 0
    assert all(a == b"" or a.startswith(b"HTTP/1.1 429") for a in limited)
    for a in served:
        body = json.loads(a.split(b"\r\n\r\n", 1)[1])
        assert len(body["timings_ms"]["total"]) == 20 and body["ticks_cap"] == 20
    summary = json.loads(plain.split(b"\r\n\r\n", 1)[1])
    assert "timings_ms" not in summary and summary["summary_ms"]["total"]["p99"] > 0
    assert srv.metric("hunt_limit_hits_total", limit="stats_ticks") == len(served)
    assert srv.metric("hunt_limit_hits_total", limit="http_rate_per_address") == len(limited)
    assert bad.startswith(b"HTTP/1.1 404") and undecodable.startswith(b"HTTP/1.1 404")


def test_loopback_aliases_are_usable() -> None:
    """The tests above need 127.0.0.2 and 127.0.0.3 as source addresses (Linux: all of
    127/8 is loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))


async def test_a_full_visibility_buffer_is_counted_logged_and_rotated(serve) -> None:
    """Twelve moving players in one another's view, a buffer of 40 records: every tick cuts some
    observers (a TICK skipped, a keyframe later); the cut is counted, logged at most once a
    second, and rotates: every client still gets most ticks."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        srv = await serve(ARENA, engine={"max_visible": 40}, http_port=-1)
        got = [0] * 12
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(srv.url, f"p{i}", "demo"))
                       for i in range(12)]

            async def read(i: int) -> None:
                await clients[i].move(1.0 if i % 2 else -1.0, 0.3)  # all in view, all moving
                ws = clients[i].websocket
                while True:
                    if (await ws.get_message())[:1] == b"\x83":
                        got[i] += 1

            with trio.move_on_after(2.5):
                async with trio.open_nursery() as nursery:
                    for i in range(12):
                        nursery.start_soon(read, i)
    cut = srv.metric("hunt_visibility_truncated_total")
    lines = [e for e in logs if e["event"] == "visibility_truncated"]
    assert cut > 0 and 1 <= len(lines) <= 4
    assert lines[0]["observers"] > 0 and "max_visible" in lines[0]["hint"]
    assert min(got) > 0, f"a client was cut every tick: {got}"
