"""The options of ``treasure-hunt simulate``, checked and turned into a :class:`Plan`.

Everything a run needs is validated here, before the JIT warm-up, so a typo
costs a one-line error and not a minute of compiling. Each error names the
option at fault, the value given and what is allowed.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from tickengine import EngineConfig, HuntParams

#: Per-hunt and whole-run limits (the engine's own limits, see tickengine._config).
MAX_PLAYERS_PER_HUNT = 100_000_000
MAX_PLAYERS_TOTAL = 200_000_000
MAX_TREASURES_PER_HUNT = 50_000_000
MAX_TREASURES_TOTAL = 100_000_000
MAX_HUNTS = 1_000_000
#: Per-tick timings are kept for every tick: 1e6 ticks is ~70 MB (~14 h of game at 20 Hz).
MAX_TICKS = 1_000_000
MAX_SEED = 2**63 - 1
MAX_SIDE = 1e7

#: Default map: a square of this many square world units per player (constant density).
AREA_PER_PLAYER = 400.0
DEFAULT_PLAYERS = 1000
DEFAULT_TICKS = 600
DEFAULT_TICK_RATE = 20
DEFAULT_BOTS = "hunter=1"
#: Bot policies by name: tickengine.BOT_POLICIES, spelled out so that `--help` need not
#: import the engine (tests/test_cli.py checks the two agree).
POLICY_NAMES = ("hunter", "random")

#: A warm-up faster than this loaded the kernels from Numba's on-disk cache (no compiling).
#: Visibility records are sized to never overflow up to this many (16 bytes each).
VIS_EXACT_LIMIT = 4_000_000
MAX_VISIBLE = 2_000_000_000


class UsageError(Exception):
    """An option is invalid. The message names it, what is allowed and what was given."""


class OutputError(UsageError):
    """An output file (--json, --plot) cannot be written: its folder is missing or not
    writable, or the file is read-only. Exit status 1, like a write that fails after the
    run, not 2: the option is well formed, the file system refuses it."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked simulate run: what to build, how long to run it, what to write."""

    engine: EngineConfig
    hunts: tuple[HuntParams, ...]
    #: Bots per hunt.
    players: int
    #: (policy name, fraction) as given with --bots.
    bot_mix: tuple[tuple[str, float], ...]
    #: (policy name, bots per hunt), summing to ``players``.
    bot_counts: tuple[tuple[str, int], ...]
    ticks: int
    tick_rate: int
    threads: int
    seed: int
    #: Visibility observers (player slots spread over all hunts); 0 for none.
    observers: int
    json_path: Path | None
    plot_path: Path | None
    config_path: Path | None
    quiet: bool
    color: bool

    def bot_seed(self, hunt: int, group: int) -> int:
        """Seed of the ``group``-th policy group of bots in ``hunt``.

        Mixed from --seed, so bots never replay a hunt's own RNG stream (a bot's
        stream starting at the hunt's seed would repeat its spawn draws).
        """
        return _mix64(_mix64(_mix64(self.seed ^ 0xB075_5EED_B075_5EED) + hunt) + group)


def _mix64(z: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit function of ``z``."""
    mask = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def parse_int(option: str, text: str | None, lo: int, hi: int) -> int | None:
    """``text`` as an integer in [lo, hi] (``1_000`` and ``1e6`` are fine); None stays None."""
    if text is None:
        return None
    value: int | None = None
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f.is_integer():
            value = int(f)
    if value is None or not lo <= value <= hi:
        raise UsageError(f"{option} must be an integer in [{lo}, {hi}], got {text!r}")
    return value


def parse_float(option: str, text: str | None, lo: float, hi: float, unit: str) -> float | None:
    """``text`` as a finite number in [lo, hi]; None stays None."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError(f"{option} must be a number of {unit} in [{lo:g}, {hi:g}], got {text!r}")
    return value


def parse_bots(text: str) -> tuple[tuple[str, float], ...]:
    """``hunter=0.8,random=0.2`` -> (("hunter", 0.8), ("random", 0.2)); a lone name means 1."""
    allowed = (f"--bots must be POLICY=FRACTION pairs like 'hunter=0.8,random=0.2' "
               f"(policies: {', '.join(POLICY_NAMES)}; fractions in [0, 1] summing to 1)")
    mix: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, frac_text = part.strip().partition("=")
        name = name.strip().lower()
        if name not in POLICY_NAMES:
            raise UsageError(f"{allowed}; unknown policy {name!r} in {text!r}")
        if any(name == seen for seen, _ in mix):
            raise UsageError(f"{allowed}; policy {name!r} given twice in {text!r}")
        try:
            frac = float(frac_text) if sep else 1.0
        except ValueError:
            frac = math.nan
        if not (math.isfinite(frac) and 0.0 <= frac <= 1.0):
            raise UsageError(f"{allowed}; bad fraction {frac_text.strip()!r} in {text!r}")
        mix.append((name, frac))
    total = math.fsum(f for _, f in mix)
    if abs(total - 1.0) > 1e-6:
        raise UsageError(f"{allowed}; these sum to {total:g} in {text!r}")
    return tuple(mix)


def split_counts(total: int, mix: tuple[tuple[str, float], ...]) -> tuple[tuple[str, int], ...]:
    """Share ``total`` bots by fraction, largest remainder first (ties: the order given)."""
    exact = [total * f for _, f in mix]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(mix)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return tuple((name, n) for (name, _), n in zip(mix, counts, strict=True))


def _output_path(option: str, text: str | None, suffix: str | None = None) -> Path | None:
    """A file the run will write: checked now, so a long run is not lost to a typo."""
    if text is None:
        return None
    path = Path(text)
    if suffix is not None and path.suffix.lower() != suffix:
        raise UsageError(f"{option} must name a {suffix} file, got {text!r}")
    if path.is_dir():
        raise UsageError(f"{option} must name a file, got the directory {text!r}")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{option}: cannot write {text!r}: the directory {str(parent)!r} "
                          "does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{option}: cannot write {text!r}: the directory {str(parent)!r} "
                          "is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option}: cannot write {text!r}: the file is read-only")
    return path


def _check_matplotlib() -> None:
    """--plot draws with matplotlib, an optional dependency (the ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed: add the 'plot' "
                         f"extra ({sys.executable} -m pip install -e '.[plot]' from the clone)"
                         ) from None


def _max_visible(observers: int, players: int, hunts: tuple[HuntParams, ...]) -> int:
    """Visibility records for ``observers`` observers: enough to never overflow when that
    fits in VIS_EXACT_LIMIT records, else four times the records a uniform spread would need."""
    if observers == 0:
        return 1
    exact = observers * max(players - 1, 1)
    if exact <= VIS_EXACT_LIMIT:
        return exact
    per_observer = max(
        min(players - 1,
            math.ceil(4 * players * min(1.0, math.pi * h.view_radius**2 / (h.width * h.height))))
        + 64
        for h in hunts
    )
    return min(exact, max(VIS_EXACT_LIMIT, observers * per_observer), MAX_VISIBLE)


def make_plan(args: argparse.Namespace) -> Plan:
    """Check every option (and the --config file); raise :class:`UsageError` or
    :class:`tickengine.ConfigError` with a one-line message naming what is wrong."""
    import numba

    from tickengine import ConfigError, EngineConfig, HuntParams, load_config

    players = parse_int("--players", args.players, 1, MAX_PLAYERS_PER_HUNT)
    players = DEFAULT_PLAYERS if players is None else players
    treasures = parse_int("--treasures", args.treasures, 0, MAX_TREASURES_PER_HUNT)
    width = parse_float("--width", args.width, 1.0, MAX_SIDE, "world units")
    height = parse_float("--height", args.height, 1.0, MAX_SIDE, "world units")
    ticks_given = ticks = parse_int("--ticks", args.ticks, 1, MAX_TICKS)
    ticks = DEFAULT_TICKS if ticks is None else ticks
    tick_rate = parse_int("--tick-rate", args.tick_rate, 1, 240)
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = parse_int("--threads", args.threads, 1, max_threads)
    threads = max_threads if threads is None else threads
    bot_mix = parse_bots(args.bots if args.bots is not None else DEFAULT_BOTS)
    json_path = _output_path("--json", args.json)
    plot_path = _output_path("--plot", args.plot, ".png")
    if plot_path is not None:
        _check_matplotlib()

    config_path = Path(args.config) if args.config is not None else None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            raise UsageError(f"--config: {exc}") from None
        tables, engine = config.hunts, config.engine
    else:
        tables, engine = (HuntParams(),), EngineConfig()

    hunts_given = parse_int("--hunts", args.hunts, 1, MAX_HUNTS)
    n_hunts = hunts_given if hunts_given is not None else (
        len(tables) if config_path is not None else 1)
    if n_hunts * players > MAX_PLAYERS_TOTAL:
        raise UsageError(f"--hunts x --players must be at most {MAX_PLAYERS_TOTAL} bots in all, "
                         f"got {n_hunts} x {players} = {n_hunts * players}")
    seed = parse_int("--seed", args.seed, 0, MAX_SEED - (n_hunts - 1))
    observers = parse_int("--visibility", args.visibility, 0, n_hunts * players) or 0

    # Command-line values override the config's [defaults] and each [[hunt]] table.
    overrides: dict[str, object] = {"max_players": players}
    if config_path is None:
        side = float(round(math.sqrt(players * AREA_PER_PLAYER)))
        overrides.update(width=side, height=side, treasures=max(1, players // 10),
                         tick_rate=DEFAULT_TICK_RATE)
    if width is not None or height is not None:
        overrides.update(width=width if width is not None else height,
                         height=height if height is not None else width)
    if treasures is not None:
        overrides["treasures"] = treasures
    if tick_rate is not None:
        overrides["tick_rate"] = tick_rate
    given = [opt for opt, value in (("--width", width), ("--height", height),
                                    ("--treasures", treasures), ("--tick-rate", tick_rate),
                                    ("--seed", seed)) if value is not None]

    hunts: list[HuntParams] = []
    for i in range(n_hunts):
        table = tables[i % len(tables)]
        repeat = i // len(tables)
        if config_path is None:
            name, hunt_seed = f"hunt-{i}", (seed or 0) + i
        else:
            # Hunts beyond the config's tables reuse them in turn, under a new name and seed.
            name = table.name if repeat == 0 else f"{table.name}~{repeat}"[-64:]
            hunt_seed = seed + i if seed is not None else min(table.seed + repeat, MAX_SEED)
        try:
            hunts.append(table.replace(name=name, seed=hunt_seed, **overrides))
        except ConfigError as exc:
            source = f" built from {', '.join(given)}" if given else ""
            raise UsageError(f"hunt {name!r}{source}: {exc}") from None
    from .sim_rounds import apply_rounds

    hunts, round_ticks = apply_rounds(args, hunts)
    if ticks_given is None and round_ticks is not None:
        ticks = min(round_ticks, MAX_TICKS)
    rates = sorted({h.tick_rate for h in hunts})
    if len(rates) > 1:
        raise UsageError(f"--config: all hunts of a run share one tick_rate, got {rates}; "
                         "give --tick-rate to run them all at one rate")
    total_treasures = sum(h.treasures for h in hunts)
    if total_treasures > MAX_TREASURES_TOTAL:
        raise UsageError(f"--hunts x --treasures must be at most {MAX_TREASURES_TOTAL} "
                         f"treasures in all, got {total_treasures}")

    # Capacities fit the run exactly; max_discoveries / max_membership_events of the
    # config's [engine] table are kept (to study dropped events).
    engine = replace(engine, max_players=n_hunts * players, max_treasures=max(1, total_treasures),
                     max_hunts=n_hunts, max_visible=_max_visible(observers, players, tuple(hunts)))
    return Plan(
        engine=engine, hunts=tuple(hunts), players=players, bot_mix=bot_mix,
        bot_counts=split_counts(players, bot_mix), ticks=ticks, tick_rate=rates[0],
        threads=threads, seed=seed or 0, observers=observers, json_path=json_path,
        plot_path=plot_path, config_path=config_path, quiet=args.quiet, color=not args.no_color,
    )
