"""ClusterStore against a real redis-server: nodes, catalogue, leases, outages (issue 6)."""

from __future__ import annotations

import gc
import time

import pytest
import trio
from redis_server import RedisServer, free_port, redis_server  # noqa: F401

import server.cluster as cluster
from server.cluster import (
    ClusterStore,
    ClusterUnavailable,
    DefineResult,
    Lease,
    NodeInfo,
    least_loaded,
)

PUBLIC = {"ClusterStore", "ClusterUnavailable", "DEFAULT_TIMEOUT", "DefineResult", "EventSink",
          "Keys", "Lease", "NodeInfo", "least_loaded", "member", "parse_discovery",
          "split_member"}


def node(node_id: str, players: int = 0, hunts: int = 0) -> NodeInfo:
    return NodeInfo(node_id=node_id, public_url=f"ws://127.0.0.1:1/{node_id}",
                    http_url=f"http://127.0.0.1:2/{node_id}", players=players, hunts=hunts,
                    started_ms=1234)


def test_public_names_live_in_private_modules() -> None:
    assert {n for n in vars(cluster) if not n.startswith("_")} == PUBLIC
    for name in PUBLIC:
        module = getattr(getattr(cluster, name), "__module__", "server.cluster._x")
        assert module.split(".")[2].startswith("_"), (name, module)


def test_least_loaded_is_deterministic() -> None:
    nodes = [node("c", 10, 1), node("b", 5, 3), node("a", 5, 3), node("d", 5, 2)]
    assert least_loaded(nodes).node_id == "d"  # fewest players, then fewest hunts
    assert least_loaded(nodes[:3]).node_id == "a"  # then the lowest id
    assert least_loaded(reversed(nodes[:3])).node_id == "a"
    with pytest.raises(ValueError, match="at least one live node"):
        least_loaded([])


def test_lease_value_round_trips_with_spaces_in_node_id() -> None:
    lease = Lease("a hunt/with:odd name", "node 7", 42)
    assert Lease.parse(lease.hunt, lease.value) == lease


async def test_unreachable_redis_says_what_to_do() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match=r"cannot reach Redis at .*start redis-server "
                                                 r"or fix --redis"):
        async with ClusterStore.open(url):
            pass
    assert time.monotonic() - started < 2
    gc.collect()  # a failed connection attempt leaves nothing to warn about (see _closing)


async def test_bad_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        async with ClusterStore.open("http://127.0.0.1:1/"):
            pass


async def test_time_is_redis_time_in_ms(redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url) as store:
        now = await store.time_ms()
        assert abs(now - time.time() * 1000) < 1000


async def test_heartbeat_live_nodes_and_expiry(redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url, prefix="t1") as store:
        a, b = node("a", 3, 1), node("b", 7, 2)
        await store.heartbeat(a, 300)
        await store.heartbeat(b, 300)
        assert await store.live_nodes() == [a, b]
        # b stops heartbeating; a goes on with a new load.
        a2 = node("a", 4, 2)
        for _ in range(4):
            await trio.sleep(0.1)
            await store.heartbeat(a2, 300)
        assert await store.live_nodes() == [a2]
        assert await store.client.smembers("t1:nodes") == {"a"}  # b's id dropped too
        await store.remove_node("a")
        assert await store.live_nodes() == []
        assert await store.client.exists(["t1:node:a"]) == 0


async def test_catalogue_with_a_limit(redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url) as store:
        assert await store.hunts() == {}
        assert await store.hunt("forest") is None
        params = {"name": "forest", "width": 2000.0, "treasures": 300}
        created = await store.define_hunt("forest", params)
        assert created is DefineResult.CREATED and created
        again = await store.define_hunt("forest", {"name": "forest", "width": 1.0})
        assert again is DefineResult.EXISTS and not again
        assert await store.hunt("forest") == params  # unchanged
        assert await store.define_hunt("lake", {"name": "lake"}, limit=2) is DefineResult.CREATED
        full = await store.define_hunt("hill", {"name": "hill"}, limit=2)
        assert full is DefineResult.FULL and not full
        # An existing name is EXISTS even when the catalogue is full.
        assert await store.define_hunt("lake", {}, limit=2) is DefineResult.EXISTS
        assert await store.hunts() == {"forest": params, "lake": {"name": "lake"}}


async def test_acquire_renew_release(redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url) as store:
        lease = await store.acquire("forest", "a", 5000)
        assert lease == Lease("forest", "a", 1)
        assert await store.acquire("forest", "b", 5000) is None  # held
        assert await store.renew([lease], 5000) == [True]
        assert await store.owners(["forest", "lake"]) == {"forest": lease, "lake": None}
        assert await store.release(lease)
        assert not await store.release(lease)  # already gone
        again = await store.acquire("forest", "b", 5000)
        assert again == Lease("forest", "b", 2)  # tokens only grow
        assert await store.renew([], 100) == []
        assert await store.owners([]) == {}
        with pytest.raises(ValueError, match="positive integer"):
            await store.acquire("forest", "a", 0)


async def test_renew_fails_after_expiry_and_after_a_takeover(
        redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url) as store:
        mine = await store.acquire("h1", "a", 200)
        other = await store.acquire("h2", "a", 5000)
        assert mine is not None and other is not None
        await trio.sleep(0.3)
        assert await store.renew([mine, other], 5000) == [False, True]  # h1 expired
        taken = await store.acquire("h1", "b", 5000)
        assert taken is not None and taken.token == mine.token + 1
        assert await store.renew([mine, taken], 5000) == [False, True]
        assert not await store.release(mine)  # never deletes b's lease
        assert (await store.owners(["h1"]))["h1"] == taken


async def test_two_stores_racing_for_leases_exactly_one_wins(
        redis_server: RedisServer) -> None:  # noqa: F811
    hunts = [f"hunt/{i}" for i in range(30)]
    wins: dict[str, list[Lease]] = {h: [] for h in hunts}

    async def contender(node_id: str) -> None:
        async with ClusterStore.open(redis_server.url) as store:
            for h in hunts:
                lease = await store.acquire(h, node_id, 10_000)
                if lease is not None:
                    wins[h].append(lease)
                await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for n in ("a", "b", "c"):
            nursery.start_soon(contender, n)
    assert all(len(w) == 1 for w in wins.values()), wins
    assert all(w[0].token == 1 for w in wins.values())


async def test_restart_keeps_leases_and_fence_counters(
        redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url) as store:
        for _ in range(3):
            lease = await store.acquire("forest", "a", 60_000)
            assert lease is not None
            assert await store.release(lease)
        held = await store.acquire("forest", "a", 60_000)
        assert held == Lease("forest", "a", 4)
        await store.define_hunt("forest", {"name": "forest"})
        redis_server.restart()
        # The same store, no reopening: the next call reconnects.
        assert await store.owners(["forest"]) == {"forest": held}
        assert await store.renew([held], 60_000) == [True]
        assert await store.hunt("forest") == {"name": "forest"}
        assert await store.release(held)
        assert await store.acquire("forest", "b", 60_000) == Lease("forest", "b", 5)
        redis_server.kill()  # a crash: appendfsync always kept every acknowledged write
        redis_server.start()
        assert await store.acquire("lake", "b", 60_000) == Lease("lake", "b", 1)
        assert (await store.owners(["forest"]))["forest"] == Lease("forest", "b", 5)


async def test_calls_while_redis_is_down_raise_then_work_again(
        redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url, timeout=0.5) as store:
        await store.heartbeat(node("a"), 5000)
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(ClusterUnavailable, match="is redis-server running"):
            await store.live_nodes()
        with pytest.raises(ClusterUnavailable):
            await store.acquire("forest", "a", 1000)
        assert time.monotonic() - started < 1.5
        redis_server.start()
        assert [n.node_id for n in await store.live_nodes()] == ["a"]
        gc.collect()


async def test_a_paused_redis_raises_within_the_timeout(
        redis_server: RedisServer) -> None:  # noqa: F811
    async with ClusterStore.open(redis_server.url, timeout=0.5) as store:
        lease = await store.acquire("forest", "a", 60_000)
        assert lease is not None
        redis_server.pause()
        try:
            for call in (lambda: store.renew([lease], 60_000), store.live_nodes,
                         store.time_ms):
                started = time.monotonic()
                with pytest.raises(ClusterUnavailable, match=r"did not answer .* within 0.5 s"):
                    await call()
                assert time.monotonic() - started < 1.0
        finally:
            redis_server.resume()
        assert await store.renew([lease], 60_000) == [True]
        assert (await store.owners(["forest"]))["forest"] == lease
