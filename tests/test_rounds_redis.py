"""The round results stream against a real redis-server: one entry per round key, and the
publisher's at-least-once delivery from the data dir across restarts and Redis outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_server import RedisServer, redis_server  # noqa: F401
from test_cluster_sink import Log

from server.cluster import ClusterStore
from server.hunt._rounds import RESULTS_DIR, result_path, write_json_durably
from server.hunt._rounds_publish import ResultsPublisher


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[ClusterStore]:  # noqa: F811
    async with ClusterStore.open(redis_server.url, timeout=0.5) as s:
        yield s


def record(hunt: str, number: int) -> dict[str, Any]:
    return {"hunt": hunt, "round": number, "ended_tick": 100 * number, "players": 2,
            "key": f"{hunt}#{number}",
            "standings": [{"rank": 1, "player_id": 7, "user": "u7", "name": "ada",
                           "score": 30, "found": 3, "last_tick": 90 * number},
                          {"rank": 2, "player_id": 8, "user": None, "name": "bob",
                           "score": 10, "found": 1, "last_tick": 50}]}


async def keys_in_stream(store: ClusterStore) -> list[str]:
    entries = await store.client.xrange(store.keys.results, "-", "+")
    return [dict(e.field_values)["key"] for e in entries]


async def test_a_round_key_is_added_once(store: ClusterStore) -> None:
    first = await store.publish_result(record("cup", 1))
    assert first is not None
    assert await store.publish_result(record("cup", 1)) is None, "a retry adds nothing"
    assert await store.publish_result(record("cup", 2)) is not None
    assert await keys_in_stream(store) == ["cup#1", "cup#2"]
    got = await store.read_results()
    assert [r["key"] for r in got] == ["cup#1", "cup#2"]
    assert got[0]["standings"][0] == record("cup", 1)["standings"][0]
    assert [r["key"] for r in await store.read_results(after=got[0]["id"])] == ["cup#2"]


async def wait_published(pub: ResultsPublisher, count: int) -> None:
    with trio.fail_after(10):
        while pub.published < count:
            await trio.sleep(0.02)


async def test_publisher_delivers_every_file_once_across_restarts_and_outages(
        store: ClusterStore, redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    results = tmp_path / "hunts" / "cup" / RESULTS_DIR
    for n in (1, 2):
        write_json_durably(result_path(results, n), record("cup", n))
    log = Log()
    async with trio.open_nursery() as nursery:
        pub = ResultsPublisher(store, str(tmp_path), log)
        assert pub.scan() == 2
        nursery.start_soon(pub.run)
        await wait_published(pub, 2)
        assert result_path(results, 1).with_suffix(".published").exists()
        # Redis goes away: a new round waits, then goes out once Redis is back.
        redis_server.stop()
        write_json_durably(result_path(results, 3), record("cup", 3))
        pub.push(record("cup", 3), results)
        await trio.sleep(0.5)
        assert pub.published == 2 and log.named("results_unpublished")
        redis_server.start()
        await wait_published(pub, 3)
        assert log.named("results_published_again")
        nursery.cancel_scope.cancel()
    # A node that starts later finds nothing unmarked; a file whose marker was lost (a crash
    # between the write and the marker) is published again and Redis adds nothing.
    again = ResultsPublisher(store, str(tmp_path), Log())
    assert again.scan() == 0
    result_path(results, 2).with_suffix(".published").unlink()
    assert again.scan() == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(again.run)
        await wait_published(again, 1)
        nursery.cancel_scope.cancel()
    assert await keys_in_stream(store) == ["cup#1", "cup#2", "cup#3"]
