"""The writer: one journal record per tick (group commit), periodic snapshots, pruning.

The server's tick loop (the order replay repeats; see the package docstring)::

    journal.start(world, meta, recovered=rec)          # once, before the first tick
    ...                                                # add_hunt, joins, leaves, put_many
    result = world.tick()
    h = world.state_hash() if journal.wants_hash(result.tick) else None
    journal.append_tick(result.tick, hunts=..., joins=..., leaves=..., moves=..., state_hash=h)
    journal.maybe_snapshot(world, meta)                 # dict, or a callable made only when due
    ...                                                 # only now: send the tick to clients

``append_tick`` is one ``write`` of one record, then ``fdatasync`` as the fsync
policy says. Written means safe from a crash of the process (the bytes are in
the kernel); fsynced means safe from a crash of the machine. A caller that must
not block passes ``defer=True``, which only encodes the record, and calls
``settle()`` (the write and the fsync) where it may block, before ``maybe_snapshot``
and before sending: the server does, in threads, for the hunts of one tick group at
once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import JournalError
from ._files import (
    DIR_MODE,
    FILE_MODE,
    LOCK_NAME,
    QUARANTINE,
    TMP_SUFFIX,
    fsync_dir,
    hold_lock,
    list_segments,
    list_snapshots,
    segment_path,
    unique_dir,
    utc_stamp,
    write_all,
)
from ._format import HASH_BYTES, TOKEN_BYTES, encode_segment_header, encode_tick
from ._snapshots import SnapshotWriter
from ._stats import JournalStats

if TYPE_CHECKING:
    from tickengine import HuntParams, World

    from ._recover import Recovered

_I8, _I4, _F8 = np.dtype("<i8"), np.dtype("<i4"), np.dtype("<f8")
_NO_MOVES = (np.zeros(0, _I8), np.zeros(0, _I8), np.zeros(0, _F8), np.zeros(0, _F8))

#: Defaults: a snapshot a minute and a state hash a second at 20 Hz.
DEFAULT_SNAPSHOT_EVERY = 1200
DEFAULT_HASH_EVERY = 20
DEFAULT_KEEP_SNAPSHOTS = 2
#: A segment is closed and a new one opened past this many bytes (and after each snapshot).
DEFAULT_SEGMENT_BYTES = 64 << 20

Meta = dict[str, Any] | Callable[[], dict[str, Any]]


def _fsync_policy(fsync: str | int) -> float | None:
    """Seconds between fsyncs (0: every tick, None: never), or JournalError."""
    if fsync == "tick":
        return 0.0
    if fsync == "off":
        return None
    if isinstance(fsync, str) and fsync.isdigit():
        fsync = int(fsync)
    if isinstance(fsync, int) and not isinstance(fsync, bool) and 1 <= fsync <= 60_000:
        return fsync / 1000
    raise JournalError(f"fsync must be 'tick', 'off' or milliseconds between fsyncs (1-60000), "
                       f"got {fsync!r}")


def _count(name: str, value: int, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise JournalError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


class Journal:
    """Write-ahead journal and snapshots of one World in ``data_dir``.

    ``fsync``: ``"tick"`` (default: each tick is on disk before it is sent),
    ``"off"`` (the OS decides: a machine crash loses recent ticks), or an int
    of milliseconds (fsync at the first append at least that long after the last
    fsync: a machine crash loses at most that much plus one tick).
    ``snapshot_every``: ticks between snapshots (0: never, the journal grows
    forever). ``hash_every``: ticks between recorded state hashes (0: only at
    snapshots). ``keep_snapshots``: snapshots kept (>= 1); journal segments older
    than the oldest kept one are deleted. ``segment_bytes``: a segment is rolled
    past this size. ``background``: write snapshots in a thread (False: inline).
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: str | int = "tick",
                 snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
                 hash_every: int = DEFAULT_HASH_EVERY,
                 keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, background: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self._sync_every = _fsync_policy(fsync)
        self.snapshot_every = _count("snapshot_every", snapshot_every, 0)
        self.hash_every = _count("hash_every", hash_every, 0)
        self.keep_snapshots = _count("keep_snapshots", keep_snapshots, 1)
        self.segment_bytes = _count("segment_bytes", segment_bytes, 1)
        self.background = background
        self.stats = JournalStats()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment_size = 0
        self._roll_at: int | None = None
        self._last_tick: int | None = None
        self._last_sync = 0.0
        #: ``(tick, record)`` appended with ``defer``, not yet written (:meth:`settle`).
        self._pending: tuple[int, bytes] | None = None
        self._device = -1
        self._hash_tick = -1
        self._hash: str | None = None
        self._snapshots = SnapshotWriter(self.data_dir, self.keep_snapshots, self.stats,
                                         background=background)

    # ------------------------------------------------------------------ policy

    @property
    def fsync_warning(self) -> str | None:
        """A line for the server to log at start when durability is weakened, else None."""
        if self._sync_every is None:
            return ("fsync is off: a crash of the machine (not just of the server) can lose "
                    "recent ticks that clients were already told about")
        if self._sync_every > 0:
            return (f"fsync every {self.fsync} ms: a crash of the machine can lose up to "
                    f"{self.fsync} ms of ticks that clients were already told about")
        return None

    @property
    def last_tick(self) -> int | None:
        """The last tick appended (or the start tick), None before :meth:`start`."""
        return self._last_tick

    def snapshot_due(self, tick: int) -> bool:
        """Whether :meth:`maybe_snapshot` writes a snapshot after ``tick``."""
        return self.snapshot_every > 0 and tick % self.snapshot_every == 0

    def wants_hash(self, tick: int) -> bool:
        """Whether to pass ``world.state_hash()`` to this tick's :meth:`append_tick`.

        True every ``hash_every`` ticks and at snapshot ticks (the snapshot then
        carries the hash, and recovery checks the restored world against it).
        """
        return (self.hash_every > 0 and tick % self.hash_every == 0) or self.snapshot_due(tick)

    # ------------------------------------------------------------------ start and stop

    def start(self, world: World, meta: Meta | None = None,
              recovered: Recovered | None = None) -> None:
        """Take the data dir and get ready to append the tick after ``world``'s.

        Fresh start (``recovered`` None): the data dir must hold no journal or
        snapshot (else :class:`JournalError`: recover it or ``discard`` it); a
        base snapshot of ``world`` and ``meta`` is written before returning.
        After :func:`recover`: pass its result and its world; the torn tail is
        cut (its bytes saved under ``quarantine/``) and the files recovery could
        not use are moved there, so the journal continues cleanly.
        """
        if self._last_tick is not None:
            raise JournalError("the journal is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        # Owner only: the files hold players' names and token hashes; an existing dir made
        # by an older server (0755) is tightened too.
        os.chmod(self.data_dir, DIR_MODE)
        self._take_lock()
        try:
            for p in self.data_dir.iterdir():
                if p.name.endswith(TMP_SUFFIX):  # a snapshot write the last run did not finish
                    p.unlink()
            tick = world.tick_number
            if recovered is None:
                if list_segments(self.data_dir) or list_snapshots(self.data_dir):
                    raise JournalError(
                        f"{self.data_dir} already holds a journal: recover it "
                        "(server.durability.recover), or move it aside deliberately "
                        "(server.durability.discard; the server's --fresh)")
                h = world.state_hash()
                self._hash_tick, self._hash = tick, h
                self._snapshots.write(tick, self._meta(meta), world.snapshot(), h)
                self._snapshots.wait()
            else:
                if recovered.report.until is not None:
                    raise JournalError("a replay stopped --until a tick cannot be continued; "
                                       "recover without until")
                if Path(recovered.report.data_dir).resolve() != self.data_dir.resolve():
                    raise JournalError(f"recovered from {recovered.report.data_dir}, "
                                       f"not from {self.data_dir}")
                if tick != recovered.tick:
                    raise JournalError(f"the world is at tick {tick} but recovery ended at "
                                       f"tick {recovered.tick}: pass the recovered world")
                self._tidy(recovered)
        except BaseException:
            self._release_lock()
            raise
        self._last_tick = tick
        self._roll_at = tick + 1
        self._last_sync = time.monotonic()

    def _take_lock(self) -> None:
        self._lock_fd = hold_lock(self.data_dir / LOCK_NAME,
                                  f"{self.data_dir} is in use by another process (its LOCK "
                                  "is held): one server per data dir")

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _tidy(self, recovered: Recovered) -> None:
        """Cut the torn tail and move unusable files aside, keeping every byte."""
        report = recovered.report
        if not report.cuts_to_apply and not report.unusable:
            return
        target = unique_dir(self.data_dir / QUARANTINE, utc_stamp())
        for cut in report.cuts_to_apply:
            with open(cut.path, "r+b") as f:
                f.seek(cut.offset)
                tail = f.read()
                saved = target / f"{Path(cut.path).name}.tail-at-{cut.offset}"
                fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                try:
                    write_all(fd, tail)
                finally:
                    os.close(fd)
                f.truncate(cut.offset)
                f.flush()
                os.fsync(f.fileno())
        for path, _reason in report.unusable:
            if Path(path).exists():
                os.replace(path, target / Path(path).name)
        fsync_dir(target)
        fsync_dir(self.data_dir)

    def close(self) -> None:
        """Finish the snapshot in flight, fsync and close the segment, release the data dir.

        Re-raises a background snapshot failure (:class:`JournalError`). Idempotent.
        """
        try:
            self.wait_snapshot()
        finally:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    if self._sync_every is not None:
                        os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = None
            self._release_lock()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the tick

    def append_tick(self, tick: int, *, hunts: Iterable[HuntParams] = (),
                    joins: Iterable[tuple[int, int, str, bytes] | tuple[int, int, str, bytes, str]]
                    = (),
                    leaves: Iterable[int] = (),
                    moves: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
                    state_hash: str | None = None, events: list[Any] | None = None,
                    defer: bool = False) -> int:
        """Record tick ``tick``'s inputs in one write (and fsync per policy); returns bytes.

        ``hunts``: added before this tick. ``joins``: ``(player_id, hunt index,
        name, 16-byte token[, user id])`` in the order the server joined them (the user
        id of ticket mode; none or "" for an anonymous player). ``leaves``:
        player ids in the order the server called ``leave``. ``moves``: the
        ``(ids, seqs, dx, dy)`` arrays given to ``put_many`` (int64, int64,
        float64, float64). ``state_hash``: ``world.state_hash()`` after the
        tick when :meth:`wants_hash` said so. ``events``: JSON-able server
        events to keep with the tick (e.g. resumes); recovery hands them back.
        ``defer``: only encode the record; the caller must call :meth:`settle` (the
        write, and the fsync the policy wants) before :meth:`maybe_snapshot` and before
        telling anyone of the tick. The server does, so that nothing that can block on
        the disk runs on its event loop and its hunts of one tick group write and sync
        together (:attr:`pending`).
        """
        t0 = time.perf_counter()
        if self._last_tick is None:
            raise JournalError("call start() before append_tick()")
        if tick != self._last_tick + 1:
            raise JournalError(f"append_tick({tick}) but the last tick journaled is "
                               f"{self._last_tick}: append every tick, in order")
        if self._snapshots.failed:
            self.wait_snapshot()
        hunt_dicts = [p.to_dict() for p in hunts]
        join_list = list(joins)
        ids = np.fromiter((j[0] for j in join_list), _I8, len(join_list))
        join_hunts = np.fromiter((j[1] for j in join_list), _I4, len(join_list))
        names = [j[2].encode() for j in join_list]
        tokens = [bytes(j[3]) for j in join_list]
        users = [str(j[4]) if len(j) > 4 else "" for j in join_list]
        if any(len(t) != TOKEN_BYTES for t in tokens):
            raise JournalError(f"join tokens must be {TOKEN_BYTES} bytes")
        leave_ids = np.fromiter(leaves, _I8)
        if moves is None:
            move_arrays = _NO_MOVES
        else:
            move_arrays = (np.ascontiguousarray(moves[0], _I8), np.ascontiguousarray(moves[1], _I8),
                           np.ascontiguousarray(moves[2], _F8), np.ascontiguousarray(moves[3], _F8))
            n = move_arrays[0].shape[0]
            if any(a.ndim != 1 or a.shape[0] != n for a in move_arrays):
                raise JournalError("moves must be four 1-D arrays of one length "
                                   "(ids, seqs, dx, dy)")
        digest = None
        if state_hash is not None:
            try:
                digest = bytes.fromhex(state_hash)
            except ValueError:
                digest = b""
            if len(digest) != HASH_BYTES:
                raise JournalError(f"state_hash must be World.state_hash() ({2 * HASH_BYTES} hex "
                                   f"digits), got {state_hash!r}")
            self._hash_tick, self._hash = tick, state_hash
        record = encode_tick(tick, hunts=hunt_dicts, join_ids=ids, join_hunts=join_hunts,
                             join_names=names, join_tokens=tokens, leaves=leave_ids,
                             moves=move_arrays, state_hash=digest, events=events,
                             join_users=users)
        self._pending = (tick, record)
        self._last_tick = tick
        st = self.stats
        st.ticks += 1
        st.bytes += len(record)
        st.append_last_s = dt = time.perf_counter() - t0
        st.append_max_s = max(st.append_max_s, dt)
        st.append_total_s += dt
        if not defer:
            self.settle()
        return len(record)

    def sync(self) -> None:
        """fsync the current segment now (e.g. when the server goes idle under a ms policy)."""
        self.settle(sync=False)
        if self._fd is not None:
            self._fdatasync()

    def fileno(self) -> int:
        """The current segment's file descriptor (-1: none open)."""
        return -1 if self._fd is None else self._fd

    @property
    def device(self) -> int:
        """The filesystem (``st_dev``) of the current segment (-1: none open)."""
        return self._device

    def synced(self) -> None:
        """The caller made the current segment durable (an ``fdatasync`` of it, or one
        ``syncfs`` for many journals of a filesystem: :func:`settle_together`)."""
        self._last_sync = time.monotonic()
        self.stats.fsyncs += 1

    @property
    def pending(self) -> bool:
        """Whether an :meth:`append_tick` with ``defer`` left its record to :meth:`settle`."""
        return self._pending is not None

    def settle(self, sync: bool = True) -> bool:
        """Write the record an :meth:`append_tick` with ``defer`` left pending (in a new
        segment when one is due), then fsync it if the policy wants a sync now: once it
        returns, the tick is as durable as the policy makes it. ``sync`` False: leave that
        fsync to the caller; returns whether the policy wants one now (the caller then
        syncs the segment and calls :meth:`synced`). Any thread may call it while no other
        call of this journal runs. An OSError (ENOSPC, EIO) leaves the journal at its last
        durable tick; the record stays pending, unsent. :func:`settle_together` does the
        same for many journals at once."""
        t0 = time.perf_counter()
        target = self.prepare_settle()
        if target is None:
            return False
        fd, record, due = target
        write_all(fd, record)
        self.written()
        if due and sync:
            self._fdatasync()
        self._time_settle(t0)
        return due and not sync

    def prepare_settle(self) -> tuple[int, bytes, bool] | None:
        """The first half of :meth:`settle`: ``(fd, record, due)``, the segment the pending
        record goes to (a new one opened if due), the record, and whether the policy
        wants an fsync now; None if nothing is pending. The caller writes the whole
        record to ``fd``, then calls :meth:`written` (and :meth:`synced` once it synced)."""
        if self._pending is None:
            return None
        tick, record = self._pending
        if (self._fd is None or tick == self._roll_at
                or self._segment_size + len(record) > self.segment_bytes):
            self._open_segment(tick)
        every = self._sync_every
        due = every is not None and time.monotonic() - self._last_sync >= every
        return self._fd, record, due

    def written(self) -> None:
        """The pending record is written whole to the fd :meth:`prepare_settle` gave."""
        self._segment_size += len(self._pending[1])
        self._pending = None

    def _time_settle(self, t0: float) -> None:
        st = self.stats
        dt = time.perf_counter() - t0
        st.append_last_s += dt
        st.append_max_s = max(st.append_max_s, st.append_last_s)
        st.append_total_s += dt

    def _fdatasync(self) -> None:
        started = time.monotonic()
        os.fdatasync(self._fd)
        self._last_sync = started
        self.stats.fsyncs += 1

    def _open_segment(self, tick: int) -> None:
        if self._fd is not None:
            if self._sync_every is not None:
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None
        path = segment_path(self.data_dir, tick)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
        except FileExistsError:
            raise JournalError(f"{path} exists already: another writer, or a data dir changed "
                               "under the server") from None
        header = encode_segment_header(tick, {"created": utc_stamp()})
        write_all(fd, header)
        if self._sync_every is not None:
            os.fdatasync(fd)
            fsync_dir(self.data_dir)  # the new name must survive a crash too
        self._fd = fd
        self._device = os.fstat(fd).st_dev
        self._segment_size = len(header)
        self._roll_at = None

    # ------------------------------------------------------------------ snapshots

    def maybe_snapshot(self, world: World, meta: Meta) -> bool:
        """After :meth:`append_tick`: snapshot ``world`` and ``meta`` if due; True if so.

        On the tick thread: ``world.snapshot()`` and ``meta`` (when a callable);
        the rest (JSON, write, fsync, rename, pruning) runs in a background
        thread unless ``background=False``. ``meta`` must be JSON-able and must
        not change afterwards (pass a fresh dict, or a callable that builds one).
        """
        tick = world.tick_number
        if tick != self._last_tick:
            raise JournalError(f"maybe_snapshot after tick {tick} but the last tick journaled is "
                               f"{self._last_tick}: append the tick first")
        if self._pending is not None:
            raise JournalError(f"maybe_snapshot before tick {tick}'s record is written: "
                               "settle() first")
        if not self.snapshot_due(tick):
            return False
        t0 = time.perf_counter()
        self.wait_snapshot()
        t1 = time.perf_counter()
        world_bytes = world.snapshot()
        meta_value = self._meta(meta)
        h = self._hash if self._hash_tick == tick else None
        self._roll_at = tick + 1  # the next segment starts right after the snapshot
        st = self.stats
        st.snapshot_wait_max_s = max(st.snapshot_wait_max_s, t1 - t0)
        st.snapshot_tick_last_s = dt = time.perf_counter() - t1
        st.snapshot_tick_max_s = max(st.snapshot_tick_max_s, dt)
        self._snapshots.write(tick, meta_value, world_bytes, h)
        return True

    def wait_snapshot(self) -> None:
        """Block until the snapshot being written is on disk; re-raise its failure."""
        self._snapshots.wait()

    @property
    def snapshot_in_flight(self) -> bool:
        """Whether a snapshot is being written in the background right now."""
        return self._snapshots.in_flight

    @staticmethod
    def _meta(meta: Meta | None) -> Any:
        return (meta() if callable(meta) else meta) if meta is not None else {}
