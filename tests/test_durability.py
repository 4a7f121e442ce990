"""Journal, snapshots and recovery in one process, on real files.

A seeded workload (tests/journal_writer.py) drives a World the way the server
does and journals it; the live state hash of every tick is kept, so any
recovery can be held to "the live state of some tick", never a wrong one.
Crashes of real processes are in tests/test_durability_process.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from journal_writer import Workload, make_world, run

from server.durability import (
    HashMismatchError,
    Journal,
    JournalError,
    RecoveryError,
    discard,
    recover,
)
from server.durability._format import scan


def live_run(data_dir: Path, ticks: int, *, seed: int = 0, **options):
    """Journal ``ticks`` ticks of a fresh world; returns (hashes by tick, workload, journal)."""
    options.setdefault("snapshot_every", 20)
    options.setdefault("hash_every", 5)
    options.setdefault("background", False)
    world = make_world()
    load = Workload(world, seed)
    hashes: dict[int, str] = {0: world.state_hash()}
    journal = Journal(data_dir, **options)
    journal.start(world, load.meta())
    run(journal, world, load, ticks, hashes=hashes)
    journal.close()
    return hashes, load, journal


def names(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if p.is_file() and p.name != "LOCK")


def test_round_trip(tmp_path: Path) -> None:
    hashes, load, journal = live_run(tmp_path, 67)
    rec = recover(tmp_path)
    assert rec is not None
    assert rec.tick == 67 and rec.state_hash == hashes[67]
    assert rec.world.state_hash() == hashes[67]
    r = rec.report
    assert (r.snapshot_tick, r.ticks_replayed, r.cuts, r.snapshots_skipped) == (60, 7, [], [])
    assert r.hashes_verified == 1  # tick 65
    assert Path(r.snapshot).name == "snapshot-000000000060.snap"
    # The meta is what the workload said at tick 60; joins and leaves are those after it.
    live_at_60 = set(rec.meta["names"])
    assert all(str(j.player_id) not in live_at_60 for j in rec.joins)
    assert {j.tick for j in rec.joins} <= set(range(61, 68))
    assert [j.name for j in rec.joins] == [load.names[j.player_id] for j in rec.joins]
    assert all(len(j.token) == 16 for j in rec.joins)
    assert {lv.player_id for lv in rec.leaves} <= set(load.gone)
    assert journal.stats.ticks == 67 and journal.stats.fsyncs == 67
    assert "recovered tick 67" in r.lines()[0]


def test_missing_or_empty_data_dir_is_a_fresh_start(tmp_path: Path) -> None:
    assert recover(tmp_path / "nothing-here") is None
    assert recover(tmp_path) is None
    (tmp_path / "quarantine").mkdir()
    assert recover(tmp_path) is None


def test_snapshots_and_pruning(tmp_path: Path) -> None:
    live_run(tmp_path / "two", 55, snapshot_every=10)
    assert names(tmp_path / "two") == [
        "journal-000000000041.log", "journal-000000000051.log",
        "snapshot-000000000040.snap", "snapshot-000000000050.snap"]
    live_run(tmp_path / "three", 55, snapshot_every=10, keep_snapshots=3)
    assert names(tmp_path / "three") == [
        "journal-000000000031.log", "journal-000000000041.log", "journal-000000000051.log",
        "snapshot-000000000030.snap", "snapshot-000000000040.snap", "snapshot-000000000050.snap"]
    # Segments rolled by size: only the ones wholly older than the oldest snapshot kept go.
    hashes, _, _ = live_run(tmp_path / "small", 55, snapshot_every=10, segment_bytes=4000)
    segs = [n for n in names(tmp_path / "small") if n.startswith("journal-")]
    assert len(segs) > 4 and segs[0] <= "journal-000000000041.log"
    firsts = [int(n[8:20]) for n in segs]
    assert firsts[1] > 41 and firsts[0] <= 41
    rec = recover(tmp_path / "small", earliest=True)
    assert rec.report.snapshot_tick == 40 and rec.state_hash == hashes[55]


def test_no_snapshots(tmp_path: Path) -> None:
    hashes, _, _ = live_run(tmp_path, 30, snapshot_every=0)
    assert names(tmp_path) == ["journal-000000000001.log", "snapshot-000000000000.snap"]
    assert recover(tmp_path).state_hash == hashes[30]


@pytest.mark.parametrize("fsync", ["tick", "off", 10_000, "5"])
def test_fsync_policies(tmp_path: Path, fsync) -> None:
    hashes, _, journal = live_run(tmp_path, 25, fsync=fsync)
    expected = {"tick": 25, "off": 0, 10_000: 0}.get(fsync)
    if expected is not None:
        assert journal.stats.fsyncs == expected
    else:
        assert 0 <= journal.stats.fsyncs <= 25
    assert (journal.fsync_warning is None) == (fsync == "tick")
    assert recover(tmp_path).state_hash == hashes[25]


@pytest.mark.parametrize(("option", "value"), [
    ("fsync", "sometimes"), ("fsync", 0), ("fsync", True), ("fsync", 60_001),
    ("snapshot_every", -1), ("hash_every", 1.5), ("keep_snapshots", 0)])
def test_bad_options_name_the_option(tmp_path: Path, option: str, value) -> None:
    with pytest.raises(JournalError, match=option):
        Journal(tmp_path, **{option: value})


def test_one_writer_per_data_dir_and_no_silent_overwrite(tmp_path: Path) -> None:
    world = make_world()
    with Journal(tmp_path) as first:
        first.start(world, {})
        with pytest.raises(JournalError, match="in use by another process"):
            Journal(tmp_path).start(make_world(), {})
    with pytest.raises(JournalError, match="already holds a journal"):
        Journal(tmp_path).start(make_world(), {})
    moved = discard(tmp_path)
    assert moved is not None and moved.parent == tmp_path
    assert names(moved) == ["snapshot-000000000000.snap"]
    assert discard(tmp_path) is None
    assert recover(tmp_path) is None
    with Journal(tmp_path) as again:
        again.start(make_world(), {})


@pytest.mark.parametrize("fsync", ["tick", "off", 10_000])
def test_a_deferred_record_is_written_by_settle(tmp_path: Path, fsync) -> None:
    """``append_tick(defer=True)`` only encodes the record: ``settle()`` writes it and
    fsyncs it per the policy (``settle(sync=False)`` leaves that fsync to the caller and
    says whether the policy wants one); a snapshot waits for it; ``settle_together``
    does it for many journals at once, one sync per filesystem."""
    from server.durability import settle_together

    world, other = make_world(), make_world()
    with Journal(tmp_path / "a", fsync=fsync, snapshot_every=4) as journal, \
            Journal(tmp_path / "b", fsync=fsync) as second:
        journal.start(world, {})
        second.start(other, {})
        syncs = 0
        for _ in range(3):
            world.tick()
            journal.append_tick(world.tick_number, defer=True)
            assert journal.pending
            due = journal.settle(sync=False)
            assert due == (fsync == "tick") and not journal.pending  # ms: not due for 10 s
            if due:
                journal.sync()
                syncs += 1
            assert journal.settle(sync=False) is False  # nothing pending: nothing to do
        assert journal.stats.fsyncs == syncs
        world.tick()
        journal.append_tick(world.tick_number, defer=True)
        with pytest.raises(JournalError, match="settle"):
            journal.maybe_snapshot(world, {})
        other.tick()
        second.append_tick(other.tick_number, defer=True)
        assert settle_together([journal, second]) == [None, None]
        assert not journal.pending and not second.pending
        want = 1 if fsync == "tick" else 0
        assert (journal.stats.fsyncs, second.stats.fsyncs) == (syncs + want, want)
        assert journal.maybe_snapshot(world, {})
    for path, tick in ((tmp_path / "a", 4), (tmp_path / "b", 1)):
        rec = recover(path)
        assert rec is not None and rec.tick == tick


def test_misuse_is_refused(tmp_path: Path) -> None:
    world = make_world()
    journal = Journal(tmp_path, snapshot_every=1)
    with pytest.raises(JournalError, match="start"):
        journal.append_tick(1)
    journal.start(world, {})
    with pytest.raises(JournalError, match="in order"):
        journal.append_tick(2)
    with pytest.raises(JournalError, match="state_hash"):
        journal.append_tick(1, state_hash="abc")
    with pytest.raises(JournalError, match="16 bytes"):
        journal.append_tick(1, joins=[(1, 0, "x", b"short")])
    with pytest.raises(JournalError, match="one length"):
        journal.append_tick(1, moves=(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3)))
    world.tick()
    with pytest.raises(JournalError, match="append the tick first"):
        journal.maybe_snapshot(world, {})
    journal.append_tick(1)
    assert journal.maybe_snapshot(world, {})
    journal.close()
    journal.close()  # idempotent


def test_meta_callable_is_called_only_when_due(tmp_path: Path) -> None:
    calls = []
    world = make_world()
    with Journal(tmp_path, snapshot_every=4) as journal:
        journal.start(world, {"at": 0})
        for _ in range(9):
            world.tick()
            journal.append_tick(world.tick_number, events=[{"resume": world.tick_number}])
            journal.maybe_snapshot(world, lambda: calls.append(world.tick_number) or {"at": 1})
    assert calls == [4, 8]
    rec = recover(tmp_path)
    assert rec.meta == {"at": 1} and rec.events == [(9, {"resume": 9})]


def test_corrupt_newest_snapshot_falls_back_then_quarantined(tmp_path: Path) -> None:
    hashes, _, _ = live_run(tmp_path, 47)
    newest = tmp_path / "snapshot-000000000040.snap"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    rec = recover(tmp_path)
    assert rec.tick == 47 and rec.state_hash == hashes[47]
    assert rec.report.snapshot_tick == 20 and rec.report.ticks_replayed == 27
    assert [Path(p).name for p, _ in rec.report.snapshots_skipped] == [newest.name]
    # Continuing: the corrupt snapshot is moved aside, never pruned into the only copy.
    world = rec.world
    load = Workload.resume(world, seed=9)
    more: dict[int, str] = {}
    with Journal(tmp_path, snapshot_every=20, background=False) as journal:
        journal.start(world, recovered=rec)
        assert not newest.exists()
        assert len(list((tmp_path / "quarantine").rglob(newest.name))) == 1
        run(journal, world, load, 20, hashes=more)
    again = recover(tmp_path)
    assert again.tick == 67 and again.state_hash == more[67]


def test_refuses_when_nothing_valid_is_left(tmp_path: Path) -> None:
    live_run(tmp_path, 47)
    for p in tmp_path.glob("snapshot-*.snap"):
        p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(RecoveryError, match=r"no intact snapshot.*--fresh"):
        recover(tmp_path)
    for p in tmp_path.glob("snapshot-*.snap"):
        p.unlink()
    with pytest.raises(RecoveryError, match="no snapshot"):
        recover(tmp_path)


def test_wrong_recorded_hash_is_a_mismatch(tmp_path: Path) -> None:
    world = make_world()
    with Journal(tmp_path) as journal:
        journal.start(world, {})
        for _ in range(3):
            world.tick()
            journal.append_tick(world.tick_number, state_hash="00" * 16 if
                                world.tick_number == 2 else world.state_hash())
    with pytest.raises(HashMismatchError, match="after tick 2") as info:
        recover(tmp_path)
    assert info.value.tick == 2 and info.value.recorded == "00" * 16
    assert recover(tmp_path, verify=False).tick == 3


def test_journal_that_does_not_follow_the_state_is_refused(tmp_path: Path) -> None:
    world = make_world()
    with Journal(tmp_path) as journal:
        journal.start(world, {})
        pid = world.join(0)
        world.tick()
        journal.append_tick(1, joins=[(pid + 1, 0, "x", bytes(16))])
        world.tick()
        journal.append_tick(2, leaves=[12345])
    with pytest.raises(RecoveryError, match="tick 1: joining hunt 0 gave player ids"):
        recover(tmp_path)


def test_until_and_earliest(tmp_path: Path) -> None:
    hashes, _, _ = live_run(tmp_path, 50)
    for until in (20, 33, 50):
        rec = recover(tmp_path, until=until, earliest=True)
        assert rec.tick == until and rec.state_hash == hashes[until]
        assert rec.report.snapshot_tick == 20
    assert recover(tmp_path, until=45).report.snapshot_tick == 40
    with pytest.raises(RecoveryError, match="no snapshot at or before tick 3"):
        recover(tmp_path, until=3)


def test_torn_tail_is_cut_and_the_journal_continues(tmp_path: Path) -> None:
    hashes, _, _ = live_run(tmp_path, 45)
    seg = tmp_path / "journal-000000000041.log"
    size = seg.stat().st_size
    os.truncate(seg, size - 100)  # tick 45's record loses its last 100 bytes
    rec = recover(tmp_path)
    assert rec.tick == 44 and rec.state_hash == hashes[44]
    (cut,) = rec.report.cuts
    assert cut.tail and cut.path == str(seg) and "partial record" in cut.reason
    assert cut.offset + cut.bytes == size - 100
    world = rec.world
    more: dict[int, str] = {}
    with Journal(tmp_path, snapshot_every=20, background=False) as journal:
        journal.start(world, recovered=rec)
        assert seg.stat().st_size == cut.offset
        tails = list((tmp_path / "quarantine").rglob("*.tail-at-*"))
        assert len(tails) == 1 and tails[0].stat().st_size == cut.bytes
        run(journal, world, Workload.resume(world, seed=3), 10, hashes=more)
    again = recover(tmp_path)
    assert again.tick == 54 and again.state_hash == more[54] and again.report.cuts == []


def test_background_snapshot_failure_is_raised(tmp_path: Path) -> None:
    world = make_world()
    journal = Journal(tmp_path, snapshot_every=2)
    journal.start(world, {})
    (tmp_path / "snapshot-000000000002.snap.tmp").mkdir()  # the temp file cannot be created
    for _ in range(2):
        world.tick()
        journal.append_tick(world.tick_number)
    assert journal.maybe_snapshot(world, {})
    with pytest.raises(JournalError, match="writing a snapshot") as info:
        journal.close()
    assert isinstance(info.value.__cause__, OSError)
    assert recover(tmp_path).tick == 2  # the base snapshot and the journal still hold it


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory):
    """One live run kept pristine; each case below damages a copy of it."""
    src = tmp_path_factory.mktemp("golden")
    hashes, _, _ = live_run(src, 58, snapshot_every=20, hash_every=3)
    return src, hashes


def copy_of(golden_dir: Path, tmp: Path) -> Path:
    dst = tmp / "data"
    shutil.copytree(golden_dir, dst)
    return dst


def test_torn_tails_at_random_offsets(golden, tmp_path: Path) -> None:
    src, hashes = golden
    rng = np.random.default_rng(4)
    seg_name = "journal-000000000041.log"
    size = (src / seg_name).stat().st_size
    for case in range(40):
        data = copy_of(src, tmp_path / str(case))
        offset = int(rng.integers(0, size))
        os.truncate(data / seg_name, offset)
        sc = scan((data / seg_name).read_bytes())
        whole = [t for _, t, _, _ in sc.records[1:]]
        rec = recover(data)
        assert rec.tick == (whole[-1] if whole else 40), offset
        assert rec.state_hash == hashes[rec.tick], offset
        assert bool(rec.report.cuts) == (sc.problem is not None)


def test_random_byte_corruption_never_gives_a_wrong_state(golden, tmp_path: Path) -> None:
    src, hashes = golden
    rng = np.random.default_rng(5)
    files = names(src)
    outcomes = {"refused": 0, "cut": 0, "fell_back": 0, "intact": 0}
    for case in range(80):
        data = copy_of(src, tmp_path / str(case))
        victims = [data / files[int(i)] for i in rng.integers(0, len(files), rng.integers(1, 3))]
        for victim in victims:
            raw = bytearray(victim.read_bytes())
            for pos in rng.integers(0, len(raw), rng.integers(1, 4)).tolist():
                raw[pos] ^= int(rng.integers(1, 256))
            victim.write_bytes(bytes(raw))
        try:
            rec = recover(data)
        except HashMismatchError:
            raise
        except RecoveryError:
            outcomes["refused"] += 1
            continue
        assert rec.state_hash == hashes[rec.tick], (case, [v.name for v in victims])
        assert rec.tick <= 58
        if rec.report.snapshots_skipped:
            outcomes["fell_back"] += 1
        elif rec.report.cuts:
            outcomes["cut"] += 1
        else:
            outcomes["intact"] += 1
    assert outcomes["cut"] and outcomes["fell_back"], outcomes


def test_segment_created_but_never_written(tmp_path: Path) -> None:
    """A crash between creating a segment and writing its header leaves an empty file."""
    hashes, _, _ = live_run(tmp_path, 23)
    empty = tmp_path / "journal-000000000024.log"
    empty.touch()
    rec = recover(tmp_path)
    assert rec.tick == 23 and rec.state_hash == hashes[23]
    assert [c.reason for c in rec.report.cuts] == ["no segment header"]
    assert [Path(p).name for p, _ in rec.report.unusable] == [empty.name]
    world = rec.world
    more: dict[int, str] = {}
    with Journal(tmp_path, snapshot_every=20, background=False) as journal:
        journal.start(world, recovered=rec)
        run(journal, world, Workload.resume(world, seed=4), 5, hashes=more)
    assert len(list((tmp_path / "quarantine").rglob(empty.name))) == 1
    again = recover(tmp_path)
    assert again.tick == 28 and again.state_hash == more[28] and again.report.cuts == []


def test_join_users_are_journaled_and_recovered_and_older_journals_read_as_anonymous(
        tmp_path: Path) -> None:
    """Ticket mode journals each join's user id; a journal written without any (every
    older server, and anonymous joins) recovers with user "" and no stray event."""
    world = make_world()
    with Journal(tmp_path / "new", snapshot_every=0) as journal:
        journal.start(world, {})
        a, b = world.join(0), world.join(0)
        world.tick()
        journal.append_tick(world.tick_number, joins=[(a, 0, "Ada", bytes(16), "u-ada"),
                                                      (b, 0, "anon", b"\1" * 16, "")],
                            events=[{"resume": 1}])
        c = world.join(0)
        world.tick()
        journal.append_tick(world.tick_number, joins=[(c, 0, "Cy", b"\2" * 16)])
    rec = recover(tmp_path / "new")
    assert [(j.name, j.user) for j in rec.joins] == [("Ada", "u-ada"), ("anon", ""), ("Cy", "")]
    assert rec.events == [(1, {"resume": 1})]
    # What an older server wrote: the same ticks, 4-tuples, no user anywhere.
    world = make_world()
    with Journal(tmp_path / "old", snapshot_every=0) as journal:
        journal.start(world, {})
        a = world.join(0)
        world.tick()
        journal.append_tick(world.tick_number, joins=[(a, 0, "Ada", bytes(16))])
    files = [p for p in (tmp_path / "old").iterdir() if p.is_file()]
    assert files and not [p for p in files if b"join_users" in p.read_bytes()]
    rec = recover(tmp_path / "old")
    assert [(j.name, j.user) for j in rec.joins] == [("Ada", "")] and rec.events == []
