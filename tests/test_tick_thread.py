"""The hub's tick thread (server/hunt/_worker.py): one persistent thread per hub; and the
clock of how long a thread waited for a CPU."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time

import pytest
import trio

from server.hunt._worker import RunQueueClock, TickThread, TickWaits, own_clock


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


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"),
                    reason="the kernel has no schedstat")
def test_the_run_queue_clock_counts_the_time_a_busy_thread_had_no_cpu() -> None:
    """This thread and a spinning process pinned to one core: this thread is runnable
    about half of its 0.4 s without the core; alone on it, about none of 0.2 s."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        clock = RunQueueClock()
        assert own_clock() is own_clock()
        a = clock()
        _spin(0.2)
        alone = clock() - a
        hog = mp.get_context("spawn").Process(target=_spin, args=(30.0,), daemon=True)
        hog.start()
        try:
            os.sched_setaffinity(hog.pid, {cpu})
            time.sleep(0.2)  # the child is up and spinning
            b = clock()
            _spin(0.4)
            shared = clock() - b
        finally:
            hog.kill()
            hog.join(10)
        clock.close()
        assert clock() == 0.0, "a closed clock reads 0"
    finally:
        os.sched_setaffinity(0, before)
    assert shared > 0.05 and shared > alone, (shared, alone)


async def test_tick_waits_are_shares_of_the_phases_they_are_given() -> None:
    """The steps of a tick through a real tick thread: both figures are >= 0 and at most
    what they are shares of."""
    waits, t = TickWaits(), TickThread("tick-test")

    def work() -> None:
        waits.work_begins()
        _spin(0.002)
        waits.work_computed()
        waits.work_ends()

    try:
        for _ in range(5):
            waits.start()
            waits.call()
            await t.run(work)
            waits.back()
            handoff_cpu, cpu_wait = waits.end(0.001, 0.01)
            assert 0 <= handoff_cpu <= 0.001 and 0 <= cpu_wait <= 0.01
        assert waits.end(0.0, 0.0) == (0.0, 0.0)
    finally:
        t.close()
        waits.close()


@pytest.mark.parametrize("early_min", [1, 256])
async def test_a_hub_of_many_clients_reads_their_moves_ahead_of_its_tick(
        serve, monkeypatch: pytest.MonkeyPatch, early_min: int) -> None:
    """From EARLY_READ_MIN observers the hub reads its sockets once more EARLY_READ seconds
    before each deadline (below it, not: a wake-up more per tick); either way every move a
    client sends is applied and acknowledged, in order."""
    from server.client import connect
    from server.hunt import _hub

    monkeypatch.setattr(_hub, "EARLY_READ_MIN", early_min)
    srv = await serve()
    hub = srv.app.placement.hub_named("demo")
    reads = 0
    read_ahead = hub.sessions.read_ahead

    def counted() -> None:
        nonlocal reads
        reads += 1
        read_ahead()

    hub.sessions.read_ahead = counted
    with trio.fail_after(30):
        async with connect(srv.url, "ahead", "demo") as c:
            sent = 0
            async for _ in c.ticks():
                if c.ack >= 20:
                    break
                if c.ack == sent:
                    sent = await c.move(1.0, 0.0)
    assert c.ack >= 20
    assert (reads > 10) if early_min == 1 else reads == 0
