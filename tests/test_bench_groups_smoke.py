"""perf/bench_groups.py, run small as a subprocess, so that the benchmark cannot rot: it
must time both engine layouts and a hand-off, and print its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_groups_times_both_layouts_and_a_handoff() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "bench_groups.py"), "--hunts", "3", "--players",
         "5", "--ticks", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hunts"] == 3 and out["players"] == 5
    for layout in ("one_world", "world_per_hunt"):
        assert 0 < out["engine"][layout]["cpu_ms_p50"] < 1000
    assert 0 < out["handoff"]["wall_us"] < 1e6
    assert set(out["cpu_ms_per_s"]) == {"one_world_per_group_4",
                                        "world_per_hunt_handoff_per_hunt",
                                        "world_per_hunt_handoff_per_group_4"}
