"""The report of a simulate run: one JSON-ready dict, shown as rich tables, JSON or a PNG.

:func:`summarize` computes every number once; the tables and the JSON file are
two views of the same dict, so they always agree. Times are in milliseconds per
tick, rates per wall-clock or per simulated second as named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console

    from .simulate import Record

SCHEMA = "treasure-hunt/simulate/1"
#: Rows shown per leaderboard, hunts whose leaderboard is shown, hunts listed in the table.
TOP = 10
LEADERBOARDS_SHOWN = 3
HUNTS_SHOWN = 10


def summarize(rec: Record) -> dict[str, Any]:
    """Every number of the report, as plain ints, floats, strings, lists and dicts."""
    plan, world = rec.plan, rec.world
    # Which bot holds each player slot (-1: none), to name the leaders.
    n_bots = rec.bots.count
    bot_of_slot = np.full(world.players.capacity, -1, np.int64)
    bot_of_slot[rec.bots.slot[:n_bots]] = np.arange(n_bots)
    hunts = plan.hunts
    done = rec.ticks_done
    simulated_s = done / plan.tick_rate
    total_disc = int(rec.discoveries.sum())
    sizes = {(h.width, h.height) for h in hunts}
    width, height = next(iter(sizes)) if len(sizes) == 1 else (None, None)
    summary = {
        "hunts": len(hunts),
        "players": len(hunts) * plan.players,
        "players_per_hunt": plan.players,
        "bots": {name: frac for name, frac in plan.bot_mix},
        "treasures": sum(h.treasures for h in hunts),
        "width": width,
        "height": height,
        "ticks": done,
        "ticks_requested": plan.ticks,
        "tick_rate": plan.tick_rate,
        "simulated_s": simulated_s,
        "threads": plan.threads,
        "seed": plan.seed,
        "config": str(plan.config_path) if plan.config_path is not None else None,
        "warm_up_s": rec.warm_up_s,
        "warm_up_from_cache": rec.warm_up_compiled == 0,
        "warm_up_compiled": rec.warm_up_compiled,
        "setup_s": rec.setup_s,
        "wall_s": rec.wall_s,
        "ticks_per_s": done / rec.wall_s if rec.wall_s > 0 else None,
        "realtime_factor": simulated_s / rec.wall_s if rec.wall_s > 0 else None,
        "discoveries": total_disc,
        "discoveries_per_simulated_s": total_disc / simulated_s if done else None,
        "value_found": int(rec.value_found.sum()),
        **{name: int(n) for name, n in rec.counters.items() if not name.startswith("visib")},
        "state_hash": world.state_hash(),
    }
    visibility = None
    if plan.observers:
        c = rec.counters
        visibility = {
            "observers": plan.observers,
            "records_per_tick": c["visibility_records"] / done if done else None,
            "max_visible": plan.engine.max_visible,
            "truncated": c["visibility_truncated"],
            "dropped": c["visibility_dropped"],
        }
    return {
        "schema": SCHEMA,
        "command": ["treasure-hunt", *rec.argv],
        "interrupted": rec.interrupted,
        "summary": summary,
        "phases_ms": _phase_stats(rec.times, rec.columns),
        "visibility": visibility,
        "hunts": [_hunt_report(rec, h, simulated_s, bot_of_slot) for h in range(len(hunts))],
        "rounds": rec.rounds,
    }


def _phase_stats(times: np.ndarray, columns: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    if times.shape[0] == 0:
        return {c: {"p50": None, "p99": None, "max": None, "mean": None} for c in columns}
    ms = times / 1e6
    p50, p99 = np.percentile(ms, [50, 99], axis=0)
    peak, mean = ms.max(axis=0), ms.mean(axis=0)
    return {c: {"p50": float(p50[i]), "p99": float(p99[i]), "max": float(peak[i]),
                "mean": float(mean[i])} for i, c in enumerate(columns)}


def bot_label(policy: str, bot: int) -> str:
    """How the report names a bot: its policy and its number in its hunt (``hunter-17``:
    the 18th bot to join; with ``--bots hunter=0.8,random=0.2`` the hunters come first)."""
    return f"{policy}-{bot}"


def _hunt_report(rec: Record, h: int, simulated_s: float,
                 bot_of_slot: np.ndarray) -> dict[str, Any]:
    from tickengine import BOT_POLICIES

    policy_names = {code: name for name, code in BOT_POLICIES.items()}
    world, params = rec.world, rec.plan.hunts[h]
    found = int(rec.discoveries[h])
    value = int(rec.value_found[h])
    board = world.leaderboard(h)[:TOP]
    first_bot = h * rec.plan.players
    leaders = []
    for r, row in enumerate(board):
        slot = int(row["slot"])
        b = int(bot_of_slot[slot])  # every player of a simulation is a bot
        policy = policy_names[int(rec.bots.policy[b])]
        leaders.append({
            "rank": r + 1, "name": bot_label(policy, b - first_bot), "policy": policy,
            "bot": b - first_bot, "slot": slot, "player_id": int(world.player_id(slot)),
            "score": int(row["score"]), "found": int(world.players.found[slot])})
    return {
        "index": h,
        "name": params.name,
        "players": rec.plan.players,
        "bots": {name: n for name, n in rec.plan.bot_counts},
        "params": params.to_dict(),
        "discoveries": found,
        "discoveries_per_simulated_s": found / simulated_s if simulated_s else None,
        "value_found": value,
        "mean_value": value / found if found else None,
        "leaderboard": leaders,
    }


# ---------------------------------------------------------------------- tables


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The report as rich tables: run summary, phases, hunts, leaderboards."""
    from rich import box
    from rich.columns import Columns
    from rich.table import Table

    s = report["summary"]
    run = Table(title="Run", show_header=False, title_justify="left")
    run.add_column("what", style="bold")
    run.add_column("value")
    names = [h["name"] for h in report["hunts"]]
    run.add_row("Hunts", f"{s['hunts']:,}" + (f" ({', '.join(names)})" if len(names) <= 5 else ""))
    mix = ", ".join(f"{name} {frac:.0%}" for name, frac in s["bots"].items())
    run.add_row("Bots", f"{s['players']:,} ({s['players_per_hunt']:,} per hunt: {mix})")
    run.add_row("Treasures", f"{s['treasures']:,} in all")
    run.add_row("World size", "varies per hunt (see Hunts)" if s["width"] is None
                else f"{s['width']:,.0f} x {s['height']:,.0f} world units")
    ticks = f"{s['ticks']:,}" + (f" of {s['ticks_requested']:,} (interrupted)"
                                 if report["interrupted"] else "")
    run.add_row("Ticks", f"{ticks} at {s['tick_rate']} Hz = {s['simulated_s']:,.1f} simulated s")
    run.add_row("Threads", str(s["threads"]))
    run.add_row("JIT warm-up", f"{s['warm_up_s']:.1f} s ("
                + ("from cache" if s["warm_up_from_cache"] else "compiled") + ", not timed)")
    run.add_row("Setup", f"{s['setup_s']:.2f} s (world and bots)")
    run.add_row("Wall time", f"{s['wall_s']:,.3f} s (the ticks, bots and accounting)")
    run.add_row("Ticks per second", _num(s["ticks_per_s"], 1))
    run.add_row("Real-time factor",
                f"{_num(s['realtime_factor'], 1)}x (simulated seconds per wall second)")
    run.add_row("Discoveries", f"{s['discoveries']:,} ("
                f"{_num(s['discoveries_per_simulated_s'], 1)} per simulated s), "
                f"value {s['value_found']:,}")
    run.add_row("Respawns", f"{s['respawns']:,}")
    run.add_row("Dropped events", f"{s['dropped_events']:,}")
    vis = report["visibility"]
    if vis is not None:
        run.add_row("Visibility", f"{vis['observers']:,} observers, "
                    f"{_num(vis['records_per_tick'], 1)} records per tick, "
                    f"{vis['truncated']:,} truncated")
    run.add_row("State hash", s["state_hash"])
    console.print(run)

    phases = Table(title="Milliseconds per tick", title_justify="left")
    phases.add_column("phase")
    for col in ("p50", "p99", "max", "mean"):
        phases.add_column(col, justify="right")
    phases.add_column("share of mean total", justify="right")
    stats = report["phases_ms"]
    total_mean = stats["total"]["mean"]
    for name, st in stats.items():
        share = ("-" if name == "visibility" or not total_mean
                 else f"{100 * st['mean'] / total_mean:.1f}%")
        label = "visibility (apart)" if name == "visibility" else name
        phases.add_row(label, *(_num(st[k], 3) for k in ("p50", "p99", "max", "mean")), share,
                       style="bold" if name == "total" else None,
                       end_section=name in ("leaderboard", "total"))
    console.print(phases)

    hunts = report["hunts"]
    varied = s["width"] is None  # else the size is in the Run table
    table = Table(title="Hunts" + (f" (first {HUNTS_SHOWN} of {len(hunts):,}; all in --json)"
                                   if len(hunts) > HUNTS_SHOWN else ""),
                  caption="found/s: discoveries per simulated second; mean: value per "
                          "discovery; best: top score",
                  title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                  collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("name", overflow="ellipsis", no_wrap=True)
    for col in ("bots", "treasures", *(("size",) if varied else ()), "found", "found/s",
                "value", "mean", "best"):
        table.add_column(col, justify="right", no_wrap=True)
    for h in hunts[:HUNTS_SHOWN]:
        p = h["params"]
        best = h["leaderboard"][0]["score"] if h["leaderboard"] else 0
        size = (f"{p['width']:.0f}x{p['height']:.0f}",) if varied else ()
        table.add_row(str(h["index"]), h["name"], f"{h['players']:,}", f"{p['treasures']:,}",
                      *size, f"{h['discoveries']:,}", _num(h["discoveries_per_simulated_s"], 1),
                      f"{h['value_found']:,}", _num(h["mean_value"], 2), f"{best:,}")
    console.print(table)

    boards = []
    for h in hunts[:LEADERBOARDS_SHOWN]:
        board = Table(title=f"Top {TOP}: hunt {h['index']} {h['name']!r}", title_justify="left",
                      caption="bot: policy-N, the Nth to join (from 0)",
                      caption_justify="left")
        board.add_column("rank", justify="right")
        board.add_column("bot")
        for col in ("score", "found"):
            board.add_column(col, justify="right")
        for row in h["leaderboard"]:
            board.add_row(str(row["rank"]), row["name"], f"{row['score']:,}",
                          f"{row['found']:,}")
        if not h["leaderboard"]:
            board.add_row("-", "nobody scored", "-", "-")
        boards.append(board)
    console.print(Columns(boards))
    if len(hunts) > LEADERBOARDS_SHOWN:
        console.print(f"Leaderboards of the first {LEADERBOARDS_SHOWN} of {len(hunts):,} hunts "
                      "shown; all are in --json.")
    if report.get("rounds"):
        from .sim_rounds import print_rounds

        print_rounds(console, report["rounds"])


# ---------------------------------------------------------------------- files


def write_json(path: Path, report: dict[str, Any], rec: Record) -> None:
    """The report as JSON (numbers as numbers; ``null`` where nothing was measured)."""
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_plot(path: Path, report: dict[str, Any], rec: Record) -> None:
    """Hunt 0's discovery and final-position heatmaps, and every bot's final score."""
    from matplotlib.figure import Figure  # lazily: ~1 s to import, and only for --plot

    world, params = rec.world, rec.plan.hunts[0]
    extent = (0.0, params.width, 0.0, params.height)
    slots0 = world.active_slots(0)
    positions, _, _ = np.histogram2d(world.players.x[slots0], world.players.y[slots0],
                                     bins=rec.heat.shape, range=[extent[:2], extent[2:]])
    scores = world.players.score[world.active_slots()]
    rows = world.treasure_rows(0)

    fig = Figure(figsize=(17, 5.5), layout="constrained")
    ax_found, ax_pos, ax_scores = fig.subplots(1, 3)
    for ax, grid, label, title in (
        (ax_found, rec.heat, "discoveries per cell", f"Discoveries, hunt 0 {params.name!r}"),
        (ax_pos, positions, "bots per cell", f"Final bot positions, hunt 0 {params.name!r}"),
    ):
        image = ax.imshow(grid.T, origin="lower", extent=extent, cmap="inferno",
                          interpolation="nearest", vmin=0, vmax=max(1.0, float(grid.max())))
        fig.colorbar(image, ax=ax, label=label, shrink=0.85)
        ax.set_title(title)
        ax.set_xlabel("x (world units)")
        ax.set_ylabel("y (world units)")
    ax_pos.scatter(world.treasures.x[rows], world.treasures.y[rows], s=6, c="cyan",
                   marker="x", linewidths=0.6, label="treasures (final)")
    ax_pos.legend(loc="upper right", fontsize="small")
    top = int(scores.max(initial=0))
    width = -(-(top + 1) // 50)  # at most 50 bins, each a whole number of points wide
    ax_scores.hist(scores, bins=np.arange(0, top + width + 1, width) - 0.5, color="tab:blue")
    ax_scores.set_yscale("log")
    ax_scores.set_title(f"Final scores, all {scores.shape[0]:,} bots")
    ax_scores.set_xlabel("score")
    ax_scores.set_ylabel("bots (log scale)")

    s = report["summary"]
    mix = ", ".join(f"{name} {frac:.0%}" for name, frac in s["bots"].items())
    size = ("varied sizes" if s["width"] is None
            else f"{s['width']:,.0f} x {s['height']:,.0f} world units")
    fig.suptitle(f"{s['hunts']:,} hunt(s) x {s['players_per_hunt']:,} bots ({mix}), "
                 f"{params.treasures:,} treasures in hunt 0, {size}, {s['ticks']:,} ticks at "
                 f"{s['tick_rate']} Hz, seed {s['seed']}")
    fig.savefig(path, format="png", dpi=100)
