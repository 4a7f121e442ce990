"""The slow, obviously-correct reference implementation of one game tick.

This module is the oracle the Numba kernels are tested against: the
differential tests run it side by side with :class:`tickengine.World` and
compare them tick by tick. It implements ``docs/rules.md`` literally, in plain
Python (stdlib only): one object per player and per treasure, plain loops, brute
force over every pair. Nothing here is meant to be fast; when a line could be
clever or obvious, it is obvious.

Floating-point expressions are written in exactly the order the rules give
(``x + dx * step``, ``ddx * ddx + ddy * ddy``, ``(L * d) / R`` ...) because the
engine must agree with them bit for bit.

Units: lengths and positions in world units (64-bit floats), speeds in world
units per second, times in ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import _reference_rounds as rounds
from ._config import HuntParams
from ._dtypes import JOINED, LEFT, VIS_IN_VIEW
from ._errors import (
    CapacityError,
    ConfigError,
    HuntFullError,
    StalePlayerError,
    UnknownHuntError,
)

MASK64 = (1 << 64) - 1
SLOT_MASK = (1 << 32) - 1
MAX_SEQ = (1 << 63) - 1  # sequence numbers are positive signed 64-bit integers


def splitmix64(state: int) -> tuple[int, float]:
    """One splitmix64 draw: returns ``(new_state, u)`` with ``u`` a float in [0, 1)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z = z ^ (z >> 31)
    return state, (z >> 11) * (1.0 / 9007199254740992.0)


@dataclass(slots=True)
class RefPlayer:
    """One row of the player buffers. Positions in world units, ticks as tick numbers."""

    slot: int
    gen: int = 1
    hunt: int = -1  # -1 while the slot has never been used
    active: bool = False  # in play (after the step 1 that activated it)
    pending: bool = False  # joined, not yet in play
    x: float = 0.0
    y: float = 0.0
    x_prev: float = 0.0
    y_prev: float = 0.0
    dx: float = 0.0  # direction, |(dx, dy)| <= 1 (fraction of player_speed)
    dy: float = 0.0
    score: int = 0
    found: int = 0  # treasures found
    last_seq: int = 0  # seq of the last applied move
    hint: int = 0  # 0 (cold) .. hint_levels (hot)
    score_tick: int = 0  # tick the score last grew (or the join tick)
    changed_tick: int = 0  # tick the position last changed (or the join tick)
    joined_tick: int = 0

    @property
    def player_id(self) -> int:
        return self.gen << 32 | self.slot


@dataclass(slots=True)
class RefTreasure:
    """One row of the treasure buffers. Position in world units."""

    row: int
    hunt: int
    x: float = 0.0
    y: float = 0.0
    value: int = 0
    # "active", "waiting" (found, respawns at respawn_tick) or "out" (a round hunt's row
    # outside its round: not in play)
    state: str = "active"
    respawn_tick: int = 0
    finder_slot: int = -1
    finder_gen: int = 0


@dataclass(slots=True)
class RefHunt:
    """A hunt: its parameters, RNG state, treasure rows and current leaderboard."""

    index: int
    params: HuntParams
    rng_state: int  # splitmix64 state, unsigned 64-bit
    first_row: int  # treasure rows [first_row, first_row + params.treasures)
    members: int = 0  # active + pending players (what max_players limits)
    board: list[tuple[int, int, int]] = field(default_factory=list)  # (slot, gen, score)
    # What spawns and respawns use: the hunt's values, or its running round's.
    value_min: int = 0
    value_max: int = 0
    respawn_delay: int = 0
    # The round clock (hunts with a round plan): round number, phase ("lobby", "running",
    # "results", "over"; "none" without a plan), its first tick, the first tick of the next
    # phase as scheduled (None when over), a request queued for step 0 ("start", "end").
    round: int = 0
    phase: str = "none"
    phase_start: int = 0
    phase_end: int | None = None
    request: str | None = None


@dataclass(slots=True)
class RefTickResult:
    """The events of one tick, in the order the steps produced them."""

    tick: int
    #: (hunt, treasure_row, slot, gen, value, score_after, x, y), x, y = treasure position
    discoveries: list[tuple] = field(default_factory=list)
    #: (kind, hunt, slot, gen, x, y), kind = JOINED or LEFT, in request order
    memberships: list[tuple] = field(default_factory=list)
    #: hunts whose leaderboard changed this tick, ascending
    leaderboard_changed: list[int] = field(default_factory=list)
    #: events that did not fit their buffer (step 7): the lists above keep the first ones
    dropped_events: int = 0
    #: round hunts whose phase changed this tick (step 0), ascending
    round_changed: list[int] = field(default_factory=list)
    #: (hunt, round) of the rounds that ended this tick (step 0), by hunt
    rounds_ended: list[tuple[int, int]] = field(default_factory=list)
    #: (hunt, round, rank, slot, gen, found, score, last_tick) of the rounds that ended
    results: list[tuple] = field(default_factory=list)


class ReferenceWorld:
    """All hunts of one world, stepped one tick at a time by :meth:`tick`."""

    def __init__(self, max_players: int = 1000, max_treasures: int = 10_000, max_hunts: int = 16,
                 max_discoveries: int | None = None, max_membership_events: int | None = None):
        """``max_discoveries`` and ``max_membership_events``: capacities of the event
        buffers (step 7); None is the engine's default, room for every event a tick
        can produce (one discovery per treasure, a join and a leave per slot)."""
        if max_discoveries is None:
            max_discoveries = max_treasures
        if max_membership_events is None:
            max_membership_events = 2 * max_players
        for name, value, hi in (
            ("max_players", max_players, 2**32),
            ("max_treasures", max_treasures, 2**32),
            ("max_hunts", max_hunts, 2**32),
            ("max_discoveries", max_discoveries, 2**32),
            ("max_membership_events", max_membership_events, 2**32),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ConfigError(f"{name} must be an integer in [1, {hi}], got {value!r}")
        self.max_players = max_players
        self.max_treasures = max_treasures
        self.max_hunts = max_hunts
        self.max_discoveries = max_discoveries
        self.max_membership_events = max_membership_events
        self.tick_number = 0
        self.dropped_moves = 0
        self.players = [RefPlayer(slot=s) for s in range(max_players)]
        self.treasures: list[RefTreasure] = []  # allocated rows only
        self.hunts: list[RefHunt] = []
        # Free-slot stack, top at the end: slot 0 is popped first.
        self._free = list(range(max_players - 1, -1, -1))
        # Joins and leaves since the last tick, in request order: ("join" | "leave", slot).
        self._queue: list[tuple[str, int]] = []
        self._leaving: set[int] = set()  # slots with a leave queued
        self._moves: dict[int, tuple[int, float, float]] = {}  # slot -> kept (seq, dx, dy)
        # The players in play of each hunt by ascending slot, as of the last tick (only ticks
        # change who is in play): the brute-force loops visit one hunt's players, not all.
        self._members: list[list[RefPlayer]] = []

    # ---------------------------------------------------------------- setup

    def add_hunt(self, params: HuntParams) -> int:
        """Add a hunt, allocate its treasure rows and spawn its treasures; return its index."""
        if not isinstance(params, HuntParams):
            raise TypeError(f"params must be a HuntParams, got {type(params).__name__}")
        # Checked in the order docs/rules.md gives ("Hunts").
        if len(self.hunts) >= self.max_hunts:
            raise CapacityError(f"all {self.max_hunts} hunts are in use")
        if any(h.params.name == params.name for h in self.hunts):
            raise ConfigError(f"hunt name {params.name!r} is taken")
        if self.hunts and params.tick_rate != self.hunts[0].params.tick_rate:
            raise ConfigError(
                f"hunt.tick_rate must equal the world's tick rate "
                f"{self.hunts[0].params.tick_rate}, got {params.tick_rate}"
            )
        first = len(self.treasures)
        if first + params.treasures > self.max_treasures:
            raise CapacityError(
                f"hunt needs {params.treasures} treasure rows, "
                f"{self.max_treasures - first} of {self.max_treasures} are free"
            )
        hunt = RefHunt(index=len(self.hunts), params=params, rng_state=params.seed, first_row=first,
                       value_min=params.treasure_value_min, value_max=params.treasure_value_max,
                       respawn_delay=params.respawn_delay)
        self.hunts.append(hunt)
        for row in range(first, first + params.treasures):
            treasure = RefTreasure(row=row, hunt=hunt.index)
            if params.rounds is None:
                self._spawn_treasure(hunt, treasure)
            self.treasures.append(treasure)
        if params.rounds is not None:
            rounds.begin(self, hunt)
        return hunt.index

    def request_round(self, hunt: int, action: str) -> None:
        """Queue "start" (the next round now) or "end" (the running round now) for step 0."""
        rounds.request(self, self._hunt(hunt), action)

    # ------------------------------------------------------- between ticks

    def join(self, hunt: int) -> int:
        """Take a free slot for a new (pending) player of ``hunt``; return its id."""
        h = self._hunt(hunt)
        if h.members >= h.params.max_players:
            raise HuntFullError(f"hunt {hunt} already has {h.params.max_players} players")
        if not self._free:
            raise CapacityError(f"all {self.max_players} player slots are in use")
        slot = self._free.pop()
        p = self.players[slot]
        gen = p.gen
        # A fresh record (last_seq 0 matters: moves may be put before the join takes effect).
        self.players[slot] = RefPlayer(slot=slot, gen=gen, hunt=h.index, pending=True)
        h.members += 1
        self._queue.append(("join", slot))
        return gen << 32 | slot

    def join_many(self, hunt: int, count: int) -> list[int]:
        """``count`` joins at once, all or nothing: if they do not all fit, none is made."""
        h = self._hunt(hunt)
        if h.members + count > h.params.max_players:
            raise HuntFullError(f"hunt {hunt} has room for {h.params.max_players - h.members}")
        if count > len(self._free):
            raise CapacityError(f"{len(self._free)} player slots are free, {count} asked")
        return [self.join(hunt) for _ in range(count)]

    def leave(self, player_id: int) -> None:
        """Queue the player's departure for the next tick's step 1."""
        slot = self._live_slot(player_id)
        if slot is None:
            raise StalePlayerError(f"player id {player_id!r} is stale, unknown or already leaving")
        self._leaving.add(slot)
        self._queue.append(("leave", slot))

    def put_move(self, player_id: int, seq: int, dx: float, dy: float) -> bool:
        """Offer a move (direction, a fraction of player_speed); True if kept, False if dropped."""
        slot = self._live_slot(player_id)
        if (
            slot is None
            or not 1 <= seq <= MAX_SEQ
            or seq <= self.players[slot].last_seq
            or (slot in self._moves and seq <= self._moves[slot][0])
        ):
            self.dropped_moves += 1
            return False
        self._moves[slot] = (seq, float(dx), float(dy))
        return True

    # ----------------------------------------------------------------- tick

    def tick(self) -> RefTickResult:
        """Run steps 0-7 of docs/rules.md for tick ``tick_number + 1``; return its events."""
        t = self.tick_number + 1
        result = RefTickResult(tick=t)
        rounds.step0(self, t, result)
        self._step1_joins_and_leaves(t, result)
        self._step2_inputs()
        self._step3_movement(t)
        self._step4_respawns_and_discovery(t, result)
        self._step5_hints()
        self._step6_leaderboards(result)
        self._step7_event_buffers(result)
        self.tick_number = t
        return result

    def _step1_joins_and_leaves(self, t: int, result: RefTickResult) -> None:
        for kind, slot in self._queue:
            p = self.players[slot]
            h = self.hunts[p.hunt]
            if kind == "join":
                h.rng_state, u = splitmix64(h.rng_state)
                x = u * h.params.width
                h.rng_state, u = splitmix64(h.rng_state)
                y = u * h.params.height
                p.pending = False
                p.active = True
                p.x, p.y, p.x_prev, p.y_prev = x, y, x, y
                p.dx = p.dy = 0.0
                p.score = p.found = p.last_seq = p.hint = 0
                p.score_tick = p.changed_tick = p.joined_tick = t
                result.memberships.append((JOINED, h.index, slot, p.gen, p.x, p.y))
            else:
                # The join of a pending player always comes earlier in the queue, so
                # here it is already active (at its spawn point).
                x, y = (p.x, p.y) if p.active else (0.0, 0.0)
                result.memberships.append((LEFT, h.index, slot, p.gen, x, y))
                p.active = p.pending = False
                p.gen += 1
                h.members -= 1
                self._free.append(slot)
        self._queue.clear()
        self._leaving.clear()
        self._members = [[] for _ in self.hunts]
        for p in self.players:
            if p.active:
                self._members[p.hunt].append(p)

    def _step2_inputs(self) -> None:
        for slot in sorted(self._moves):
            seq, dx, dy = self._moves[slot]
            p = self.players[slot]
            if not p.active or seq <= p.last_seq:
                continue
            if not (math.isfinite(dx) and math.isfinite(dy)):
                dx, dy = 0.0, 0.0
            elif dx * dx + dy * dy > 1.0:
                m = math.sqrt(dx * dx + dy * dy)
                dx = dx / m
                dy = dy / m
            p.dx, p.dy = dx, dy
            p.last_seq = seq
        self._moves.clear()

    def _step3_movement(self, t: int) -> None:
        for p in self.players:
            if not p.active:
                continue
            params = self.hunts[p.hunt].params
            step = params.step
            p.x_prev, p.y_prev = p.x, p.y
            p.x = min(max(p.x + p.dx * step, 0.0), params.width)
            p.y = min(max(p.y + p.dy * step, 0.0), params.height)
            if (p.x, p.y) != (p.x_prev, p.y_prev):
                p.changed_tick = t

    def _step4_respawns_and_discovery(self, t: int, result: RefTickResult) -> None:
        # 4.1 Respawns, in row order.
        for tr in self.treasures:
            if tr.state == "waiting" and tr.respawn_tick <= t:
                self._spawn_treasure(self.hunts[tr.hunt], tr)
        # 4.2 Discovery: decide every finder against the positions after movement.
        players_of = self._members
        finders: list[tuple[RefTreasure, RefPlayer]] = []
        for tr in self.treasures:
            if tr.state != "active":
                continue
            params = self.hunts[tr.hunt].params
            rr = params.discovery_radius * params.discovery_radius
            best: RefPlayer | None = None
            best_d2 = 0.0
            for p in players_of[tr.hunt]:  # ascending slot: "<" keeps the lowest slot on ties
                d2 = _dist2(p.x, p.y, tr.x, tr.y)
                if d2 <= rr and (best is None or d2 < best_d2):
                    best, best_d2 = p, d2
            if best is not None:
                finders.append((tr, best))
        # 4.3 Scoring, in treasure row order.
        for tr, p in finders:
            p.score += tr.value
            p.found += 1
            p.score_tick = t
            tr.finder_slot, tr.finder_gen = p.slot, p.gen
            tr.state = "waiting"
            tr.respawn_tick = t + self.hunts[tr.hunt].respawn_delay
            result.discoveries.append(
                (tr.hunt, tr.row, p.slot, p.gen, tr.value, p.score, tr.x, tr.y)
            )

    def _step5_hints(self) -> None:
        treasures_of: list[list[RefTreasure]] = [[] for _ in self.hunts]
        for tr in self.treasures:
            if tr.state == "active":
                treasures_of[tr.hunt].append(tr)
        for p in (p for members in self._members for p in members):
            params = self.hunts[p.hunt].params
            best_d2: float | None = None
            for tr in treasures_of[p.hunt]:
                d2 = _dist2(p.x, p.y, tr.x, tr.y)
                if best_d2 is None or d2 < best_d2:
                    best_d2 = d2
            big_r = params.hint_radius
            if best_d2 is None or not best_d2 <= big_r * big_r:
                p.hint = 0
                continue
            levels = params.hint_levels
            d = math.sqrt(best_d2)
            hint = levels - math.floor((levels * d) / big_r)
            p.hint = min(max(hint, 1), levels)

    def _step6_leaderboards(self, result: RefTickResult) -> None:
        for h in self.hunts:
            ranked = sorted(
                (p for p in self._members[h.index] if p.score > 0),
                key=lambda p: (-p.score, p.score_tick, p.slot),
            )
            board = [(p.slot, p.gen, p.score) for p in ranked[: h.params.leaderboard_size]]
            if [(s, sc) for s, _, sc in board] != [(s, sc) for s, _, sc in h.board]:
                result.leaderboard_changed.append(h.index)
            h.board = board

    def _step7_event_buffers(self, result: RefTickResult) -> None:
        """Events past a buffer's capacity are dropped and counted; the first ones stay."""
        for events, capacity in ((result.memberships, self.max_membership_events),
                                 (result.discoveries, self.max_discoveries)):
            if len(events) > capacity:
                result.dropped_events += len(events) - capacity
                del events[capacity:]

    # -------------------------------------------------------------- queries

    def player(self, player_id_or_slot: int) -> RefPlayer:
        """The record of a slot (``< 2**32``) or of a full player id (checked for staleness)."""
        if player_id_or_slot < 0:
            raise StalePlayerError(f"no player {player_id_or_slot!r}")
        if player_id_or_slot <= SLOT_MASK:
            if player_id_or_slot >= self.max_players:
                raise StalePlayerError(f"no slot {player_id_or_slot}")
            return self.players[player_id_or_slot]
        slot, gen = player_id_or_slot & SLOT_MASK, player_id_or_slot >> 32
        if slot >= self.max_players or self.players[slot].gen != gen:
            raise StalePlayerError(f"player id {player_id_or_slot} is stale or unknown")
        return self.players[slot]

    def leaderboard(self, hunt: int) -> list[tuple[int, int, int]]:
        """The hunt's board as of the last tick: ``[(slot, gen, score), ...]``, best first."""
        return list(self._hunt(hunt).board)

    def visibility(
        self, observer_slot: int, keyframe: bool = False
    ) -> list[tuple[int, int, int, float, float]]:
        """The observer's visibility diff (or keyframe) after the last tick.

        Records are ``(slot, gen & 0xFFFF, flags, x, y)`` sorted by slot. An observer
        that is not in play (free or pending slot) sees nobody: ``[]``.
        """
        if not 0 <= observer_slot < self.max_players:
            raise StalePlayerError(f"no slot {observer_slot!r}")
        t = self.tick_number
        obs = self.players[observer_slot]
        if not obs.active:
            return []
        params = self.hunts[obs.hunt].params
        vv = params.view_radius * params.view_radius
        records = []
        for o in self._members[obs.hunt]:
            if o.slot == obs.slot:
                continue
            now = _dist2(obs.x, obs.y, o.x, o.y) <= vv
            if keyframe:
                include = now
            else:
                before = (
                    obs.joined_tick != t
                    and o.joined_tick != t
                    and _dist2(obs.x_prev, obs.y_prev, o.x_prev, o.y_prev) <= vv
                )
                include = (o.changed_tick == t and (now or before)) or now != before
            if include:
                flags = VIS_IN_VIEW if now else 0
                records.append((o.slot, o.gen & 0xFFFF, flags, float(o.x), float(o.y)))
        return records

    def visibility_many(
        self, observers: list[int], keyframes: list[bool], capacity: int
    ) -> tuple[list[list[tuple[int, int, int, float, float]]], list[bool], int]:
        """What ``World.visibility`` returns for several observers sharing a buffer of
        ``capacity`` records (docs/rules.md, "Visibility", the capacity rule).

        Returns, per observer, its records (as :meth:`visibility`) and whether it was
        truncated, and the number of records that did not fit.
        """
        n = len(observers)
        out = [self.visibility(slot, keyframe=keyframe)
               for slot, keyframe in zip(observers, keyframes, strict=True)]
        truncated = [False] * n
        used = dropped = 0
        # Who fits is decided from observer `start` on, round the list: the cut rotates.
        start = (self.tick_number % n) * (2654435761 % n) % n if n else 0
        for k in range(n):
            o = (start + k) % n
            if used + len(out[o]) > capacity:
                dropped += len(out[o])
                out[o] = []
                truncated[o] = True
            else:
                used += len(out[o])
        return out, truncated, dropped

    # -------------------------------------------------------------- helpers

    def _hunt(self, hunt: int) -> RefHunt:
        if isinstance(hunt, bool) or not isinstance(hunt, int) or not 0 <= hunt < len(self.hunts):
            raise UnknownHuntError(f"no hunt {hunt!r} (hunts: 0..{len(self.hunts) - 1})")
        return self.hunts[hunt]

    def _live_slot(self, player_id: int) -> int | None:
        """The slot of a live id (pending or active, current gen, no leave queued), else None."""
        if isinstance(player_id, bool) or not isinstance(player_id, int) or player_id < 0:
            return None
        slot, gen = player_id & SLOT_MASK, player_id >> 32
        if slot >= self.max_players or slot in self._leaving:
            return None
        p = self.players[slot]
        if p.gen != gen or not (p.active or p.pending):
            return None
        return slot

    def _spawn_treasure(self, hunt: RefHunt, tr: RefTreasure) -> None:
        """(Re)spawn a treasure: a point then a value from the hunt's RNG; active, no finder."""
        params = hunt.params
        hunt.rng_state, u = splitmix64(hunt.rng_state)
        tr.x = u * params.width
        hunt.rng_state, u = splitmix64(hunt.rng_state)
        tr.y = u * params.height
        hunt.rng_state, u = splitmix64(hunt.rng_state)
        vmin, vmax = hunt.value_min, hunt.value_max
        tr.value = vmin + int(u * (vmax - vmin + 1))
        tr.state = "active"
        tr.finder_slot, tr.finder_gen = -1, 0


def _dist2(ax: float, ay: float, bx: float, by: float) -> float:
    """Squared distance, in the exact expression order of the rules."""
    ddx = ax - bx
    ddy = ay - by
    return ddx * ddx + ddy * ddy
