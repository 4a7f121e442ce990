"""Tick groups (server/hunt/_groups.py): hunts tick in groups at their own phases of the
period, balanced by players, with one worker hand-off per group; what a hunt computes does
not depend on its group (its journal replays to the hashes the live server recorded)."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from server._config import ServerConfig
from server.client import connect
from server.durability import recover
from server.hunt._groups import (
    INLINE_PLAYERS,
    BatchedOffload,
    Staged,
    TickGroups,
    auto_groups,
    balance,
    imbalanced,
)
from server.hunt._placement import hunt_journals
from tickengine import ConfigError

pytestmark = pytest.mark.usefixtures("collect_garbage")


# ---------------------------------------------------------------------- balance


def test_balance_puts_a_big_hunt_alone_and_spreads_the_small_ones() -> None:
    loads = {"big": 60, **{f"s{k}": 5 for k in range(6)}}
    groups = balance(loads, 3)
    assert [n for n, g in groups.items() if g == groups["big"]] == ["big"]
    per_group = [sum(loads[n] for n, g in groups.items() if g == k) for k in range(3)]
    assert sorted(per_group) == [15, 15, 60]
    # Equal hunts: as many in each group (give or take one), every group used.
    equal = balance({f"h{k:02d}": 20 for k in range(50)}, 4)
    counts = sorted(list(equal.values()).count(g) for g in range(4))
    assert counts == [12, 12, 13, 13]
    # Empty hunts (a server just started) are spread by count too.
    empty = balance({f"h{k}": 0 for k in range(8)}, 4)
    assert sorted(list(empty.values()).count(g) for g in range(4)) == [2, 2, 2, 2]


def test_rebalancing_keeps_group_numbers_so_that_few_hunts_move() -> None:
    loads = {"a": 10, "b": 10, "c": 10, "d": 10}
    current = {"a": 3, "b": 2, "c": 1, "d": 0}
    assert balance(loads, 4, current) == current
    # "a" grew: it gets a group of its own, the others stay where they were if they can.
    loads = {"a": 40, "b": 20, "c": 10, "d": 10}
    current = {"a": 0, "b": 0, "c": 1, "d": 1}
    assert imbalanced(loads, current, 2)
    new = balance(loads, 2, current)
    assert new["a"] == 0 and new["b"] == new["c"] == new["d"] == 1
    assert not imbalanced(loads, new, 2)
    # Within the tolerance nothing moves.
    assert not imbalanced({"a": 12, "b": 10}, {"a": 0, "b": 1}, 2)


def test_automatic_group_count() -> None:
    # A group per PLAYERS_PER_GROUP players (100), within one per hunt and phases 2.5 ms
    # apart.
    assert auto_groups(0, 0.05, 0) == 1 and auto_groups(50, 0.05, 0) == 1  # idle: one
    assert auto_groups(50, 0.05, 400) == 4 and auto_groups(20, 0.05, 800) == 8
    assert auto_groups(3, 0.05, 1000) == 3 and auto_groups(50, 0.05, 1000) == 10
    assert auto_groups(50, 0.05, 5000) == 20  # 20 Hz: phases 2.5 ms apart
    assert auto_groups(50, 0.01, 100_000) == 4  # 100 Hz: phases 2.5 ms apart
    # It grows at once, and shrinks only with room to spare (no flapping at a boundary).
    assert auto_groups(50, 0.05, 304, current=3) == 4
    assert auto_groups(50, 0.05, 296, current=4) == 4  # 3 groups would hold 300
    assert auto_groups(50, 0.05, 236, current=4) == 3
    # Without a journal (small groups tick on the Trio thread): a group per 20 players,
    # phases down to 1 ms apart, so 50 hunts of 20 tick each at its own phase.
    assert auto_groups(50, 0.05, 1000, journal=False) == 50
    assert auto_groups(20, 0.05, 400, journal=False) == 20
    assert auto_groups(50, 0.05, 0, journal=False) == 1  # idle: still one
    assert auto_groups(100, 0.05, 100_000, journal=False) == 50  # 20 Hz: 1 ms apart
    assert auto_groups(50, 0.05, 118, current=6, journal=False) == 6  # 5 would hold 100


async def test_automatic_count_follows_the_players_at_a_rebalance() -> None:
    groups = TickGroups(0)
    players = {f"h{k}": 0 for k in range(50)}
    for name in players:
        groups.schedule(name, lambda name=name: players[name], 0.05)
    assert groups.count == 1  # idle hunts tick in one group
    for name in players:
        players[name] = 8  # 400 players join
    assert groups.rebalance() and groups.count == 4
    assert sorted(groups.together(n) for n in players)[::13] == [12, 12, 13, 13]
    assert sorted({groups.phase(n) for n in players}) == [0.0, 0.25, 0.5, 0.75]
    assert not groups.rebalance()  # balanced, and the count holds
    for name in list(players)[:13]:
        players[name] = 0  # 296 left: 3 groups would hold them, but with no room to spare
    groups.rebalance()
    assert groups.count == 4
    for name in list(players)[:21]:
        players[name] = 0  # 232 left
    assert groups.rebalance() and groups.count == 3
    assert sorted({groups.phase(n) for n in players}) == [0.0, 1 / 3, 2 / 3]
    for name in list(players)[:48]:
        groups.remove(name)
    assert groups.count == 2  # no more groups than hunts


def test_tick_groups_setting_is_checked() -> None:
    assert ServerConfig().tick_groups == 0
    assert ServerConfig(tick_groups=4).tick_groups == 4
    with pytest.raises(ConfigError, match="tick_groups"):
        ServerConfig(tick_groups=-1)


# ---------------------------------------------------------------------- schedule


def test_each_group_ticks_at_its_phase_and_a_moved_hunt_keeps_its_rate() -> None:
    period = 0.05
    groups = TickGroups(4, epoch=100.0)
    players = {f"h{k}": 10 for k in range(4)}
    schedules = {n: groups.schedule(n, lambda n=n: players[n], period) for n in players}
    phases = sorted(groups.phase(n) for n in players)
    assert phases == [0.0, 0.25, 0.5, 0.75]
    for name, next_deadline in schedules.items():
        t = 100.0
        for _ in range(5):
            t2 = next_deadline(t)
            assert t2 - t == pytest.approx(period) or t == 100.0
            t = t2
        offset = ((t - 100.0) / period) % 1.0
        assert min(abs(offset - groups.phase(name)), 1 - abs(offset - groups.phase(name))) \
            < 1e-6
    # A hunt that changes group ticks once between half a period and 1.5 periods later,
    # then every period at its new phase.
    players["h0"] = 100
    groups.members["h1"].group = groups.members["h0"].group  # h1 shares h0's group
    last = {n: schedules[n](100.0) for n in players}
    before = {n: groups.phase(n) for n in players}
    assert groups.rebalance(force=True)
    moved = [n for n in players if groups.phase(n) != before[n]]
    assert moved == ["h1"]
    t2 = schedules["h1"](last["h1"])
    assert 0.5 * period - 1e-9 <= t2 - last["h1"] <= 1.5 * period + 1e-9
    assert schedules["h1"](t2) - t2 == pytest.approx(period)
    assert sorted(groups.phase(n) for n in players) == [0.0, 0.25, 0.5, 0.75]


async def _at_once(calls: dict[Any, Callable[[], Awaitable[Any]]]) -> dict[Any, object]:
    """Run ``calls`` at one instant (the ticks of one group); each key's result, or the
    ValueError, OSError or RuntimeError its call raised."""
    out: dict[Any, object] = {}

    async def one(key: Any, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            out[key] = await call()
        except (ValueError, OSError, RuntimeError) as exc:
            out[key] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for key, call in calls.items():
                nursery.start_soon(one, key, call)
    return out


async def test_ticks_due_at_one_instant_share_one_handoff() -> None:
    offload = BatchedOffload()
    threads: list[int] = []

    def work(k: int) -> int:
        import threading
        threads.append(threading.get_ident())
        if k == 2:
            raise ValueError("hunt 2 failed")
        return k * 10

    results = await _at_once({k: functools.partial(offload, work, k) for k in range(4)})
    assert offload.handoffs == 1 and offload.calls == 4
    assert len(set(threads)) == 1 and threads[0] != __import__("threading").get_ident()
    assert results[0] == 0 and results[1] == 10 and results[3] == 30
    assert isinstance(results[2], ValueError)  # the failure goes to its caller only
    # Calls at different instants get hand-offs of their own; a hunt alone in its group
    # goes to the thread without waiting for others.
    assert await offload(work, 5) == 50 and offload.handoffs == 2
    alone = offload.for_hunt(lambda: 1)
    assert await alone(work, 6) == 60 and offload.handoffs == 3
    groups = TickGroups(2)
    for name in ("a", "b", "c"):
        groups.schedule(name, lambda: 0, 0.05)
    assert sorted(groups.together(n) for n in "abc") == [1, 2, 2]


async def test_handoffs_reuse_persistent_threads_and_a_slow_group_holds_only_its_own() -> None:
    import threading

    offload = BatchedOffload()
    seen: list[int] = []
    release = threading.Event()

    def work(k: int) -> int:
        seen.append(threading.get_ident())
        if k == 0:
            release.wait(5)  # a group stalled on its disk
        return k

    with trio.fail_after(10):
        assert await offload(work, 1) == 1 and await offload(work, 2) == 2
        assert seen[0] == seen[1]  # one thread, kept between hand-offs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(offload, work, 0)
            await trio.sleep(0.05)
            # The next group's tick runs while the first is stuck, in another thread.
            assert await offload(work, 3) == 3
            assert seen[-1] != seen[-2] and offload.alongside == 1
            release.set()
    before = {t.ident for t in threading.enumerate()}
    assert set(seen) <= before
    offload.close()
    with trio.fail_after(5):
        while set(seen) & {t.ident for t in threading.enumerate()}:
            await trio.sleep(0.01)
    assert await offload(work, 4) == 4  # still usable: a thread of its own, ended after


async def test_a_group_due_during_another_groups_trip_waits_for_it_in_the_same_thread(
        ) -> None:
    import threading
    import time

    offload = BatchedOffload()
    seen: list[tuple[int, int]] = []

    def work(k: int) -> int:
        seen.append((k, threading.get_ident()))
        time.sleep(0.02)  # a busy tick, well short of a stall
        return k

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(offload, work, 0)
            await trio.sleep(0.005)  # the first trip is in flight
            nursery.start_soon(offload, work, 1)  # the next group, due now ...
            nursery.start_soon(offload, work, 2)  # ... and the one after, due meanwhile
    # One thread, one trip after the other; the calls that came due during the first
    # trip shared the second (in either order: Trio does not promise which task starts
    # first): no trip alongside a busy (not stalled) one.
    assert seen[0][0] == 0 and sorted(k for k, _ in seen) == [0, 1, 2]
    assert len({t for _, t in seen}) == 1
    assert (offload.handoffs, offload.calls, offload.alongside) == (2, 3, 0)
    offload.close()


def _journals(tmp_path: Path, n: int) -> list[Any]:
    """``n`` real journals (``fsync = "tick"``), started, with tick 1 on disk and tick 2
    appended with ``defer``: its record pending."""
    from journal_writer import make_world

    from server.durability import Journal

    out = []
    for k in range(n):
        world = make_world()
        journal = Journal(tmp_path / f"j{k}", snapshot_every=0, background=False)
        journal.start(world, {})
        for defer in (False, True):
            world.tick()
            journal.append_tick(world.tick_number, defer=defer)
        out.append(journal)
    return out


@pytest.mark.parametrize("on_trio_thread", [True, False])
async def test_a_trips_staged_jobs_are_written_and_synced_together_before_any_is_sent(
        tmp_path: Path, on_trio_thread: bool) -> None:
    """Jobs that return a Staged (a journaled hunt's tick, its record pending) get their
    records written and synced together, off the Trio thread, then each one's ``after``
    there, and only then any ``then`` (the writes to clients), there too: in the disk
    lane for a trip run on the Trio thread, in the tick thread for the others. A journal
    whose write fails fails its own job alone, as does a failing ``after``; a job that
    fails before its record is written writes nothing."""
    import threading

    offload = BatchedOffload()
    here = threading.get_ident()
    journals = _journals(tmp_path, 5)
    # Journal 3's segment is swapped for a read-only descriptor: its write fails (EBADF).
    ro = os.open(os.devnull, os.O_RDONLY)
    os.dup2(ro, journals[3].fileno())
    os.close(ro)
    log: list[tuple[str, int, int]] = []

    def after(k: int) -> None:
        log.append(("after", k, threading.get_ident()))
        if k == 4:
            raise RuntimeError("hunt 4's round record failed")

    def then(k: int) -> int:
        assert not any(j.pending for i, j in enumerate(journals) if i in (0, 2, 4))
        log.append(("then", k, threading.get_ident()))
        return k * 10

    def work(k: int) -> Staged:
        log.append(("first", k, threading.get_ident()))
        if k == 1:
            raise ValueError("hunt 1's tick failed")
        return Staged(journals[k], functools.partial(after, k), functools.partial(then, k))

    group = offload.for_hunt(lambda: 5, lambda: 20 if on_trio_thread else -1)
    results = await _at_once({k: functools.partial(group, work, k) for k in range(5)})
    assert (offload.handoffs, offload.inline) == (1, int(on_trio_thread))
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], OSError) and results[3].errno == 9
    assert isinstance(results[4], RuntimeError)
    assert [j.stats.fsyncs for j in journals] == [2, 1, 2, 1, 2]
    assert journals[1].pending and journals[3].pending  # never written, never sent
    assert sorted(k for what, k, _ in log if what == "after") == [0, 2, 4]
    assert sorted(k for what, k, _ in log if what == "then") == [0, 2]
    last_after = max(i for i, e in enumerate(log) if e[0] == "after")
    assert all(i > last_after for i, e in enumerate(log) if e[0] == "then")
    threads = {what: {t for w, _, t in log if w == what} for what in ("first", "after", "then")}
    assert here not in threads["after"] and threads["then"] == threads["after"]
    assert len(threads["after"]) == 1
    assert (threads["first"] == {here}) == on_trio_thread
    offload.close()
    for journal in journals:
        journal.close()
    for k in (0, 2, 4):  # what was synced is there
        assert recover(tmp_path / f"j{k}").tick == 2


# ---------------------------------------------------------------------- a real server


async def test_grouped_hunts_tick_at_their_phases_and_replay_to_the_live_hashes(
        serve, tmp_path: Path) -> None:
    """Four hunts in two groups, one of them crowded; clients move in each; then the
    groups are rebalanced (the crowded hunt alone in its group). Every client sees every
    tick number, the hunts of one group share one worker hand-off, and each hunt's
    journal, replayed alone, reproduces every state hash recorded live and the live
    world's final hash: its result does not depend on its group."""
    data = tmp_path / "data"
    names = ["north", "south", "east", "west"]
    srv = await serve(*({"name": n, "max_players": 16, "seed": k} for k, n in enumerate(names)),
                      data_dir=str(data), hash_every=1, snapshot_every=0, tick_groups=2)
    placement = srv.app.placement
    groups = placement.groups
    assert groups.count == 2
    assert sorted(groups.phase(n) for n in names) == [0.0, 0.0, 0.5, 0.5]
    seen: dict[str, list[int]] = {}

    async def play(hunt: str, who: str, ticks: int) -> None:
        async with connect(srv.url, who, hunt) as c:
            got = seen.setdefault(f"{hunt}/{who}", [])
            async for tick in c.ticks():
                got.append(tick.tick)
                if len(got) >= ticks:
                    break
                await c.move(math.cos(len(got)), math.sin(len(got)))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in names:
                nursery.start_soon(play, n, "solo", 30)
            for k in range(5):
                nursery.start_soon(play, "north", f"crowd{k}", 30)
            while groups.groups() and sum(len(h.sessions) for h in srv.app.hubs()) < 9:
                await trio.sleep(0.05)
            # Crowded "north" shares a group; rebalancing gives it one of its own.
            mate = next(n for n in names if n != "north"
                        and groups.phase(n) == groups.phase("north"))
            assert mate
            placement.groups.rebalance(force=True)
            assert [n for n, g in groups.groups().items() if "north" in g] and \
                groups.groups()[next(g for g, ns in groups.groups().items()
                                     if "north" in ns)] == ["north"]
    for ticks in seen.values():
        assert len(ticks) == 30 and ticks == list(range(ticks[0], ticks[0] + 30))
    assert placement.offload.calls > placement.offload.handoffs > 0
    live = {h.world.hunt_params[0].name: h for h in srv.app.hubs()}
    await placement.leave()
    for hub in live.values():  # fsync "tick": every tick written and synced, none left
        assert hub.journal.stats.fsyncs == hub.journal.stats.ticks > 30
        assert not hub.journal.pending
    journals = hunt_journals(data)
    assert sorted(journals) == sorted(names)
    for name, path in journals.items():
        rec = recover(path, verify=True)
        assert rec.report.hashes_verified >= rec.tick - 1 >= 30  # each client saw 30 ticks
        assert rec.state_hash == live[name].world.state_hash()


async def test_a_trip_of_small_hunts_runs_on_the_trio_thread() -> None:
    import threading

    offload = BatchedOffload()
    here = threading.get_ident()
    ran: dict[str, int] = {}

    def work(name: str) -> str:
        ran[name] = threading.get_ident()
        if name == "bad":
            raise ValueError("this hunt failed")
        return name

    async def group(*members: tuple[str, int]) -> dict[str, object]:
        """One instant's calls, each ``(name, players)`` (-1: one that must leave the Trio
        thread)."""
        return await _at_once({
            name: functools.partial(offload.for_hunt(lambda: len(members), lambda p=players: p),
                                    work, name)
            for name, players in members})

    # Small hunts: one trip, run here; a failure still goes to its caller.
    out = await group(("a", 20), ("bad", 20), ("c", 20))
    assert out["a"] == "a" and out["c"] == "c" and isinstance(out["bad"], ValueError)
    assert {ran[n] for n in ("a", "bad", "c")} == {here}
    assert (offload.handoffs, offload.inline) == (1, 1)
    # One that must leave the Trio thread, or more players than INLINE_PLAYERS in all:
    # the whole trip goes to a tick thread.
    for members in ((("d", 20), ("e", -1)), (("f", INLINE_PLAYERS), ("g", 1))):
        out = await group(*members)
        assert out == {n: n for n, _ in members}
        assert {ran[n] for n, _ in members} != {here} and len({ran[n] for n, _ in members}) == 1
    assert (offload.handoffs, offload.inline) == (3, 1)
    # A plain call (no hunt behind it) always leaves the Trio thread.
    assert await offload(work, "h") == "h" and ran["h"] != here
    offload.close()


async def test_a_server_ticks_small_groups_on_the_trio_thread_and_writes_journals_in_threads(
        serve, tmp_path: Path) -> None:
    """Two small hunts, with no data dir and then with one: their ticks run on the Trio
    thread and every client gets every tick; a journal's writes and fsyncs run in other
    threads, one fsync per tick (``fsync = "tick"``), each before its tick is sent."""
    import threading

    for data_dir in ("", str(tmp_path / "data")):
        srv = await serve({"name": "north", "max_players": 16},
                          {"name": "south", "max_players": 16}, data_dir=data_dir)
        offload = srv.app.placement.offload
        seen: list[list[int]] = []
        settled: set[int] = set()
        for hub in srv.app.hubs():
            if hub.journal is not None:
                def prepare(real: Any = hub.journal.prepare_settle,
                            into: set[int] = settled) -> Any:
                    into.add(threading.get_ident())
                    return real()
                hub.journal.prepare_settle = prepare

        async def play(url: str, hunt: str, got: list[int]) -> None:
            async with connect(url, "solo", hunt) as c:
                async for tick in c.ticks():
                    got.append(tick.tick)
                    if len(got) >= 20:
                        break
                    await c.move(1.0, 0.0)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for hunt in ("north", "south"):
                    seen.append([])
                    nursery.start_soon(play, srv.url, hunt, seen[-1])
        for ticks in seen:
            assert ticks == list(range(ticks[0], ticks[0] + 20))
        assert offload.handoffs >= 20 and offload.inline == offload.handoffs
        hubs = srv.app.hubs()
        await srv.app.placement.leave()
        if data_dir:
            assert settled and threading.get_ident() not in settled
            for hub in hubs:
                assert hub.journal.stats.fsyncs == hub.journal.stats.ticks >= 20
        else:
            assert not settled


async def test_a_tick_in_flight_ends_even_if_its_callers_are_cancelled() -> None:
    import threading

    offload = BatchedOffload()
    started, release = threading.Event(), threading.Event()
    done: list[int] = []

    def work(k: int) -> int:
        started.set()
        release.wait(5)
        return k

    async def call(k: int) -> None:
        done.append(await offload(work, k))

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            callers = trio.CancelScope()

            async def callers_task() -> None:
                with callers:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(call, 0)  # carries the trip ...
                        nursery.start_soon(call, 1)  # ... and this one, due at once

            outer.start_soon(callers_task)
            while not started.is_set():
                await trio.sleep(0.001)
            callers.cancel()  # e.g. shutdown, while the thread ticks
            await trio.sleep(0.02)
            assert done == []  # both still wait for their ticks ...
            release.set()
    assert sorted(done) == [0, 1]  # ... and get them: neither call was abandoned
    assert (offload.handoffs, offload.calls) == (1, 2)
    offload.close()


async def test_a_group_trip_carries_every_member_due_and_does_not_wait_for_one_behind(
        ) -> None:
    offload = BatchedOffload()
    group = offload.for_hunt(lambda: 3)  # three hunts tick at this instant

    def work(k: int) -> int:
        return k

    async def tick(k: int, out: list[int]) -> None:
        out.append(await group(work, k))

    for members in (3, 2):  # all three due; then one of them is behind its schedule
        done: list[int] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for k in range(members):
                    nursery.start_soon(tick, k, done)
        assert sorted(done) == list(range(members))
    assert (offload.handoffs, offload.calls) == (2, 5)
    offload.close()
