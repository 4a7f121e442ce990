"""A hunt fails alone (issue 12, section 2), with real faults from the operating system.

``treasure-hunt serve`` runs as a child process under ``RLIMIT_FSIZE`` (SIGXFSZ
ignored, so a write past the limit fails with EFBIG): the tests run as root, for
whom file permissions stop nothing. One hunt's players flood it with moves, so its
journal segment reaches the limit first; the other hunt's journal stays far below
it. The flooded hunt must stop alone, tell its players, show in /healthz, /metrics
and the log, and come back from its journal; the other hunt must not miss a tick.
"""

from __future__ import annotations

import contextlib
import json
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_server import redis_server  # noqa: F401
from test_cluster_nodes import all_placed, node_of, owners, play_until_score, start_nodes, until
from trio_websocket import ConnectionClosed, open_websocket_url

from server.client import connect
from server.protocol import (
    MAX_SERVER_FRAME_BYTES,
    ErrorCode,
    ErrorMessage,
    Hello,
    Move,
    Moves,
    Welcome,
    decode_server_frame,
    encode,
)

CLI = [sys.executable, "-m", "server"]
#: Largest file the server may write (bytes): above both hunts' snapshots (~13 kB), far above
#: what the quiet hunt journals in the test, and quickly reached by the flooded one.
FILE_LIMIT = 64 << 10

CONFIG = """\
[server]
moves_per_second = 10000.0
bytes_per_second = 1000000
snapshot_every = 0
resume_grace = 60.0

[defaults]
max_players = 16
treasures = 10
tick_rate = 20

[[hunt]]
name = "doomed"

[[hunt]]
name = "steady"
"""


class Server:
    """``serve`` under RLIMIT_FSIZE; its JSON log lines read from a pipe by a thread."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "hunts.toml").write_text(CONFIG)
        self.data = tmp / "data"

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))

        self.proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(tmp / "hunts.toml"), "--port", "0",
             "--http-port", "0", "--data-dir", str(self.data), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        serving = self.wait_for("serving", 120)
        self.ws_url = serving["ws_url"]
        self.http_url = serving["http_url"]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
            else:
                self.other.append(line)

    def wait_for(self, event: str, timeout: float, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                return e
        while time.monotonic() < deadline:
            try:
                e = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.events.append(e)
            if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                return e
        raise AssertionError(f"no {event!r} log line within {timeout} s: "
                             f"{[e['event'] for e in self.events][-30:]} {self.other[-20:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http_url + path.lstrip("/"), timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


@pytest.fixture
def server(tmp_path: Path):
    import tickengine
    from server.hunt import _tickframes
    from server.shell._app import pin_threading_layer

    # Numba's cache on disk before the child starts: it must not write kernels past its limit.
    pin_threading_layer()
    tickengine.warm_up()
    _tickframes.warm_up()
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


async def _flood(url: str) -> tuple[ErrorMessage, bytes, int]:
    """Join 'doomed' and send 64 moves every 10 ms until the server sends an ERROR; returns
    it, the resume token and the close code that followed."""
    async with open_websocket_url(url, max_message_size=MAX_SERVER_FRAME_BYTES) as ws:
        try:
            return await _flood_on(ws)
        finally:
            # trio-websocket 0.12 leaves the socket open after an abnormal closure.
            await ws._stream.aclose()


async def _flood_on(ws: Any) -> tuple[ErrorMessage, bytes, int]:
    await ws.send_message(encode(Hello("flood", "doomed", 1)))
    welcome = decode_server_frame(await ws.get_message())
    assert isinstance(welcome, Welcome)
    error: list[ErrorMessage] = []

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                event = decode_server_frame(await ws.get_message())
                if isinstance(event, ErrorMessage) and event.close_code:  # not a warning
                    error.append(event)

    seq = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        with trio.move_on_after(30), contextlib.suppress(ConnectionClosed):
            while not error:
                moves = tuple(Move(seq + i + 1, 1.0, 0.5) for i in range(64))
                seq += 64
                await ws.send_message(encode(Moves(moves)))
                await trio.sleep(0.01)
        with trio.move_on_after(10), contextlib.suppress(ConnectionClosed):
            while ws.closed is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert error, "the flooded hunt never failed"
    return error[0], welcome.resume_token, ws.closed.code if ws.closed else 0


async def _scenario(srv: Server) -> None:
    ticks: list[int] = []
    failed = trio.Event()
    after_failure = trio.Event()

    async def steady() -> None:
        async with connect(srv.ws_url, "calm", "steady") as calm:
            async for t in calm.ticks():  # raises TickGap on a missed tick
                ticks.append(t.tick)
                if failed.is_set() and len(ticks) > after_failure_at[0] + 30:
                    after_failure.set()
                    return

    after_failure_at = [0]
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady)
            while len(ticks) < 10:
                await trio.sleep(0.05)
            error, token, close_code = await _flood(srv.ws_url)
            after_failure_at[0] = len(ticks)
            failed.set()
            assert error.code == ErrorCode.HUNT_FAILED and error.close_code == 4014
            assert close_code == 4014
            assert "resume token" in error.message

            status, body = await trio.to_thread.run_sync(srv.get, "/healthz")
            health = json.loads(body)
            assert status == 200 and health["status"] == "degraded" and not health["ok"]
            assert "doomed" in health["failed"] and "steady" in health["hunts"]
            assert "File too large" in health["failed"]["doomed"]["error"]
            _, metrics = await trio.to_thread.run_sync(srv.get, "/metrics")
            assert b"hunt_failures_total 1.0" in metrics
            await after_failure.wait()
    # The quiet hunt's client saw every tick, through the other hunt's failure.
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "a tick was missed"

    line = srv.wait_for("hunt_failed", 5, hunt="doomed")
    assert line["stage"] == "tick" and "File too large" in line["error"]
    assert "restarts" in line["hint"] and line["data_dir"]
    # Restarted from its journal after the backoff: the flooder resumes its player.
    srv.wait_for("hunt_restarted", 30, hunt="doomed")
    with trio.fail_after(20):
        async with connect(srv.ws_url, "flood", "doomed", resume_token=token) as back:
            assert back.welcome.resumed
            await back.ticks().__anext__()
    status, body = await trio.to_thread.run_sync(srv.get, "/healthz")
    assert json.loads(body)["status"] == "ok", body


def test_a_hunt_whose_journal_cannot_grow_fails_alone_and_restarts(server: Server) -> None:
    trio.run(_scenario, server)
    assert server.stop() == 0, "SIGTERM stops the server cleanly after the failure"


def test_serve_says_what_failed_when_the_data_dir_is_unusable(tmp_path: Path) -> None:
    """A data dir that is a file: serve exits 2 naming the hunt and the data dir, not a port."""
    (tmp_path / "data").write_text("not a directory")
    proc = subprocess.run([*CLI, "serve", "--port", "0", "--http-port", "-1", "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "cannot listen" not in proc.stderr
    assert "data" in proc.stderr and "error:" in proc.stderr, proc.stderr


def test_a_port_clash_fails_before_the_warm_up_and_writes_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([*CLI, "serve", "--port", str(port), "--http-port", "-1",
                               "--data-dir", str(tmp_path / "data"), "--log-format", "json"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
    assert "warming_up" not in proc.stderr, "the ports are bound before the kernels compile"
    assert not (tmp_path / "data").exists(), "nothing is written before the ports are bound"


async def test_a_failed_hunt_stays_stopped_while_the_fault_persists(serve, tmp_path: Path) -> None:
    """A fault that survives the restart (directories where the hunt's snapshots must go:
    EISDIR, for root too) keeps the hunt stopped, retried with a growing backoff, while the
    other hunt plays on; once the fault is gone the hunt comes back from its journal."""
    from server.client import ServerError
    from server.hunt._placement import hunt_journals

    data = tmp_path / "data"
    srv = await serve({"name": "cave"}, {"name": "dune"}, data_dir=str(data), snapshot_every=10)
    placement = srv.app.placement
    cave = hunt_journals(data)["cave"]
    old = placement.hub_named("cave")
    tick = old.world.tick_number
    first = (tick // 10 + 1) * 10
    blockers = [cave / f"snapshot-{k:012d}.snap.tmp" for k in range(first, first + 4000, 10)]
    for b in blockers:
        b.mkdir()
    with trio.fail_after(30):
        async with connect(srv.url, "dan", "dune") as dan:
            while placement.strikes.get("cave", 0) < 2:  # failed, restarted, failed again
                await dan.next_tick()
            health = await _healthz(srv)
            assert health["status"] == "degraded" and health["failed"]["cave"]["failures"] == 2
            assert health["failed"]["cave"]["retry_in"] is not None
            assert "dune" in health["hunts"]
            with pytest.raises(ServerError) as refused:
                async with connect(srv.url, "cy", "cave"):
                    pass
            assert refused.value.code == ErrorCode.HUNT_FAILED
            assert old.broadcaster._send_pool is None, "the stopped hub's send thread is shut down"
            for b in blockers:
                b.rmdir()
            while "cave" in placement.failed:
                await dan.next_tick()
        async with connect(srv.url, "cy", "cave") as cy:
            assert (await cy.next_tick()).tick > tick
    assert srv.metric("hunt_failures_total") == 2
    assert (await _healthz(srv))["status"] == "ok"


async def _healthz(srv: Any) -> dict[str, Any]:
    from test_server_ops import get_json

    return await get_json(srv.ports.http, "/healthz")


@pytest.mark.slow
async def test_on_a_cluster_a_failed_hunt_releases_its_lease_and_players_resume(
        tmp_path: Path, redis_server: Any) -> None:  # noqa: F811
    """Scale-out: the node whose hunt fails releases the lease at once; the hunt is placed
    again (a new lease, a new journal directory) and recovered from the failed one's last
    durable tick, and its player resumes through the entry URL with its score."""
    from server.client import ServerError
    from server.hunt._placement import hunt_dir_name

    nodes = start_nodes(tmp_path, redis_server.url, "ab")
    try:
        placed = await until(lambda: all_placed(nodes[0], {"a", "b"}), 20, "placement")
        owner = node_of(nodes, placed["alpha"])
        entry = node_of(nodes, "b" if owner.node_id == "a" else "a")
        base = tmp_path / "shared-data" / "hunts" / hunt_dir_name("alpha")
        with trio.fail_after(60):
            async with connect(entry.ws_url, "ali", "alpha") as ali:
                score = await play_until_score(ali)
                token, pid = ali.resume_token, ali.player_id
                lease_dir = max((p for p in base.iterdir() if p.name.isdigit()),
                                key=lambda p: int(p.name))
                first = (ali.tick // 100 + 1) * 100  # the nodes snapshot every 100 ticks
                for k in range(first, first + 4000, 100):
                    (lease_dir / f"snapshot-{k:012d}.snap.tmp").mkdir()
                with pytest.raises(ServerError) as failed:
                    while True:
                        await ali.next_tick()
                assert failed.value.code == ErrorCode.HUNT_FAILED
                assert failed.value.close_code == 4014
            await until(lambda: (owners(entry) or {}).get("alpha") is not None
                              and any(int(p.name) > int(lease_dir.name) for p in base.iterdir()
                                      if p.name.isdigit()), 20, "alpha placed again")
            async with connect(entry.ws_url, "ali", "alpha", resume_token=token) as back:
                assert back.welcome.resumed and back.player_id == pid
                await back.next_tick()
                assert back.score >= score
        failed_lines = [e for e in owner.events() if e["event"] == "hunt_failed"]
        assert failed_lines and failed_lines[0]["hunt"] == "alpha"
        assert "Is a directory" in failed_lines[0]["error"]
    finally:
        for n in nodes:
            n.stop()
