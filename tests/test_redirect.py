"""Scale-out redirects in the Python client and the bots, over real sockets.

No multi-node server here: the "other nodes" are stand-ins written with
trio-websocket on 127.0.0.1 (port 0) that answer a HELLO with a REDIRECT, or
relay a connection to a real in-process ``HuntServer`` and cut it with ERROR
HUNT_MOVED, the way a node that lost its lease does. Every wait is bounded.
"""

from __future__ import annotations

import queue
import random
import struct
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from server.client import ConnectFailed, ServerError, connect
from server.protocol import (
    CLOSE_REDIRECT,
    ErrorCode,
    ErrorMessage,
    Hello,
    Redirect,
    RemoteProtocolError,
    decode_client_frame,
    decode_server_frame,
    encode,
)
from server.tools.bots import MAX_RETRIES, retry_delay

pytestmark = pytest.mark.usefixtures("collect_garbage")

EXE = Path(sys.executable).parent / "treasure-hunt"


@dataclass
class StandIn:
    """A stand-in node: its URL, the HELLOs it got, and how each connection ended
    (the close code the client sent, or None when the stand-in closed first)."""

    url: str = ""
    hellos: list[Hello] = field(default_factory=list)
    client_closes: list[int | None] = field(default_factory=list)


async def redirector(nursery: trio.Nursery, answer: Callable[[Hello], bytes]) -> StandIn:
    """A node that answers every HELLO with the frame ``answer(hello)``. A valid REDIRECT is
    then followed by a close with 4010 (as a real node does); after anything else the
    stand-in waits for the client to close, to see its close code."""
    node = StandIn()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            hello = decode_client_frame(await ws.get_message())
            node.hellos.append(hello)
            frame = answer(hello)
            await ws.send_message(frame)
            if valid_redirect(frame):
                await ws.aclose(CLOSE_REDIRECT, "redirect")
                node.client_closes.append(None)
                return
            with trio.fail_after(5):
                await ws.get_message()
        except ConnectionClosed as exc:
            node.client_closes.append(exc.reason.code if exc.reason else None)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    node.url = f"ws://127.0.0.1:{server.port}/"
    return node


def valid_redirect(frame: bytes) -> bool:
    try:
        return isinstance(decode_server_frame(frame), Redirect)
    except RemoteProtocolError:
        return False


def to(url: Callable[[], str], node: str = "node-b") -> Callable[[Hello], bytes]:
    """Answer: a REDIRECT of the HELLO's hunt to ``url()``."""
    return lambda hello: encode(Redirect(url(), hello.hunt, node))


async def relay(nursery: trio.Nursery, upstream: str, kick: trio.Event) -> StandIn:
    """A node that relays every connection to the real server at ``upstream``, until
    ``kick``: then ERROR HUNT_MOVED and a close with 4011 (the player stays on the real
    server for its resume grace period, as after any drop)."""
    node = StandIn()

    async def pump(src: WebSocketConnection, dst: WebSocketConnection,
                   done: trio.CancelScope) -> None:
        try:
            while True:
                await dst.send_message(await src.get_message())
        except ConnectionClosed:
            pass
        done.cancel()

    async def handler(request: WebSocketRequest) -> None:
        client = await request.accept()
        try:
            first = await client.get_message()
        except ConnectionClosed:
            return
        node.hellos.append(decode_client_frame(first))
        async with open_websocket_url(upstream) as up, trio.open_nursery() as pipes:
            await up.send_message(first)
            pipes.start_soon(pump, up, client, pipes.cancel_scope)
            pipes.start_soon(pump, client, up, pipes.cancel_scope)
            await kick.wait()
            moved = ErrorMessage(ErrorCode.HUNT_MOVED, "hunt moved: reconnect to your entry "
                                 "URL with your resume token")
            try:
                await client.send_message(encode(moved))
                await client.aclose(int(ErrorCode.HUNT_MOVED), "hunt moved")
            except ConnectionClosed:
                pass
            pipes.cancel_scope.cancel()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    node.url = f"ws://127.0.0.1:{server.port}/"
    return node


async def play_until_acked(c) -> None:
    seq = await c.move(1.0, 0.0)
    async for _ in c.ticks():
        if c.ack >= seq:
            return


# ---------------------------------------------------------------------- the client


async def test_a_redirect_is_followed_to_the_real_server_and_resume_goes_through_entry(
        serve, nursery) -> None:
    srv = await serve(http_port=-1)
    entry = await redirector(nursery, to(lambda: srv.url))
    with trio.fail_after(20):
        async with connect(entry.url, "Ada", "demo") as c:
            assert (c.entry_url, c.url, c.redirects) == (entry.url, srv.url, [srv.url])
            assert not c.welcome.resumed
            await play_until_acked(c)
        # Left without BYE: the entry node redirects the resume too, with the same HELLO.
        async with c.reconnect() as back:
            assert back.welcome.resumed and back.player_id == c.player_id
            assert (back.entry_url, back.url, back.redirects) == (entry.url, srv.url, [srv.url])
            assert back.ack >= c.ack
            await play_until_acked(back)
    assert entry.hellos == [Hello("Ada", "demo"), Hello("Ada", "demo", resume_token=c.resume_token)]
    assert entry.client_closes == [None, None], "the stand-in closed with 4010 first"
    assert srv.metric("hunt_connection_events_total", kind="join") == 1


async def test_a_node_that_owns_the_hunt_is_not_a_redirect(serve) -> None:
    srv = await serve(http_port=-1)
    with trio.fail_after(10):
        async with connect(srv.url, "Bo", "demo") as c:
            assert (c.entry_url, c.url, c.redirects) == (srv.url, srv.url, [])


async def test_a_loop_of_redirects_fails_after_three_naming_the_chain(nursery) -> None:
    a: StandIn
    b: StandIn
    a = await redirector(nursery, to(lambda: b.url, "b"))
    b = await redirector(nursery, to(lambda: a.url, "a"))
    with trio.fail_after(10):
        with pytest.raises(ConnectFailed) as failed:
            async with connect(a.url, "Cy", "demo"):
                pass
    chain = " -> ".join([a.url, b.url, a.url, b.url, a.url])
    assert f"more than 3 redirects for hunt 'demo': {chain}" in str(failed.value)
    assert (len(a.hellos), len(b.hellos)) == (2, 2), "the entry and 3 redirects, then stop"
    with trio.fail_after(10):
        with pytest.raises(ConnectFailed, match="more than 0 redirects"):
            async with connect(a.url, "Cy", "demo", max_redirects=0):
                pass


def raw_redirect(url: bytes, hunt: bytes, node: bytes = b"") -> bytes:
    """A REDIRECT frame as a faulty node could send it (the Redirect event refuses them)."""
    return struct.pack("<BBHHH", 0x85, len(node), len(url), len(hunt), 0) + url + hunt + node


@pytest.mark.parametrize(("answer", "words", "close"), [
    pytest.param(lambda h: raw_redirect(b"http://10.0.0.2/", b"demo"), "ws:// or wss:// URL",
                 1008, id="http-url"),
    pytest.param(lambda h: raw_redirect(b"", b"demo"), "ws:// or wss:// URL", 1008,
                 id="empty-url"),
    pytest.param(lambda h: raw_redirect(b"ws://\xc3x/", b"demo"), "not valid UTF-8", 1002,
                 id="bad-utf8"),
    pytest.param(lambda h: raw_redirect(b"ws://b:1/", b"demo")[:-2], "must be 21 bytes", 1002,
                 id="truncated"),
])
async def test_a_bad_redirect_fails_cleanly(nursery, answer, words, close) -> None:
    bad = await redirector(nursery, answer)
    with trio.fail_after(10):
        with pytest.raises(ConnectFailed) as failed:
            async with connect(bad.url, "Di", "demo"):
                pass
        while not bad.client_closes:  # the stand-in reads the client's close
            await trio.sleep(0.01)
    assert "answered the HELLO with a frame the protocol forbids" in str(failed.value)
    assert words in str(failed.value)
    assert isinstance(failed.value.__cause__, RemoteProtocolError)
    assert bad.client_closes == [close], "the client closed with the protocol error's code"


async def test_a_redirect_for_another_hunt_or_to_nowhere_fails_cleanly(nursery) -> None:
    other = await redirector(nursery, lambda h: encode(Redirect("ws://127.0.0.1:9/", "other")))
    with trio.fail_after(10):
        with pytest.raises(ConnectFailed, match="for hunt 'other': a server bug"):
            async with connect(other.url, "Ed", "demo"):
                pass
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    dead = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()  # a port nobody listens on: the owner just died
    gone = await redirector(nursery, to(lambda: dead))
    with trio.fail_after(10):
        with pytest.raises(ConnectFailed, match=f"cannot open a WebSocket to {dead}"):
            async with connect(gone.url, "Ed", "demo"):
                pass


async def test_hunt_moved_raises_server_error_and_the_player_resumes_through_entry(
        serve, nursery) -> None:
    srv = await serve(http_port=-1)
    kick = trio.Event()
    old_owner = await relay(nursery, srv.url, kick)
    owner = [old_owner.url]
    entry = await redirector(nursery, to(lambda: owner[0]))
    with trio.fail_after(20):
        async with connect(entry.url, "Flo", "demo") as c:
            assert (c.url, c.redirects) == (old_owner.url, [old_owner.url])
            await play_until_acked(c)
            owner[0] = srv.url  # the hunt's new owner
            kick.set()
            with pytest.raises(ServerError) as moved:
                while True:
                    await c.next_tick()
            assert (moved.value.name, moved.value.code, moved.value.close_code) == (
                "HUNT_MOVED", 4011, 4011)
        async with c.reconnect() as back:
            assert back.welcome.resumed and back.player_id == c.player_id
            assert (back.entry_url, back.url, back.redirects) == (entry.url, srv.url, [srv.url])
            await back.next_tick()
            assert back.score == c.score and back.seq >= c.seq
    assert [h.resume_token for h in entry.hellos] == [None, c.resume_token]


# ---------------------------------------------------------------------- the bots


def test_bot_retries_span_about_ten_seconds() -> None:
    rng = random.Random(3)
    delays = [retry_delay(n, rng) for n in range(1, MAX_RETRIES + 1)]
    assert MAX_RETRIES == 10 and 7.5 <= sum(delays) <= 10.5
    assert delays[0] <= 0.25 and max(delays) <= 1.25


async def test_bots_follow_redirects_and_survive_hunt_moved(serve, nursery) -> None:
    srv = await serve(http_port=-1)
    kick = trio.Event()
    old_owner = await relay(nursery, srv.url, kick)
    owner = [old_owner.url]
    entry = await redirector(nursery, to(lambda: owner[0]))
    cmd = [str(EXE), "bots", "--url", entry.url, "--count", "3", "--duration", "4",
           "--moves-per-second", "5", "--connect-rate", "100", "--quiet"]

    async def move_the_hunt() -> None:
        while len(srv.hub.sessions) < 3:
            await trio.sleep(0.05)
        await trio.sleep(0.5)
        owner[0] = srv.url
        kick.set()

    with trio.fail_after(30):
        nursery.start_soon(move_the_hunt)
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                      check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode() + out
    assert kick.is_set(), out
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.count("│") == 3}
    assert rows["Bots joined"] == "3 of 3"
    assert rows["Resumes"] == "3" and rows["Redirects followed"] == "6"
    # The hunt moved and every bot came back: reconnect attempts, not errors.
    assert rows["Reconnect attempts"] == "HUNT_MOVED 3" and rows["Errors"] == "0"
    assert rows["Gave up"] == "0" and "Last error" not in out
    assert srv.metric("hunt_connection_events_total", kind="join") == 3
    assert [h.resume_token is not None for h in entry.hellos].count(True) == 3


# ---------------------------------------------------------------------- the JS client


class TrioThread:
    """Stand-ins on their own Trio loop in a thread, for the (synchronous) browser tests:
    ``setup(nursery, self)`` starts them; ``call(fn)`` runs ``fn()`` in that loop."""

    def __init__(self, setup: Callable[[trio.Nursery, TrioThread], Awaitable[None]]) -> None:
        self._setup = setup
        self._ready: queue.Queue[bool] = queue.Queue()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._ready.get(timeout=10):
            raise RuntimeError("the stand-ins did not start")

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._scope = trio.CancelScope()
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    await self._setup(nursery, self)
                    self._ready.put(True)
                    await trio.sleep_forever()
        finally:
            self._ready.put(False)

    def call(self, fn: Callable[[], object]) -> None:
        trio.from_thread.run_sync(fn, trio_token=self._token)

    def stop(self) -> None:
        self.call(self._scope.cancel)
        self._thread.join(timeout=10)


JS_CONNECT = """async ([entry, hunt]) => {
  const P = await import('/server/static/hunt.js');
  window.events = [];
  const game = P.connect(entry, {name: 'Ada', hunt, backoffInitialMs: 50});
  game.on('redirect', (d) => window.events.push(['redirect', d]));
  game.on('error', (e) => window.events.push(['error', e.code, e.closeCode, e.fatal]));
  game.on('status', (s, d) => {
    if (d.redirect) window.events.push(['status', s, d.redirect.url]);
  });
  window.game = game;
}"""
JS_STATE = """() => ({state: game.state, entryUrl: game.entryUrl, url: game.url,
  redirects: [...game.redirects], resumes: game.resumes, tick: game.view.tick,
  slot: game.view.me?.slot, events: window.events.splice(0)})"""
PLAYING = "(n) => game.state === 'playing' && game.resumes === n && game.view.tick > 0"


@pytest.mark.slow
def test_a_page_follows_redirects_and_resumes_through_its_entry_url(tmp_path: Path) -> None:
    from test_browser_support import (
        BLANK_PAGE,
        ServerProcess,
        capture_errors,
        launched_browser,
        static_server,
    )

    config = tmp_path / "one.toml"
    config.write_text('[server]\nresume_grace = 60.0\n\n[[hunt]]\nname = "demo"\n',
                      encoding="utf-8")
    server = ServerProcess(config)
    kick = trio.Event()
    owner: list[str] = []
    stand_ins: dict[str, StandIn] = {}

    async def setup(nursery: trio.Nursery, _: TrioThread) -> None:
        stand_ins["old"] = await relay(nursery, server.ws_url, kick)
        owner.append(stand_ins["old"].url)
        stand_ins["entry"] = await redirector(nursery, to(lambda: owner[-1], "node-b"))

    def move_hunt() -> None:
        owner.append(server.ws_url)
        kick.set()

    nodes = TrioThread(setup)
    try:
        with launched_browser() as browser, static_server() as static:
            page = browser.new_page()
            errors = capture_errors(page)
            page.goto(static + BLANK_PAGE)
            entry, old = stand_ins["entry"].url, stand_ins["old"].url
            page.evaluate(JS_CONNECT, [entry, "demo"])
            page.wait_for_function(PLAYING, arg=0, timeout=15_000)
            s = page.evaluate(JS_STATE)
            assert (s["entryUrl"], s["url"], s["redirects"]) == (entry, old, [old])
            assert s["events"] == [
                ["redirect", {"url": old, "hunt": "demo", "node": "node-b", "count": 1}],
                ["status", "connecting", old]]
            slot = s["slot"]

            nodes.call(move_hunt)  # HUNT_MOVED: back to the entry URL, which names the new owner
            page.wait_for_function(PLAYING, arg=1, timeout=15_000)
            s = page.evaluate(JS_STATE)
            new = server.ws_url
            assert (s["entryUrl"], s["url"], s["redirects"], s["slot"]) == (entry, new, [new],
                                                                             slot)
            assert ["error", 4011, 4011, True] in s["events"]
            assert ["status", "reconnecting", new] in s["events"]

            page.evaluate("() => game.dropConnection()")  # a drop: the entry URL again
            page.wait_for_function(PLAYING, arg=2, timeout=15_000)
            s = page.evaluate(JS_STATE)
            assert (s["url"], s["redirects"], s["slot"]) == (new, [new], slot)
            page.evaluate("() => game.close()")
            assert not errors, errors
        hellos = stand_ins["entry"].hellos
        assert [h.resume_token is None for h in hellos] == [True, False, False]
        assert len({h.resume_token for h in hellos[1:]}) == 1
    finally:
        nodes.stop()
        server.stop()


@pytest.mark.slow
def test_a_page_gives_up_an_attempt_after_three_redirects() -> None:
    from test_browser_support import BLANK_PAGE, capture_errors, launched_browser, static_server

    loop: dict[str, StandIn] = {}

    async def setup(nursery: trio.Nursery, _: TrioThread) -> None:
        loop["a"] = await redirector(nursery, to(lambda: loop["b"].url, "b"))
        loop["b"] = await redirector(nursery, to(lambda: loop["a"].url, "a"))

    nodes = TrioThread(setup)
    try:
        with launched_browser() as browser, static_server() as static:
            page = browser.new_page()
            errors = capture_errors(page)
            page.goto(static + BLANK_PAGE)
            a, b = loop["a"].url, loop["b"].url
            page.evaluate("""async ([entry]) => {
              const P = await import('/server/static/hunt.js');
              window.errors = [];
              window.game = P.connect(entry, {name: 'Bo', hunt: 'demo', reconnect: false});
              game.on('error', (e) => window.errors.push(e));
            }""", [a])
            page.wait_for_function("() => game.state === 'closed'", timeout=15_000)
            got = page.evaluate("() => ({redirects: game.redirects, errors: window.errors})")
            assert not errors, errors
        assert got["redirects"] == [b, a, b]
        chain = " -> ".join([a, b, a, b, a])
        assert got["errors"] == [{"code": 0, "closeCode": 0, "fatal": True,
                                  "message": f"more than 3 redirects: {chain}"}]
        assert (len(loop["a"].hellos), len(loop["b"].hellos)) == (2, 2)
    finally:
        nodes.stop()
