"""Hunt parameters and engine capacities: validated, frozen, loadable from TOML.

Every field names its unit. Validation happens in the constructor, so a
:class:`HuntParams` that exists is a valid one; the error names the field, the
value given and the range allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ._errors import ConfigError
from ._roundplan import RoundPlan

#: Largest seed accepted (seeds are stored as unsigned 64-bit RNG states).
MAX_SEED = 2**63 - 1


def _check_range(owner: str, name: str, value: Any, lo: float, hi: float, *, integer: bool) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{owner}.{name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be an integer in [{lo:g}, {hi:g}], got {value!r}")
    if not math.isfinite(value) or not (lo <= value <= hi):
        raise ConfigError(f"{owner}.{name} must be in [{lo:g}, {hi:g}], got {value!r}")


@dataclass(frozen=True, slots=True)
class HuntParams:
    """The rules and size of one hunt (one independent world).

    Lengths are in world units, speeds in world units per second, delays in
    ticks, rates in ticks per second (Hz).
    """

    #: Name clients use to pick the hunt (1-64 printable characters).
    name: str = "demo"
    #: World size in world units; positions live in [0, width] x [0, height].
    width: float = 1000.0
    height: float = 1000.0
    #: Distance a player covers in one second of moving at full stick.
    player_speed: float = 100.0
    #: Ticks per second. All hunts of one :class:`~tickengine.World` share it.
    tick_rate: int = 20
    #: Number of treasures in play (found ones respawn, so this stays constant).
    treasures: int = 100
    #: Each (re)spawned treasure gets an integer value uniform in [min, max].
    treasure_value_min: int = 1
    treasure_value_max: int = 10
    #: A treasure is found by a player within this distance (world units).
    discovery_radius: float = 5.0
    #: Players within this distance of a treasure get a hint > 0 (world units).
    hint_radius: float = 100.0
    #: Hint levels above zero: level L means "very close", 1 means "at the edge".
    hint_levels: int = 5
    #: Players see other players within this distance (world units).
    view_radius: float = 150.0
    #: Ticks between a treasure being found and reappearing elsewhere.
    respawn_delay: int = 40
    #: Players listed on the hunt's leaderboard.
    leaderboard_size: int = 10
    #: Players allowed in this hunt at once.
    max_players: int = 10_000
    #: Seed of the hunt's RNG stream (spawns, treasure placement and values).
    seed: int = 0
    #: The hunt's round plan (docs/rules.md, "Rounds"); None: no rounds, the hunt
    #: plays forever with ``treasures`` in play. With a plan, ``treasures`` is the
    #: number of treasure rows reserved: the most any round places.
    rounds: RoundPlan | None = None

    def __post_init__(self) -> None:
        own = "hunt"
        if not isinstance(self.name, str) or not (1 <= len(self.name) <= 64):
            raise ConfigError(f"{own}.name must be 1-64 characters, got {self.name!r}")
        if not self.name.isprintable():
            raise ConfigError(f"{own}.name must be printable, got {self.name!r}")
        _check_range(own, "width", self.width, 1.0, 1e7, integer=False)
        _check_range(own, "height", self.height, 1.0, 1e7, integer=False)
        _check_range(own, "player_speed", self.player_speed, 0.0, 1e5, integer=False)
        _check_range(own, "tick_rate", self.tick_rate, 1, 240, integer=True)
        _check_range(own, "treasures", self.treasures, 0, 50_000_000, integer=True)
        _check_range(own, "treasure_value_min", self.treasure_value_min, 1, 1_000_000, integer=True)
        _check_range(
            own, "treasure_value_max", self.treasure_value_max,
            self.treasure_value_min, 1_000_000, integer=True,
        )
        # Beyond the map's diagonal a radius means "anywhere": no larger value makes sense.
        diagonal = math.hypot(self.width, self.height)
        _check_range(own, "discovery_radius", self.discovery_radius, 1e-3, diagonal, integer=False)
        _check_range(
            own, "hint_radius", self.hint_radius, self.discovery_radius, 1e7, integer=False
        )
        _check_range(own, "hint_levels", self.hint_levels, 1, 15, integer=True)
        _check_range(own, "view_radius", self.view_radius, 1e-3, 1e7, integer=False)
        _check_range(own, "respawn_delay", self.respawn_delay, 1, 10_000_000, integer=True)
        _check_range(own, "leaderboard_size", self.leaderboard_size, 1, 100, integer=True)
        _check_range(own, "max_players", self.max_players, 1, 100_000_000, integer=True)
        _check_range(own, "seed", self.seed, 0, MAX_SEED, integer=True)
        if isinstance(self.rounds, dict):
            object.__setattr__(self, "rounds", RoundPlan.from_dict(self.rounds))
        if self.rounds is not None:
            if not isinstance(self.rounds, RoundPlan):
                raise ConfigError(f"{own}.rounds must be a round plan (a table) or None, "
                                  f"got {self.rounds!r}")
            object.__setattr__(self, "rounds", self.rounds.resolved(self))
        # Accept ints for float fields (TOML "width = 1000") but store floats, so
        # snapshots and hashes never depend on how a number was spelled.
        for f in fields(self):
            if f.type == "float":
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    @property
    def step(self) -> float:
        """Distance moved in one tick at full stick (world units per tick)."""
        return self.player_speed / self.tick_rate

    def replace(self, **changes: Any) -> HuntParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (JSON-ready); ``rounds`` only when the hunt has a plan."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rounds"}
        if self.rounds is not None:
            out["rounds"] = self.rounds.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "hunt") -> HuntParams:
        """Build from a mapping (a TOML table), rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        if isinstance(data.get("rounds"), dict):
            data = {**data, "rounds": RoundPlan.from_dict(data["rounds"], where=f"{where} rounds")}
        return cls(**data)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Capacities of one :class:`~tickengine.World`; every buffer is allocated once from these."""

    #: Player slots across all hunts.
    max_players: int = 100_000
    #: Treasure slots across all hunts.
    max_treasures: int = 20_000
    #: Hunts one world can hold.
    max_hunts: int = 64
    #: Visibility records one :meth:`~tickengine.World.visibility` call can write.
    max_visible: int = 1_000_000
    #: Discovery events per tick; ``None`` means "as many as treasures" (never overflows).
    max_discoveries: int | None = None
    #: Join and leave events per tick; ``None`` means "as many as players" (never overflows).
    max_membership_events: int | None = None

    def __post_init__(self) -> None:
        own = "engine"
        _check_range(own, "max_players", self.max_players, 1, 200_000_000, integer=True)
        _check_range(own, "max_treasures", self.max_treasures, 1, 100_000_000, integer=True)
        _check_range(own, "max_hunts", self.max_hunts, 1, 1_000_000, integer=True)
        _check_range(own, "max_visible", self.max_visible, 1, 2_000_000_000, integer=True)
        if self.max_discoveries is not None:
            _check_range(own, "max_discoveries", self.max_discoveries, 1, 1e9, integer=True)
        if self.max_membership_events is not None:
            _check_range(
                own, "max_membership_events", self.max_membership_events, 1, 1e9, integer=True
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "engine") -> EngineConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**data)


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """What a TOML file describes: engine capacities and the hunts to create."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    hunts: tuple[HuntParams, ...] = (HuntParams(),)


def load_config(path: str | Path) -> WorldConfig:
    """Read a world description from a TOML file (see :func:`parse_config` for the layout).

    Raises :class:`ConfigError` naming the file when it cannot be read or is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    return parse_config(text, where=str(path))


def parse_config(source: str | dict[str, Any], *, where: str = "config") -> WorldConfig:
    """Build a world description from TOML text or an already parsed mapping.

    The layout::

        [engine]            # optional, EngineConfig fields
        max_players = 20000

        [defaults]          # optional, HuntParams fields shared by every hunt
        width = 2000

        [[hunt]]            # one table per hunt, HuntParams fields
        name = "forest"
        seed = 7

    A ``[server]`` table is allowed and ignored here (it belongs to the server).
    Raises :class:`ConfigError` naming the table and the key at fault.
    """
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"engine", "defaults", "hunt", "server"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown table(s) {', '.join(unknown)}; "
            "allowed: engine, defaults, hunt, server"
        )
    engine = EngineConfig.from_dict(data.get("engine", {}), where=f"{where} [engine]")
    defaults = data.get("defaults", {})
    tables = data.get("hunt", [{}])
    if isinstance(tables, dict):
        tables = [tables]
    hunts = []
    for i, table in enumerate(tables):
        merged = {**defaults, **table}
        hunts.append(HuntParams.from_dict(merged, where=f"{where} [[hunt]] #{i + 1}"))
    names = [h.name for h in hunts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: hunt names must be unique, repeated: {', '.join(dupes)}")
    return WorldConfig(engine=engine, hunts=tuple(hunts))
