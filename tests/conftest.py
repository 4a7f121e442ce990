"""Fixtures shared by the server tests: in-process hunt servers on 127.0.0.1, port 0.

``serve`` starts a real :class:`server.shell._app.HuntServer` in the test's Trio loop
(real sockets, real tick) and returns once it listens: no sleeping for start-up.
Every server started is shut down when the test ends.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio


@dataclass
class RunningServer:
    """A started in-process server: the application, its ports and shortcuts."""

    app: Any  # server.shell._app.HuntServer
    ports: Any  # server.shell._app.Ports

    @property
    def url(self) -> str:
        """The WebSocket URL, ``ws://127.0.0.1:PORT/``."""
        return self.ports.ws_url

    @property
    def hub(self) -> Any:
        return self.app.hub

    def metric(self, name: str, **labels: str) -> float:
        """A Prometheus sample of this server's registry (0.0 when it has none yet)."""
        value = self.app.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def serve(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """``srv = await serve({"name": "h", ...}, engine={...}, defaults={...}, **server)``.

    Positional arguments are ``[[hunt]]`` tables (default: one hunt named
    "demo"); keyword arguments are ``[server]`` keys (ports default to 0, any
    free one; ``http_port=-1`` for none).
    """
    from server._config import parse_serve_config
    from server.shell._app import HuntServer

    started: list[Any] = []

    async def start(*hunts: dict[str, Any], engine: dict[str, Any] | None = None,
                    defaults: dict[str, Any] | None = None, **server: Any) -> RunningServer:
        data: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": 0, "http_port": 0, **server},
            "hunt": list(hunts) or [{"name": "demo"}],
        }
        if engine:
            data["engine"] = engine
        if defaults:
            data["defaults"] = defaults
        app = HuntServer(parse_serve_config(data))
        started.append(app)
        # The first start of a fresh clone compiles the kernels: about 20 s on a quiet
        # machine, a minute or more on a busy one (test_adversarial.py runs first).
        with trio.fail_after(240):
            ports = await nursery.start(app.run)
        return RunningServer(app, ports)

    yield start
    for app in started:
        app.shutdown()



@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Collect garbage after the test, so that a socket it leaked fails this test
    (ResourceWarning is an error) rather than whichever test runs next."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium shared by one module's browser tests
    (tests/test_browser_support.py: the system Chromium, Playwright's sync API)."""
    from test_browser_support import launched_browser

    with launched_browser() as b:
        yield b
