"""``/api/stats``: a hub's counters and recent tick timings, at a bounded cost.

Why bounded: the route runs on the Trio thread that also reads every client's
moves. The timings of thousands of ticks as JSON cost tens of milliseconds, so
``?ticks=N`` is capped (``stats_max_ticks``), the lists are built by NumPy in
one pass, and an answer is reused until the hub's next tick: a client that
hammers the route costs one computation per tick, not one per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._metrics import TICK_PHASES

if TYPE_CHECKING:
    from ..hunt._hub import Hub

#: Ticks summarised by the answer without ``?ticks``.
SUMMARY_TICKS = 200
#: Answers kept per hub (one per distinct ``ticks`` value asked since its last tick).
_CACHE_ENTRIES = 8


def recent_rows(hub: Hub, n: int) -> np.ndarray:
    """The last ``n`` ticks' timing rows (ms, one column per phase), oldest first."""
    ring = hub.ring
    size = ring.shape[0]
    n = max(0, min(n, hub.ring_count, size))
    idx = np.arange(hub.ring_count - n, hub.ring_count) % size
    return ring[idx]


def recent_timings(hub: Hub, n: int) -> dict[str, list[float]]:
    """The last ``n`` ticks' timings in ms by phase (oldest first)."""
    columns = np.round(recent_rows(hub, n), 4).T.tolist()
    return dict(zip(TICK_PHASES, columns, strict=True))


def summary(hub: Hub, n: int = SUMMARY_TICKS) -> dict[str, Any]:
    """p50, p99 and max (ms) of each phase over the last ``n`` ticks."""
    rows = recent_rows(hub, n)
    if not len(rows):
        return {"ticks": 0}
    q = np.percentile(rows, [50, 99], axis=0)
    top = rows.max(axis=0)
    return {"ticks": len(rows), **{
        phase: {"p50": round(float(q[0, k]), 3), "p99": round(float(q[1, k]), 3),
                "max": round(float(top[k]), 3)} for k, phase in enumerate(TICK_PHASES)}}


class StatsCache:
    """Rendered answers per (hub, ticks asked), valid until that hub's next tick."""

    def __init__(self) -> None:
        self._answers: dict[tuple[int, int], tuple[int, bytes]] = {}

    def get(self, hub: Hub, n: int, counters: Callable[[], dict[str, Any]]) -> bytes:
        """The JSON body: ``counters()``, the ``summary`` and, if ``n`` > 0, ``timings_ms``."""
        key = (id(hub), n)
        hit = self._answers.get(key)
        if hit is not None and hit[0] == hub.ring_count:
            return hit[1]
        body = {**counters(), "summary_ms": summary(hub)}
        if n:
            body["timings_ms"] = recent_timings(hub, n)
        data = json.dumps(body, separators=(",", ":")).encode()
        if len(self._answers) >= _CACHE_ENTRIES:
            self._answers.clear()
        self._answers[key] = (hub.ring_count, data)
        return data
