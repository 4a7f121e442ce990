"""server.hunt._tickframes: the kernel that writes every client's TICK frame in one pass writes,
byte for byte, what ``server.protocol.TickMessageWriter`` writes one message at a time,
behind the 2-, 4- or 10-byte WebSocket header of ``server.shell._wsframes``, each frame ending
with the tail the server's own selection (server/hunt/_tails.py) picked for that observer."""

from __future__ import annotations

import numpy as np
import pytest

from server.hunt import _tickframes as tf
from server.hunt._tails import build_tails
from server.protocol import (
    DISCOVERY_RECORD,
    LEADER_RECORD,
    LEAVE_RECORD,
    VISIBLE_RECORD,
    NameEntry,
    TickMessageWriter,
    TickUpdate,
    decode_server_frame,
    encode_hunt_events,
)
from server.shell import _wsframes as wf
from tickengine import LEFT, Bots, EngineConfig, HuntParams, World


def kernel_frames(tick, slots, keyframe, vis, tails, obs_tail, players) -> list[bytes]:
    """Every observer's frame as the server's kernel writes them."""
    n = len(slots)
    sizes = np.zeros(n, np.int64)
    version = np.ones(n, np.uint8)
    total = tf.frame_sizes(n, version, vis.offsets, obs_tail, tails.rows, sizes)
    bound = sizes.copy()
    out = np.full(total + 7, 0xEE, np.uint8)  # the guard bytes must stay untouched
    offsets = np.zeros(n + 1, np.int64)
    P = players
    pl = tf.Players(P.last_seq, P.x.view(np.int64), P.y.view(np.int64), P.score, P.hint)
    written = tf.write_frames(n, tick, slots, np.zeros(n, np.int32), version, keyframe,
                              tf.seen_of(vis), obs_tail, tails.rows, tails.data, pl,
                              tf.compact_state(1, 1), out, offsets, sizes)
    assert written == total == offsets[n] and (out[total:] == 0xEE).all()
    frames = [out[offsets[i]:offsets[i + 1]].tobytes() for i in range(n)]
    assert [len(f) for f in frames] == sizes.tolist() == bound.tolist()
    return frames


def writer_frame(writer, tick, slot, keyframe, records, events, players) -> bytes:
    """The same frame from the reference writer, behind its WebSocket header."""
    P = players
    msg = bytes(writer.write(tick, int(P.last_seq[slot]), float(P.x[slot]), float(P.y[slot]),
                             int(P.score[slot]), int(P.hint[slot]), records, events,
                             bool(keyframe)))
    return wf.frame_header(len(msg)) + msg


def expected_events(world, result, names, hunt, keyframe):
    """What docs/protocol.md says ends one observer's TICK: its hunt's discoveries and
    leaves; the leaderboard when it changed, and always in a keyframe; the names of who
    joined, or in a keyframe of every player of the hunt."""
    mem, disc = result.memberships, result.discoveries
    d = disc[disc["hunt"] == hunt]
    left = mem[(mem["hunt"] == hunt) & (mem["kind"] == LEFT)]
    if keyframe:
        who = [NameEntry(int(s), int(world.players.gen[s]), names[int(s)])
               for s in world.active_slots(hunt)]
    else:
        who = [NameEntry(int(r["slot"]), int(r["gen"]), names[int(r["slot"])])
               for r in mem[(mem["hunt"] == hunt) & (mem["kind"] != LEFT)]]
    changed = hunt in set(result.leaderboard_changed.tolist())
    board = world.leaderboard(hunt) if keyframe or changed else None
    return encode_hunt_events(d, board, left, who)


def server_tails(world, result, names, observer_hunts, keyframe):
    """The server's own tail selection (server/hunt/_tails.py): the table, each row."""
    tails = tf.TailTable(rows=2, nbytes=64)  # small: the table must grow
    obs_tail = np.full(len(keyframe), -1, np.int32)

    def everyone(h):
        return [NameEntry(int(s), int(world.players.gen[s]), names[int(s)])
                for s in world.active_slots(h)]

    used = build_tails(world, result, tails, np.asarray(observer_hunts, np.int32), keyframe,
                       obs_tail, names.get, everyone)
    assert used == tails.used and (obs_tail >= 0).all()
    # One diff tail per hunt, plus a keyframe tail only for hunts with a keyframe observer.
    kf_hunts = {h for h, k in zip(observer_hunts, keyframe, strict=True) if k}
    assert tails.count == world.hunts.count + len(kf_hunts)
    return tails, obs_tail


def test_kernel_frames_equal_the_writer_tick_by_tick() -> None:
    world = World(EngineConfig(max_players=256, max_treasures=200))
    for name, seed in (("north", 1), ("south", 2)):
        world.add_hunt(HuntParams(name=name, width=120.0, height=120.0, treasures=60,
                                  discovery_radius=6.0, view_radius=50.0, seed=seed))
    bots = Bots(world)
    bots.add(0, 40, "hunter", seed=3)
    bots.add(1, 30, "random", seed=4)
    names = {s: f"p{s}" for s in range(256)}
    rng = np.random.default_rng(5)
    writer = TickMessageWriter(64)  # small: it must grow
    seen = {"keyframe": 0, "diff": 0, "discoveries": 0, "leaves": 0, "names": 0, "board": 0}
    for _ in range(30):
        bots.decide()
        live = [int(pid) for pid in bots.ids() if world.is_live(int(pid))
                and not world.players.leaving[int(pid) & 0xFFFFFFFF]]
        if rng.random() < 0.3 and live:
            world.leave(int(rng.choice(live)))
        result = world.tick()
        slots = np.sort(rng.choice(world.active_slots(), size=25, replace=False)).astype(np.int32)
        keyframe = (rng.random(len(slots)) < 0.3).astype(np.uint8)
        vis = world.visibility(slots, keyframe)
        assert not vis.truncated.any()
        observer_hunts = [int(world.players.hunt[s]) for s in slots]
        tails, obs_tail = server_tails(world, result, names, observer_hunts, keyframe)
        frames = kernel_frames(result.tick, slots, keyframe, vis, tails, obs_tail,
                               world.players)
        for i, s in enumerate(slots):
            ev = expected_events(world, result, names, observer_hunts[i], bool(keyframe[i]))
            expected = writer_frame(writer, result.tick, int(s), keyframe[i], vis.of(i), ev,
                                    world.players)
            assert frames[i] == expected, f"tick {result.tick}, observer {i} (slot {s})"
            update = decode_server_frame(frames[i][wf.header_size(len(expected) - 2):])
            assert isinstance(update, TickUpdate) and update.tick == result.tick
            seen["keyframe" if keyframe[i] else "diff"] += 1
            seen["discoveries"] += len(update.discoveries)
            seen["leaves"] += len(update.leaves)
            seen["names"] += len(update.names)
            seen["board"] += update.leaderboard is not None
    assert all(seen.values()), seen  # every section was exercised


@pytest.mark.parametrize(("n_visible", "header"), [(0, 2), (3, 2), (4, 4), (4096, 10)])
def test_the_three_websocket_header_sizes(n_visible: int, header: int) -> None:
    """Synthetic buffers: 64 + 16 V bytes crosses 126 at V = 4 and 65536 at V = 4092."""

    class Players:
        last_seq = np.array([0, 42, 7], np.int64)
        x = np.array([0.0, 512.5, 1.25])
        y = np.array([0.0, 59.25, -0.0])
        score = np.array([0, -3, 2**62], np.int64)
        hint = np.array([0, 2, 15], np.int8)

    rng = np.random.default_rng(n_visible)
    records = np.zeros(2 * n_visible, VISIBLE_RECORD)
    for field in ("slot", "gen", "flags"):
        records[field] = rng.integers(0, 2**16, len(records))
    records["x"], records["y"] = rng.random(len(records)), rng.random(len(records))

    class Vis:
        offsets = np.array([0, n_visible, 2 * n_visible], np.int64)

    Vis.records = records
    tails = tf.TailTable()
    disc = np.zeros(1, DISCOVERY_RECORD)
    disc["value"] = 5
    leaves = np.zeros(2, LEAVE_RECORD)
    leaves["slot"] = [3, 4]
    empty = encode_hunt_events()
    full = encode_hunt_events(disc, np.zeros(3, LEADER_RECORD), leaves, [(9, 1, "nine")])
    tails.add(empty)
    tails.add(full)
    slots = np.array([1, 2], np.int32)
    keyframe = np.array([0, 1], np.uint8)
    frames = kernel_frames(1201, slots, keyframe, Vis, tails, np.array([0, 1], np.int32),
                           Players)
    writer = TickMessageWriter()
    for i, events in enumerate((empty, full)):
        records_i = records[Vis.offsets[i]:Vis.offsets[i + 1]]
        assert frames[i] == writer_frame(writer, 1201, int(slots[i]), keyframe[i], records_i,
                                         events, Players)
    assert frames[0][:1] == b"\x82" and wf.header_size(len(frames[0]) - header) == header
