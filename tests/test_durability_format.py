"""The journal's record bytes and the snapshot container: round trips, and every torn cut.

Pure bytes, no files: encode a record, decode it back; cut or flip it anywhere
and the scanner must stop before it, never hand back an unproven record.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import server.durability as durability
from server.durability._files import SnapshotFileError, decode_snapshot, encode_snapshot
from server.durability._format import (
    HEADER,
    KIND_SEGMENT,
    KIND_TICK,
    TICK_FIXED,
    FormatError,
    decode_segment_header,
    decode_tick,
    encode_segment_header,
    encode_tick,
    scan,
)

I8, F8 = np.dtype("<i8"), np.dtype("<f8")
HASH = "0123456789abcdef0123456789abcdef"


def tick_record(tick: int, n_moves: int = 5, *, hashed: bool = True) -> bytes:
    rng = np.random.default_rng(tick)
    return encode_tick(
        tick,
        hunts=[{"name": "cave", "treasures": 3}] if tick == 2 else [],
        join_ids=np.array([(1 << 32) | 4, 9], I8), join_hunts=np.array([0, 1], np.dtype("<i4")),
        join_names=["ünïcode".encode(), b""], join_tokens=[bytes(range(16)), b"\xff" * 16],
        leaves=np.array([7], I8),
        moves=(rng.integers(0, 1 << 40, n_moves).astype(I8), np.arange(n_moves, dtype=I8),
               rng.uniform(-1, 1, n_moves), rng.uniform(-1, 1, n_moves)),
        state_hash=bytes.fromhex(HASH) if hashed else None,
        events=[{"resume": 5}] if tick == 3 else None,
    )


def test_public_api() -> None:
    assert sorted(durability.__all__) == sorted(
        name for name in vars(durability) if not name.startswith("_"))
    for name in durability.__all__:
        assert getattr(durability, name).__module__.startswith("server.durability")


def test_tick_round_trip() -> None:
    data = tick_record(2) + tick_record(3, n_moves=0, hashed=False)
    sc = scan(data)
    assert sc.problem is None and sc.valid_end == len(data)
    (k1, t1, a1, b1), (k2, t2, a2, b2) = sc.records
    assert (k1, t1, k2, t2) == (KIND_TICK, 2, KIND_TICK, 3)
    r = decode_tick(2, memoryview(data)[a1:b1])
    assert r.hunts == [{"name": "cave", "treasures": 3}]
    assert r.join_ids.tolist() == [(1 << 32) | 4, 9] and r.join_hunts.tolist() == [0, 1]
    assert r.join_names == ["ünïcode", ""]
    assert r.join_tokens == [bytes(range(16)), b"\xff" * 16]
    assert r.leaves.tolist() == [7]
    assert r.state_hash == HASH and r.events == []
    rng = np.random.default_rng(2)
    assert r.move_ids.tolist() == rng.integers(0, 1 << 40, 5).tolist()
    assert r.move_seqs.tolist() == list(range(5))
    assert r.move_dx.tolist() == rng.uniform(-1, 1, 5).tolist()
    for arr in (r.move_ids, r.move_dx, r.join_ids, r.leaves):
        assert arr.flags.writeable and arr.flags.aligned and arr.dtype.isnative
    r3 = decode_tick(3, memoryview(data)[a2:b2])
    assert r3.state_hash is None and r3.events == [{"resume": 5}] and r3.move_ids.shape == (0,)
    assert r.join_users == r3.join_users == ["", ""]


def test_join_users_ride_in_the_events_and_come_out_of_them() -> None:
    def record(users, events):
        return encode_tick(
            4, hunts=[], join_ids=np.array([1, 2], I8), join_hunts=np.zeros(2, np.dtype("<i4")),
            join_names=[b"a", b"b"], join_tokens=[bytes(16)] * 2, leaves=np.zeros(0, I8),
            moves=(np.zeros(0, I8),) * 2 + (np.zeros(0, F8),) * 2, state_hash=None,
            events=events, join_users=users)

    data = record(["u-1", ""], [{"resume": 4}])
    (_, _, a, b), = scan(data).records
    r = decode_tick(4, memoryview(data)[a:b])
    assert r.join_users == ["u-1", ""] and r.events == [{"resume": 4}]
    assert b"join_users" not in record(["", ""], None)  # all anonymous: nothing written
    with pytest.raises(ValueError):
        record(["u-1"], None)
    bad = record(["u-1", ""], [{"join_users": ["u-1"]}])  # a user list that does not fit
    (_, _, a, b), = scan(bad).records
    with pytest.raises(FormatError):
        decode_tick(4, memoryview(bad)[a:b])


def test_moves_are_raw_bytes() -> None:
    """1,000 moves cost 32 bytes each: the arrays are stored as they are, not per move."""
    small, big = tick_record(1, n_moves=0), tick_record(1, n_moves=1000)
    assert len(big) - len(small) == 32 * 1000


def test_segment_header() -> None:
    data = encode_segment_header(41, {"created": "now"})
    (kind, tick, a, b), = scan(data).records
    assert (kind, tick) == (KIND_SEGMENT, 41)
    assert decode_segment_header(data[a:b]) == {"format": 2, "first_tick": 41, "created": "now"}


def test_every_torn_cut_stops_at_the_last_whole_record() -> None:
    first, second = tick_record(1), tick_record(2)
    data = first + second
    for cut in range(len(first), len(data)):
        sc = scan(data[:cut])
        assert [r[1] for r in sc.records] == [1], cut
        assert sc.valid_end == len(first)
        assert (sc.problem is None) == (cut == len(first))


def test_every_flipped_byte_is_caught() -> None:
    first, second = tick_record(1), tick_record(2)
    data = bytearray(first + second)
    for pos in range(len(first), len(data)):
        for bit in (0, 7):
            data[pos] ^= 1 << bit
            sc = scan(data)
            data[pos] ^= 1 << bit
            assert [r[1] for r in sc.records] == [1], (pos, bit)
            assert sc.problem is not None and sc.valid_end == len(first)


def test_a_checksummed_record_that_does_not_add_up_is_refused() -> None:
    fixed = TICK_FIXED.pack(3, 0, 0, 0, 0, 0, 0, bytes(16))  # 3 moves announced, none present
    head = HEADER.pack(b"THJ1", len(fixed), 1, KIND_TICK, 0)
    crc = zlib.crc32(fixed, zlib.crc32(head[4:20]))
    data = HEADER.pack(b"THJ1", len(fixed), 1, KIND_TICK, crc) + fixed
    (_, _, a, b), = scan(data).records
    with pytest.raises(FormatError, match="add up"):
        decode_tick(1, data[a:b])


def test_snapshot_container() -> None:
    chunks = encode_snapshot(40, {"names": {"1": "ä"}}, b"world-bytes", HASH)
    data = b"".join(chunks)
    snap = decode_snapshot(data)
    assert (snap.tick, snap.meta, bytes(snap.world_bytes), snap.state_hash) == (
        40, {"names": {"1": "ä"}}, b"world-bytes", HASH)
    assert decode_snapshot(b"".join(encode_snapshot(3, {}, b"w", None))).state_hash is None
    for cut in (0, 10, len(data) - 1):
        with pytest.raises(SnapshotFileError):
            decode_snapshot(data[:cut])
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(SnapshotFileError):
            decode_snapshot(bytes(bad))
    assert data[:8] == b"THJSNAP1"


def test_meta_json_in_slices_is_exactly_json_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot writer encodes big metas in slices (to give the GIL back): same text."""
    import json
    import random

    from server.durability import _files

    monkeypatch.setattr(_files, "JSON_SLICE", 3)
    rng = random.Random(1)

    def value(depth: int):
        k = rng.random()
        if depth > 3 or k < 0.3:
            return rng.choice([1, 2.5, "é", None, True, [], {}, "a\"b"])
        if k < 0.65:
            return [value(depth + 1) for _ in range(rng.randint(0, 8))]
        keys = ["a", "b", 3, True, None, 1.5, *(f"x{i}" for i in range(40))]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 8))}

    for _ in range(2000):
        v = value(0)
        out: list[str] = []
        _files.json_in_slices(v, out)
        assert "".join(out) == json.dumps(v, separators=(",", ":"))
