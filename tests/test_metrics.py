"""Issue 15 section 1: process, runtime and build-info metrics, per-hunt figures and the
move-latency histogram, read from a live server's registry while real clients play."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from server._hunt_metrics import BulkHistogram, MoveClock
from server.client import connect

pytestmark = pytest.mark.usefixtures("collect_garbage")


def test_bulk_histogram_buckets_like_prometheus() -> None:
    """``le`` buckets: a value equal to a bound counts in that bound's bucket."""
    h = BulkHistogram((0.01, 0.1))
    h.observe(0.01)
    h.observe_many(np.array([0.005, 0.05, 5.0]), np.array([2.0, 1.0, 3.0]))
    assert h.buckets() == [("0.01", 3.0), ("0.1", 4.0), ("+Inf", 7.0)]
    assert h.sum == pytest.approx(0.01 + 0.01 + 0.05 + 15.0)


def test_move_clock_weighs_each_run_of_moves_by_its_length() -> None:
    clock, hist = MoveClock(), BulkHistogram((0.01, 0.02, 0.05))
    clock.mark(2, 2, 1.000)   # moves 0-1 read at t = 1.000
    clock.mark(3, 1, 1.000)   # move 2, same instant: same run
    clock.mark(5, 2, 1.015)   # moves 3-4
    clock.observe(hist, 5, 1.030)
    assert hist.buckets() == [("0.01", 0.0), ("0.02", 2.0), ("0.05", 5.0), ("+Inf", 5.0)]
    clock.observe(hist, 0, 2.0)  # an empty batch adds nothing
    assert hist.buckets()[-1] == ("+Inf", 5.0)


async def test_live_server_reports_process_runtime_and_each_hunt(serve) -> None:
    srv = await serve({"name": "north"}, {"name": "south"})
    m = srv.metric
    with trio.fail_after(20):
        async with (connect(srv.url, "a", "north") as a, connect(srv.url, "b", "north") as b,
                    connect(srv.url, "c", "south") as c):
            for k in range(8):
                for cl in (a, b, c):
                    await cl.move(1.0, 0.5 * k)
                for cl in (a, b, c):
                    await cl.next_tick()
            for cl in (a, b, c):  # the tick after the last one read is accounted
                await cl.next_tick()
            await a.next_tick()
            assert m("hunt_hunt_players", hunt="north") == 2
            assert m("hunt_hunt_clients", hunt="north") == 2
            assert m("hunt_hunt_clients", hunt="south") == 1
            ticks = m("hunt_hunt_ticks_total", hunt="south")
            assert ticks >= 8 and m("hunt_ticks_total") >= ticks
            assert m("hunt_hunt_tick_seconds_count", hunt="north") == m(
                "hunt_hunt_ticks_total", hunt="north")
            assert m("hunt_hunt_tick_seconds_sum", hunt="north") > 0
            for name in ("hunt_hunt_evictions_total", "hunt_hunt_truncations_total",
                         "hunt_hunt_moves_dropped_total", "hunt_hunt_tick_overruns_total"):
                assert srv.app.metrics.registry.get_sample_value(name, {"hunt": "south"}) == 0
            # Every move received was applied by a tick and timed from its read: no sooner
            # than the tick's own duration, no later than a period plus a slow tick.
            received = m("hunt_moves_total", fate="received")
            assert received >= 24
            count = m("hunt_move_latency_seconds_count")
            assert count >= received
            mean = m("hunt_move_latency_seconds_sum") / count
            assert 0 < mean < 0.5
    assert m("process_resident_memory_bytes") > 10e6
    assert m("process_open_fds") > 0
    assert m("python_gc_collections_total", generation="0") > 0
    assert m("hunt_numba_nrt_allocations_total") >= 0
    info = next(s for s in srv.app.metrics.registry.collect() if s.name == "hunt_build_info")
    labels = info.samples[0].labels
    assert labels["python"] and labels["numpy"] == np.__version__ and labels["numba"]
    assert labels["version"]


async def test_stopped_hub_drops_its_hunts_series(serve) -> None:
    srv = await serve({"name": "only"})
    with trio.fail_after(20):
        while srv.metric("hunt_hunt_ticks_total", hunt="only") < 2:
            await trio.sleep(0.02)
        srv.app.shutdown()
        await srv.hub.ticker_done.wait()
    assert srv.app.metrics.registry.get_sample_value("hunt_hunt_ticks_total",
                                                     {"hunt": "only"}) is None
