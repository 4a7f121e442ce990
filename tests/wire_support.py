"""From the wire back to the rules: what clients decoded, checked against the reference.

Clients (``server.client``, the Python client) record every TICK they decode and
the view they keep after applying it. :func:`check_against_reference` then reads
the server's data dir (its base snapshot at tick 0 for the hunts and capacities,
its journal for every tick's joins, leaves and moves, in the order the server
gave them to the engine), runs the pure-Python reference on those inputs, and
compares each recorded TICK with the reference's state after that tick.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio

from server.client import HuntClient
from server.durability._files import decode_snapshot, list_segments, list_snapshots
from server.durability._format import KIND_TICK, TickRecord, decode_tick, scan
from server.protocol import TickUpdate
from tickengine import HuntParams, World
from tickengine._dtypes import LEFT
from tickengine.reference import ReferenceWorld

#: Bound on the wait for one TICK (20 per second are due).
TICK_TIMEOUT = 10.0


@dataclass
class Received:
    """One TICK as a client decoded it, and the client's view after applying it."""

    player_id: int
    update: TickUpdate
    #: ``HuntClient.others`` after the TICK: ``{slot: (gen & 0xFFFF, x, y)}``.
    others: dict[int, tuple[int, float, float]]
    #: The hunt the client asked for (each hunt has a World and a journal of its own).
    hunt: str = ""
    #: The connection's protocol version, and the hunt's size (version 2 quantizes to it).
    version: int = 1
    size: tuple[float, float] = (1.0, 1.0)


@dataclass
class Log:
    received: list[Received] = field(default_factory=list)

    def record(self, hunt: HuntClient, update: TickUpdate) -> None:
        name = hunt._hello.hunt if hunt._hello is not None else ""
        w = hunt.welcome
        self.received.append(Received(hunt.player_id, update, dict(hunt.others), name,
                                      w.version, (w.width, w.height)))


async def steer(hunt: HuntClient, rng: random.Random, log: Log, until_tick: int) -> None:
    """Take every TICK up to ``until_tick``, moving now and then (bursts of two moves too)."""
    while hunt.tick < until_tick:
        with trio.fail_after(TICK_TIMEOUT):
            update = await hunt.next_tick()
        log.record(hunt, update)
        roll = rng.random()
        if roll < 0.1:
            await hunt.move(0.0, 0.0)
        elif roll < 0.5:
            for _ in range(1 if roll < 0.4 else 2):  # the second of a burst wins
                await hunt.move(rng.uniform(-1.3, 1.3), rng.uniform(-1.3, 1.3))


def read_journal(data_dir: Path) -> dict[int, TickRecord]:
    """Every proven tick record of the data dir's segments, by tick."""
    records: dict[int, TickRecord] = {}
    for _, path in list_segments(data_dir):
        data = path.read_bytes()
        for kind, tick, start, stop in scan(data).records:
            if kind == KIND_TICK:
                records[tick] = decode_tick(tick, memoryview(data)[start:stop])
    return records


def _f32(v: float) -> float:
    return float(np.float32(v))


def _near(got: list[tuple], want: list[tuple], step: tuple[float, float]) -> bool:
    """Rows ``(..., x, y)`` equal but for positions, which may differ by ``step`` (x, y)."""
    return len(got) == len(want) and all(
        g[:-2] == w[:-2] and abs(g[-2] - w[-2]) <= step[0] and abs(g[-1] - w[-1]) <= step[1]
        for g, w in zip(got, want, strict=True))


def check_against_reference(data_dir: Path, log: Log) -> dict[str, int]:
    """Replay the journal on the reference and compare every TICK recorded in ``log``.

    ``data_dir``: a server's data dir (each hunt's journal is checked against the TICKs
    of that hunt's clients) or one journal's directory. Returns counts of what was
    compared (ticks, visibility records, discoveries, leaderboards, leaves), so that a
    test can check the comparison was not empty.
    """
    from server.hunt._placement import hunt_journals

    journals = hunt_journals(data_dir)
    if not journals:
        return _check_journal(data_dir, log.received)
    seen: dict[str, int] = {}
    for name, path in journals.items():
        received = [r for r in log.received if r.hunt == name]
        if received:
            for k, v in _check_journal(path, received).items():
                seen[k] = seen.get(k, 0) + v
    return seen


def _check_journal(data_dir: Path, received: list[Received]) -> dict[str, int]:
    snapshots = list_snapshots(data_dir)
    assert snapshots and snapshots[0][0] == 0, "the base snapshot (tick 0) is kept"
    base = World.restore(decode_snapshot(snapshots[0][1].read_bytes()).world_bytes)
    assert base.players.high_water == 0, "nobody joined before tick 1"
    cfg = base.config
    ref = ReferenceWorld(max_players=cfg.max_players, max_treasures=cfg.max_treasures,
                         max_hunts=cfg.max_hunts, max_discoveries=cfg.max_discoveries,
                         max_membership_events=cfg.max_membership_events)
    for params in base.hunt_params:
        ref.add_hunt(params)
    journal = read_journal(data_dir)
    by_tick: dict[int, list[Received]] = {}
    for r in received:
        by_tick.setdefault(r.update.tick, []).append(r)
    last = max(by_tick)
    seen = {"ticks": 0, "visible": 0, "discoveries": 0, "leaderboards": 0, "leaves": 0,
            "keyframes": 0, "version_1": 0, "version_2": 0}
    for t in range(1, last + 1):
        assert t in journal, f"tick {t} was sent to a client but is not in the journal"
        rec = journal[t]
        for params in rec.hunts:
            ref.add_hunt(HuntParams.from_dict(params))
        for pid, hunt in zip(rec.join_ids.tolist(), rec.join_hunts.tolist(), strict=True):
            assert ref.join(hunt) == pid, f"tick {t}: the reference gave another id"
        for pid in rec.leaves.tolist():
            ref.leave(pid)
        for pid, seq, dx, dy in zip(rec.move_ids.tolist(), rec.move_seqs.tolist(),
                                    rec.move_dx.tolist(), rec.move_dy.tolist(), strict=True):
            ref.put_move(pid, seq, dx, dy)
        want = ref.tick()
        for r in by_tick.get(t, ()):
            _compare(ref, want, r, seen)
    return seen


def _compare(ref: ReferenceWorld, want, r: Received, seen: dict[str, int]) -> None:
    u = r.update
    t = u.tick
    p = ref.player(r.player_id)
    who = f"tick {t} player {r.player_id & 0xFFFFFFFF}"
    assert p.active, f"{who}: sent a TICK but not in play"
    assert (u.x, u.y, u.score, u.hint, u.ack) == (p.x, p.y, p.score, p.hint, p.last_seq), who
    # Version 1 sends the engine's float32 positions; version 2 quantizes them to the hunt's
    # size: half a step of width / 65535 (docs/protocol.md), and the float32 of both ends.
    step = (0.0, 0.0) if r.version == 1 else tuple(d / 131070 + d * 2e-7 for d in r.size)
    got = sorted((int(v["slot"]), int(v["gen"]), int(v["flags"]), float(v["x"]), float(v["y"]))
                 for v in u.visible)
    truth = ref.visibility(p.slot, keyframe=u.keyframe)
    want_vis = [(s, g, f, _f32(x), _f32(y)) if f & 1 else (s, g, f, 0.0, 0.0)
                for s, g, f, x, y in truth] if r.version == 2 else [
        (s, g, f, _f32(x), _f32(y)) for s, g, f, x, y in truth]
    assert _near(got, want_vis, step), f"{who} visible"
    in_view = {s: (g, _f32(x), _f32(y)) for s, g, _, x, y in ref.visibility(p.slot, True)}
    assert sorted(r.others) == sorted(in_view) and _near(
        [(s, *r.others[s]) for s in sorted(r.others)],
        [(s, *in_view[s]) for s in sorted(in_view)], step), \
        f"{who}: the client's view is not who is in view"
    discoveries = [tuple(d) for d in want.discoveries if d[0] == p.hunt]
    decoded = [(int(d["hunt"]), int(d["treasure"]), int(d["slot"]), int(d["gen"]),
                int(d["value"]), int(d["score"]), float(d["x"]), float(d["y"]))
               for d in u.discoveries]
    assert _near(decoded, discoveries, step), f"{who} discoveries"
    leaves = [(m[2], m[3]) for m in want.memberships if m[0] == LEFT and m[1] == p.hunt]
    if r.version == 2 and u.keyframe:
        leaves = []  # a version-2 keyframe names everyone instead
    assert [(int(e["slot"]), int(e["gen"])) for e in u.leaves] == leaves, f"{who} leaves"
    board_due = u.keyframe or p.hunt in want.leaderboard_changed
    assert (u.leaderboard is not None) == board_due, f"{who} leaderboard presence"
    if u.leaderboard is not None:
        rows = [(int(b["slot"]), int(b["gen"]), int(b["score"])) for b in u.leaderboard]
        assert rows == ref.leaderboard(p.hunt), f"{who} leaderboard"
        seen["leaderboards"] += 1
    seen["ticks"] += 1
    seen["visible"] += len(got)
    seen["discoveries"] += len(discoveries)
    seen["leaves"] += len(leaves)
    seen["keyframes"] += u.keyframe
    seen[f"version_{r.version}"] += 1
