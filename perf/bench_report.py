"""Reporting for perf/bench_tick.py: ratios, the targets verdict, rich tables and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tickengine import PHASES

TARGET_100K_MS = 2.5
TARGET_100K_VIS_MS = 4.0
TARGET_1M_MS = 25.0
TARGET_VS_NUMPY = 10.0
TARGET_VS_REFERENCE = 300.0


def best_engine(results: dict[str, Any], n: int, key: str = "tick_ms") -> dict[str, Any] | None:
    rows = [r for r in results["engine"] if r["players"] == n]
    return min(rows, key=lambda r: r[key]["p50"]) if rows else None


def engine_at(results: dict[str, Any], n: int, threads: int) -> dict[str, Any] | None:
    return next((r for r in results["engine"]
                 if r["players"] == n and r["threads"] == threads), None)


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    numpy_at = {r["players"]: r for r in results["numpy"]}
    ref_at = {r["players"]: r for r in results["reference"]}
    for n in sorted(set(numpy_at) | set(ref_at)):
        best, one = best_engine(results, n), engine_at(results, n, 1)
        if best is None:
            continue
        row: dict[str, Any] = {"players": n, "engine_threads": best["threads"],
                               "engine_p50_ms": best["tick_ms"]["p50"]}
        for name, table in (("numpy", numpy_at), ("reference", ref_at)):
            if n in table:
                other = table[n]["tick_ms"]["p50"]
                row[f"{name}_p50_ms"] = other
                row[f"{name}_over_engine"] = other / best["tick_ms"]["p50"]
                if one is not None:
                    row[f"{name}_over_engine_1_thread"] = other / one["tick_ms"]["p50"]
        out.append(row)
    return out


def allocation_verdict(allocs: list[dict[str, Any]]) -> tuple[str, bool | None]:
    """Whether per-tick allocations stay the same from the smaller size to the larger."""
    if len(allocs) < 2:
        return "needs two sizes", None
    a, b = allocs[0], allocs[-1]

    def med(r: dict[str, Any], k: str) -> float:
        return r[k]["median"] if r[k] is not None else float("nan")

    d_blocks = med(b, "retained_blocks_per_tick") - med(a, "retained_blocks_per_tick")
    d_bytes = med(b, "retained_bytes_per_tick") - med(a, "retained_bytes_per_tick")
    d_peak = b["transient_peak_bytes"]["max"] - a["transient_peak_bytes"]["max"]
    d_nrt = med(b, "nrt_allocations_per_tick") - med(a, "nrt_allocations_per_tick")
    # A Python int above 256 is a new object where a smaller one is cached: allow a few.
    per_event = max(abs(r["retained_bytes_per_discovery"]) for r in allocs)
    ok = d_blocks <= 2 and d_bytes <= 128 and d_peak <= 1024 and not d_nrt > 0
    ok = ok and per_event < 1.0
    text = (f"{a['players']:,} -> {b['players']:,} players: "
            f"{med(a, 'retained_blocks_per_tick'):.0f} -> {med(b, 'retained_blocks_per_tick'):.0f}"
            f" blocks, {med(a, 'retained_bytes_per_tick'):.0f} -> "
            f"{med(b, 'retained_bytes_per_tick'):.0f} B retained; peak "
            f"{a['transient_peak_bytes']['max']} -> {b['transient_peak_bytes']['max']} B; "
            f"NRT {med(a, 'nrt_allocations_per_tick'):.0f} -> "
            f"{med(b, 'nrt_allocations_per_tick'):.0f}; {per_event:.2f} B per discovery")
    return text, ok


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, value: float | None, ok: bool | None, text: str) -> None:
        status = "NOT RUN" if ok is None else ("MET" if ok else "MISSED")
        out.append({"name": name, "target": target, "value": value, "status": status,
                    "measured": text})

    def thread_note(n: int, key: str) -> str:
        rows = sorted((r for r in results["engine"] if r["players"] == n),
                      key=lambda r: r["threads"])
        return ", ".join(f"{r['threads']} thr {r[key]['p50']:.2f}" for r in rows)

    for n, key, limit, name in (
        (100_000, "tick_ms", TARGET_100K_MS, "100k players: full tick p50"),
        (100_000, "tick_visibility_ms", TARGET_100K_VIS_MS,
         "100k players: tick + visibility (5,000 observers) p50"),
        (1_000_000, "tick_ms", TARGET_1M_MS, "1M players: full tick p50"),
    ):
        best = best_engine(results, n, key)
        if best is None:
            add(name, f"<= {limit} ms", None, None, "size not run")
            continue
        v = best[key]["p50"]
        add(name, f"<= {limit} ms", v, v <= limit,
            f"{v:.2f} ms ({thread_note(n, key)}; p99 {best[key]['p99']:.2f})")
    row = next((r for r in results["ratios"] if r["players"] == 10_000), {})
    for other, limit in (("numpy", TARGET_VS_NUMPY), ("reference", TARGET_VS_REFERENCE)):
        name = f"10k players: engine vs {other}"
        v = row.get(f"{other}_over_engine")
        if v is None:
            add(name, f">= {limit:g}x", None, None, "not run at 10k")
            continue
        one = row.get(f"{other}_over_engine_1_thread", float("nan"))
        add(name, f">= {limit:g}x", v, v >= limit,
            f"{v:.1f}x ({row['engine_threads']} thr; 1 thr {one:.1f}x; "
            f"{other} {row[f'{other}_p50_ms']:.2f} ms vs {row['engine_p50_ms']:.3f} ms)")
    text, ok = allocation_verdict(results["allocations"])
    add("allocations per tick constant in players", "no growth with N, zero per event",
        None, ok, text)
    return out


def render(results: dict[str, Any], console: Console) -> None:
    t = Table(title="Engine tick (ms)")
    for c in ("players", "thr", "ticks", "p50", "p99", "mean", "p99/p50", "decide p50",
              "vis p50", "tick+vis p50", "tick+vis p99", "disc/tick", "other cores", "tries"):
        t.add_column(c, justify="right")
    for r in results["engine"]:
        other = "n/a" if r["other_cores"] is None else f"{r['other_cores']:.2f}"
        t.add_row(f"{r['players']:,}", str(r["threads"]), str(r["ticks"]),
                  f"{r['tick_ms']['p50']:.3f}", f"{r['tick_ms']['p99']:.3f}",
                  f"{r['tick_ms']['mean']:.3f}", f"{r['p99_over_p50']:.2f}",
                  f"{r['decide_ms']['p50']:.3f}", f"{r['visibility_ms']['p50']:.3f}",
                  f"{r['tick_visibility_ms']['p50']:.3f}", f"{r['tick_visibility_ms']['p99']:.3f}",
                  f"{r['discoveries_per_tick']:.0f}", other, str(len(r["attempts"])))
    console.print(t)
    t = Table(title="Per phase p50 (ms)")
    for c in ("players", "thr", *PHASES, "tick p50"):
        t.add_column(c, justify="right")
    for r in results["engine"]:
        t.add_row(f"{r['players']:,}", str(r["threads"]),
                  *(f"{r['phase_p50_ms'][p]:.3f}" for p in PHASES), f"{r['tick_ms']['p50']:.3f}")
    console.print(t)
    t = Table(title="Engine vs NumPy baseline and pure-Python reference (tick p50)")
    for c in ("players", "engine ms", "numpy ms", "numpy/engine", "(1 thr)", "reference ms",
              "ref/engine", "(1 thr)"):
        t.add_column(c, justify="right")

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in results["ratios"]:
        t.add_row(f"{r['players']:,}", f"{r['engine_p50_ms']:.3f} ({r['engine_threads']} thr)",
                  f(r.get("numpy_p50_ms"), ".3f"), f(r.get("numpy_over_engine"), ".1f"),
                  f(r.get("numpy_over_engine_1_thread"), ".1f"),
                  f(r.get("reference_p50_ms"), ".1f"), f(r.get("reference_over_engine"), ".0f"),
                  f(r.get("reference_over_engine_1_thread"), ".0f"))
    console.print(t)
    for name in ("numpy", "reference"):
        for r in results[name]:
            a = r["agreement"]
            extra = "" if name == "reference" else (
                f", discoveries {a['discoveries']:.2%} ({a['discoveries_engine']} engine / "
                f"{a['discoveries_numpy']} numpy), leaderboards {a['leaderboard']:.2%}, "
                f"positions {a['positions']:.2%}")
            console.print(f"{name} at {r['players']:,} players agrees on hints for "
                          f"{a['hints']:.2%} of player-ticks{extra}")
    sc = results["self_check"]
    console.print(f"numpy self-check ({sc['player_ticks'] // max(1, sc['ticks']):,} players, "
                  f"{sc['ticks']} ticks): hints {sc['hints']:.2%}, discoveries "
                  f"{sc['discoveries']:.2%}, leaderboards {sc['leaderboard']:.2%}")
    t = Table(title="Allocations per tick (steady state, tracemalloc + Numba NRT)")
    for c in ("players", "retained blocks", "retained bytes", "transient peak B", "NRT allocs",
              "discoveries", "B per discovery", "leak B / run"):
        t.add_column(c, justify="right")
    for r in results["allocations"]:
        def rng(k: str, r: dict[str, Any] = r) -> str:
            v = r[k]
            if v is None:
                return "n/a"
            return f"{v['min']}" if v["min"] == v["max"] else f"{v['min']}..{v['max']}"
        t.add_row(f"{r['players']:,}", rng("retained_blocks_per_tick"),
                  rng("retained_bytes_per_tick"), rng("transient_peak_bytes"),
                  rng("nrt_allocations_per_tick"), rng("discoveries_per_tick"),
                  f"{r['retained_bytes_per_discovery']:.2f}", str(r["leak_bytes_over_run"]))
    console.print(t)
    t = Table(title="Targets")
    for c in ("target", "goal", "status", "measured"):
        t.add_column(c)
    colour = {"MET": "green", "MISSED": "red", "NOT RUN": "yellow"}
    for r in results["targets"]:
        t.add_row(r["name"], r["target"], f"[{colour[r['status']]}]{r['status']}[/]",
                  r["measured"])
    console.print(t)
    m, nz = results["meta"], results["noise"]
    spreads = [r["p99_over_p50"] for r in results["engine"]] or [float("nan")]
    others = [r["other_cores"] for name in ("engine", "numpy", "reference")
              for r in results[name] if r["other_cores"] is not None] or [float("nan")]
    console.print(
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), Numba threading layer "
        f"{m['threading_layer']}; load average {m['load_before']} before, {m['load_after']} "
        f"after; other processes used {min(others):.2f}..{max(others):.2f} cores during the "
        f"timed runs; noise probe ({nz['probe']}) p50 {nz['p50']:.3f} ms, p99/p50 "
        f"{nz['p99_over_p50']:.2f}, cv {nz['cv']:.1%}; engine tick p99/p50 "
        f"{min(spreads):.2f}..{max(spreads):.2f}"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for threads in sorted({r["threads"] for r in results["engine"]}):
        rows = [r for r in results["engine"] if r["threads"] == threads]
        n = [r["players"] for r in rows]
        line = ax.plot(n, [r["tick_ms"]["p50"] for r in rows], "o-",
                       label=f"engine tick, {threads} thread{'s' if threads > 1 else ''}")
        ax.plot(n, [r["tick_visibility_ms"]["p50"] for r in rows], "o--",
                color=line[0].get_color(), alpha=0.6,
                label=f"engine tick + visibility, {threads} thr")
    for name, style in (("numpy", "s-"), ("reference", "^-")):
        rows = results[name]
        if rows:
            ax.plot([r["players"] for r in rows], [r["tick_ms"]["p50"] for r in rows], style,
                    label=f"{name} tick")
    for n, limit in ((100_000, TARGET_100K_MS), (1_000_000, TARGET_1M_MS)):
        ax.plot([n], [limit], "r*", markersize=11)
    ax.plot([], [], "r*", label="targets (tick p50)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("players in one hunt (treasures = players / 10, constant density)")
    ax.set_ylabel("ms per tick (p50)")
    ax.set_title(f"Tick time vs players ({results['meta']['cpus']} CPUs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
