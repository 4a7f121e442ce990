"""Recovery and replay: the latest provable state from snapshots and the journal.

:func:`recover` loads the newest snapshot that proves intact (container CRC,
the engine's own digest, the state hash recorded with it), then re-runs every
journaled tick after it, in order, exactly as the server ran them (hunts added,
joins, leaves, moves, tick), checking each join's player id and each recorded
state hash. Reading stops at the first record it cannot prove: that torn or
corrupt tail is reported (and cut by ``Journal.start``), never replayed. With
``earliest=True`` and ``until`` it is the replay of ``treasure-hunt replay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import HashMismatchError, RecoveryError
from ._files import (
    SnapshotFileError,
    decode_snapshot,
    list_segments,
    list_snapshots,
)
from ._format import (
    HEADER,
    KIND_SEGMENT,
    KIND_TICK,
    ROUND_EVENT,
    FormatError,
    TickRecord,
    decode_segment_header,
    decode_tick,
    scan,
    token_hash,
)

if TYPE_CHECKING:
    from tickengine import World

FRESH_HINT = ("start over deliberately with --fresh (the old files are moved aside, "
              "not deleted)")


@dataclass(frozen=True, slots=True)
class Join:
    """A player who joined after the snapshot (``tick``: the tick it entered play)."""

    tick: int
    player_id: int
    hunt: int
    name: str
    token: bytes
    #: The player's user id (ticket mode), "" for an anonymous player or an older journal.
    user: str = ""


@dataclass(frozen=True, slots=True)
class Leave:
    """A player who left after the snapshot (``tick``: the tick it left play), with its
    ``hunt`` (index) and what it had scored by then: ``score``, reached at ``score_tick``."""

    tick: int
    player_id: int
    hunt: int
    score: int
    score_tick: int


@dataclass(frozen=True, slots=True)
class Cut:
    """Bytes of a segment that could not be proven: ``path`` from ``offset`` on."""

    path: str
    offset: int
    bytes: int
    reason: str
    #: True when the cut ends the recovered journal (``Journal.start`` truncates it there).
    tail: bool


@dataclass(slots=True)
class RecoveryReport:
    """What recovery read, used, skipped and cut. Times in seconds."""

    data_dir: str
    snapshot: str | None = None
    snapshot_tick: int = 0
    tick: int = 0
    until: int | None = None
    ticks_replayed: int = 0
    hashes_verified: int = 0
    #: ``(path, reason)`` of snapshots that did not prove intact (newer ones first).
    snapshots_skipped: list[tuple[str, str]] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    #: ``(path, reason)`` of files beyond the recovered state (``Journal.start`` moves them
    #: to quarantine/): corrupt snapshots, segments that start after the recovered tick.
    unusable: list[tuple[str, str]] = field(default_factory=list)
    #: Why the replay stopped where it did.
    stop_reason: str = "end of journal"
    #: Whole recovery; of which restoring the snapshot; of which re-running the ticks.
    seconds: float = 0.0
    snapshot_seconds: float = 0.0
    replay_seconds: float = 0.0

    @property
    def cuts_to_apply(self) -> list[Cut]:
        unusable = {p for p, _ in self.unusable}
        return [c for c in self.cuts if c.tail and c.path not in unusable]

    def lines(self) -> list[str]:
        """The report as log lines (the first says what was recovered)."""
        out = [f"recovered tick {self.tick} from {self.snapshot} (tick {self.snapshot_tick}) "
               f"+ {self.ticks_replayed} journaled ticks, {self.hashes_verified} state hashes "
               f"verified, in {self.seconds:.2f} s; stopped: {self.stop_reason}"]
        out += [f"skipped snapshot {p}: {why}" for p, why in self.snapshots_skipped]
        out += [f"cut {c.bytes} bytes of {c.path} from offset {c.offset}: {c.reason}"
                for c in self.cuts]
        out += [f"unusable: {p}: {why}" for p, why in self.unusable]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["snapshots_skipped"] = [list(x) for x in self.snapshots_skipped]
        d["unusable"] = [list(x) for x in self.unusable]
        return d


@dataclass(slots=True)
class Recovered:
    """The recovered world and what the server needs to rebuild its own tables.

    ``meta`` is the dict the server gave with the snapshot; ``joins`` and
    ``leaves`` are the players who joined or left after it (with names and
    tokens), in journal order; ``events`` the server events journaled after it,
    as ``(tick, event)``.
    """

    world: World
    meta: Any
    tick: int
    state_hash: str
    joins: list[Join]
    leaves: list[Leave]
    events: list[tuple[int, Any]]
    report: RecoveryReport


@dataclass(frozen=True, slots=True)
class _Entry:
    """A proven record of the chain: where its payload is."""

    tick: int
    path: Path
    data: bytearray
    start: int
    stop: int
    #: The segment stores token hashes (format 2 on); format 1 held plaintext tokens.
    hashed: bool = True


def recover(data_dir: str | Path, *, verify: bool = True, until: int | None = None,
            earliest: bool = False,
            on_tick: Callable[[int, int], None] | None = None,
            on_result: Callable[[Any], None] | None = None) -> Recovered | None:
    """The last provable state in ``data_dir``, or None when there is nothing (fresh start).

    ``verify``: check recorded state hashes (a mismatch raises
    :class:`HashMismatchError`). ``until``: stop after that tick. ``earliest``:
    start from the oldest intact snapshot (a replay) instead of the newest.
    ``on_tick(done, total)``: called after each replayed tick (progress).
    ``on_result(result)``: called with each replayed tick's ``TickResult`` (its
    events: a scale-out node re-publishes the discoveries a dead owner had not).
    Raises :class:`RecoveryError` when nothing provable is left or the journal
    contradicts the state.
    """
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    report = RecoveryReport(data_dir=str(data_dir), until=until)
    snapshots = list_snapshots(data_dir)
    segments = list_segments(data_dir)
    if not snapshots and not segments:
        return None
    if until is not None and until < 0:
        raise RecoveryError(f"until must be a tick >= 0, got {until}")
    candidates = [s for s in snapshots if until is None or s[0] <= until]
    if not earliest:
        candidates.reverse()
    loaded = None
    for tick, path in candidates:
        try:
            loaded = _load_snapshot(tick, path)
            report.snapshot, report.snapshot_tick = str(path), tick
            break
        except SnapshotFileError as exc:
            report.snapshots_skipped.append((str(path), str(exc)))
            report.unusable.append((str(path), f"corrupt snapshot: {exc}"))
    if loaded is None:
        if not snapshots:
            why = "journal segments but no snapshot (the journal alone cannot be replayed)"
        elif not candidates:
            why = f"no snapshot at or before tick {until}"
        else:
            why = "no intact snapshot (" + "; ".join(
                f"{Path(p).name}: {r}" for p, r in report.snapshots_skipped) + ")"
        if candidates or not snapshots:
            hint = f"; {FRESH_HINT}"
        else:
            hint = f" (the oldest is at tick {snapshots[0][0]})"
        raise RecoveryError(f"cannot recover {data_dir}: {why}{hint}")
    world, meta = loaded
    t1 = time.perf_counter()
    report.snapshot_seconds = t1 - t0
    chain = _chain(segments, report.snapshot_tick, until, report)
    recovered = Recovered(world=world, meta=meta, tick=world.tick_number, state_hash="",
                          joins=[], leaves=[], events=[], report=report)
    _replay(recovered, chain, verify, on_tick, on_result)
    report.replay_seconds = time.perf_counter() - t1
    report.tick = recovered.tick = world.tick_number
    if until is None:
        report.unusable += [(str(p), f"starts at tick {first}, after the recovered tick "
                             f"{report.tick}") for first, p in segments if first > report.tick]
    recovered.state_hash = world.state_hash()
    report.seconds = time.perf_counter() - t0
    return recovered


def _load_snapshot(tick: int, path: Path) -> tuple[World, Any]:
    """Restore a snapshot file, or :class:`SnapshotFileError` saying why it is not usable."""
    from tickengine import SnapshotError, World

    try:
        snap = decode_snapshot(path.read_bytes())
    except OSError as exc:
        raise SnapshotFileError(f"unreadable: {exc}") from exc
    if snap.tick != tick:
        raise SnapshotFileError(f"holds tick {snap.tick}, its name says {tick}")
    try:
        world = World.restore(snap.world_bytes)
    except SnapshotError as exc:
        raise SnapshotFileError(str(exc)) from exc
    if world.tick_number != tick:
        raise SnapshotFileError(f"the engine state is at tick {world.tick_number}, not {tick}")
    if snap.state_hash is not None and world.state_hash() != snap.state_hash:
        raise SnapshotFileError("the restored state's hash differs from the one recorded")
    return world, snap.meta


def _chain(segments: list[tuple[int, Path]], after: int, until: int | None,
           report: RecoveryReport) -> list[_Entry]:
    """The proven records of ticks ``after + 1, after + 2, ...`` with no gap, up to ``until``."""
    expected = after + 1
    chain: list[_Entry] = []
    report.stop_reason = "end of journal"
    for i, (first, path) in enumerate(segments):
        if until is not None and expected > until:
            report.stop_reason = f"--until {until}"
            break
        nxt = segments[i + 1][0] if i + 1 < len(segments) else None
        if nxt is not None and nxt <= expected:
            continue  # holds only ticks before the ones needed
        if first > expected:
            report.stop_reason = (f"journal gap: tick {expected} is in no segment "
                                  f"(next segment starts at tick {first})")
            break
        data = bytearray(path.read_bytes())
        sc = scan(data)
        problem, cut_at = sc.problem, sc.valid_end
        records = sc.records
        if not records or records[0][0] != KIND_SEGMENT or records[0][1] != first:
            problem, cut_at, records = problem or "no segment header", 0, []
        else:
            try:
                header = decode_segment_header(memoryview(data)[records[0][2] : records[0][3]])
                hashed = header["format"] >= 2
            except FormatError as exc:
                problem, cut_at, records = str(exc), 0, []
        for kind, tick, start, stop in records[1:]:
            if kind != KIND_TICK or tick > expected:
                problem = (f"record of tick {tick} where tick {expected} belongs"
                           if kind == KIND_TICK else "segment header inside a segment")
                cut_at = start - HEADER.size
                break
            if tick < expected:
                continue
            if until is not None and tick > until:
                break
            chain.append(_Entry(tick, path, data, start, stop, hashed))
            expected += 1
        if until is not None and expected > until:
            report.stop_reason = f"--until {until}"
            break
        if problem is None:
            continue
        bypass = nxt is not None and nxt == expected
        report.cuts.append(Cut(str(path), cut_at, len(data) - cut_at, problem, tail=not bypass))
        if not bypass:
            report.stop_reason = f"{problem} in {path.name} at offset {cut_at}"
            break
    else:
        if until is not None and expected <= until:
            report.stop_reason = f"end of journal before --until {until}"
    return chain


def _replay(rec: Recovered, chain: list[_Entry], verify: bool,
            on_tick: Callable[[int, int], None] | None,
            on_result: Callable[[Any], None] | None = None) -> None:
    report = rec.report
    total = len(chain)
    for k, entry in enumerate(chain):
        try:
            record = decode_tick(entry.tick, memoryview(entry.data)[entry.start : entry.stop])
        except FormatError as exc:
            # Proven by its CRC yet undecodable: a writer bug. Nothing after it is replayed.
            offset = entry.start - HEADER.size
            report.cuts.append(Cut(str(entry.path), offset, len(entry.data) - offset, str(exc),
                                   tail=True))
            report.stop_reason = f"{exc} in {entry.path.name} at offset {offset}"
            return
        result = apply_record(rec.world, record)
        if on_result is not None:
            on_result(result)
        t = record.tick
        # Joins carry token hashes, whatever the segment's format stored.
        rec.joins += [Join(t, int(pid), int(h), name,
                           token if entry.hashed else token_hash(token), user)
                      for pid, h, name, token, user in zip(
                          record.join_ids.tolist(), record.join_hunts.tolist(),
                          record.join_names, record.join_tokens, record.join_users,
                          strict=True)]
        # A left player's slot keeps its hunt and score until a later tick's join reuses it.
        P = rec.world.players
        rec.leaves += [Leave(t, pid, int(P.hunt[s]), int(P.score[s]), int(P.score_tick[s]))
                       for pid in record.leaves.tolist() for s in (pid & 0xFFFFFFFF,)]
        rec.events += [(t, e) for e in record.events]
        report.ticks_replayed += 1
        if verify and record.state_hash is not None:
            replayed = rec.world.state_hash()
            if replayed != record.state_hash:
                raise HashMismatchError(
                    f"replaying {entry.path.name}: the state hash after tick {t} is {replayed}, "
                    f"the journal recorded {record.state_hash}: the journal does not reproduce "
                    f"the live run (a bug, or files from different runs); {FRESH_HINT}",
                    tick=t, recorded=record.state_hash, replayed=replayed)
            report.hashes_verified += 1
        if on_tick is not None:
            on_tick(k + 1, total)


def apply_record(world: World, record: TickRecord) -> Any:
    """Re-run one journaled tick on ``world`` exactly as the server ran it; its TickResult.

    Order: hunts added, joins (consecutive joins to one hunt as one
    ``join_many``), leaves, round requests (``World.request_round``, from the
    events ``{"round": "start" | "end", "hunt": index}``), ``moves.put_many``, ``tick()``. Raises
    :class:`RecoveryError` when the engine refuses an input or hands out
    another player id than the journal recorded.
    """
    from tickengine import HuntParams, TickEngineError

    t = record.tick
    if world.tick_number != t - 1:
        raise RecoveryError(f"record of tick {t} applied to a world at tick {world.tick_number}")
    try:
        for params in record.hunts:
            world.add_hunt(HuntParams.from_dict(params))
        hunts = record.join_hunts.tolist()
        i, n = 0, len(hunts)
        while i < n:
            j = i + 1
            while j < n and hunts[j] == hunts[i]:
                j += 1
            ids = world.join_many(hunts[i], j - i)
            if not np.array_equal(ids, record.join_ids[i:j]):
                raise RecoveryError(
                    f"tick {t}: joining hunt {hunts[i]} gave player ids {ids[:3].tolist()}..., "
                    f"the journal recorded {record.join_ids[i:i + 3].tolist()}...: the journal "
                    f"does not follow this state; {FRESH_HINT}")
            i = j
        for pid in record.leaves.tolist():
            world.leave(pid)
        for event in record.events:
            if isinstance(event, dict) and ROUND_EVENT in event:
                world.request_round(event["hunt"], event[ROUND_EVENT])
        if record.move_ids.shape[0]:
            world.moves.put_many(record.move_ids, record.move_seqs, record.move_dx,
                                 record.move_dy)
    except (TickEngineError, ValueError, TypeError, KeyError) as exc:
        raise RecoveryError(f"tick {t}: the journal does not apply to the replayed state "
                            f"({exc}); {FRESH_HINT}") from exc
    return world.tick()
