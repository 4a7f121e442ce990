"""A real ``redis-server`` for the scale-out tests: a subprocess on a free 127.0.0.1 port.

``RedisServer(dir)`` runs Debian's redis-server in ``dir`` with an append-only file
fsynced at every write (``--appendonly yes --appendfsync always --save ''``), so a
``stop()`` + ``start()`` keeps every key: leases, fence counters, the stream. The
port is chosen once (bind port 0, close, start redis on it; another pick if the port
was taken meanwhile) and kept across restarts, so ``url`` never changes.

Tests take the ``redis_server`` fixture (function scope, started, stopped after)::

    from redis_server import RedisServer, redis_server  # noqa: F401

    async def test_x(redis_server: RedisServer) -> None:  # noqa: F811
        ... redis_server.url ...; redis_server.pause(); redis_server.resume()

If redis-server is not installed the fixture fails (never skips) and says to run
``sh scripts/install-test-deps.sh``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

#: Seconds to wait for PING to answer after a start, and for the process to exit on stop.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: Port picks tried when the chosen port turns out to be taken.
PORT_TRIES = 5
INSTALL_HINT = ("redis-server is not installed: run 'sh scripts/install-test-deps.sh' "
                "(it apt-installs Debian's redis-server), then run the tests again")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis on 127.0.0.1:port answers PING (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process in ``dir`` (its AOF, its log ``redis.log``), restartable.

    ``start()`` returns once PING answers (at most :data:`START_TIMEOUT` s) and raises
    RuntimeError with the end of redis.log if it does not. ``stop()`` is SIGTERM
    (Redis fsyncs and exits), ``kill()`` is SIGKILL, ``pause()``/``resume()`` are
    SIGSTOP/SIGCONT. Used as a context manager it starts and, at exit, stops.
    """

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (set by the first start, then fixed)."""
        if self.port is None:
            raise RuntimeError("RedisServer has no port yet: call start() first")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self, port: int) -> list[str]:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(INSTALL_HINT)
        return [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--logfile", "redis.log", "--loglevel", "notice"]

    def start(self) -> None:
        """Start (or start again, on the same port and dir) and wait until PING answers."""
        if self.running:
            raise RuntimeError("redis-server is already running: stop() it first")
        fixed = self.port is not None
        for _ in range(1 if fixed else PORT_TRIES):
            port = self.port if fixed else free_port()
            assert port is not None
            self.proc = subprocess.Popen(self._command(port), cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            self.paused = False
            if self._wait_ready(port):
                self.port = port
                return
            self._reap()
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s; "
                           f"end of {self.dir / 'redis.log'}:\n{self.log_tail()}")

    def _wait_ready(self, port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        # A restarted server may still have the old process's socket in TIME_WAIT: Redis
        # sets SO_REUSEADDR, so the bind works; what takes time is loading the AOF.
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False  # exited: the port was taken (or a bad option: see the log)
            if ping(port):
                return True
            time.sleep(0.02)
        return False

    def _reap(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        if proc is not None:
            proc.wait(STOP_TIMEOUT)
        self.proc = None
        self.paused = False

    def stop(self) -> None:
        """SIGTERM (after SIGCONT if paused) and wait for the exit; a no-op if not running."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self.paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.proc = None
        self.paused = False

    def restart(self) -> None:
        """stop() then start(): same port, same dir, same data (the AOF)."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL (a crash): the AOF keeps every write acknowledged before it."""
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung server)."""
        assert self.proc is not None and self.running, "redis-server is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 20) -> str:
        path = self.dir / "redis.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"RedisServer({self.url if self.port else 'no port'}, {state}, pid " \
               f"{self.proc.pid if self.proc else None})"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server of this test alone (its dir under tmp_path), stopped after."""
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT)
    server = RedisServer(tmp_path / "redis")
    with server:
        yield server
