"""Measurement helpers for perf/: timing statistics, machine noise, allocation counters."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

import tickengine

ENGINE_DIR = str(Path(tickengine.__file__).resolve().parent)


def ms_stats(ns: np.ndarray) -> dict[str, float]:
    """p50 / p99 / mean / min / max of nanosecond samples, in milliseconds."""
    ms = np.asarray(ns, np.float64) / 1e6
    return {
        "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()), "min": float(ms.min()), "max": float(ms.max()),
        "n": int(ms.shape[0]),
    }


def nrt_allocations() -> int | None:
    """Allocations made so far by Numba's runtime (None if its counters are unavailable)."""
    try:
        from numba.core.runtime import _nrt_python, rtsys

        if not _nrt_python.memsys_stats_enabled():
            _nrt_python.memsys_enable_stats()
        return int(rtsys.get_allocation_stats().alloc)
    except (ImportError, AttributeError, RuntimeError):
        return None


def noise_probe() -> dict[str, Any]:
    """How steady this machine is: 60 timings of one fixed NumPy sort (200k floats)."""
    a = np.random.default_rng(0).random(200_000)
    ns = np.zeros(60, np.int64)
    for k in range(ns.shape[0]):
        start = time.perf_counter_ns()
        np.sort(a)
        ns[k] = time.perf_counter_ns() - start
    s = ms_stats(ns)
    return {"probe": "np.sort(200_000 float64)", **s, "p99_over_p50": s["p99"] / s["p50"],
            "cv": float(np.std(ns) / np.mean(ns))}


class CpuMeter:
    """CPU time used by other processes (in cores) while something ran: a noise figure.

    System-wide busy time from /proc/stat minus this process's own CPU time,
    divided by the wall time. 0 on an idle machine; 1 means another process
    kept a whole core busy meanwhile. None where /proc/stat is unavailable.
    """

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(v) for v in fields]
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(ticks[:3]) + sum(ticks[5:7])) / hz  # user nice system . . irq softirq
        steal = ticks[7] / hz if len(ticks) > 7 else 0.0
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system, steal

    def foreign_cores(self) -> dict[str, float] | None:
        end = self._read()
        if self.start is None or end is None:
            return None
        wall = max(end[0] - self.start[0], 1e-9)
        return {
            "other_processes": max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / wall,
            "steal": (end[3] - self.start[3]) / wall,
        }


def engine_source() -> dict[str, Any]:
    """The git commit the engine was measured at, and whether tickengine/ had local edits."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ENGINE_DIR, capture_output=True,
                                 text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", ".")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "tickengine_modified": None if dirty is None else bool(dirty)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
