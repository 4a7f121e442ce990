"""Each hunt's shared tail of one tick, and which tail each observer's TICK ends with.

A TICK ends with its hunt's events (discoveries, leaves, the names of who joined,
the leaderboard when it changed: docs/protocol.md). They are the same for every
observer of a hunt, so each hunt's tail is encoded once per tick into a
:class:`~server.hunt._tickframes.TailTable`, plus a keyframe variant (the leaderboard
and every player's name) when one of its observers gets a keyframe; the frame
kernel then appends row ``obs_tail[i]`` to observer i's TICK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tickengine import LEFT

from ..protocol import NameEntry, encode_hunt_events
from ._tickframes import TailTable


def build_tails(world: Any, result: Any, tails: TailTable, obs_hunt: np.ndarray,
                obs_keyframe: np.ndarray, obs_tail: np.ndarray,
                name_of: Callable[[int], str | None],
                everyone: Callable[[int], list[NameEntry]]) -> int:
    """Encode each hunt's tail of this tick into ``tails`` and pick each observer's.

    ``world``, ``result``: the World after its tick and that tick's TickResult.
    ``obs_hunt[i]``, ``obs_keyframe[i]``: observer i's hunt index and whether its TICK
    is a keyframe; ``obs_tail[i]`` receives the row of its tail. ``name_of(slot)``: the
    name of a player who joined (None: gone already, left out); ``everyone(hunt)``:
    every player's name, for a keyframe. Returns the bytes the tails take.
    """
    tails.clear()
    n_hunts = world.hunts.count
    disc = result.discoveries
    mem = result.memberships
    changed = set(result.leaderboard_changed.tolist())
    need_kf = set(np.unique(obs_hunt[obs_keyframe != 0]).tolist())
    diff_row = np.zeros(n_hunts, np.int32)
    kf_row = np.zeros(n_hunts, np.int32)
    for h in range(n_hunts):
        d = disc[disc["hunt"] == h] if len(disc) else None
        left = mem[(mem["hunt"] == h) & (mem["kind"] == LEFT)] if len(mem) else None
        joined = mem[(mem["hunt"] == h) & (mem["kind"] != LEFT)] if len(mem) else ()
        names = []
        for r in joined:
            name = name_of(int(r["slot"]))
            if name is not None:
                names.append(NameEntry(int(r["slot"]), int(r["gen"]), name))
        board = world.leaderboard(h) if h in changed else None
        diff_row[h] = tails.add(encode_hunt_events(d, board, left, names))
        if h in need_kf:
            kf_row[h] = tails.add(encode_hunt_events(d, world.leaderboard(h), left,
                                                     everyone(h)))
    obs_tail[:] = np.where(obs_keyframe != 0, kf_row[obs_hunt], diff_row[obs_hunt])
    return tails.used
