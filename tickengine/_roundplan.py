"""A hunt's round plan: lobby, running phase, results, N rounds or forever (docs/rules.md).

Validated and frozen like :class:`~tickengine.HuntParams`, whose ``rounds``
field holds one (``None``: the hunt has no rounds and plays forever, as hunts
always did). Lengths are in ticks, values in points. The same mapping is the
TOML table ``[hunt.rounds]`` and the JSON object ``"rounds"`` of a hunt::

    [hunt.rounds]
    count = 3               # rounds, then the hunt is over; 0: rounds forever
    lobby_ticks = 200       # players join and walk, no treasures
    running_ticks = 2400    # the longest a round runs
    results_ticks = 200     # standings shown before the next round's lobby
    # what each round plays, unless a [[hunt.rounds.round]] entry says otherwise:
    treasures = 40          # at most the hunt's own `treasures` (the rows it reserves)
    respawn = false
    end = "all_found"       # "time", "all_found" or "score"

    [[hunt.rounds.round]]   # round 1; round n plays entry (n - 1) mod len
    end = "score"
    target_score = 50

``to_dict()`` writes every entry in full (the plan-level round keys folded in),
and ``from_dict(plan.to_dict())`` gives the plan back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError

#: End conditions of a running phase, by name, and their codes in the engine's state.
END_CONDITIONS = {"time": 0, "all_found": 1, "score": 2}

#: Most entries a plan's ``round`` list may hold.
MAX_ROUND_ENTRIES = 1000

#: Longest phase, in ticks (over a year at 20 Hz).
MAX_PHASE_TICKS = 1_000_000_000


def _int(owner: str, name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{owner}.{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _unknown(cls: type, data: dict[str, Any], where: str, extra: frozenset[str] = frozenset()
             ) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table (a mapping), got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)} | extra
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True, slots=True)
class RoundSpec:
    """What one round plays. ``None`` fields take the hunt's value when the plan is attached."""

    #: Treasures placed when the running phase begins (at most the hunt's ``treasures``).
    treasures: int | None = None
    #: Each placed treasure is worth an integer in [min, max] points.
    treasure_value_min: int | None = None
    treasure_value_max: int | None = None
    #: Whether a found treasure reappears ``respawn_delay`` ticks later (else it is gone).
    respawn: bool = True
    #: When the running phase ends before ``running_ticks``: "time" (never early),
    #: "all_found" (no treasure left; needs ``respawn = false``), "score" (a player
    #: reached ``target_score``).
    end: str = "time"
    #: Points that end the round when ``end = "score"`` (0 otherwise).
    target_score: int = 0

    def __post_init__(self) -> None:
        own = "rounds.round"
        if self.treasures is not None:
            _int(own, "treasures", self.treasures, 0, 50_000_000)
        if self.treasure_value_min is not None:
            _int(own, "treasure_value_min", self.treasure_value_min, 1, 1_000_000)
        if self.treasure_value_max is not None:
            _int(own, "treasure_value_max", self.treasure_value_max,
                 self.treasure_value_min or 1, 1_000_000)
        if not isinstance(self.respawn, bool):
            raise ConfigError(f"{own}.respawn must be true or false, got {self.respawn!r}")
        if self.end not in END_CONDITIONS:
            raise ConfigError(f"{own}.end must be one of {', '.join(END_CONDITIONS)}, "
                              f"got {self.end!r}")
        if self.end == "score":
            _int(own, "target_score", self.target_score, 1, 2**62)
        else:
            _int(own, "target_score", self.target_score, 0, 0)
        if self.end == "all_found" and self.respawn:
            raise ConfigError(f"{own}: end = \"all_found\" needs respawn = false (with respawns "
                              "the treasures are never all found)")
        if self.end == "all_found" and self.treasures == 0:
            raise ConfigError(f"{own}: end = \"all_found\" needs treasures >= 1")

    def resolved(self, hunt: Any) -> RoundSpec:
        """This spec with ``None`` fields taken from ``hunt`` (a HuntParams), checked against it."""
        spec = dataclasses.replace(
            self,
            treasures=hunt.treasures if self.treasures is None else self.treasures,
            treasure_value_min=(hunt.treasure_value_min if self.treasure_value_min is None
                                else self.treasure_value_min),
            treasure_value_max=(hunt.treasure_value_max if self.treasure_value_max is None
                                else self.treasure_value_max),
        )
        if spec.treasures > hunt.treasures:
            raise ConfigError(
                f"hunt.rounds.round.treasures must be at most the hunt's treasures "
                f"({hunt.treasures}, the rows it reserves), got {spec.treasures}; raise "
                "hunt.treasures")
        if spec.end == "all_found" and spec.treasures == 0:
            raise ConfigError("hunt.rounds.round: end = \"all_found\" needs treasures >= 1")
        if spec.treasure_value_max < spec.treasure_value_min:
            raise ConfigError(
                f"hunt.rounds.round.treasure_value_max ({spec.treasure_value_max}) must be >= "
                f"treasure_value_min ({spec.treasure_value_min})")
        return spec

    @property
    def end_code(self) -> int:
        return END_CONDITIONS[self.end]


_SPEC_KEYS = frozenset(f.name for f in dataclasses.fields(RoundSpec))


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """How a hunt runs in rounds: phase lengths (ticks), how many rounds, what each plays."""

    #: Rounds to play, then the hunt is over (players stay, no treasures); 0: forever.
    count: int = 0
    #: Ticks of each round's lobby (players join and walk; no treasures).
    lobby_ticks: int = 200
    #: Ticks a running phase lasts at most (its end condition may end it sooner).
    running_ticks: int = 1200
    #: Ticks the results are shown before the next round's lobby (or the end).
    results_ticks: int = 200
    #: What the rounds play: round n plays ``round[(n - 1) % len(round)]``.
    round: tuple[RoundSpec, ...] = (RoundSpec(),)

    def __post_init__(self) -> None:
        own = "rounds"
        _int(own, "count", self.count, 0, 1_000_000)
        for name in ("lobby_ticks", "running_ticks", "results_ticks"):
            _int(own, name, getattr(self, name), 1, MAX_PHASE_TICKS)
        rounds = tuple(self.round) if isinstance(self.round, list | tuple) else None
        if not rounds or len(rounds) > MAX_ROUND_ENTRIES or not all(
                isinstance(s, RoundSpec) for s in rounds):
            raise ConfigError(f"{own}.round must be 1-{MAX_ROUND_ENTRIES} round entries, "
                              f"got {self.round!r}")
        object.__setattr__(self, "round", rounds)

    def spec(self, number: int) -> RoundSpec:
        """What round ``number`` (1, 2, ...) plays."""
        return self.round[(number - 1) % len(self.round)]

    def resolved(self, hunt: Any) -> RoundPlan:
        """This plan with every round's ``None`` fields taken from ``hunt`` (a HuntParams)."""
        return dataclasses.replace(self, round=tuple(s.resolved(hunt) for s in self.round))

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count, "lobby_ticks": self.lobby_ticks,
            "running_ticks": self.running_ticks, "results_ticks": self.results_ticks,
            "round": [dataclasses.asdict(s) for s in self.round],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "hunt.rounds") -> RoundPlan:
        """Build from a TOML table or JSON object: plan keys, round defaults, ``round`` list."""
        _unknown(cls, data, where, _SPEC_KEYS)
        defaults = {k: v for k, v in data.items() if k in _SPEC_KEYS}
        entries = data.get("round", [{}])
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list | tuple):
            raise ConfigError(f"{where}.round must be a list of tables, got {entries!r}")
        specs = []
        for i, entry in enumerate(entries):
            if isinstance(entry, RoundSpec):
                specs.append(entry)
                continue
            _unknown(RoundSpec, entry, f"{where}.round #{i + 1}")
            specs.append(RoundSpec(**{**defaults, **entry}))
        plan = {k: v for k, v in data.items() if k not in _SPEC_KEYS and k != "round"}
        return cls(**plan, round=tuple(specs))
