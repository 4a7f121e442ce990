"""State hash, snapshot and restore of a whole World.

A snapshot is ``MAGIC | blake2b-128 digest of the rest | .npz payload``: the
arrays that make up the game state (``STATE_COLUMNS`` of each table, cut to the
rows in use) and a JSON description of capacities and hunts. Scratch buffers
(grids, event buffers) are rebuilt, not stored. Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from ._config import EngineConfig, HuntParams
from ._errors import SnapshotError, TickEngineError

if TYPE_CHECKING:
    from ._world import World

MAGIC = b"THSNAP01"
FORMAT_VERSION = 1
_DIGEST = 16


def _state_arrays(world: World) -> dict[str, np.ndarray]:
    """Every array that decides the future, cut to the rows in use, in a fixed order."""
    P, T, H = world.players, world.treasures, world.hunts
    out: dict[str, np.ndarray] = {}
    n = P.high_water
    for name in P.STATE_COLUMNS:
        out[f"players.{name}"] = getattr(P, name)[:n]
    out["players.free"] = P.free[: int(P.free_top[0])]
    for name in T.STATE_COLUMNS:
        out[f"treasures.{name}"] = getattr(T, name)[: T.used]
    for name in H.STATE_COLUMNS:
        out[f"hunts.{name}"] = getattr(H, name)[: H.count]
    if world.has_rounds:
        # Only then: a world without round hunts hashes and snapshots as it always did.
        out["hunts.round"] = H.round[: H.count]
    out["ops.kind"] = world._op_kind[: world._n_ops]
    out["ops.slot"] = world._op_slot[: world._n_ops]
    return out


def _scalars(world: World) -> dict[str, int]:
    return {
        "tick": world._tick,
        "high_water": world.players.high_water,
        "treasures_used": world.treasures.used,
        "hunts": world.hunts.count,
        "ops": world._n_ops,
    }


def state_hash(world: World) -> str:
    """Hex blake2b-128 digest of the scalars and every state array (bytes and dtype)."""
    h = hashlib.blake2b(digest_size=_DIGEST)
    h.update(json.dumps(_scalars(world), sort_keys=True).encode())
    for name, arr in _state_arrays(world).items():
        h.update(name.encode())
        h.update(arr.dtype.str.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def snapshot(world: World) -> bytes:
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "engine": world.config.to_dict(),
        "hunt_params": [p.to_dict() for p in world.hunt_params],
        **_scalars(world),
    }
    buf = io.BytesIO()
    arrays = _state_arrays(world)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    return MAGIC + hashlib.blake2b(payload, digest_size=_DIGEST).digest() + payload


def restore(cls: type[World], data: bytes) -> World:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotError(f"a snapshot is bytes, got {type(data).__name__}")
    data = bytes(data)
    head = len(MAGIC) + _DIGEST
    if len(data) < head or data[: len(MAGIC)] != MAGIC:
        raise SnapshotError("not a tickengine snapshot (bad magic bytes)")
    payload = data[head:]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != data[len(MAGIC) : head]:
        raise SnapshotError("snapshot is corrupt (checksum mismatch)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"snapshot payload unreadable: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format {meta.get('format')} is not {FORMAT_VERSION}")
    try:
        config = EngineConfig.from_dict(meta["engine"])
        hunts = [HuntParams.from_dict(p) for p in meta["hunt_params"]]
        world = cls(config, hunts)
    except (TickEngineError, KeyError, TypeError) as exc:
        raise SnapshotError(f"snapshot describes an invalid world: {exc}") from exc
    P, T, H = world.players, world.treasures, world.hunts
    P.high_water = int(meta["high_water"])
    T.used = int(meta["treasures_used"])
    world._tick = int(meta["tick"])
    world._n_ops = int(meta["ops"])
    try:
        for name, arr in arrays.items():
            table, col = name.split(".", 1)
            if table == "ops":
                target = world._op_kind if col == "kind" else world._op_slot
            elif name == "players.free":
                target = P.free
                P.free_top[0] = arr.shape[0]
            else:
                target = getattr({"players": P, "treasures": T, "hunts": H}[table], col)
            target[: arr.shape[0]] = arr
    except (KeyError, AttributeError, ValueError) as exc:
        raise SnapshotError(f"snapshot array {name!r} does not fit this engine: {exc}") from exc
    world._rebuild_grids()
    return world
