"""Reporting for perf/loadtest.py: the rich table, the PNG, the shares of a py-spy profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def profile_summary(raw: Path, pid: int, seconds: float, top: int = 25) -> dict[str, Any]:
    """Function-level shares of py-spy's raw stacks, in % of one core (100 samples/s).

    ``self``: samples whose innermost frame is the function; ``inclusive``: samples
    with the function anywhere on the stack. Threads: ``trio`` (the main thread:
    sockets, the tick loop) and ``worker`` (the tick's thread, Numba kernels).
    """
    per_core = 100 * seconds / 100  # samples that make 1% of a core
    self_: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = "trio" if frames[0] == f"thread ({pid})" else "worker"
        n = int(count)
        threads[thread] = threads.get(thread, 0) + n
        names = [f"{thread}: {f.split(' (')[0]} ({f.split(' (')[-1].split(':')[0]})"
                 for f in frames[1:]]
        if names:
            self_[names[-1]] = self_.get(names[-1], 0) + n
        for name in set(names):
            incl[name] = incl.get(name, 0) + n

    def rank(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(v / per_core, 1)) for k, v in
                sorted(d.items(), key=lambda kv: -kv[1])[:top]]
    return {"pct_of_core_by_thread": {k: round(v / per_core, 1) for k, v in threads.items()},
            "self_pct_of_core": rank(self_), "inclusive_pct_of_core": rank(incl)}


def table(steps: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("clients", "hunts", "lat p50", "p90", "p99", "max ms", "at socket p50", "p99",
                "tick p50", "p99", "max ms", "fan-out p50", "p99 ms",
                "ticks/s/client min", "gaps", "msgs/s", "MB/s", "B/msg", "moves/s", "srv CPU %",
                "(trio)", "lg CPU %", "other cores", "evict", "skip", "overrun", "pass"):
        t.add_column(col, justify="right")
    for s in steps:
        la, tk, sv, cs = s["latency_ms"], s["tick_ms"], s["server"], s["clients_side"]
        ar = s["latency_arrival_ms"]
        fo = cs.get("fanout_ms") or {"p50": 0.0, "p99": 0.0}
        t.add_row(str(s["clients"]), str(s.get("hunts", 1)), f"{la['p50']:.1f}",
                  f"{la['p90']:.1f}", f"{la['p99']:.1f}",
                  f"{la['max']:.0f}", f"{ar['p50']:.1f}", f"{ar['p99']:.1f}", f"{tk['p50']:.2f}",
                  f"{tk['p99']:.2f}", f"{tk['max']:.1f}", f"{fo['p50']:.1f}", f"{fo['p99']:.1f}",
                  f"{cs['ticks_per_s_min']:.2f}", str(cs["tick_gaps"]),
                  f"{sv['messages_per_s']:,.0f}", f"{sv['bytes_per_s'] / 1e6:.1f}",
                  f"{sv.get('bytes_per_message', 0):.0f}",
                  f"{sv['moves_received_per_s']:,.0f}", f"{sv['cpu_pct']:.0f}",
                  f"{sv['cpu_pct_trio_thread']:.0f}", f"{s['loadgen_cpu_pct']:.0f}",
                  f"{s['other_cores']:.2f}",
                  str(sv["evictions"]), str(sv["skipped"]), str(sv["overruns"]),
                  ("yes" if s["pass"] else "NO") + (" (disturbed)" if s["disturbed"] else ""))
    Console(width=200).print(t)


def plot(steps: list[dict[str, Any]], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = [s["clients"] for s in steps]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    ax = axes.ravel()
    for s in steps:
        label = f"{s['clients']} clients" + (" (disturbed)" if s.get("disturbed") else "")
        h = s["latency_hist"]
        edges = np.linspace(*h["edges_ms"], len(h["counts"]) + 1)
        ax[0].stairs(np.asarray(h["counts"]) / max(1, sum(h["counts"])), edges, label=label)
        ax[1].plot(s["tick_total_series_ms"], lw=0.7, label=label)
    ax[0].axvline(budget, color="red", lw=0.8, ls="--", label=f"budget {budget:g} ms")
    ax[0].set(title="move-to-ack latency distribution", xlabel="ms", ylabel="fraction")
    ax[1].set(title="server tick processing (total) over the window", xlabel="tick",
              ylabel="ms", yscale="log")
    for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-"), ("max", "x:")):
        ax[2].plot(cs, [s["latency_ms"][key] for s in steps], style, label=f"latency {key}")
    for key, style in (("p50", "o--"), ("p99", "^--")):
        ax[2].plot(cs, [s["tick_ms"][key] for s in steps], style, label=f"server tick {key}")
    ax[2].axhline(budget, color="red", lw=0.8, ls="--")
    ax[2].set(title="latency and server tick vs clients", xlabel="clients", ylabel="ms",
              yscale="log")
    ax[3].plot(cs, [s["server"]["cpu_pct"] for s in steps], "o-", label="server")
    ax[3].plot(cs, [s["server"]["cpu_pct_trio_thread"] for s in steps], "s--",
               label="server Trio thread")
    ax[3].plot(cs, [s["loadgen_cpu_pct"] for s in steps], "^-", label="load generators")
    ax[3].set(title="CPU (100% = one core)", xlabel="clients", ylabel="%")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"treasure-hunt load test: {steps[0]['rate']:g} moves/s per client, "
                 f"{steps[0]['tick_rate']} Hz")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
