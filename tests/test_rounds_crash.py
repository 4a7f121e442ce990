"""A round-based hunt's server killed with SIGKILL mid-round: it recovers into the same round,
and every round's results equal those of an uninterrupted run and of ``treasure-hunt replay``.

A real ``treasure-hunt serve`` process on a data dir, real clients over WebSockets
(``server.client``). Round 1 plays to its end; during round 2's running phase the
server is killed. After the restart the clients resume: the ROUND after their WELCOME
is round 2's running phase with the same first tick (the same round, not a new one).
Round 2 then ends with the recovered server. The results files of both rounds must
equal (rank, player, score, found, last discovery) what a fresh World computes from
the same journal in one uninterrupted run from tick 0, what ``treasure-hunt replay``
reports, and the RESULTS the clients were sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_crash_recovery import _start, _stop
from wire_support import read_journal

from server._config import load_serve_config
from server.client import ConnectionLost, HuntClient, connect
from server.durability import apply_record
from server.hunt._placement import hunt_world_config
from server.protocol import PHASE_RESULTS, PHASE_RUNNING, Results, Round
from tickengine import RESULT_DTYPE, World

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "server"]
CONFIG = """
[server]
resume_grace = 120.0
[[hunt]]
name = "cup"
width = 80.0
height = 80.0
treasures = 40
discovery_radius = 6.0
hint_radius = 40.0
player_speed = 60.0
seed = 17
[hunt.rounds]
count = 0
lobby_ticks = 20
running_ticks = 120
results_ticks = 20
respawn = false
"""
CLIENTS = 4


class Player:
    def __init__(self, name: str) -> None:
        self.name = name
        self.token: bytes | None = None
        self.k = 0
        self.rounds: list[Round] = []
        self.results: dict[int, Results] = {}

    async def play(self, url: str, until: object) -> None:
        """Join or resume, steer, record ROUND and RESULTS, until ``until(self, client)``."""
        async with connect(url, self.name, "cup", resume_token=self.token) as c:
            self.token = c.resume_token
            last = 0
            while not until(self, c):
                self.k += 1
                await c.move(1.0 if self.k % 50 < 25 else -1.0, 1.0 if self.k % 34 < 17 else -1.0)
                await c.next_tick()
                events = list(c.round_events)
                for e in events[last:]:
                    if isinstance(e, Round):
                        self.rounds.append(e)
                    else:
                        self.results[e.round] = e
                last = len(events)


def running(number: int, ticks: int):
    def done(p: Player, c: HuntClient) -> bool:
        r = c.round
        return (r is not None and r.round == number and r.phase == PHASE_RUNNING
                and c.tick >= r.phase_start + ticks)
    return done


def uninterrupted(config: Path, hunt_dir: Path) -> dict[int, list[tuple]]:
    """Every round's standings from a fresh World fed the whole journal from tick 1."""
    serve = load_serve_config(config)
    world_config = hunt_world_config(serve.world.engine, serve.world.hunts[0])
    world = World(world_config.engine, world_config.hunts)
    records = read_journal(hunt_dir)
    ended: dict[int, list[tuple]] = {}
    for t in range(1, max(records) + 1):
        result = apply_record(world, records[t])
        for r in result.results.tolist():
            row = dict(zip(RESULT_DTYPE.names, r, strict=True))
            ended.setdefault(row["round"], []).append(
                (row["rank"], row["gen"] << 32 | row["slot"], row["score"], row["found"],
                 None if row["last_tick"] < 0 else row["last_tick"]))
    return ended


def test_killed_mid_round_recovers_the_same_round_and_the_same_results(tmp_path: Path) -> None:
    config = tmp_path / "cup.toml"
    config.write_text(CONFIG)
    data_dir = tmp_path / "data"
    players = [Player(f"p{i}") for i in range(CLIENTS)]

    async def until_killed(url: str, proc: subprocess.Popen) -> None:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for p in players[1:]:
                    nursery.start_soon(p.play, url, lambda p, c: False)
                # Round 1 ends; 30 ticks into round 2's running phase the server dies.
                await players[0].play(url, running(2, 30))
                os.kill(proc.pid, signal.SIGKILL)
                nursery.cancel_scope.deadline = trio.current_time() + 10

    async def after_restart(url: str) -> None:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for p in players:
                    nursery.start_soon(p.play, url, running(3, 5))

    proc, url, _ = _start(data_dir, config)
    try:
        try:
            trio.run(until_killed, url, proc)
        except* (ConnectionLost, OSError):
            pass
    finally:
        _stop(proc, signal.SIGKILL)
    told = players[0].rounds[-1]
    assert (told.round, told.phase) == (2, PHASE_RUNNING) and 1 in players[0].results
    killed_at = {p.name: len(p.rounds) for p in players}

    proc, url, recovered = _start(data_dir, config)
    try:
        assert recovered["tick"] > told.phase_start
        trio.run(after_restart, url)
    finally:
        assert _stop(proc, signal.SIGTERM) == 0
    for p in players:
        # The first ROUND after the resume: the same round 2, running since the same tick.
        again = p.rounds[killed_at[p.name]]
        assert (again.round, again.phase, again.phase_start) == (2, PHASE_RUNNING,
                                                                told.phase_start)
        assert [(r.round, r.phase) for r in p.rounds[killed_at[p.name] + 1:]][:3] == [
            (2, PHASE_RESULTS), (3, 1), (3, PHASE_RUNNING)]
        assert set(p.results) == {1, 2}

    hunt_dir = next(d for d in (data_dir / "hunts").iterdir() if d.is_dir())
    files = {int(f.stem.split("-")[1]): json.loads(f.read_text())
             for f in (hunt_dir / "rounds").glob("round-*.json")}
    assert set(files) == {1, 2}
    from_files = {n: [(s["rank"], s["player_id"], s["score"], s["found"], s["last_tick"])
                      for s in rec["standings"]] for n, rec in files.items()}
    journal_dir = max((d for d in hunt_dir.iterdir() if d.name.isdigit()),
                      key=lambda d: int(d.name))
    assert uninterrupted(config, journal_dir) == from_files
    out = tmp_path / "replay.json"
    subprocess.run([*CLI, "replay", str(data_dir), "--verify", "--quiet", "--json", str(out)],
                   check=True, timeout=180, stdout=subprocess.DEVNULL)
    replayed = json.loads(out.read_text())["hunts"][0]["rounds"]
    assert {r["round"]: [(s["rank"], s["player_id"], s["score"], s["found"], s["last_tick"])
                         for s in r["standings"]] for r in replayed} == from_files
    for p in players:
        for n in (1, 2):
            mine = next(s for s in files[n]["standings"] if s["name"] == p.name)
            sent = p.results[n]
            assert (sent.your_rank, sent.your_score, sent.players) == (
                mine["rank"], mine["score"], files[n]["players"])


def test_a_restart_during_the_results_phase_still_shows_the_results(tmp_path: Path) -> None:
    """The round ended before the restart (and before its last snapshot): clients that come
    in or resume during the results phase still get the RESULTS after their ROUND."""
    config = tmp_path / "cup.toml"
    # Snapshots every 5 ticks: recovery starts after the round's end, it is not replayed.
    config.write_text(CONFIG.replace("results_ticks = 20", "results_ticks = 100000")
                      .replace("[server]\n", "[server]\nsnapshot_every = 5\n"))
    data_dir = tmp_path / "data"
    ada = Player("ada")

    async def until_results(url: str) -> None:
        with trio.fail_after(60):
            # 12 ticks into the results phase: a snapshot after the round's end is taken.
            await ada.play(url, lambda p, c: c.round is not None and c.round.phase == 3
                           and c.tick >= c.round.phase_start + 12)

    async def after(url: str) -> tuple[Results | None, list, Results | None]:
        with trio.fail_after(60):
            async with connect(url, "late", "cup") as late:
                await late.next_tick()
                kinds = [type(e) for e in late.round_events]
                late_results = late.results
            async with connect(url, "ada", "cup", resume_token=ada.token) as again:
                await again.next_tick()
                return late_results, kinds, again.results

    proc, url, _ = _start(data_dir, config)
    try:
        trio.run(until_results, url)
    finally:
        assert _stop(proc, signal.SIGTERM) == 0
    proc, url, _ = _start(data_dir, config)
    try:
        late, kinds, again = trio.run(after, url)
    finally:
        _stop(proc, signal.SIGTERM)
    told = ada.results[1]
    assert kinds == [Round, Results]
    assert (late.round, late.players, late.your_rank) == (1, 1, 0)
    assert late.standings.tobytes() == told.standings.tobytes()
    assert (again.your_rank, again.your_score) == (told.your_rank, told.your_score) == (
        1, told.your_score)
