"""Durability across real processes: a writer killed with SIGKILL, recovery and replay
in new processes, and the ``treasure-hunt replay`` command line.

The writer (tests/journal_writer.py) prints each tick's state hash before
journaling it and an acknowledgement once ``append_tick`` has returned, so the
test knows exactly which ticks were fully written when the kill landed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.durability import Journal, recover

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
WRITER = HERE / "journal_writer.py"
EXE = Path(sys.executable).parent / "treasure-hunt"
ENV = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}


def writer(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WRITER), "write", str(data_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


class Lines:
    """Reads a writer's stdout in a thread: hashes by tick, last acknowledged tick."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.hashes: dict[int, str] = {}
        self.recovered: tuple[int, str] | None = None
        self.acked = -1
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout:
            kind, *rest = line.split()
            if kind == "H" and len(rest) == 2:
                self.hashes[int(rest[0])] = rest[1]
            elif kind == "A" and rest:
                self.acked = int(rest[0])
                self.started.set()
            elif kind == "R":
                self.recovered = (int(rest[0]), rest[1])

    def join(self) -> None:
        self._thread.join(timeout=30)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str]]:
    """A writer process that ran 70 ticks to the end, and the hashes it printed."""
    data = tmp_path_factory.mktemp("written") / "data"
    proc = writer(data, "--ticks", "70", "--snapshot-every", "25", "--hash-every", "5")
    lines = Lines(proc)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    lines.join()
    proc.stdout.close()
    proc.stderr.close()
    assert lines.acked == 70
    return data, lines.hashes


def test_recovery_in_a_new_process_reproduces_the_live_hash(written) -> None:
    data, hashes = written
    proc = subprocess.run([sys.executable, str(WRITER), "recover", str(data)],
                          capture_output=True, text=True, timeout=120, check=True, env=ENV)
    out = json.loads(proc.stdout)
    assert out["tick"] == 70 and out["state_hash"] == hashes[70]
    assert out["report"]["snapshot_tick"] == 50 and out["report"]["cuts"] == []


def test_replay_cli_reproduces_the_live_hashes(written, tmp_path: Path) -> None:
    data, hashes = written
    report = tmp_path / "replay.json"
    proc = run_cli("replay", str(data), "--verify", "--json", str(report))
    assert proc.returncode == 0, proc.stderr
    assert hashes[70] in proc.stdout and "Top 10: hunt 0 'forest'" in proc.stdout
    assert "Traceback" not in proc.stderr
    got = json.loads(report.read_text())
    assert got["schema"] == "treasure-hunt/replay/1"
    assert got["tick"] == 70 and got["state_hash"] == hashes[70] and got["verified"]
    assert got["recovery"]["snapshot_tick"] == 25  # the earliest snapshot kept
    assert got["recovery"]["hashes_verified"] == 9  # ticks 30, 35, ..., 70
    assert got["ticks_per_s"] > 0 and [h["name"] for h in got["hunts"]] == ["forest", "cave-7"]
    for row in got["hunts"][0]["leaderboard"]:
        assert row["name"] is not None  # from the snapshot's meta or the journal's joins
    for until in ("25", "61"):
        proc = run_cli("replay", str(data), "--until", until, "--json", str(report),
                       "--threads", "1")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(report.read_text())["state_hash"] == hashes[int(until)]


def test_replay_cli_errors(tmp_path: Path) -> None:
    cases = [
        (("replay", str(tmp_path / "missing")), "no data dir"),
        (("replay", str(tmp_path), "--until", "-3"), "--until must be a tick number >= 0"),
        (("replay", str(tmp_path)), "nothing to replay"),
        (("replay", str(tmp_path), "--threads", "0"), "--threads must be an integer from 1"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("treasure-hunt replay: error: ") and message in proc.stderr
        assert proc.stderr.count("\n") == 1
    # A journal whose recorded hash is wrong: replay works, --verify exits 1.
    from tickengine import EngineConfig, HuntParams, World

    world = World(EngineConfig(max_players=10, max_treasures=10),
                  [HuntParams(name="x", treasures=2)])
    with Journal(tmp_path / "bad") as journal:
        journal.start(world, {})
        world.tick()
        journal.append_tick(1, state_hash="ab" * 16)
    assert run_cli("replay", str(tmp_path / "bad")).returncode == 0
    proc = run_cli("replay", str(tmp_path / "bad"), "--verify")
    assert proc.returncode == 1 and "verification failed" in proc.stderr
    assert "after tick 1" in proc.stderr and proc.stderr.count("\n") == 1


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """Kill the writer at random moments, restart it on the same data dir, several rounds.

    Each time, recovery must give the last fully written tick: the last one
    acknowledged, or the one after it if the kill landed between the write and
    the acknowledgement; and that tick's live state hash. Snapshots every 15
    ticks, written in a background thread, so kills also land mid-snapshot.
    """
    rng = np.random.default_rng(12)
    data = tmp_path / "data"
    previous = None
    for round_ in range(4):
        proc = writer(data, "--ticks", "0", "--snapshot-every", "15", "--hash-every", "4",
                      "--resume", "--seed", str(round_))
        lines = Lines(proc)
        try:
            assert lines.started.wait(timeout=120), proc.stderr.read()
            time.sleep(float(rng.uniform(0.05, 0.6)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            lines.join()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        if previous is not None:
            assert lines.recovered == previous  # the restarted writer recovered the same
        rec = recover(data)
        last = lines.acked
        assert rec.tick in (last, last + 1), (rec.tick, last)
        assert rec.tick in lines.hashes and rec.state_hash == lines.hashes[rec.tick]
        previous = (rec.tick, rec.state_hash)


def test_bench_journal_quick_run(tmp_path: Path) -> None:
    """perf/bench_journal.py --quick finishes and writes sane figures (never asserted fast)."""
    proc = subprocess.run([sys.executable, str(HERE.parent / "perf" / "bench_journal.py"),
                           "--quick", "--out", str(tmp_path), "--scratch", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "bench_journal.json" in proc.stdout
    data = json.loads((tmp_path / "bench_journal.json").read_text())
    assert [a["fsync"] for a in data["append"]] == ["tick", 50, "off"]
    for a in data["append"]:
        assert a["append_ms"]["p50"] > 0 and a["bytes_per_tick"] > 32 * a["moves_per_tick"]
    assert data["append"][0]["fsyncs"] == data["append"][0]["ticks"]
    assert data["recovery"]["seconds"] > 0 and data["recovery"]["ticks"] == 50
    assert data["replay"]["plain"]["ticks_per_s"] > 0
    assert data["snapshot"]["bytes"] > 0
    assert len(data["targets"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["bench_journal.json"]  # scratch cleaned
