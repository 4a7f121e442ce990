"""``treasure-hunt simulate``: run hunts full of bots headless, time every tick, report.

The flow: check every option (:mod:`server.tools.sim_plan`), warm the JIT up (outside
the timings), build a World sized exactly for the run, then tick it with bots
deciding before each tick. Per-tick timings go into one preallocated array and
discoveries into preallocated counters, so the loop allocates next to nothing.
The tables, JSON and plot are made from the result (:mod:`server.tools.sim_report`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sim_plan import (
    AREA_PER_PLAYER,
    DEFAULT_BOTS,
    DEFAULT_PLAYERS,
    DEFAULT_TICK_RATE,
    DEFAULT_TICKS,
    MAX_TICKS,
    OutputError,
    Plan,
    UsageError,
    make_plan,
)

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from tickengine import Bots, WarmUpReport, World

#: Discovery heatmap resolution (bins per side, over hunt 0).
HEAT_BINS = 64
#: Console width of the report when stdout is not a terminal (and COLUMNS is unset).
REPORT_WIDTH = 120
#: Seconds between progress bar refreshes.
PROGRESS_EVERY_S = 0.1

EXAMPLES = """\
examples:
  # 10 hunts of 5,000 bots (80% hunters), 1,200 ticks, timings and a JSON report
  treasure-hunt simulate --hunts 10 --players 5000 --bots hunter=0.8,random=0.2 \\
      --ticks 1200 --json run.json

  # the hunts of a config file, tuned from the command line, with plots
  treasure-hunt simulate --config examples/forest.toml --treasures 50 --plot forest.png

  # one million bots on one thread, also timing visibility for 1,000 observers
  treasure-hunt simulate --players 1e6 --threads 1 --visibility 1000 --quiet

  # 5 rounds of 30 s with 40 treasures that do not respawn: winners, find times per round
  treasure-hunt simulate --players 200 --rounds 5 --round-ticks 600 --round-treasures 40 \
      --no-respawn

exit status: 0 done; 1 an output file cannot be written (its folder is missing
or read-only, checked before the run; or the write failed at the end, the report
is still printed); 2 bad option or config (--plot without matplotlib included);
130 interrupted (Ctrl-C: the ticks run so far are still reported).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``simulate`` and its options."""
    p = subparsers.add_parser(
        "simulate",
        help="run hunts full of bots headless; report tick timings, discoveries, leaderboards",
        description=(
            "Run one or more hunts full of bots for a number of ticks, as fast as the\n"
            "machine allows, and report the time per tick by engine phase, throughput,\n"
            "discoveries and leaderboards: to tune maps and rewards, and to size servers.\n"
            "Kernels are compiled (or loaded from Numba's cache) before the run and never\n"
            "count in the timings. Hunt rules not set here (speeds, radii, treasure values,\n"
            "respawn delay, ...) are the engine's defaults or come from --config."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    world = p.add_argument_group("world")
    world.add_argument(
        "--config", metavar="FILE.toml",
        help="hunts and engine settings from a TOML file ([engine], [defaults], [[hunt]] "
             "tables; see examples/forest.toml). Options given below override it for "
             "every hunt. Default: hunts built from the options alone")
    world.add_argument(
        "--hunts", metavar="N",
        help="number of hunts, all ticked together in one World (default: 1, or the "
             "number of [[hunt]] tables of --config; more hunts than tables reuse them "
             "in turn)")
    world.add_argument(
        "--players", metavar="N",
        help=f"bots per hunt, all joined before the first tick (default: {DEFAULT_PLAYERS})")
    world.add_argument(
        "--treasures", metavar="N",
        help="treasures in play per hunt; found ones respawn elsewhere (default: "
             "players / 10, or the config's)")
    world.add_argument(
        "--width", metavar="UNITS",
        help="map width in world units (default: a square of "
             f"{AREA_PER_PLAYER:g} square units per player, side = sqrt(players * "
             f"{AREA_PER_PLAYER:g}), or the config's; --width alone gives a square)")
    world.add_argument(
        "--height", metavar="UNITS",
        help="map height in world units (default: like --width)")
    world.add_argument(
        "--tick-rate", metavar="HZ",
        help="ticks per simulated second, 1-240; sets the step per tick and the "
             f"real-time factor (default: {DEFAULT_TICK_RATE}, or the config's)")
    world.add_argument(
        "--seed", metavar="N",
        help="seed of the run: hunt i gets seed + i (overriding the config's seeds), bots "
             "get streams mixed from it. Same seed, same final state hash, whatever the "
             "thread count (default: 0)")

    how = p.add_argument_group("run")
    how.add_argument(
        "--ticks", metavar="N",
        help=f"ticks to run, 1-{MAX_TICKS} (default: {DEFAULT_TICKS}, i.e. 30 simulated "
             "seconds at 20 Hz)")
    how.add_argument(
        "--bots", metavar="MIX",
        help="fraction of the bots of each hunt per policy, e.g. 'hunter=0.8,random=0.2'. "
             f"hunter follows the hint, random wanders (default: {DEFAULT_BOTS})")
    how.add_argument(
        "--threads", metavar="N",
        help="Numba threads for the kernels, 1 to NUMBA_NUM_THREADS (default: all)")
    how.add_argument(
        "--visibility", metavar="N",
        help="also compute visibility (who sees whom) after every tick for N observers "
             "spread over all hunts, timed apart from the tick (default: 0, off)")

    from .sim_rounds import add_arguments as add_round_arguments

    add_round_arguments(p)

    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="FILE",
                     help="also write every number of the report to FILE as JSON")
    out.add_argument("--plot", metavar="FILE.png",
                     help="also draw a PNG: discoveries and final positions of hunt 0 as "
                          "heatmaps, and the scores of all bots as a histogram")
    out.add_argument("--quiet", action="store_true",
                     help="no progress bar (the report is still printed)")
    out.add_argument("--no-color", action="store_true",
                     help="plain text, no colours (also: the NO_COLOR environment variable)")
    p.set_defaults(run=run_command, prog=p.prog)


@dataclass(slots=True)
class Record:
    """What a run measured. ``times`` holds ``ticks_done`` rows of nanoseconds, one
    column per entry of ``columns``."""

    plan: Plan
    world: World
    #: The bots, in joining order: hunt h's are bots h * plan.players onwards.
    bots: Bots
    times: np.ndarray
    columns: tuple[str, ...]
    ticks_done: int
    wall_s: float
    setup_s: float
    warm_up_s: float
    #: Kernel signatures the warm-up had to compile (0: all came from the cache).
    warm_up_compiled: int
    #: Discoveries and value found per hunt.
    discoveries: np.ndarray
    value_found: np.ndarray
    #: Discoveries of hunt 0 on a HEAT_BINS x HEAT_BINS grid, indexed [x bin, y bin].
    heat: np.ndarray
    counters: dict[str, int] = field(default_factory=dict)
    #: Per-round figures of round-based hunts (sim_rounds.RoundTracker.report).
    rounds: list = field(default_factory=list)
    interrupted: bool = False
    argv: list[str] = field(default_factory=list)


def run_command(args: argparse.Namespace) -> int:
    """Run ``simulate`` from parsed arguments; returns the exit status."""
    from tickengine import ConfigError

    try:
        plan = make_plan(args)
    except (UsageError, ConfigError) as exc:
        message = " ".join(str(exc).split())
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return 1 if isinstance(exc, OutputError) else 2

    import numba
    from rich.console import Console

    from . import sim_report

    out = Console(no_color=not plan.color, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = max(out.width, REPORT_WIDTH)  # logs and pipes: keep the tables unwrapped
    err = Console(stderr=True, no_color=not plan.color, highlight=False)
    numba.set_num_threads(plan.threads)
    try:
        warm = _warm_up(err)
        start = time.perf_counter()
        world, bots = _build(plan)
        setup_s = time.perf_counter() - start
    except KeyboardInterrupt:
        err.print("Interrupted before the first tick; nothing to report.")
        return 130
    record = _run_ticks(plan, world, bots, err, setup_s=setup_s, warm_up_s=warm.seconds,
                        warm_up_compiled=warm.compiled)
    record.argv = list(getattr(args, "argv", []))

    report = sim_report.summarize(record)
    # Files first: a report piped into `head` must not cost the JSON or the plot.
    status = 130 if record.interrupted else 0
    written = []
    for path, write in ((plan.json_path, sim_report.write_json),
                        (plan.plot_path, sim_report.write_plot)):
        if path is None:
            continue
        try:
            write(path, report, record)
        except OSError as exc:
            print(f"{args.prog}: error: cannot write {str(path)!r}: {exc.strerror}",
                  file=sys.stderr)
            status = status or 1
        else:
            written.append(path)
    sim_report.print_report(out, report)
    for path in written:
        out.print(f"Wrote {path}")
    return status


def _warm_up(err: Console) -> WarmUpReport:
    """Compile or load every kernel, and say which happened."""
    from tickengine import warm_up

    with err.status("JIT warm-up (compiling the kernels the first time)..."):
        report = warm_up()
    how = ("from cache" if report.from_cache
           else f"compiled {report.compiled} kernels; cached for next runs")
    err.print(f"JIT warm-up: {report.seconds:.1f} s ({how})")
    return report


def _build(plan: Plan) -> tuple[World, Bots]:
    """The World with every hunt, and ``plan.players`` bots joined to each."""
    from tickengine import Bots, World

    world = World(plan.engine, plan.hunts)
    bots = Bots(world)
    for h in range(len(plan.hunts)):
        for group, (policy, count) in enumerate(plan.bot_counts):
            if count:
                bots.add(h, count, policy, seed=plan.bot_seed(h, group))
    return world, bots


def _observer_slots(plan: Plan) -> np.ndarray | None:
    """Observers spread evenly over all bots (bots hold slots 0.. in joining order)."""
    import numpy as np

    if plan.observers == 0:
        return None
    total = len(plan.hunts) * plan.players
    return (np.arange(plan.observers, dtype=np.int64) * total // plan.observers).astype(np.int32)


def _run_ticks(plan: Plan, world: World, bots: Bots, err: Console, *,
               setup_s: float, warm_up_s: float, warm_up_compiled: int) -> Record:
    import numpy as np
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from tickengine import PHASES

    from .sim_rounds import RoundTracker

    tracker = RoundTracker(world)
    observers = _observer_slots(plan)
    columns = (*PHASES, "bots", "total") + (("visibility",) if observers is not None else ())
    n_phases, col_bots, col_total = len(PHASES), len(PHASES), len(PHASES) + 1
    col_vis = col_total + 1
    times = np.zeros((plan.ticks, len(columns)), np.int64)
    n_hunts = len(plan.hunts)
    discoveries = np.zeros(n_hunts, np.int64)
    value_found = np.zeros(n_hunts, np.int64)
    heat = np.zeros((HEAT_BINS, HEAT_BINS), np.int64)
    # Discoveries come in treasure row order and hunt 0 owns the first rows: its
    # discoveries are a prefix of every tick's, found by one binary search.
    hunt0_rows_end = world.treasure_rows(0).stop
    bins_per_x = HEAT_BINS / plan.hunts[0].width
    bins_per_y = HEAT_BINS / plan.hunts[0].height
    respawns = dropped = moves = vis_records = vis_truncated = vis_dropped = 0

    progress = Progress(
        BarColumn(bar_width=20), MofNCompleteColumn(),
        TextColumn("ticks  {task.fields[tps]:,.0f} ticks/s  x{task.fields[rtf]:,.1f} real time  "
                   "ETA"),
        TimeRemainingColumn(),
        console=err, transient=True, auto_refresh=False,
        disable=plan.quiet or not err.is_terminal,
    )
    task = progress.add_task("simulate", total=plan.ticks, tps=0.0, rtf=0.0)
    clock = time.perf_counter_ns
    done = 0
    interrupted = False
    with progress:
        start = last_shown = clock()
        try:
            for k in range(plan.ticks):
                c0 = clock()
                bots.decide()
                c1 = clock()
                result = world.tick()
                c2 = clock()
                row = times[k]
                row[:n_phases] = result.phase_ns
                row[col_bots] = c1 - c0
                row[col_total] = c2 - c0
                if observers is not None:
                    vis = world.visibility(observers)
                    row[col_vis] = clock() - c2
                    vis_records += int(vis.offsets[-1])
                    vis_truncated += int(np.count_nonzero(vis.truncated))
                    vis_dropped += vis.dropped
                found = result.discoveries
                if found.shape[0]:
                    np.add.at(discoveries, found["hunt"], 1)
                    np.add.at(value_found, found["hunt"], found["value"])
                    n0 = int(np.searchsorted(found["treasure"], hunt0_rows_end))
                    if n0:
                        ix = (found["x"][:n0] * bins_per_x).astype(np.intp)
                        iy = (found["y"][:n0] * bins_per_y).astype(np.intp)
                        np.add.at(heat, (np.minimum(ix, HEAT_BINS - 1),
                                         np.minimum(iy, HEAT_BINS - 1)), 1)
                tracker.tick(result)
                respawns += result.respawns
                dropped += result.dropped_events
                moves += result.moves_applied
                done = k + 1
                if c2 - last_shown > PROGRESS_EVERY_S * 1e9 and not progress.disable:
                    last_shown = c2
                    tps = done / ((c2 - start) / 1e9)
                    progress.update(task, completed=done, tps=tps, rtf=tps / plan.tick_rate)
                    progress.refresh()
        except KeyboardInterrupt:
            interrupted = True
        wall_s = (clock() - start) / 1e9
    if interrupted:
        err.print(f"Interrupted after {done} of {plan.ticks} ticks; reporting those.")
    return Record(
        plan=plan, world=world, bots=bots, times=times[:done], columns=columns, ticks_done=done,
        wall_s=wall_s, setup_s=setup_s, warm_up_s=warm_up_s, warm_up_compiled=warm_up_compiled,
        discoveries=discoveries,
        value_found=value_found, heat=heat, interrupted=interrupted,
        rounds=tracker.report(plan.tick_rate),
        counters={"respawns": respawns, "dropped_events": dropped, "moves_applied": moves,
                  "visibility_records": vis_records, "visibility_truncated": vis_truncated,
                  "visibility_dropped": vis_dropped},
    )
