"""Version-2 (compact) TICKs from the server's frame kernel (server/hunt/_tickframes.py):
byte for byte what ``server.protocol.CompactTickWriter`` writes one connection at a time,
and, decoded by ``TickDecoder``, the same updates as the version-1 TICKs of the same
ticks (positions to within the quantization step docs/protocol.md states)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from server.hunt import _tickframes as tf
from server.hunt._tails import WireIndex, build_tails
from server.protocol import (
    CompactTickWriter,
    NameEntry,
    TickDecoder,
    TickUpdate,
    decode_server_frame,
)
from server.shell import _wsframes as wf
from tickengine import Bots, EngineConfig, HuntParams, World

SIZES = {0: (120.0, 90.0), 1: (300.0, 300.0)}


def run_frames(world, result, slots, versions, keyframe, tails, compact, wire, names, cache):
    """Every observer's frame as the server writes them: tails, then the kernel."""
    n = len(slots)
    hunts = world.players.hunt[slots].astype(np.int32)

    def everyone(h):
        return [NameEntry(s, int(world.players.gen[s]), names[s])
                for s in world.active_slots(h).tolist() if s in names]

    obs_tail = np.zeros(n, np.int32)
    build_tails(world, result, tails, hunts, keyframe, obs_tail, names.get, everyone,
                versions, wire, compact, cache)
    vis = world.visibility(slots, keyframe)
    assert not vis.truncated.any()
    sizes = np.zeros(n, np.int64)
    total = tf.frame_sizes(n, versions, vis.offsets, obs_tail, tails.rows, sizes)
    bound = sizes.copy()
    out = np.full(total + 7, 0xEE, np.uint8)
    offsets = np.zeros(n + 1, np.int64)
    P = world.players
    pl = tf.Players(P.last_seq, P.x.view(np.int64), P.y.view(np.int64), P.score, P.hint)
    written = tf.write_frames(n, result.tick, slots, hunts, versions, keyframe,
                              tf.seen_of(vis), obs_tail, tails.rows, tails.data, pl, compact,
                              out, offsets, sizes)
    # Nothing is written past the bound (a message is written, then moved to its header).
    assert written == offsets[n] <= total and (out[total:] == 0xEE).all()
    assert (sizes <= bound).all() and (sizes == np.diff(offsets)).all()
    frames = [out[offsets[i]:offsets[i + 1]].tobytes() for i in range(n)]
    return frames, vis, obs_tail


def payload(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    return frame[2 + (2 if n == 126 else 8 if n == 127 else 0):]


def close(a: np.ndarray, b: np.ndarray, step: float) -> bool:
    return bool(np.all(np.abs(a.astype(np.float64) - b.astype(np.float64)) <= step))


def same_update(v1: TickUpdate, v2: TickUpdate, width: float, height: float) -> None:
    """A version-2 update says what the version-1 one says, positions to the stated step."""
    assert (v2.tick, v2.ack, v2.x, v2.y, v2.score, v2.hint, v2.keyframe) == \
        (v1.tick, v1.ack, v1.x, v1.y, v1.score, v1.hint, v1.keyframe)
    # Half a step of quantization, plus the float32 of the engine's record.
    sx, sy = width / 131070 + 1e-4 * width, height / 131070 + 1e-4 * height
    a, b = np.sort(v1.visible, order="slot"), np.sort(v2.visible, order="slot")
    for f in ("slot", "gen", "flags"):
        assert (a[f] == b[f]).all(), f
    seen = a["flags"] == 1
    assert close(a["x"][seen], b["x"][seen], sx) and close(a["y"][seen], b["y"][seen], sy)
    # A version-2 keyframe lists no leaves: its NAME entries are the whole hunt.
    assert v1.leaves.tobytes() == v2.leaves.tobytes() or (v1.keyframe and not len(v2.leaves))
    assert (v1.leaderboard is None) == (v2.leaderboard is None)
    if v1.leaderboard is not None:
        assert v1.leaderboard.tobytes() == v2.leaderboard.tobytes()
    d1, d2 = v1.discoveries, v2.discoveries
    for f in ("hunt", "treasure", "slot", "gen", "value", "score"):
        assert (d1[f] == d2[f]).all(), f
    assert close(d1["x"], d2["x"], sx) and close(d1["y"], d2["y"], sy)
    assert sorted(v1.names, key=lambda e: e.slot) == sorted(v2.names, key=lambda e: e.slot)


def test_compact_frames_equal_the_writer_and_say_what_version_1_says() -> None:
    world = World(EngineConfig(max_players=256, max_treasures=200))
    for h, seed in ((0, 1), (1, 2)):
        w, ht = SIZES[h]
        world.add_hunt(HuntParams(name=f"h{h}", width=w, height=ht, treasures=80,
                                  discovery_radius=8.0, view_radius=60.0, seed=seed))
    bots = Bots(world)
    bots.add(0, 30, "hunter", seed=3)
    bots.add(1, 20, "random", seed=4)
    # Some players have no name the server knows: their NAME entries carry none.
    names = {s: f"p{s}" for s in range(256) if s % 7}
    rng = np.random.default_rng(5)
    tails = tf.TailTable(rows=2, nbytes=64)
    compact = tf.compact_state(world.players.capacity, world.hunts.capacity)
    wire = WireIndex(compact)
    cache: dict = {}
    writers: dict[int, CompactTickWriter] = {}
    decoders: dict[int, TickDecoder] = {}
    bytes_v1 = bytes_v2 = 0
    seen = {"keyframe": 0, "diff": 0, "discoveries": 0, "leaves": 0, "names": 0, "board": 0,
            "unnamed": 0}
    for _ in range(40):
        bots.decide()
        live = [int(pid) for pid in bots.ids() if world.is_live(int(pid))
                and not world.players.leaving[int(pid) & 0xFFFFFFFF]]
        if rng.random() < 0.3 and live:
            world.leave(int(rng.choice(live)))
        if rng.random() < 0.3:
            bots.add(int(rng.integers(2)), 2, "random", seed=int(rng.integers(1 << 30)))
        result = world.tick()
        active = world.active_slots()
        for s in set(decoders) - set(active.tolist()):
            del decoders[s], writers[s]
        # Every player observes, in both versions: the same slots twice.
        slots = np.concatenate([active, active]).astype(np.int32)
        versions = np.repeat(np.array([1, 2], np.uint8), len(active))
        keyframe = (rng.random(len(active)) < 0.1).astype(np.uint8)
        keyframe[[s not in decoders for s in active.tolist()]] = 1
        keyframe = np.concatenate([keyframe, keyframe])
        frames, vis, obs_tail = run_frames(world, result, slots, versions, keyframe, tails,
                                           compact, wire, names, cache)
        n = len(active)
        P = world.players
        for i, s in enumerate(active.tolist()):
            h = int(P.hunt[s])
            width, height = SIZES[h]
            f1, f2 = frames[i], frames[n + i]
            kf = bool(keyframe[i])
            if kf:
                writers[s] = CompactTickWriter(wire.index, width, height)
                decoders[s] = TickDecoder(2, width, height)
            t = int(obs_tail[n + i])
            section = tails.data[tails.rows[t, 0]:tails.rows[t, 1]].tobytes()
            expected = writers[s].write(result.tick, int(P.last_seq[s]), float(P.x[s]),
                                        float(P.y[s]), int(P.score[s]), int(P.hint[s]),
                                        vis.of(n + i), section, kf)
            assert payload(f2) == expected, f"tick {result.tick}, slot {s}"
            assert f2 == wf.frame(expected)
            v1 = decode_server_frame(payload(f1))
            v2 = decode_server_frame(payload(f2), decoders[s])
            same_update(v1, v2, width, height)
            bytes_v1 += len(f1)
            bytes_v2 += len(f2)
            seen["keyframe" if kf else "diff"] += 1
            seen["discoveries"] += len(v2.discoveries)
            seen["leaves"] += len(v2.leaves)
            seen["names"] += len(v2.names)
            seen["board"] += v2.leaderboard is not None
            seen["unnamed"] += kf and len(decoders[s].players) > len(v2.names)
    assert all(seen.values()), seen  # every section was exercised
    assert bytes_v2 < bytes_v1 / 2, (bytes_v1, bytes_v2)


def _one_observer(records: np.ndarray, indices: object) -> Callable[[int], bytes]:
    """One version-2 observer (slot 0, index -1) seeing ``records`` (slot k + 1 has index
    ``indices[k]``) in a 100 x 50 hunt: ``write(tick)`` runs the frame kernel for a keyframe
    and returns the frame, checking that nothing was written past its bound."""
    vis = type("Vis", (), {"offsets": np.array([0, len(records)], np.int64),
                           "records": records})
    compact = tf.compact_state(len(indices) + 1, 1)
    compact.index[1:] = indices
    compact.width[0], compact.height[0] = 100.0, 50.0
    tails = tf.TailTable()
    tails.add_raw(b"")
    last_seq, score = np.array([42], np.int64), np.array([7], np.int64)
    x, y, hint = np.array([1.5]), np.array([2.5]), np.array([3], np.int8)
    sizes = np.zeros(1, np.int64)
    one = np.ones(1, np.uint8)
    zero = np.zeros(1, np.int32)
    total = tf.frame_sizes(1, one + 1, vis.offsets, zero, tails.rows, sizes)
    out = np.full(total + 3, 0xEE, np.uint8)
    pl = tf.Players(last_seq, x.view(np.int64), y.view(np.int64), score, hint)

    def write(tick: int) -> bytes:
        written = tf.write_frames(1, tick, zero, zero, one + 1, one, tf.seen_of(vis), zero,
                                  tails.rows, tails.data, pl, compact, out,
                                  np.zeros(2, np.int64), sizes)
        assert (out[total:] == 0xEE).all() and written == sizes[0] <= total
        return out[:written].tobytes()
    return write


@pytest.mark.parametrize(("n_visible", "header"), [(0, 2), (20, 2), (30, 4), (13200, 10)])
def test_the_three_websocket_header_sizes(n_visible: int, header: int) -> None:
    """Synthetic records: a keyframe of 24 + 5 V bytes (6 V from index 64 on) crosses 126 at
    V = 21 and 65536 near V = 10900; the kernel writes each behind its header (moving the
    message it wrote after a 4-byte one) as the reference does."""
    from server.protocol import VISIBLE_RECORD

    rng = np.random.default_rng(n_visible)
    records = np.zeros(n_visible, VISIBLE_RECORD)
    records["slot"] = np.arange(n_visible) + 1  # slot k + 1 has index k (1 or 2 bytes)
    records["flags"] = 1
    records["x"], records["y"] = rng.random(n_visible) * 100, rng.random(n_visible) * 50
    write = _one_observer(records, np.arange(n_visible))
    frame = write(1201)
    index = {k + 1: k for k in range(n_visible)}
    index[0] = n_visible
    expected = CompactTickWriter(index, 100.0, 50.0).write(1201, 42, 1.5, 2.5, 7, 3, records,
                                                           b"", True)
    assert frame == wf.frame(expected) and wf.header_size(len(expected)) == header


def test_indices_survive_dropped_membership_events() -> None:
    """A membership buffer smaller than a tick's joins (docs/rules.md: the excess is dropped
    and counted): every player in play still gets an index and a NAME entry in that tick,
    and a player whose LEAVE was dropped gives its index back."""
    world = World(EngineConfig(max_players=32, max_membership_events=1))
    world.add_hunt(HuntParams(name="small", width=50.0, height=50.0, view_radius=100.0))
    ids = [world.join(0) for _ in range(4)]
    result = world.tick()
    assert result.dropped_events == 3
    compact = tf.compact_state(world.players.capacity, world.hunts.capacity)
    wire = WireIndex(compact)
    wire._synced = True  # as after the first tick of a running server
    tails = tf.TailTable()
    slots = np.array([i & 0xFFFFFFFF for i in ids], np.int32)
    hunts = np.zeros(4, np.int32)
    versions = np.full(4, 2, np.uint8)
    obs_tail = np.zeros(4, np.int32)
    names = {int(s): f"p{s}" for s in slots}
    build_tails(world, result, tails, hunts, np.zeros(4, np.uint8), obs_tail, names.get,
                lambda h: [], versions, wire, compact, {})
    assert sorted(compact.index[slots].tolist()) == [0, 1, 2, 3]
    decoder = TickDecoder(2, 50.0, 50.0)
    section = tails.data[tails.rows[0, 0]:tails.rows[0, 1]].tobytes()
    update = decoder.decode(bytes([0x83, 0x1F | 0x40, 1, 0]) + bytes(16) + b"\x00\x00" + section)
    assert sorted(e.slot for e in update.names) == sorted(slots.tolist())
    for pid in ids[:3]:
        world.leave(pid)
    result = world.tick()
    assert result.dropped_events == 2
    build_tails(world, result, tails, hunts[:1], np.zeros(1, np.uint8), obs_tail[:1],
                names.get, lambda h: [], versions[:1], wire, compact, {})
    assert (compact.index[slots[:3]] == -1).all() and compact.index[slots[3]] >= 0


def test_records_of_every_index_length_in_and_out_of_view() -> None:
    """The kernel writes an in-view record from its per-tick cache in one 8-byte store
    when the index varint and the position fit in 8 bytes, and byte by byte when they
    do not (indices from 2**27 on): both, in and out of view, as the reference does, and
    nothing past the frame's bound."""
    from server.protocol import VISIBLE_RECORD

    indices = [0, 63, 64, 8191, 8192, 2**20, 2**21 - 1, 2**21, 2**27 - 1, 2**27, 2**30]
    n = 2 * len(indices)
    records = np.zeros(n, VISIBLE_RECORD)
    records["slot"] = np.arange(n) % len(indices) + 1
    records["flags"] = np.arange(n) < len(indices)  # each player once in view, once out
    rng = np.random.default_rng(5)
    records["x"] = np.tile(rng.random(len(indices)) * 100, 2)
    records["y"] = np.tile(rng.random(len(indices)) * 50, 2)
    write = _one_observer(records, indices)
    for tick in (1201, 1202):  # the second tick: the cache of the first is stale
        frame = write(tick)
        index = {k + 1: i for k, i in enumerate(indices)}
        index[0] = 2**31 - 1
        expected = CompactTickWriter(index, 100.0, 50.0).write(tick, 42, 1.5, 2.5, 7, 3,
                                                               records, b"", True)
        assert frame == wf.frame(expected)
        records["x"] = 100 - records["x"]
