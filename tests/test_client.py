"""server.client against misbehaving servers, and ``treasure-hunt bots`` over real sockets.

The scripted servers are real trio-websocket servers on 127.0.0.1 that send
hand-made frames (a tick gap, a diff before any keyframe, garbage): what the
real server never sends, and the client must still handle. Every wait is bounded.
"""

from __future__ import annotations

import math
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from server import cli
from server.client import (
    ConnectFailed,
    ConnectionLost,
    JoinRefused,
    ServerError,
    TickGap,
    connect,
)
from server.protocol import (
    LEAVE_RECORD,
    VISIBLE_RECORD,
    ErrorCode,
    ErrorMessage,
    NameEntry,
    RemoteProtocolError,
    TickUpdate,
    Welcome,
    decode_client_frame,
    encode,
)
from server.tools.bots import Steering

pytestmark = pytest.mark.usefixtures("collect_garbage")

EXE = Path(sys.executable).parent / "treasure-hunt"
TOKEN = bytes(range(16))


def welcome(tick: int = 4) -> Welcome:
    """A WELCOME of version 1: the scripted TICKs below are version-1 frames (the client
    reads a connection's TICKs in the version its WELCOME names)."""
    return Welcome(player_id=(1 << 32) | 3, resume_token=TOKEN, tick=tick, ack=0, width=100.0,
                   height=100.0, player_speed=10.0, tick_rate=20, discovery_radius=5.0,
                   hint_radius=30.0, view_radius=50.0, hint_levels=5, spawn_x=1.0, spawn_y=2.0,
                   version=1)


def tick(n: int, keyframe: bool = False, visible=(), leaves=(), names=()) -> bytes:
    return encode(TickUpdate(n, 0, 1.0, 2.0, 0, 0, np.array(list(visible), VISIBLE_RECORD),
                             keyframe, leaves=np.array(list(leaves), LEAVE_RECORD),
                             names=names))


Script = Callable[[object], Awaitable[None]]


async def scripted_server(nursery: trio.Nursery, script: Script) -> str:
    """A WebSocket server on 127.0.0.1 that answers every HELLO with ``script(ws)``."""

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        decode_client_frame(await ws.get_message())  # the HELLO
        try:
            await script(ws)
            await ws.aclose()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}/"


async def test_the_state_follows_keyframes_diffs_leaves_and_names(nursery) -> None:
    async def script(ws) -> None:
        await ws.send_message(encode(welcome()))
        await ws.send_message(tick(5, True, [(7, 1, 1, 10.0, 20.0), (8, 2, 1, 30.0, 40.0)],
                                   names=[NameEntry(7, 1, "seven"), NameEntry(8, 2, "eight")]))
        await ws.send_message(encode(ErrorMessage(ErrorCode.RATE_LIMITED, "slow down")))
        await ws.send_message(tick(6, False, [(7, 1, 1, 11.0, 21.0), (8, 2, 0, 30.0, 40.0)]))
        await ws.send_message(tick(7, False, leaves=[(7, 1)]))
        # Ticks 8-9 skipped (a slow client): a keyframe replaces the view and the names.
        await ws.send_message(tick(10, True, [(9, 1, 1, 5.0, 5.0)],
                                   names=[NameEntry(9, 1, "nine")]))
        await trio.sleep_forever()

    url = await scripted_server(nursery, script)
    with trio.fail_after(10):
        async with connect(url, "me", "any") as c:
            assert (c.tick, c.x, c.y, c.slot) == (4, 1.0, 2.0, 3)
            first = await c.next_tick()
            assert first.keyframe and c.others == {7: (1, 10.0, 20.0), 8: (2, 30.0, 40.0)}
            assert c.names == {7: "seven", 8: "eight"}
            await c.next_tick()
            assert c.rate_limited == 1 and c.warnings[-1].message == "slow down"
            assert c.others == {7: (1, 11.0, 21.0)}  # 8 left the view
            update = await anext(aiter(c.ticks()))
            assert update.tick == 7 == c.tick
            assert c.others == {} and c.names == {8: "eight"}  # 7 left the hunt
            await c.next_tick()
            assert c.tick == 10 and c.keyframes == 2 and c.ticks_received == 4
            assert c.others == {9: (1, 5.0, 5.0)} and c.names == {9: "nine"}


@pytest.mark.parametrize(("frames", "expected", "got"), [
    pytest.param([tick(5, True), tick(7)], 6, 7, id="gap"),
    pytest.param([tick(5)], 5, 5, id="diff-before-keyframe"),
])
async def test_a_lost_tick_raises_tick_gap(nursery, frames, expected, got) -> None:
    async def script(ws) -> None:
        await ws.send_message(encode(welcome()))
        for frame in frames:
            await ws.send_message(frame)
        await trio.sleep_forever()

    url = await scripted_server(nursery, script)
    with trio.fail_after(10):
        async with connect(url, "me", "any") as c:
            with pytest.raises(TickGap) as gap:
                while True:
                    await c.next_tick()
    assert (gap.value.expected, gap.value.got) == (expected, got)
    assert "resume token" in str(gap.value)


async def test_a_fatal_error_raises_server_error_and_a_close_connection_lost(nursery) -> None:
    async def script(ws) -> None:
        await ws.send_message(encode(welcome()))
        await ws.send_message(tick(5, True))
        await ws.send_message(encode(ErrorMessage(ErrorCode.TOO_SLOW, "evicted")))
        await ws.aclose(4008, "too slow")

    url = await scripted_server(nursery, script)
    with trio.fail_after(10):
        async with connect(url, "me", "any") as c:
            await c.next_tick()
            with pytest.raises(ServerError) as err:
                await c.next_tick()
            assert (err.value.name, err.value.close_code) == ("TOO_SLOW", 4008)
            with pytest.raises(ConnectionLost) as lost:
                await c.next_tick()
            assert lost.value.code == 4008
            with pytest.raises(ConnectionLost):
                await c.move(1.0, 0.0)


async def test_garbage_from_the_server_is_a_protocol_error_and_a_close(nursery) -> None:
    closed = trio.Event()
    codes = []

    async def script(ws) -> None:
        await ws.send_message(encode(welcome()))
        await ws.send_message(b"\x83\x00")  # a TICK cut short
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            codes.append(exc.reason.code)
            closed.set()

    url = await scripted_server(nursery, script)
    with trio.fail_after(10):
        async with connect(url, "me", "any") as c:
            with pytest.raises(RemoteProtocolError) as err:
                await c.next_tick()
            assert err.value.code == ErrorCode.MALFORMED
        await closed.wait()
    assert codes == [1002]


async def test_connect_errors_say_what_to_do(serve) -> None:
    with pytest.raises(ValueError, match="1-32 bytes"):
        async with connect("ws://127.0.0.1:9/", "x" * 40, "demo"):
            pass
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # a port nobody listens on
    with trio.fail_after(10):
        with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}"):
            async with connect(f"ws://127.0.0.1:{port}/", "me", "demo"):
                pass
        srv = await serve(http_port=-1)
        with pytest.raises(JoinRefused) as refused:
            async with connect(srv.url, "me", "nowhere"):
                pass
    assert refused.value.name == "UNKNOWN_HUNT" and "demo" in refused.value.message


async def test_a_move_is_acked_and_seq_goes_on(serve) -> None:
    srv = await serve(http_port=-1)
    with trio.fail_after(10):
        async with connect(srv.url, "me", "demo") as c:
            with pytest.raises(ValueError, match="finite"):
                await c.move(math.nan, 0.0)
            assert [await c.move(1.0, 0.0), await c.move(0.0, 1.0)] == [1, 2]
            async for _ in c.ticks():
                if c.ack == 2:
                    break
            assert c.seq == 2


# ---------------------------------------------------------------------- bots


def test_steering_follows_the_engine_rules() -> None:
    rng = random.Random(1)
    hunter = Steering(True, rng)
    assert hunter.decide(50.0, 50.0, 0, 100.0, 100.0)  # no heading yet: pick one
    heading = (hunter.dx, hunter.dy)
    assert math.hypot(*heading) == pytest.approx(1.0)
    hunter.decide(50.0, 50.0, 2, 100.0, 100.0)
    hunter.dx, hunter.dy = 1.0, 0.0
    assert not hunter.decide(50.0, 50.0, 3, 100.0, 100.0)  # warmer: keep going
    assert hunter.decide(51.0, 50.0, 1, 100.0, 100.0)  # colder: head back, +- the jitter
    assert hunter.dx < math.cos(1.2) + 1e-9
    walker = Steering(False, random.Random(2))
    walker.dx, walker.dy = 1.0, 0.0
    assert walker.decide(100.0, 50.0, 0, 100.0, 100.0)  # at the east wall: turn
    turns = sum(walker.decide(50.0, 50.0, 0, 100.0, 100.0) for _ in range(10_000))
    assert 100 < turns < 300  # TURN_CHANCE = 2 % per tick


def test_bots_bad_options_are_one_line_and_status_2(capsys) -> None:
    for argv, words in (
        (["--url", "http://x/"], "--url must be a ws://"),
        (["--url", "ws://x/", "--count", "0"], "--count must be 1-10000"),
        (["--url", "ws://x/", "--duration", "-1"], "--duration must be"),
        (["--url", "ws://x/", "--moves-per-second", "0"], "--moves-per-second must be"),
        (["--url", "ws://x/", "--name-prefix", "x" * 40], "--name-prefix"),
        (["--url", "ws://x/", "--hunt", " padded"], "--hunt"),
    ):
        assert cli.main(["bots", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("treasure-hunt bots: error: ") and words in err
        assert err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bots", "--count", "3"])
    assert exit_.value.code == 2
    assert "--url" in capsys.readouterr().err


async def test_bots_play_and_say_bye(serve) -> None:
    srv = await serve({"name": "field", "width": 80.0, "height": 80.0, "treasures": 100,
                       "discovery_radius": 8.0}, http_port=-1)
    cmd = [str(EXE), "bots", "--url", srv.url, "--hunt", "field", "--count", "6",
           "--duration", "2", "--moves-per-second", "10", "--connect-rate", "100", "--quiet"]
    with trio.fail_after(30):
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False)
        while srv.hub.sessions:  # the BYEs take effect at the next tick
            await trio.sleep(0.05)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "6 of 6" in out and "Errors" in out
    assert srv.metric("hunt_connection_events_total", kind="join") == 6
    assert srv.metric("hunt_moves_total", fate="applied") > 6


async def test_bots_stop_cleanly_on_sigint(serve) -> None:
    srv = await serve(http_port=-1)
    cmd = [str(EXE), "bots", "--url", srv.url, "--count", "3", "--policy", "random"]
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
        try:
            while len(srv.hub.sessions) < 3:
                await trio.sleep(0.05)
            await trio.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            out = b""
            while chunk := await proc.stdout.receive_some(65536):
                out += chunk
            status = await proc.wait()
            err = await proc.stderr.receive_some(65536)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()
            await proc.stderr.aclose()
        while srv.hub.sessions:
            await trio.sleep(0.05)
    assert status == 130, err.decode()
    assert "interrupted" in out.decode() and "3 of 3" in out.decode()
    assert b"Traceback" not in err


async def test_the_example_of_the_docs_plays(serve) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "python-client.md").read_text()
    code = doc.split("<!-- example: hunter -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {"__name__": "example"}
    exec(compile(code, "docs/python-client.md", "exec"), namespace)
    srv = await serve({"name": "demo", "width": 100.0, "height": 100.0, "treasures": 100},
                      http_port=-1)
    with trio.fail_after(20):
        score = await namespace["main"](srv.url, 60)
        while srv.hub.sessions:  # it said BYE
            await trio.sleep(0.05)
    assert score >= 0 and srv.metric("hunt_moves_total", fate="applied") >= 1


def test_the_client_is_light_and_exports_its_names() -> None:
    """A game imports server.client without the engine, Numba or the server's libraries."""
    code = ("import sys, server.client as c\n"
            "print(sorted(c.__all__))\n"
            "print([m for m in ('numba', 'tickengine', 'structlog', 'rich', "
            "'prometheus_client') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == [str(sorted(["ConnectFailed", "ConnectionLost", "HuntClient", "HuntError",
                               "JoinRefused", "ServerError", "TickGap", "connect"])), "[]"]
