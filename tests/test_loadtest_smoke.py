"""perf/loadtest.py --quick, run as a subprocess, so that the load test cannot rot.

A real server, 20 clients from a real load generator (the C one, the default, and the
Python one), a 3 s window: the JSON it writes must hold sane figures. Timings are not
asserted against targets (the machine is shared): only that the pipeline measured
something real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("loadgen", ["c", "python"])
def test_quick_load_test_reports_sane_figures(tmp_path: Path, loadgen: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "loadtest.py"), "--quick", "--out", str(tmp_path),
         "--loadgen", loadgen],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report_path = Path(json.loads(proc.stdout.strip().splitlines()[-1])["json"])
    assert report_path.parent == tmp_path
    assert report_path.with_suffix(".png").stat().st_size > 10_000
    report = json.loads(report_path.read_text())
    assert report["loadgen"] == loadgen
    (step,) = report["steps"]

    assert step["clients"] == step["playing"] == 20
    assert not step["connect_failures"]
    # Every client got ticks all along the window, with no tick number missing.
    sides = step["clients_side"]
    assert sides["tick_gaps"] == 0
    assert 15 <= sides["ticks_per_s_min"] <= 21
    assert not sides["closes"] and not sides["errors"]
    # Latencies were measured on real moves and acks.
    lat = step["latency_ms"]
    assert lat["n"] >= 0.9 * step["moves_sent"] > 0
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 5000
    # The server side: ticks timed, messages counted, CPU read from /proc.
    assert step["tick_ms"]["ticks"] >= 40 and 0 < step["tick_ms"]["p50"] <= step["tick_ms"]["max"]
    server = step["server"]
    assert 15 <= server["ticks_per_s"] <= 21
    assert server["messages_per_s"] > 0.8 * 20 * 20
    assert server["moves_received_per_s"] > 0.8 * 20 * 10
    assert server["evictions"] == 0
    assert 0 < server["cpu_pct"] < 200 and 0 < step["loadgen_cpu_pct"] < 100


def test_quick_many_hunts_load_test_spreads_the_clients(tmp_path: Path) -> None:
    """--hunts: a server of 4 hunts, 5 clients each; ticks counted per hunt, fan-out timed."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "loadtest.py"), "--quick", "--hunts", "4",
         "--tick-groups", "2", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report_path = Path(json.loads(proc.stdout.strip().splitlines()[-1])["json"])
    (step,) = json.loads(report_path.read_text())["steps"]
    assert step["clients"] == step["playing"] == 20 and step["hunts"] == 4
    assert step["tick_groups"] == 2
    sides = step["clients_side"]
    assert sides["tick_gaps"] == 0 and 15 <= sides["ticks_per_s_min"] <= 21
    assert 15 <= step["server"]["ticks_per_s"] <= 21  # per hunt
    assert 0 <= sides["fanout_ms"]["p50"] <= sides["fanout_ms"]["p99"] < 5000
    assert step["latency_ms"]["n"] >= 0.9 * step["moves_sent"] > 0
