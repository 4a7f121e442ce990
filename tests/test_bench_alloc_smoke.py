"""perf/bench_alloc.py --quick as a subprocess, so the allocation benchmark cannot rot.

A real server with the counting allocator preloaded (compiled with gcc here), 20 real
clients, 2 s windows: the JSON must hold counts from both hooks and both runs, and (with
--where) the call sites they came from. The figures are not held to the targets here
(perf/README.md reports them).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_allocation_benchmark_counts_calls_of_a_live_server(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "bench_alloc.py"), "--quick", "--where",
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench_alloc.json").read_text())
    (row,) = report["rows"]
    idle, busy = row["idle"], row["busy"]
    assert row["clients"] == idle["playing"] == busy["playing"] == 20
    assert idle["ticks"] >= 20 and busy["ticks"] >= 20 and idle["moves"] < 20
    assert busy["moves"] >= 0.5 * 20 * 10 * busy["window_s"]
    # Both hooks counted. The bench's server has no journal, so its hunt of 20 ticks on
    # the Trio thread (server/hunt/_groups.py, INLINE_PLAYERS): the tick's calls are that
    # thread's too, and the other threads may count none.
    for run in (idle, busy):
        counts = run["counts"]
        assert counts["c_main"] > 0 and counts["py_main"] > 0, counts
        assert counts["c_other"] >= 0 and counts["py_other"] >= 0, counts
    # Every tick allocates (the tick result, its timings). A move need not add anything
    # (the ingest kernel takes it without a Python object): its figure is a difference
    # of two runs, near 0 and either side of it at 20 clients.
    assert row["per_tick_total"] > 1
    assert math.isfinite(row["per_move_total"])
    assert busy["evictions"] == idle["evictions"] == 0
    # --where: every counted call has a site, and the server's own code is named.
    sites = row["where"]
    assert sum(s["idle_per_tick"] for s in sites) == pytest.approx(row["per_tick_total"],
                                                                   rel=0.1)
    assert any(s["site"].startswith("Py main  server/shell/_poller.py") for s in sites)
    assert any(s["site"].startswith(("C  main  tickengine/", "C  other tickengine/"))
               for s in sites)
    assert "call sites, per tick" in proc.stdout
