"""Smoke tests of perf/bench_tick.py, bench_writes.py, bench_handoff.py, bench_render.py,
bench_hunt_tick.py, bench_pipeline.py, bench_wakeups.py and bench_syncs.py: a quick run
finishes and writes sane results.

Timings are never asserted (the machine is noisy); this only keeps the
benchmark from rotting as the engine changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tickengine

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "perf" / "bench_tick.py"


def run_bench(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``perf/<script> args...`` in a child process; fails the test with its output unless
    it exits 0."""
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def positive(stats: dict) -> bool:
    return all(stats[k] > 0 for k in ("p50", "p99", "mean"))


def test_bench_tick_quick_run_writes_json_and_png(tmp_path: Path) -> None:
    proc = run_bench(BENCH.name, "--quick", "--out", str(tmp_path), timeout=300)
    assert "bench_tick.json" in proc.stdout and "bench_tick.png" in proc.stdout

    data = json.loads((tmp_path / "bench_tick.json").read_text())
    assert {"meta", "noise", "self_check", "engine", "numpy", "reference", "allocations",
            "ratios", "targets"} <= data.keys()
    assert data["meta"]["cpus"] > 0
    assert data["noise"]["p50"] > 0

    sizes = {r["players"] for r in data["engine"]}
    assert sizes == {1000, 5000}
    for r in data["engine"]:
        assert r["ticks"] > 0 and r["threads"] >= 1
        for key in ("tick_ms", "decide_ms", "visibility_ms", "tick_visibility_ms"):
            assert positive(r[key]), key
        assert set(r["phase_p50_ms"]) == set(tickengine.PHASES)
        assert all(v >= 0 for v in r["phase_p50_ms"].values())
        assert sum(r["phase_p50_ms"].values()) > 0
        assert r["observers"] > 0

    assert {r["players"] for r in data["numpy"]} == sizes
    for r in data["numpy"]:
        assert positive(r["tick_ms"])
        assert r["agreement"]["hints"] > 0.99
    assert [r["players"] for r in data["reference"]] == [1000]
    assert positive(data["reference"][0]["tick_ms"])
    assert data["self_check"]["hints"] > 0.99

    for row in data["ratios"]:
        assert row["numpy_over_engine"] > 0
    assert data["ratios"][0]["reference_over_engine"] > 0

    assert [r["players"] for r in data["allocations"]] == [1000, 5000]
    for r in data["allocations"]:
        assert r["ticks"] > 0
        assert r["retained_blocks_per_tick"]["median"] >= 0
        assert r["transient_peak_bytes"]["max"] > 0

    assert len(data["targets"]) == 6
    assert {t["status"] for t in data["targets"]} <= {"MET", "MISSED", "NOT RUN"}

    png = tmp_path / "bench_tick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_writes_quick_run_measures_every_case(tmp_path: Path) -> None:
    run_bench("bench_writes.py", "--quick", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "bench_writes.json").read_text())["rows"]
    assert {(r["receiver"], r["threads"]) for r in rows} == {
        ("blocking", 1), ("blocking", 2), ("busy", 1), ("busy", 2)}
    for r in rows:
        assert r["clients"] == 200 and r["send_p50_ms"] > 0 and r["copy_p50_ms"] > 0
        assert r["short_writes_last"] == 0  # every frame fit its socket: all were sent


def test_bench_handoff_quick_run_measures_every_variant(tmp_path: Path) -> None:
    run_bench("bench_handoff.py", "--quick", "--out", str(tmp_path))
    results = json.loads((tmp_path / "bench_handoff.json").read_text())["results"]
    assert set(results) == {f"{how} switch={ms}ms" for how in ("to_thread", "tick_thread")
                            for ms in ("5", "0.5")}
    for name, r in results.items():
        # 30 ticks per variant, the first 5 of each a warm-up.
        assert 0 < r["samples"] <= 25, name
        for leg in ("go", "back", "handoff"):
            assert 0 < r[leg]["p50"] <= r[leg]["p99"] <= r[leg]["max"], (name, leg)
        assert r["cpu_wait"]["p50"] >= 0, name
        assert r["handoff_minus_cpu"]["p50"] <= r["handoff"]["p50"], name


def test_bench_wakeups_quick_run_measures_both_loops(tmp_path: Path) -> None:
    run_bench("bench_wakeups.py", "--quick", "--out", str(tmp_path))
    data = json.loads((tmp_path / "bench_wakeups.json").read_text())
    assert [c["phases"] for c in data["cases"]] == [1, 10]
    for c in data["cases"]:
        assert c["wakeups_per_s"] == 20 * c["phases"]
        for loop in ("epoll", "trio"):
            assert c[f"{loop}_cpu_pct"] > 0 and c[f"{loop}_us_per_wakeup"] > 0, (loop, c)


def test_bench_render_smoke_run_times_a_tick_and_a_frame(tmp_path: Path) -> None:
    out = tmp_path / "render.json"
    run_bench("bench_render.py", "--repeats", "1", "--json", str(out), timeout=300)
    data = json.loads(out.read_text())
    assert data["runs"][0]["players"] == 500
    assert data["summary"]["drawMs"]["median"] > 0 and data["summary"]["tickMs"]["worst"] > 0


def test_bench_pipeline_quick_run_times_every_phase(tmp_path: Path) -> None:
    proc = run_bench("bench_pipeline.py", "--quick", "--out", str(tmp_path), timeout=300)
    assert "bench_pipeline.json" in proc.stdout

    data = json.loads((tmp_path / "bench_pipeline.json").read_text())
    (sizes,) = data["runs"].values()
    (run,) = sizes
    assert run["players"] == 200 and run["ticks"] > 0
    assert run["records_per_tick"] > 0 and run["bytes_per_tick"] > 0
    assert len(run["digests"]) == 1
    assert {"movement", "visibility", "tails", "frame_sizes", "write_frames", "other",
            "total"} <= run["ms"].keys()
    assert run["ms"]["total"]["p50"] > 0
    assert run["ms"]["visibility"]["p50"] > 0 and run["ms"]["write_frames"]["p50"] > 0


def test_bench_hunt_tick_quick_run_breaks_a_hunt_tick_down(tmp_path: Path) -> None:
    proc = run_bench("bench_hunt_tick.py", "--quick", "--out", str(tmp_path), timeout=300)
    assert "bench_hunt_tick.json" in proc.stdout
    best = json.loads((tmp_path / "bench_hunt_tick.json").read_text())["best"]
    assert len(best) == 1  # this tree only (no --commit)
    (r,) = best.values()
    assert r["hunts"] == 4 and r["players"] == 20
    assert r["us_per_hunt_tick"] > 0 and len(r["runs"]) == r["repeat"]
    assert set(r["parts"]) == {"moves", "engine kernels", "World.tick Python", "visibility",
                               "tails", "frames", "waits", "write", "rest"}
    for part in ("moves", "engine kernels", "visibility", "tails", "frames", "write"):
        assert r["parts"][part] > 0, part


def test_bench_syncs_quick_run_times_both_ways(tmp_path: Path) -> None:
    proc = run_bench("bench_syncs.py", "--quick", "--out", str(tmp_path), timeout=300)
    assert "bench_syncs.json" in proc.stdout
    rows = json.loads((tmp_path / "bench_syncs.json").read_text())["rows"]
    assert [r["journals"] for r in rows] == [1, 5]
    for r in rows:
        for way in ("in turn", "together"):
            assert r[way]["wall_ms_median"] > 0 and r[way]["cpu_ms_median"] >= 0


def test_every_perf_command_explains_itself() -> None:
    """``--help`` of every perf/ script with a command line prints its usage (a help text
    with a bare ``%`` made argparse fail)."""
    scripts = sorted(p.name for p in (ROOT / "perf").glob("*.py")
                     if "argparse" in p.read_text())
    assert "loadgen.py" in scripts and "loadtest.py" in scripts
    for script in scripts:
        proc = run_bench(script, "--help", timeout=60)
        assert "usage:" in proc.stdout, script
