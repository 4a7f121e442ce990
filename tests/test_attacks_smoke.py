"""Smoke test of perf/attacks.py: a --quick run of a few attacks finishes and writes sane
figures. Timings and the 1.5x target are never asserted (the machine is noisy); what the
server must do under each attack is tests/test_adversarial.py's business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_attacks_quick_run_writes_a_phase_per_attack(tmp_path: Path) -> None:
    attacks = ["ping_flood", "hello_churn", "conn_storm"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "attacks.py"), "--quick", "--attacks",
         ",".join(attacks), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "p99 / baseline" in proc.stdout
    (path,) = tmp_path.glob("attacks-*.json")
    report = json.loads(path.read_text())
    phases = {p["phase"]: p for p in report["phases"]}
    assert list(phases) == ["baseline", *attacks, "baseline_end"]
    for p in phases.values():
        assert p["acked"] > 0 and p["p99_ms"] > 0 and p["ticks_per_s"] > 0
        assert p["max_players_per_address"] <= 64
    assert phases["ping_flood"]["limit_hits"].get("control_frames", 0) > 0
    assert phases["hello_churn"]["limit_hits"].get("hellos_per_address", 0) > 0
    storm = phases["conn_storm"]["limit_hits"]
    assert storm.get("http_connections", 0) + storm.get("http_rate_per_address", 0) > 0
    assert report["baseline_p99_ms"] > 0
