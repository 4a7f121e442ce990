"""The reference's round clock: rule step 0 of docs/rules.md ("Rounds"), literally.

Functions of a :class:`~tickengine.reference.ReferenceWorld` and its hunts, in
plain Python like the rest of the reference; the engine's version is
``tickengine._rounds``. Times are tick numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import RoundError

if TYPE_CHECKING:
    from ._reference import ReferenceWorld, RefHunt, RefTickResult

#: The respawn delay of a round without respawns (the engine's NO_RESPAWN_DELAY).
NO_RESPAWN_DELAY = 2**62


def begin(world: ReferenceWorld, hunt: RefHunt) -> None:
    """Round 1's lobby begins with the world's next tick; no treasure is placed."""
    for row in range(hunt.first_row, hunt.first_row + hunt.params.treasures):
        world.treasures[row].state = "out"
    _enter(world, hunt, world.tick_number + 1, 1, "lobby")


def request(world: ReferenceWorld, hunt: RefHunt, action: str) -> None:
    """Queue "start" or "end" for the next step 0; RoundError when the phase does not allow it."""
    plan = hunt.params.rounds
    if plan is None:
        raise RoundError(f"hunt {hunt.params.name!r} has no round plan")
    if action not in ("start", "end"):
        raise RoundError(f"a round request is 'start' or 'end', got {action!r}")
    if action == "start" and (
            hunt.phase in ("running", "over")
            or (hunt.phase == "results" and plan.count and hunt.round >= plan.count)):
        raise RoundError(f"no round can start in hunt {hunt.params.name!r} now")
    if action == "end" and hunt.phase != "running":
        raise RoundError(f"hunt {hunt.params.name!r} has no running round to end")
    hunt.request = action


def step0(world: ReferenceWorld, t: int, result: RefTickResult) -> None:
    """Each round hunt, in index order, changes phase at most once."""
    for hunt in world.hunts:
        plan = hunt.params.rounds
        if plan is None:
            continue
        req, hunt.request = hunt.request, None
        on_time = hunt.phase != "over" and hunt.phase_end == t
        last = plan.count and hunt.round >= plan.count
        before = (hunt.phase, hunt.round)
        if hunt.phase == "lobby" and (req == "start" or on_time):
            _enter(world, hunt, t, hunt.round, "running")
        elif hunt.phase == "running" and (req == "end" or on_time or _condition(world, hunt)):
            result.rounds_ended.append((hunt.index, hunt.round))
            _standings(world, hunt, result)
            _enter(world, hunt, t, hunt.round, "results")
        elif hunt.phase == "results" and req == "start" and not last:
            _enter(world, hunt, t, hunt.round + 1, "running")
        elif hunt.phase == "results" and on_time:
            _enter(world, hunt, t, hunt.round if last else hunt.round + 1,
                   "over" if last else "lobby")
        if (hunt.phase, hunt.round) != before:
            result.round_changed.append(hunt.index)


def _rows(world: ReferenceWorld, hunt: RefHunt) -> list:
    return world.treasures[hunt.first_row:hunt.first_row + hunt.params.treasures]


def _members(world: ReferenceWorld, hunt: RefHunt) -> list:
    return [p for p in world.players if p.active and p.hunt == hunt.index]


def _condition(world: ReferenceWorld, hunt: RefHunt) -> bool:
    spec = hunt.params.rounds.spec(hunt.round)
    if spec.end == "all_found":
        return not any(tr.state == "active" for tr in _rows(world, hunt))
    if spec.end == "score":
        return bool(hunt.board) and hunt.board[0][2] >= spec.target_score
    return False


def _enter(world: ReferenceWorld, hunt: RefHunt, t: int, number: int, phase: str) -> None:
    plan = hunt.params.rounds
    spec = plan.spec(number)
    hunt.round, hunt.phase, hunt.phase_start = number, phase, t
    length = {"lobby": plan.lobby_ticks, "running": plan.running_ticks,
              "results": plan.results_ticks, "over": None}[phase]
    hunt.phase_end = None if length is None else t + length
    if phase in ("lobby", "running"):
        for p in _members(world, hunt):
            p.score = p.found = 0
            p.score_tick = t
    for tr in _rows(world, hunt):
        tr.state = "out"
    if phase == "running":
        hunt.value_min, hunt.value_max = spec.treasure_value_min, spec.treasure_value_max
        hunt.respawn_delay = hunt.params.respawn_delay if spec.respawn else NO_RESPAWN_DELAY
        for tr in _rows(world, hunt)[:spec.treasures]:
            world._spawn_treasure(hunt, tr)


def _standings(world: ReferenceWorld, hunt: RefHunt, result: RefTickResult) -> None:
    """(hunt, round, rank, slot, gen, found, score, last_tick) rows, the leaderboard's order."""
    ranked = sorted(_members(world, hunt), key=lambda p: (-p.score, p.score_tick, p.slot))
    for rank, p in enumerate(ranked, 1):
        result.results.append((hunt.index, hunt.round, rank, p.slot, p.gen, p.found, p.score,
                               p.score_tick if p.found else -1))
