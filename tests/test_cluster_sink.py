"""EventSink against a real redis-server: batches, outages, exactly-once, overflow (issue 6)."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from redis_server import RedisServer, redis_server  # noqa: F401

from server.cluster import ClusterStore, EventSink


class Log:
    """Records structlog-style calls: ``log.warning("event", key=value)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.events.append((level, event, kw))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for _level, e, kw in self.events if e == event]


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[ClusterStore]:  # noqa: F811
    async with ClusterStore.open(redis_server.url, timeout=0.5) as s:
        yield s


def found(n: int, tick: int, base: int = 0) -> list[tuple]:
    """``n`` discoveries of a tick: (player_id, name, value, x, y); value encodes the order."""
    return [(base + i, f"p{base + i}", tick * 1000 + i, 10.5 + i, 20.25) for i in range(n)]


async def stream(store: ClusterStore) -> list[dict[str, str]]:
    entries = await store.client.xrange(store.keys.discoveries, "-", "+")
    return [dict(e.field_values) for e in entries]


async def evalsha_calls(store: ClusterStore) -> int:
    """Scripts run to completion (a first call per script fails with NOSCRIPT, then loads)."""
    stats = (await store.client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


def test_push_is_synchronous() -> None:
    assert not inspect.iscoroutinefunction(EventSink.push)


async def test_flush_writes_stream_leaderboard_names_and_cursor(store: ClusterStore) -> None:
    sink = EventSink(store, node_id="n1", log=Log())
    sink.push("forest", 7, [(1 << 32 | 3, "ann", 10, 12.3456, 7.0)], {1 << 32 | 3: ("ann", 10)},
              [])
    sink.push("a/b", 9, [(5, "bob", 25, 1.0, 2.0), (6, "cy", 5, 3.0, 4.0)],
              {5: ("bob", 25), 6: ("cy", 5)}, [])
    sink.push("forest", 8, [], {}, [])  # a tick with nothing: only the cursor moves
    before = await evalsha_calls(store)
    assert await sink.flush(5)
    assert await evalsha_calls(store) == before + 1  # one batch, one transaction
    assert await stream(store) == [
        {"hunt": "forest", "tick": "7", "player_id": str(1 << 32 | 3), "name": "ann",
         "value": "10", "x": "12.346", "y": "7.0", "user": "", "node": "n1"},
        {"hunt": "a/b", "tick": "9", "player_id": "5", "name": "bob", "value": "25",
         "x": "1.0", "y": "2.0", "user": "", "node": "n1"},
        {"hunt": "a/b", "tick": "9", "player_id": "6", "name": "cy", "value": "5",
         "x": "3.0", "y": "4.0", "user": "", "node": "n1"}]
    assert await store.leaderboard(10) == [
        {"hunt": "a/b", "player_id": 5, "name": "bob", "score": 25},
        {"hunt": "forest", "player_id": 1 << 32 | 3, "name": "ann", "score": 10},
        {"hunt": "a/b", "player_id": 6, "name": "cy", "score": 5}]
    assert await store.leaderboard(1) == [{"hunt": "a/b", "player_id": 5, "name": "bob",
                                           "score": 25}]
    assert await store.exported(["forest", "a/b", "lake"]) == {"forest": 8, "a/b": 9}
    recent = await store.recent_discoveries(2)
    assert [(d["hunt"], d["player_id"], d["value"], d["x"]) for d in recent] == [
        ("a/b", 6, 5, 3.0), ("a/b", 5, 25, 1.0)]  # newest first
    assert recent[0]["time_ms"] > 0 and recent[0]["id"].count("-") == 1
    # Leaves: off the leaderboard and the names; a later score wins over an earlier one.
    sink.push("a/b", 10, [], {6: ("cy", 7)}, [5])
    sink.push("a/b", 11, [], {6: ("cy", 9)}, [])
    assert await sink.flush(5)
    assert await store.leaderboard(10) == [
        {"hunt": "forest", "player_id": 1 << 32 | 3, "name": "ann", "score": 10},
        {"hunt": "a/b", "player_id": 6, "name": "cy", "score": 9}]
    assert await store.client.hget(store.keys.names, "a/b/5") is None
    assert await store.exported(["a/b"]) == {"a/b": 11}
    stats = sink.stats()
    assert stats["queued_discoveries"] == 0 and stats["pending_scores"] == 0
    assert stats["flushed_batches"] == 2 and stats["written_discoveries"] == 3
    assert stats["oldest_queued_age_s"] == 0.0 and not stats["outage"]


async def test_users_best_score_across_hunts_and_latest_name(store: ClusterStore) -> None:
    """Ticket mode: the users' board keeps each user's best score in any hunt, under the
    display name of their latest ticket, after their players leave; the stream names them."""
    sink = EventSink(store, node_id="n1", log=Log())
    sink.push("forest", 3, [(7, "Ada", 10, 1.0, 2.0, "u-ada")], {7: ("Ada", 10, "u-ada"),
                                                                  8: ("Bo", 4, "u-bo")}, [])
    sink.push("lake", 5, [(9, "Ada L", 5, 3.0, 4.0, "u-ada")], {9: ("Ada L", 5, "u-ada")}, [])
    assert await sink.flush(5)
    assert await store.user_leaderboard(10) == [
        {"user": "u-ada", "name": "Ada L", "score": 10},
        {"user": "u-bo", "name": "Bo", "score": 4}]
    assert [d["user"] for d in await store.recent_discoveries(5)] == ["u-ada", "u-ada"]
    # The lake player overtakes the forest best; the forest player leaves: the best stays.
    sink.push("lake", 6, [], {9: ("Ada L", 25, "u-ada")}, [])
    sink.push("forest", 7, [], {}, [7, 8])
    assert await sink.flush(5)
    assert await store.user_leaderboard(1) == [{"user": "u-ada", "name": "Ada L", "score": 25}]
    assert [r["user"] for r in await store.user_leaderboard(10)] == ["u-ada", "u-bo"]
    assert [r["hunt"] for r in await store.leaderboard(10)] == ["lake"]


async def test_batches_end_at_tick_boundaries_and_keep_the_cursor_exact(
        store: ClusterStore) -> None:
    sink = EventSink(store, node_id="n1", batch_discoveries=10, log=Log())
    for tick in range(1, 8):
        sink.push("forest", tick, found(4, tick), {}, [])  # 28 discoveries
        sink.push("lake", tick, found(1, tick), {}, [])
    batch = sink._take()
    assert batch is not None
    # 4+1+4+1 = 10: the batch is full after tick 2 of both hunts.
    assert [(g[0], g[1]) for g in batch.groups] == [
        ("forest", 1), ("lake", 1), ("forest", 2), ("lake", 2)]
    assert batch.exported == {"forest": 2, "lake": 2}  # what is still queued is not claimed
    sink._inflight = batch
    assert await sink.flush(5)
    entries = await stream(store)
    assert len(entries) == 35
    for hunt in ("forest", "lake"):
        values = [int(e["value"]) for e in entries if e["hunt"] == hunt]
        assert values == sorted(values)
    assert await store.exported(["forest", "lake"]) == {"forest": 7, "lake": 7}
    assert sink.flushed_batches == 4


async def test_a_batch_ends_with_its_tick(store: ClusterStore) -> None:
    sink = EventSink(store, node_id="n1", batch_discoveries=3, log=Log())
    sink.push("forest", 1, found(2, 1), {}, [])
    sink.push("forest", 1, found(2, 1, base=2), {}, [])  # a second push of the same tick
    sink.push("forest", 2, found(2, 2), {}, [])
    batch = sink._take()
    assert batch is not None and batch.discoveries == 4 and batch.exported == {"forest": 1}


async def test_run_writes_while_the_tick_pushes(store: ClusterStore) -> None:
    sink = EventSink(store, node_id="n1", log=Log())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        for tick in range(1, 21):
            sink.push("forest", tick, found(3, tick), {1: ("ann", tick)}, [])
            await trio.sleep(0.01)
        with trio.fail_after(5):
            while (await store.exported(["forest"])).get("forest") != 20:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert len(await stream(store)) == 60
    # The drain waits `interval` (50 ms) between writes: 20 pushes in ~0.2 s, few batches.
    assert sink.flushed_batches <= 8


async def test_redis_stopped_during_play_loses_nothing_and_duplicates_nothing(
        store: ClusterStore, redis_server: RedisServer) -> None:  # noqa: F811
    log = Log()
    sink = EventSink(store, node_id="n1", log=log)
    pushed: dict[str, list[int]] = {"forest": [], "lake": []}
    tick = 0

    async def play(seconds: float) -> None:
        nonlocal tick
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            tick += 1
            for hunt, n in (("forest", 2), ("lake", 1)):
                batch = found(n, tick)
                pushed[hunt] += [d[2] for d in batch]
                started = time.perf_counter()
                sink.push(hunt, tick, batch, {d[0]: (d[1], d[2]) for d in batch}, [])
                assert time.perf_counter() - started < 0.005  # never waits on Redis
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        await play(0.5)
        await trio.to_thread.run_sync(redis_server.stop)
        await play(1.0)
        assert sink.stats()["outage"] and sink.stats()["queued_discoveries"] > 0
        await trio.to_thread.run_sync(redis_server.start)
        await play(0.5)
        assert await sink.flush(10)
        nursery.cancel_scope.cancel()
    entries = await stream(store)
    for hunt, values in pushed.items():
        assert [int(e["value"]) for e in entries if e["hunt"] == hunt] == values
    assert await store.exported(["forest", "lake"]) == {"forest": tick, "lake": tick}
    assert len(log.named("redis_unavailable")) == 1
    (back,) = log.named("redis_back")
    assert 0.5 < back["outage_s"] < 5
    stats = sink.stats()
    assert stats["failures"] >= 1 and not stats["outage"] and stats["dropped"] == 0


async def test_a_reply_lost_to_a_paused_redis_is_not_written_twice(
        store: ClusterStore, redis_server: RedisServer) -> None:  # noqa: F811
    sink = EventSink(store, node_id="n1", log=Log())
    sink.push("lake", 1, found(1, 1), {}, [])
    assert await sink.flush(5)  # Redis knows the script now (no NOSCRIPT round below)
    sink.push("forest", 1, found(5, 1), {}, [])
    redis_server.pause()
    try:
        # The batch reaches Redis's socket, the reply does not come back within 0.5 s.
        assert not await sink.flush(0.8)
        assert sink.failures >= 1
    finally:
        redis_server.resume()
    assert await sink.flush(5)  # the same batch again: Redis has (or now gets) it once
    await trio.sleep(0.2)
    assert [int(e["value"]) for e in await stream(store) if e["hunt"] == "forest"] == [
        1000, 1001, 1002, 1003, 1004]
    # Redis ran the first attempt when it woke up; the retry found the mark and skipped.
    assert sink.rewrites_skipped == 1


async def test_overflow_drops_the_oldest_and_counts_them(store: ClusterStore) -> None:
    log = Log()
    sink = EventSink(store, node_id="n1", max_discoveries=100, log=log)
    for tick in range(1, 26):
        sink.push("forest", tick, found(10, tick), {}, [])  # 250 discoveries, no drain
    stats = sink.stats()
    assert stats["dropped"] == 150 and stats["queued_discoveries"] == 100
    assert len(log.named("events_dropped")) == 1  # once per overflow episode
    assert await sink.flush(5)
    values = [int(e["value"]) for e in await stream(store)]
    assert values == [tick * 1000 + i for tick in range(16, 26) for i in range(10)]
    assert log.named("events_dropped_total") == [{"dropped": 150,
                                                  "hint": "the queue is empty again"}]
    # A partial group: 105 queued with room for 100 keeps the newest 100.
    sink.push("forest", 30, found(60, 30), {}, [])
    sink.push("forest", 31, found(45, 31), {}, [])
    assert sink.stats()["dropped"] == 155
    assert len(log.named("events_dropped")) == 2  # a new episode


async def test_push_never_raises_and_never_blocks(store: ClusterStore,
                                                  redis_server: RedisServer) -> None:  # noqa: F811
    log = Log()
    sink = EventSink(store, node_id="n1", log=log)
    sink.push("forest", 1, found(1, 1), {1: ("a", 1)}, None)  # type: ignore[arg-type]
    assert sink.push_errors == 1 and log.named("event_push_failed")
    sink.push("forest", 1, [(1, "a", "not a number", 0, 0), (2, "b", 5, 1.0, 2.0)],
              {3: "no tuple"}, [])  # type: ignore[dict-item]
    assert await sink.flush(5)  # malformed entries are dropped and counted, not fatal
    # (the first push kept what it had taken before the bad argument: player 0)
    assert [e["player_id"] for e in await stream(store)] == ["0", "2"]
    assert sink.push_errors == 3 and log.named("event_input_malformed") == [
        {"count": 2, "hint": log.named("event_input_malformed")[0]["hint"]}]
    redis_server.pause()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.run)
            started = time.perf_counter()
            for tick in range(2, 2002):
                sink.push("forest", tick, found(2, tick), {tick: ("p", tick)}, [])
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    finally:
        redis_server.resume()
    assert elapsed < 0.5, f"2,000 pushes took {elapsed * 1e3:.0f} ms"
    assert sink.stats()["pending_scores"] == 2000
