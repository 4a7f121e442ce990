"""``simulate --rounds``: round-based hunts in a simulation, and the per-round report.

For game designers tuning round length and treasure counts: ``--rounds N`` gives
every hunt a round plan of N rounds (``--round-ticks``, ``--lobby-ticks``,
``--results-ticks``, ``--round-treasures``, ``--round-end``, ``--no-respawn``), or
the hunts of ``--config`` keep their own ``[hunt.rounds]`` plans. The report shows,
per hunt and round, the winners' scores, the ticks (and simulated seconds) from the
round's start to its first and its last discovery, and how many treasures were never
found (still in play when the round ended).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .sim_plan import UsageError, parse_int

if TYPE_CHECKING:
    from rich.console import Console

    from tickengine import HuntParams, TickResult, World

#: Winners shown per round.
WINNERS = 3
#: Rounds shown per hunt in the table (all are in --json), hunts shown.
ROUNDS_SHOWN = 20
HUNTS_SHOWN = 3
DEFAULT_ROUND_TICKS = 600
DEFAULT_LOBBY_TICKS = 20
DEFAULT_RESULTS_TICKS = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rounds (docs/rules.md, \"Rounds\")")
    g.add_argument("--rounds", metavar="N",
                   help="play N rounds in every hunt (lobby, running phase, results) and "
                        "report each round; --ticks then defaults to what N rounds take. "
                        "Hunts of --config with a [hunt.rounds] plan play theirs (N "
                        "overrides its count)")
    g.add_argument("--round-ticks", metavar="N",
                   help=f"ticks a round runs at most (default: {DEFAULT_ROUND_TICKS})")
    g.add_argument("--lobby-ticks", metavar="N",
                   help=f"ticks of each lobby (default: {DEFAULT_LOBBY_TICKS})")
    g.add_argument("--results-ticks", metavar="N",
                   help=f"ticks of each results phase (default: {DEFAULT_RESULTS_TICKS})")
    g.add_argument("--round-treasures", metavar="N",
                   help="treasures a round places (default: the hunt's --treasures)")
    g.add_argument("--round-end", metavar="HOW",
                   help="when a round ends before --round-ticks: 'time' (never), "
                        "'all_found' (implies --no-respawn) or 'score:N' (a bot reached N "
                        "points) (default: time)")
    g.add_argument("--no-respawn", action="store_true",
                   help="found treasures do not come back during the round")


def apply_rounds(args: argparse.Namespace, hunts: list[HuntParams]) -> tuple[list[HuntParams],
                                                                             int | None]:
    """The hunts with their round plans, and the ticks N rounds take (None: no --rounds)."""
    from tickengine import ConfigError, RoundPlan, RoundSpec

    count = parse_int("--rounds", getattr(args, "rounds", None), 1, 100_000)
    others = ("round_ticks", "lobby_ticks", "results_ticks", "round_treasures", "round_end")
    if count is None:
        given = [f"--{o.replace('_', '-')}" for o in others if getattr(args, o, None)]
        if given or getattr(args, "no_respawn", False):
            raise UsageError(f"{', '.join(given) or '--no-respawn'} need --rounds N")
        return hunts, _ticks_for(hunts)
    running = parse_int("--round-ticks", args.round_ticks, 1, 10**9) or DEFAULT_ROUND_TICKS
    lobby = parse_int("--lobby-ticks", args.lobby_ticks, 1, 10**9) or DEFAULT_LOBBY_TICKS
    results = parse_int("--results-ticks", args.results_ticks, 1, 10**9) or DEFAULT_RESULTS_TICKS
    treasures = parse_int("--round-treasures", args.round_treasures, 1, 50_000_000)
    end, target = "time", 0
    if args.round_end is not None:
        how = args.round_end.strip()
        if how.startswith("score:"):
            end, target = "score", parse_int("--round-end score:N", how[6:], 1, 2**62)
        elif how in ("time", "all_found"):
            end = how
        else:
            raise UsageError(f"--round-end must be time, all_found or score:N, got {how!r}")
    respawn = not args.no_respawn and end != "all_found"
    out = []
    for h in hunts:
        if h.rounds is not None and not any(getattr(args, o, None) for o in others):
            plan = RoundPlan.from_dict({**h.rounds.to_dict(), "count": count})
        else:
            spec = RoundSpec(treasures=treasures, respawn=respawn, end=end, target_score=target)
            plan = RoundPlan(count=count, lobby_ticks=lobby, running_ticks=running,
                             results_ticks=results, round=(spec,))
        try:
            if treasures is not None and treasures > h.treasures:
                h = h.replace(treasures=treasures)
            out.append(h.replace(rounds=plan))
        except ConfigError as exc:
            raise UsageError(f"--rounds: hunt {h.name!r}: {exc}") from None
    return out, _ticks_for(out)


def _ticks_for(hunts: list[HuntParams]) -> int | None:
    """Ticks until every hunt's plan is over (None: no plan, or one that runs forever)."""
    plans = [h.rounds for h in hunts if h.rounds is not None]
    if not plans or any(p.count == 0 for p in plans):
        return None
    return max(p.count * (p.lobby_ticks + p.running_ticks + p.results_ticks) + 1
               for p in plans)


@dataclass(slots=True)
class _Open:
    """A round running in one hunt: what its report needs."""

    number: int
    start: int
    treasures: int
    first: int | None = None
    last: int | None = None
    found: int = 0
    active: int = 0


@dataclass(slots=True)
class RoundTracker:
    """Per-round figures of a simulation, fed each tick's result (cheap on ticks where no
    round hunt changes phase: a count of active treasures per running hunt)."""

    world: World
    open: dict[int, _Open] = field(default_factory=dict)
    rounds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def tick(self, result: TickResult) -> None:
        world = self.world
        if not world.has_rounds:
            return
        t = result.tick
        ended = {int(h): rows for h, rows in _by_hunt(result.results)}
        for h in result.round_changed.tolist():
            state = world.round_state(h)
            if h in self.open and state.phase != "running":
                self._close(h, t, ended.get(h))
            if state.phase == "running":
                self.open[h] = _Open(state.number, t, state.spec.treasures)
        found = result.discoveries
        if len(found):
            for h, rows in _by_hunt(found):
                o = self.open.get(int(h))
                if o is not None:
                    o.first = t if o.first is None else o.first
                    o.last = t
                    o.found += len(rows)
        state = world.treasures.state
        for h, o in self.open.items():
            o.active = int(np.count_nonzero(state[world.treasure_rows(h)] == 1))

    def _close(self, h: int, t: int, rows: np.ndarray | None) -> None:
        o = self.open.pop(h)
        winners = [] if rows is None else [int(s) for s in rows["score"][:WINNERS]]
        self.rounds.setdefault(h, []).append({
            "round": o.number, "start_tick": o.start, "end_tick": t,
            "ticks": t - o.start, "treasures": o.treasures, "discoveries": o.found,
            "first_discovery_ticks": None if o.first is None else o.first - o.start,
            "last_discovery_ticks": None if o.last is None else o.last - o.start,
            "never_found": o.active,
            "players": 0 if rows is None else len(rows),
            "winners": winners,
        })

    def report(self, tick_rate: int) -> list[dict[str, Any]]:
        out = []
        for h, params in enumerate(self.world.hunt_params):
            if params.rounds is None:
                continue
            rounds = self.rounds.get(h, [])
            for r in rounds:
                for key in ("first_discovery", "last_discovery"):
                    ticks = r[key + "_ticks"]
                    r[key + "_s"] = None if ticks is None else ticks / tick_rate
            out.append({"hunt": params.name, "plan": params.rounds.to_dict(), "rounds": rounds})
        return out


def _by_hunt(records: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Records (discoveries or results, in hunt order) grouped by hunt."""
    if not len(records):
        return []
    hunts = records["hunt"]
    cuts = np.flatnonzero(np.diff(hunts)) + 1
    return [(int(part["hunt"][0]), part) for part in np.split(records, cuts)]


def print_rounds(console: Console, rounds: list[dict[str, Any]]) -> None:
    """One table per round hunt: each round's winners, discovery times, unfound treasures."""
    from rich.table import Table

    for hunt in rounds[:HUNTS_SHOWN]:
        table = Table(title=f"Rounds of hunt {hunt['hunt']!r}", title_justify="left")
        for name, justify in (("round", "right"), ("ticks", "right"), ("players", "right"),
                              ("winners' scores", "left"), ("first find", "right"),
                              ("last find", "right"), ("found", "right"),
                              ("never found", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for r in hunt["rounds"][:ROUNDS_SHOWN]:
            def when(ticks: int | None, seconds: float | None) -> str:
                return "-" if ticks is None else f"{ticks:,} ({seconds:,.1f} s)"
            table.add_row(
                str(r["round"]), f"{r['ticks']:,}", f"{r['players']:,}",
                ", ".join(f"{s:,}" for s in r["winners"]) or "-",
                when(r["first_discovery_ticks"], r["first_discovery_s"]),
                when(r["last_discovery_ticks"], r["last_discovery_s"]),
                f"{r['discoveries']:,}", f"{r['never_found']:,} of {r['treasures']:,}")
        if not hunt["rounds"]:
            table.add_row("-", "(no round ended in the ticks run)", *["-"] * 6)
        console.print(table)
