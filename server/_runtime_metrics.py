"""The process and its runtimes: Prometheus' process and platform collectors, CPython's
garbage collector (collections and pause times), Numba's runtime (NRT) allocation counters
and a build-info metric. Registered in each server's own registry by
:class:`server._metrics.Metrics`.
"""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numba
import numpy as np
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ._hunt_metrics import BulkHistogram

#: Upper bounds of the GC pause buckets, seconds.
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

#: Pause histograms per generation, shared by every registry of the process (the garbage
#: collector is the process's); filled by one ``gc.callbacks`` hook installed once.
_GC_PAUSES = [BulkHistogram(GC_BUCKETS) for _ in range(3)]
_gc_started = [0.0]


def _gc_hook(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _GC_PAUSES[info["generation"]].observe(time.perf_counter() - _gc_started[0])


@cache
def build_info() -> dict[str, str]:
    """Version, git revision (empty when not run from a git checkout), Python, NumPy, Numba."""
    try:
        version = metadata.version("treasure-hunt")
    except metadata.PackageNotFoundError:
        version = ""
    root = Path(__file__).resolve().parent.parent
    revision = ""
    if (root / ".git").exists():
        try:
            revision = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                      capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            revision = ""
    return {"version": version, "revision": revision,
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__}


def _nrt_stats() -> Any:
    """Numba's runtime counters, turned on first (off by default; the cost is an atomic
    increment per NRT allocation). None where this Numba has no such counters."""
    try:
        from numba.core.runtime import _nrt_python, rtsys

        if not _nrt_python.memsys_stats_enabled():
            _nrt_python.memsys_enable_stats()
        return rtsys.get_allocation_stats()
    except (ImportError, AttributeError, RuntimeError):
        return None


class RuntimeCollector:
    """Build info, Numba NRT counters and GC pauses, rendered at scrape time."""

    def describe(self) -> Iterator[Any]:
        return self._families(describe=True)

    def collect(self) -> Iterator[Any]:
        return self._families(describe=False)

    def _families(self, describe: bool) -> Iterator[Any]:
        info = build_info()
        b = GaugeMetricFamily("hunt_build_info", "Always 1; the labels say what runs",
                              labels=list(info))
        b.add_metric(list(info.values()), 1)
        yield b
        stats = None if describe else _nrt_stats()
        for field, name, doc in (
                ("alloc", "hunt_numba_nrt_allocations", "Allocations by Numba's runtime "
                 "(arrays created inside kernels, parallel-loop scheduling)"),
                ("free", "hunt_numba_nrt_frees", "Frees by Numba's runtime"),
                ("mi_alloc", "hunt_numba_nrt_meminfo_allocations", "NRT MemInfo (reference "
                 "counted array owner) allocations"),
                ("mi_free", "hunt_numba_nrt_meminfo_frees", "NRT MemInfo frees")):
            c = CounterMetricFamily(name, doc)
            if stats is not None:
                c.add_metric([], float(getattr(stats, field)))
            yield c
        yield GaugeMetricFamily("hunt_python_allocated_blocks", "Memory blocks the Python "
                                "allocator holds (sys.getallocatedblocks): flat once the "
                                "server is warm, a steady climb is a leak",
                                value=0 if describe else sys.getallocatedblocks())
        h = HistogramMetricFamily("hunt_gc_pause_seconds", "Pauses of CPython's cyclic "
                                  "garbage collector by generation", labels=["generation"])
        for gen, hist in enumerate(_GC_PAUSES):
            h.add_metric([str(gen)], hist.buckets(), hist.sum)
        yield h


def register_runtime(registry: CollectorRegistry) -> None:
    """The process, platform, GC and runtime collectors, into ``registry``."""
    if _gc_hook not in gc.callbacks:
        gc.callbacks.append(_gc_hook)
    _nrt_stats()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(RuntimeCollector())
