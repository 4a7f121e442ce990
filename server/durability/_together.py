"""Many journals' pending ticks made durable at once: one call without the GIL writes every
record, then one sync per filesystem.

A server with many small hunts keeps a journal per hunt, so with ``fsync = "tick"`` a
tick of 50 hunts owes 50 writes and 50 syncs. Two things make that cheap here:

- **One ``syncfs`` per filesystem** instead of one ``fdatasync`` per journal, when more
  than one journal there wants a sync: one journal commit for all of them, at a fraction
  of the time and CPU (perf/README.md, "One sync for many journals"). ``syncfs`` also
  writes out whatever else is dirty on that filesystem (another process's files, a
  snapshot being written), so a batch can take longer when the disk is busy, never less
  safe.
- **The writes and syncs in one compiled call that releases the GIL once**
  (:func:`_write_and_sync`). A thread that makes system calls from Python takes the GIL
  back after each, and while the event loop's thread is busy each take can wait for a
  switch interval: a few hundred system calls a second from another thread were enough
  to hold ticks back.

Errors stay with their journal: a write that fails (ENOSPC, EIO) fails its journal alone;
when a ``syncfs`` fails, each of its journals is synced on its own (``fdatasync``), so that
each gets its own file's error, if any. Linux reports write-back errors through ``syncfs``
from 5.8 on; before that, and off Linux, every journal syncs on its own.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Sequence

import numpy as np
from numba import njit

from ._journal import Journal

_libc = ctypes.CDLL(None)  # CDLL calls release the GIL; in a kernel, the kernel's nogil holds
_write = _libc.write
# The buffer's address as an integer: the same register as a pointer on every ABI we run.
_write.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t)
_write.restype = ctypes.c_ssize_t
_fdatasync = getattr(_libc, "fdatasync", None) or _libc.fsync
_fdatasync.argtypes = (ctypes.c_int,)
_fdatasync.restype = ctypes.c_int
_errno_location = getattr(_libc, "__errno_location", None) or _libc.__error
_errno_location.argtypes = ()
_errno_location.restype = ctypes.POINTER(ctypes.c_int)


def _syncfs_usable() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(_libc, "syncfs"):
        return False
    try:
        major, minor = (int(p) for p in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)  # before 5.8, syncfs did not report write-back errors


# Without a usable syncfs, no journal is grouped for one: the stand-in is never called.
_syncfs = _libc.syncfs if _syncfs_usable() else _fdatasync
SYNCFS = _syncfs is not _fdatasync
_syncfs.argtypes = (ctypes.c_int,)
_syncfs.restype = ctypes.c_int
_EINTR = 4


@njit(nogil=True)  # not cached: Numba cannot cache a ctypes function pointer
def _write_and_sync(fds, base, offsets, how, syncfs_fds, errors, syncfs_errors):
    """Record i (``offsets[i]:offsets[i + 1]`` from address ``base``) written whole to
    ``fds[i]``; then ``fdatasync`` of it where ``how[i]`` is 1 (2: a ``syncfs`` covers
    it), unless its write failed; then ``syncfs`` of each ``syncfs_fds[k]``. ``errors[i]``
    and ``syncfs_errors[k]``: the errno of what failed, else 0."""
    n = fds.shape[0]
    for i in range(n):
        a, b = offsets[i], offsets[i + 1]
        while a < b:
            r = _write(fds[i], base + a, b - a)
            if r > 0:
                a += r
            elif r < 0 and _errno_location()[0] == _EINTR:
                continue
            else:
                errors[i] = _errno_location()[0] if r < 0 else 28  # wrote nothing: ENOSPC
                break
    for i in range(n):
        if how[i] == 1 and errors[i] == 0:
            while _fdatasync(fds[i]) != 0:
                e = _errno_location()[0]
                if e != _EINTR:
                    errors[i] = e
                    break
    for k in range(syncfs_fds.shape[0]):
        while _syncfs(syncfs_fds[k]) != 0:
            e = _errno_location()[0]
            if e != _EINTR:
                syncfs_errors[k] = e
                break


def settle_together(journals: Sequence[Journal]) -> list[BaseException | None]:
    """``settle()`` every journal (each with a record pending, or none) in one call
    without the GIL; the fsync of each that wants one is one ``syncfs`` per filesystem
    where more than one does. Returns each journal's error (None: its tick is as durable
    as its policy makes it)."""
    n = len(journals)
    errors: list[BaseException | None] = [None] * n
    rows: list[int] = []
    records: list[bytes] = []
    fds: list[int] = []
    due: list[bool] = []
    for i, journal in enumerate(journals):
        try:
            target = journal.prepare_settle()  # may open a new segment: its own errors
        except BaseException as exc:
            errors[i] = exc
            continue
        if target is not None:
            rows.append(i)
            fds.append(target[0])
            records.append(target[1])
            due.append(target[2])
    if not rows:
        return errors
    m = len(rows)
    how = np.zeros(m, np.int8)
    by_device: dict[int, list[int]] = {}
    for r in range(m):
        if due[r]:
            by_device.setdefault(journals[rows[r]].device, []).append(r)
    leaders: list[int] = []  # an fd per filesystem synced with one syncfs
    grouped: list[list[int]] = []
    for members in by_device.values():
        if SYNCFS and len(members) > 1:
            how[members] = 2
            leaders.append(fds[members[0]])
            grouped.append(members)
        else:
            how[members] = 1
    data = np.frombuffer(b"".join(records), np.uint8)
    offsets = np.zeros(m + 1, np.int64)
    np.cumsum([len(rec) for rec in records], out=offsets[1:])
    write_errors = np.zeros(m, np.int32)
    syncfs_errors = np.zeros(len(leaders), np.int32)
    _write_and_sync(np.array(fds, np.int32), data.ctypes.data,
                    offsets, how, np.array(leaders, np.int32), write_errors, syncfs_errors)
    for r in range(m):
        journal, e = journals[rows[r]], int(write_errors[r])
        if e:
            errors[rows[r]] = OSError(e, f"journal write or sync failed: {os.strerror(e)}")
            continue
        journal.written()
        if how[r] == 1:
            journal.synced()
    for members, e in zip(grouped, syncfs_errors.tolist(), strict=True):
        for r in members:
            if write_errors[r]:
                continue
            if not e:
                journals[rows[r]].synced()
                continue
            try:  # the filesystem's error: whose is it? Each file's own sync says.
                journals[rows[r]].sync()
            except BaseException as exc:
                errors[rows[r]] = exc
    return errors


def warm_up() -> None:
    """Compile :func:`_write_and_sync` (at start, before the first tick needs it)."""
    nothing = np.zeros(0, np.int32)
    _write_and_sync(nothing, 0, np.zeros(1, np.int64), np.zeros(0, np.int8), nothing,
                    nothing, nothing)
