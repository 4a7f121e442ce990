"""The data directory: file names, atomic writes, and the snapshot container.

Layout (docs/durability.md)::

    DATA_DIR/
      LOCK                               held (flock) by the one writing process
      journal-000000000001.log           segments, named by the first tick they hold
      snapshot-000000001200.snap         the state right after tick 1200, and the server's meta
      quarantine/<UTC time>/...          files recovery could not use, moved aside on restart
      discarded-<UTC time>/...           a whole previous run, moved aside by ``--fresh``

A snapshot file is a container: ``SNAP_HEADER`` (magic, tick, lengths, the
state hash, a CRC-32 of the whole file) then the server's meta as JSON then
``World.snapshot()`` bytes. It is written to ``*.tmp``, fsynced, renamed, and
the directory fsynced, so a snapshot name either holds a complete file or does
not exist.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._format import HASH_BYTES

SEGMENT_RE = re.compile(r"^journal-(\d{1,19})\.log$")
SNAPSHOT_RE = re.compile(r"^snapshot-(\d{1,19})\.snap$")
TMP_SUFFIX = ".tmp"
LOCK_NAME = "LOCK"
QUARANTINE = "quarantine"
DISCARDED_PREFIX = "discarded-"
#: Modes of what the journal creates: owner only (names and token hashes of players).
FILE_MODE = 0o600
DIR_MODE = 0o700

SNAP_MAGIC = b"THJSNAP1"
#: magic, tick, meta bytes, world bytes, flags, state hash, CRC-32 of everything else.
SNAP_HEADER = struct.Struct("<8sqQQI16sI")
SNAP_FLAG_HASH = 1


class SnapshotFileError(ValueError):
    """A snapshot file is not a complete, intact container (the reason is the message)."""


def segment_path(data_dir: Path, first_tick: int) -> Path:
    return data_dir / f"journal-{first_tick:012d}.log"


def snapshot_path(data_dir: Path, tick: int) -> Path:
    return data_dir / f"snapshot-{tick:012d}.snap"


def _listing(data_dir: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    if not data_dir.is_dir():
        return []
    found = []
    for entry in os.scandir(data_dir):
        m = pattern.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    return sorted(found)


def list_segments(data_dir: Path) -> list[tuple[int, Path]]:
    """``(first tick, path)`` of every journal segment, by first tick."""
    return _listing(data_dir, SEGMENT_RE)


def list_snapshots(data_dir: Path) -> list[tuple[int, Path]]:
    """``(tick, path)`` of every snapshot file, oldest first."""
    return _listing(data_dir, SNAPSHOT_RE)


def fsync_dir(path: Path) -> None:
    """Make renames, creations and deletions in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (regular files rarely write short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_atomic(path: Path, chunks: list[bytes]) -> None:
    """Write ``path`` so that it is either absent or complete, even across a crash."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


#: Items of a dict or list encoded per ``json.dumps`` call by :func:`json_in_slices`.
JSON_SLICE = 2000


def json_in_slices(value: Any, out: list[str]) -> None:
    """Append the compact JSON of ``value`` to ``out``, big dicts and lists a slice at a time.

    ``json.dumps`` is one C call that holds the GIL throughout: for the names of
    many players, longer than a tick, during which the tick thread could not
    run. In slices of ``JSON_SLICE`` items, the background snapshot thread gives
    the GIL back between slices. Same text as ``json.dumps``.
    """
    if isinstance(value, dict):
        items = list(value.items())
        if any(_big(v) for _, v in items):
            out.append("{")
            for n, (key, v) in enumerate(items):
                # The key as json.dumps writes it (ints, bools and None become strings).
                key_json = json.dumps({key: None}, separators=_COMPACT)[1:-6]
                out.append(("," if n else "") + key_json + ":")
                json_in_slices(v, out)
            out.append("}")
        elif len(items) <= JSON_SLICE:
            out.append(json.dumps(value, separators=_COMPACT))
        else:
            out.append("{" + ",".join(
                json.dumps(dict(items[k : k + JSON_SLICE]), separators=_COMPACT)[1:-1]
                for k in range(0, len(items), JSON_SLICE)) + "}")
    elif isinstance(value, list | tuple):
        if any(_big(v) for v in value):
            out.append("[")
            for n, v in enumerate(value):
                if n:
                    out.append(",")
                json_in_slices(v, out)
            out.append("]")
        elif len(value) <= JSON_SLICE:
            out.append(json.dumps(value, separators=_COMPACT))
        else:
            out.append("[" + ",".join(
                json.dumps(value[k : k + JSON_SLICE], separators=_COMPACT)[1:-1]
                for k in range(0, len(value), JSON_SLICE)) + "]")
    else:
        out.append(json.dumps(value, separators=_COMPACT))


def _big(value: Any) -> bool:
    return isinstance(value, dict | list | tuple) and len(value) > JSON_SLICE


_COMPACT = (",", ":")


def encode_snapshot(tick: int, meta: Any, world_bytes: bytes,
                    state_hash: str | None) -> list[bytes]:
    """The container's chunks (header, meta JSON, world bytes), ready for write_atomic."""
    parts: list[str] = []
    json_in_slices(meta, parts)
    meta_json = "".join(parts).encode()
    digest = bytes.fromhex(state_hash) if state_hash is not None else bytes(HASH_BYTES)
    flags = SNAP_FLAG_HASH if state_hash is not None else 0
    head = SNAP_HEADER.pack(SNAP_MAGIC, tick, len(meta_json), len(world_bytes), flags, digest, 0)
    crc = zlib.crc32(world_bytes, zlib.crc32(meta_json, zlib.crc32(head[:-4])))
    head = head[:-4] + struct.pack("<I", crc)
    return [head, meta_json, world_bytes]


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    tick: int
    meta: Any
    world_bytes: memoryview
    #: Hex state hash recorded with the snapshot, or None.
    state_hash: str | None


def decode_snapshot(data: bytes) -> SnapshotFile:
    """Check a snapshot container and split it; :class:`SnapshotFileError` if not intact."""
    n = SNAP_HEADER.size
    if len(data) < n:
        raise SnapshotFileError(f"truncated ({len(data)} bytes, header alone is {n})")
    magic, tick, meta_len, world_len, flags, digest, crc = SNAP_HEADER.unpack_from(data, 0)
    if magic != SNAP_MAGIC:
        raise SnapshotFileError("not a snapshot file (bad magic bytes)")
    if n + meta_len + world_len != len(data):
        raise SnapshotFileError(f"length mismatch: header says {n + meta_len + world_len} "
                                f"bytes, file has {len(data)}")
    view = memoryview(data)
    if zlib.crc32(view[n:], zlib.crc32(view[: n - 4])) != crc:
        raise SnapshotFileError("checksum mismatch")
    try:
        meta = json.loads(bytes(view[n : n + meta_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotFileError(f"meta is not JSON: {exc}") from exc
    return SnapshotFile(tick, meta, view[n + meta_len :],
                        digest.hex() if flags & SNAP_FLAG_HASH else None)


def utc_stamp() -> str:
    """A UTC time for directory names, e.g. ``20260101T120000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def unique_dir(parent: Path, name: str) -> Path:
    """``parent/name`` created fresh (``name-2``, ``name-3``... if taken)."""
    candidate, k = parent / name, 1
    while True:
        try:
            candidate.mkdir(parents=True, mode=DIR_MODE)
            return candidate
        except FileExistsError:
            k += 1
            candidate = parent / f"{name}-{k}"


def discard(data_dir: str | os.PathLike[str]) -> Path | None:
    """Move a previous run's journal and snapshots aside into ``discarded-<UTC time>/``.

    What ``--fresh`` does: nothing is deleted, the operator removes the
    directory when sure. Returns the directory, or None if there was nothing
    to move. Quarantine and earlier discarded directories stay where they are.
    """
    data_dir = Path(data_dir)
    files = [p for _, p in list_segments(data_dir) + list_snapshots(data_dir)]
    if data_dir.is_dir():
        files += [p for p in data_dir.iterdir() if p.name.endswith(TMP_SUFFIX)]
    if not files:
        return None
    target = unique_dir(data_dir, DISCARDED_PREFIX + utc_stamp())
    for p in files:
        os.replace(p, target / p.name)
    fsync_dir(target)
    fsync_dir(data_dir)
    return target


def hold_lock(path: Path, busy: str) -> int:
    """Take the exclusive ``flock`` of ``path`` (created owner-only) and return its fd; the
    lock lasts until the fd is closed. Raises :class:`JournalError` with ``busy`` when
    another process holds it."""
    from ._errors import JournalError

    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(busy) from None
    return fd
