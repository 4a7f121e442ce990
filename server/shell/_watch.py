"""The operator's view of one hunt: a compact JSON document built from the World's buffers.

``GET /api/watch?hunt=NAME`` answers with :func:`watch_payload`; the watch page
(server/static/watch.js) polls it a few times per second and draws every player
and treasure of the hunt. Pure: it reads the engine's columns and allocates only
the result, no I/O, no locking (call it between ticks, like every World query).

Columns travel as parallel arrays of numbers, positions rounded to 0.1 world
unit: 10,000 players make about 300 kB of JSON, where a list of objects would
take three times that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tickengine import World
from tickengine._state import ACTIVE, T_ACTIVE, T_UNUSED

#: Discoveries listed at most (the newest), whatever the caller keeps.
MAX_RECENT = 50
#: Positions are rounded to this many decimals (0.1 world unit): the map is drawn, not replayed.
POSITION_DECIMALS = 1


def _rounded(column: np.ndarray) -> list[float]:
    return np.round(column, POSITION_DECIMALS).tolist()


def round_view(world: World, hunt: int | str) -> dict[str, Any] | None:
    """A round hunt's clock as JSON-ready values (None: the hunt has no round plan).

    ``{"number", "phase", "count", "phase_start", "phase_end", "ticks_left",
    "seconds_left", "request", "treasures", "end"}``: ticks and seconds counted from
    the world's last tick; ``phase_end`` and the time left are None once the hunt is
    over; ``count`` 0 means rounds forever; ``request`` is a control queued for the
    next tick ("start", "end") or None.
    """
    state = world.round_state(hunt)
    if state is None:
        return None
    left = None if state.phase_end is None else max(0, state.phase_end - world.tick_number)
    rate = world.hunt_params[world.hunt_index(hunt)].tick_rate
    return {"number": state.number, "phase": state.phase, "count": state.count,
            "phase_start": state.phase_start, "phase_end": state.phase_end,
            "ticks_left": left, "seconds_left": None if left is None else round(left / rate, 2),
            "request": state.request, "treasures": state.spec.treasures,
            "end": state.spec.end}


def watch_payload(world: World, hunt: int | str, names: dict[int, str],
                  recent: list[dict[str, Any]], stats: dict[str, Any]) -> dict[str, Any]:
    """Everything the watch page draws for ``hunt``, as JSON-ready Python values.

    ``names`` maps a player slot to its name (slots without a name, such as bots,
    are simply left out); ``recent`` is the hunt's recent discoveries as dicts,
    oldest first (only the last :data:`MAX_RECENT` are kept; ``x``/``y`` are
    rounded and a missing ``name`` is filled in from ``names``); ``stats`` holds
    the server's figures (``tick``, ``tick_ms_p50``, ``tick_ms_p99``,
    ``clients``) and is passed through.

    The result::

        {"hunt": "demo", "tick": 1200, "params": {"width": ..., "height": ..., ...},
         "round": {"number": 2, "phase": "running", "ticks_left": 340, ...} or None,
         "players": {"slot": [...], "gen": [...], "x": [...], "y": [...], "score": [...]},
         "names": {"3": "Ada"},          # only for players listed in "players"
         "treasures": {"x": [...], "y": [...], "value": [...], "active": [1, 0, ...]},
         "leaderboard": [{"slot": 3, "gen": 1, "score": 12, "name": "Ada"}, ...],
         "recent": [...], "stats": {...}}

    Positions in world units. A treasure with ``active`` 0 was found and waits to
    respawn (it lies where it was found until then). ``round`` is :func:`round_view`
    (None for a hunt without rounds).
    """
    h = world.hunt_index(hunt)
    params = world.hunt_params[h]
    P, T = world.players, world.treasures
    n = P.high_water
    slots = np.flatnonzero((P.state[:n] == ACTIVE) & (P.hunt[:n] == h))
    rows = world.treasure_rows(h)
    kept = np.flatnonzero(T.state[rows] != T_UNUSED) + rows.start
    board = world.leaderboard(h)

    def name_of(slot: int) -> str | None:
        return names.get(int(slot))

    leaderboard = [{"slot": int(r["slot"]), "gen": int(r["gen"]), "score": int(r["score"]),
                    "name": name_of(r["slot"])} for r in board]
    listed = []
    for event in recent[-MAX_RECENT:]:
        event = dict(event)
        for key in ("x", "y"):
            if isinstance(event.get(key), float):
                event[key] = round(event[key], POSITION_DECIMALS)
        if "name" not in event and "slot" in event:
            event["name"] = name_of(event["slot"])
        listed.append(event)
    return {
        "hunt": params.name,
        "tick": world.tick_number,
        "round": round_view(world, h),
        "params": {
            "width": params.width, "height": params.height,
            "discovery_radius": params.discovery_radius, "hint_radius": params.hint_radius,
            "view_radius": params.view_radius, "tick_rate": params.tick_rate,
            "max_players": params.max_players, "treasures": params.treasures,
        },
        "players": {
            "slot": slots.tolist(),
            "gen": P.gen[slots].tolist(),
            "x": _rounded(P.x[slots]),
            "y": _rounded(P.y[slots]),
            "score": P.score[slots].tolist(),
        },
        "names": {str(s): names[s] for s in slots.tolist() if s in names},
        "treasures": {
            "x": _rounded(T.x[kept]),
            "y": _rounded(T.y[kept]),
            "value": T.value[kept].tolist(),
            "active": (T.state[kept] == T_ACTIVE).astype(np.int8).tolist(),
        },
        "leaderboard": leaderboard,
        "recent": listed,
        "stats": dict(stats),
    }
