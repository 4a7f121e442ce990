"""The hub's tick thread (server/hunt/_worker.py): one persistent thread per hub."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import trio

from server.hunt._worker import TickThread


async def test_it_runs_each_call_in_its_own_thread_and_gives_back_value_or_exception() -> None:
    t = TickThread("tick-test")
    try:
        name = lambda a, b: (a + b, threading.current_thread().name)  # noqa: E731
        assert await t.run(name, 1, 2) == (3, "tick-test")
        with pytest.raises(ZeroDivisionError):
            await t.run(lambda: 1 / 0)
        assert await t.run(name, 2, 3) == (5, "tick-test"), "an exception does not end it"
    finally:
        t.close()


async def test_a_cancelled_caller_waits_for_the_call_to_end() -> None:
    """A tick cannot be abandoned half done: like trio.to_thread.run_sync without
    abandon_on_cancel."""
    t = TickThread("tick-test")
    done = threading.Event()

    def slow() -> int:
        time.sleep(0.2)
        done.set()
        return 7

    try:
        with trio.move_on_after(0.01):
            assert await t.run(slow) == 7
        assert done.is_set()
    finally:
        t.close()


async def test_close_ends_the_thread() -> None:
    t = TickThread("tick-test-close")
    await t.run(lambda: None)
    t.close()
    t.close()
    with trio.fail_after(5):
        while any(th.name == "tick-test-close" for th in threading.enumerate()):
            await trio.sleep(0.01)


async def test_the_server_sets_the_switch_interval_while_it_runs_and_restores_it() -> None:
    from server._config import parse_serve_config
    from server.shell._app import HuntServer

    before = sys.getswitchinterval()
    app = HuntServer(parse_serve_config({
        "server": {"host": "127.0.0.1", "port": 0, "http_port": -1, "switch_interval": 0.0007},
        "hunt": [{"name": "demo"}]}))
    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            assert sys.getswitchinterval() == pytest.approx(0.0007)
            app.shutdown()
    assert sys.getswitchinterval() == before
