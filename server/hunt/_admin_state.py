"""What operators changed, kept in a hunt's directory of the data dir.

Each hunt's directory (``<data_dir>/hunts/<hunt_dir_name(name)>/``, beside its
``hunt.json``) may hold:

- ``stopped.json``: the hunt was stopped by an operator (``{"name", "at", "by",
  "reason"}``: ``at`` in Unix seconds, ``by`` who asked). A server that starts
  finds it and does not run the hunt again; on a scale-out node the mark in
  Redis (server/cluster) says the same to every node, the file keeps it for a
  single server started on the same data dir.
- ``admin.jsonl``: one JSON line per change an operator made to the hunt (create,
  stop, start or end of a round), with when, who and what: the audit trail.

Both are written with fsync (the file, then its directory) before the change
is answered, so a restart or a crash after the answer keeps it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ._placement import hunt_dir_name

STOPPED = "stopped.json"
AUDIT = "admin.jsonl"


def hunt_dir(data_dir: str | os.PathLike[str], name: str) -> Path:
    """The directory of hunt ``name`` in ``data_dir`` (its journals and hunt.json)."""
    return Path(data_dir) / "hunts" / hunt_dir_name(name)


def mark_stopped(data_dir: str | os.PathLike[str], name: str, info: dict[str, Any]) -> None:
    """Write ``stopped.json`` for hunt ``name`` (durably: fsync of the file and directory)."""
    from ..durability._files import DIR_MODE, FILE_MODE

    base = hunt_dir(data_dir, name)
    base.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tmp = base / (STOPPED + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps({**info, "name": name}, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, base / STOPPED)
    _fsync_dir(base)


def read_stopped(data_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every hunt of ``data_dir`` an operator stopped: name -> what its ``stopped.json``
    says. An unreadable file counts as stopped (an operator wrote it; never run a hunt
    they stopped because a file was cut short)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(data_dir, "hunts").glob(f"*/{STOPPED}")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            name = info["name"]
        except (OSError, ValueError, KeyError, TypeError):
            name, info = _name_beside(path), {"reason": f"{path} is unreadable"}
        if isinstance(name, str) and name:
            found[name] = info
    return found


def append_audit(data_dir: str | os.PathLike[str], name: str, record: dict[str, Any]) -> None:
    """Append one line to hunt ``name``'s ``admin.jsonl`` and fsync it."""
    from ..durability._files import DIR_MODE, FILE_MODE

    base = hunt_dir(data_dir, name)
    base.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    line = (json.dumps({**record, "hunt": name}, sort_keys=True) + "\n").encode()
    fd = os.open(base / AUDIT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.write(fd, line)  # one write: lines of two writers never interleave (O_APPEND)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_audit(data_dir: str | os.PathLike[str], name: str) -> list[dict[str, Any]]:
    """The lines of hunt ``name``'s ``admin.jsonl``, oldest first (a torn last line is
    left out)."""
    path = hunt_dir(data_dir, name) / AUDIT
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _name_beside(path: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return json.loads((path.parent / "hunt.json").read_text(encoding="utf-8"))["name"]
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
