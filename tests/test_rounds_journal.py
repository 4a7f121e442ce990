"""Round requests in the journal: recovery and replay apply them where the live run did.

A live run of a round hunt journals operators' "start" and "end" requests as tick
events; recovering from any snapshot (the oldest one replays every request)
reaches the live run's state hash, round clock and round results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.durability import Journal, recover
from tickengine import EngineConfig, HuntParams, RoundPlan, RoundSpec, World

PLAN = RoundPlan(count=0, lobby_ticks=30, running_ticks=400, results_ticks=10,
                 round=(RoundSpec(treasures=20, respawn=False, end="all_found"),))


def make_world() -> World:
    return World(EngineConfig(max_players=64, max_treasures=64),
                 [HuntParams(name="cup", width=200, height=200, treasures=30, seed=5,
                             discovery_radius=8, rounds=PLAN)])


def live(data_dir: Path, ticks: int, requests: dict[int, str]) -> tuple[World, dict, list]:
    world = make_world()
    rng = np.random.default_rng(1)
    journal = Journal(data_dir, snapshot_every=25, hash_every=1, keep_snapshots=10,
                      background=False)
    journal.start(world, {})
    hashes, results, players = {}, [], []
    for t in range(1, ticks + 1):
        joins = []
        if t % 5 == 1 and len(players) < 20:
            pid = world.join(0)
            players.append(pid)
            joins.append((pid, 0, f"p{pid & 0xFFFF}", bytes(16)))
        events = []
        if t in requests:
            world.request_round(0, requests[t])
            events.append({"round": requests[t], "hunt": 0})
        ids = np.array(players, np.int64)
        moves = (ids, np.full(len(ids), t, np.int64), rng.uniform(-1, 1, len(ids)),
                 rng.uniform(-1, 1, len(ids)))
        world.moves.put_many(*moves)
        result = world.tick()
        results += [tuple(r) for r in result.results.tolist()]
        journal.append_tick(t, joins=joins, moves=moves, state_hash=world.state_hash(),
                            events=events)
        journal.maybe_snapshot(world, {})
        hashes[t] = world.state_hash()
    journal.close()
    return world, hashes, results


def test_recovery_applies_the_journaled_round_requests(tmp_path: Path) -> None:
    # Start round 1 early (tick 10, in its lobby), end round 1 at tick 60; an "end" refused
    # by the engine is never journaled, so only accepted requests appear.
    world, hashes, results = live(tmp_path, 140, {10: "start", 60: "end"})
    assert world.round_state(0).number >= 2
    assert results and results[0][1] == 1, "round 1 ended with results"
    latest = recover(tmp_path)
    assert latest.tick == 140 and latest.state_hash == hashes[140]
    assert latest.world.round_state(0) == world.round_state(0)
    replayed: list = []
    oldest = recover(tmp_path, earliest=True, on_result=lambda r: replayed.extend(
        tuple(x) for x in r.results.tolist()))
    assert oldest.report.snapshot_tick == 0 and oldest.report.hashes_verified == 140
    assert oldest.state_hash == hashes[140]
    assert replayed == results, "replay reproduces every round's results"


def test_replay_reports_every_round_as_the_live_run_ended_it(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    _, hashes, results = live(tmp_path, 140, {10: "start", 60: "end"})
    out = tmp_path / "replay.json"
    exe = Path(sys.executable).parent / "treasure-hunt"
    proc = subprocess.run([str(exe), "replay", str(tmp_path), "--verify", "--quiet",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "160", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "Rounds ended in the replayed ticks: hunt 'cup'" in proc.stdout
    report = json.loads(out.read_text())
    assert report["state_hash"] == hashes[140]
    rounds = report["hunts"][0]["rounds"]
    live_rows = [(r[1], r[2], r[3] | r[4] << 32, r[6]) for r in results]
    replayed = [(r["round"], s["rank"], s["player_id"], s["score"])
                for r in rounds for s in r["standings"]]
    assert replayed == live_rows
    assert rounds[0]["key"] == "cup#1" and rounds[0]["standings"][0]["name"].startswith("p")
