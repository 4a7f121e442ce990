"""Each hunt's shared tail of one tick, and which tail each observer's TICK ends with.

A TICK ends with its hunt's events (discoveries, leaves, the names of who joined,
the leaderboard when it changed: docs/protocol.md). They are the same for every
observer of a hunt, so each hunt's tail is encoded once per tick into a
:class:`~server.hunt._tickframes.TailTable`, plus a keyframe variant (the leaderboard
and every player's name) when one of its observers gets a keyframe, in each protocol
version its observers speak; the frame kernel then appends row ``obs_tail[i]`` to
observer i's TICK. Version 2 names players by hunt-local indices: :class:`WireIndex`
hands them out as players join and takes them back as they leave.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import numpy as np

from tickengine import LEFT

from ..protocol import NameEntry, encode_hunt_events, encode_hunt_section, encode_names
from ._tickframes import Compact, TailTable


class WireIndex:
    """Hunt-local player indices of version-2 TICKs: the lowest free one per hunt.

    ``compact.index[slot]`` holds the index (-1: none). A player gets its index in the
    tick it joins (its NAME entry announces it), keeps it while in the hunt, and gives
    it back after the tick it leaves, so an index is never reused within one tick.
    """

    def __init__(self, compact: Compact) -> None:
        self.index = compact.index
        self._free: dict[int, list[int]] = {}
        self._next: dict[int, int] = {}
        #: Per hunt, bumped whenever its indices change (keys the keyframe names cache).
        self.epoch: dict[int, int] = {}
        self._synced = False
        self._stale: list[tuple[int, int]] = []
        #: Hunts whose sizes are in the compact state (a hunt's size never changes).
        self.sized = 0

    def _assign(self, hunt: int, slot: int) -> None:
        if self.index[slot] >= 0:
            return
        free = self._free.get(hunt)
        if free:
            i = heapq.heappop(free)
        else:
            i = self._next.get(hunt, 0)
            self._next[hunt] = i + 1
        self.index[slot] = i
        self.epoch[hunt] = self.epoch.get(hunt, 0) + 1

    def joined(self, world: Any, memberships: np.ndarray, dropped: int = 0) -> list[int]:
        """Index the players that joined this tick (and, the first time, everyone in play).

        ``dropped``: the tick's dropped events (a membership buffer smaller than the tick's
        joins and leaves, docs/rules.md): then every player in play is checked. Returns
        the slots indexed that no JOINED record of this tick names (their NAME entries
        must go out with the tick anyway)."""
        for r in memberships[memberships["kind"] != LEFT] if len(memberships) else ():
            self._assign(int(r["hunt"]), int(r["slot"]))
        if self._synced and not dropped:
            return []
        # A world recovered from a snapshot has players already; a dropped event may hide
        # a join or a leave.
        self._synced = True
        P, index = world.players, self.index
        active = world.active_slots()
        live = np.zeros(len(index), np.bool_)
        live[active] = True
        # Out of play but indexed (a dropped LEAVE): freed with this tick's leaves.
        self._stale = [(int(P.hunt[s]), s) for s in np.flatnonzero((index >= 0) & ~live)]
        extra = [s for s in active.tolist() if index[s] < 0]
        for slot in extra:
            self._assign(int(P.hunt[slot]), slot)
        return extra

    def _release(self, hunt: int, slot: int) -> None:
        i = int(self.index[slot])
        if i >= 0:
            self.index[slot] = -1
            heapq.heappush(self._free.setdefault(hunt, []), i)
            self.epoch[hunt] = self.epoch.get(hunt, 0) + 1

    def left(self, memberships: np.ndarray) -> None:
        """Free the indices of the players that left this tick (after its tails are encoded)."""
        for r in memberships[memberships["kind"] == LEFT] if len(memberships) else ():
            self._release(int(r["hunt"]), int(r["slot"]))
        for hunt, slot in self._stale:
            self._release(hunt, slot)
        self._stale = []


def build_tails(world: Any, result: Any, tails: TailTable, obs_hunt: np.ndarray,
                obs_keyframe: np.ndarray, obs_tail: np.ndarray,
                name_of: Callable[[int], str | None],
                everyone: Callable[[int], list[NameEntry]],
                obs_version: np.ndarray | None = None, wire: WireIndex | None = None,
                compact: Compact | None = None, names_cache: dict | None = None) -> int:
    """Encode each hunt's tail of this tick into ``tails`` and pick each observer's.

    ``world``, ``result``: the World after its tick and that tick's TickResult.
    ``obs_hunt[i]``, ``obs_keyframe[i]``, ``obs_version[i]``: observer i's hunt index,
    whether its TICK is a keyframe, its protocol version (None: all version 1);
    ``obs_tail[i]`` receives the row of its tail (a tick with no event and no keyframe:
    one empty tail, row 0, for everyone). ``name_of(slot)``: the name of a
    player who joined (None: gone already); ``everyone(hunt)``: every player's name,
    for a keyframe. ``wire``, ``compact``: the indices and hunt sizes of version 2,
    updated here (needed when any observer speaks it; ``compact`` the state ``wire`` was
    made from; ``names_cache``: a dict kept between ticks). Returns the bytes the tails take.
    """
    tails.clear()
    n_hunts = world.hunts.count
    disc = result.discoveries
    mem = result.memberships
    extra: list[int] = []
    if wire is not None:
        extra = wire.joined(world, mem, int(result.dropped_events))
    if not len(obs_hunt):  # no observer: no tail, but the indices follow the joins and leaves
        if wire is not None:
            wire.left(mem)
        return tails.used
    if wire is not None and wire.sized < n_hunts:  # version 2 quantizes to the hunt's size
        assert compact is not None, "version 2 needs the compact state"
        compact.width[wire.sized:n_hunts] = [p.width for p in world.hunt_params[wire.sized:]]
        compact.height[wire.sized:n_hunts] = [p.height for p in world.hunt_params[wire.sized:]]
        wire.sized = n_hunts
    if not (len(disc) or len(mem) or len(result.leaderboard_changed) or extra
            or obs_keyframe.any()):
        # Nothing happened and no keyframe is due (most ticks of a small hunt): every
        # observer's tail is the empty one, the same row in either version.
        obs_tail[:] = tails.add_raw(b"")
        if wire is not None:
            wire.left(mem)
        return tails.used
    changed = set(result.leaderboard_changed.tolist())
    v2 = (obs_version == 2) if obs_version is not None else np.zeros(len(obs_hunt), np.bool_)
    kf = obs_keyframe != 0
    rows = np.zeros((4, n_hunts), np.int32)  # v1 diff, v1 keyframe, v2 diff, v2 keyframe
    # Which (kind, hunt) pairs have observers: one count over all observers.
    kind = np.where(v2, 2, 0) + kf
    present = np.bincount(kind * n_hunts + obs_hunt, minlength=4 * n_hunts) != 0
    if n_hunts == 1:  # a hub per hunt: no hunt numbers to list
        has = [{0} if x else set() for x in present.tolist()]
    else:
        has = [set(np.flatnonzero(row).tolist()) for row in present.reshape(4, n_hunts)]
    need = [has[0] | has[1], has[1], has[2] | has[3], has[3]]
    if need[2]:
        assert wire is not None and compact is not None, "version 2 needs the wire index"
    for h in sorted(need[0] | need[2]):
        d = disc[disc["hunt"] == h] if len(disc) else None
        left = mem[(mem["hunt"] == h) & (mem["kind"] == LEFT)] if len(mem) else None
        joined = mem[(mem["hunt"] == h) & (mem["kind"] != LEFT)] if len(mem) else ()
        board = world.leaderboard(h) if h in changed else None
        if h in need[0]:
            names = []
            for r in joined:
                name = name_of(int(r["slot"]))
                if name is not None:
                    names.append(NameEntry(int(r["slot"]), int(r["gen"]), name))
            rows[0, h] = tails.add(encode_hunt_events(d, board, left, names))
            if h in need[1]:
                rows[1, h] = tails.add(encode_hunt_events(d, world.leaderboard(h), left,
                                                          everyone(h)))
        if h in need[2]:
            index, p = wire.index, world.hunt_params[h]
            P = world.players
            who = [(int(r["slot"]), int(r["gen"])) for r in joined] + [
                (s, int(P.gen[s])) for s in extra if int(P.hunt[s]) == h]
            names2 = [(int(index[s]), s, g, name_of(s)) for s, g in who]
            rows[2, h] = tails.add_raw(encode_hunt_section(index, p.width, p.height, d, board,
                                                           left, names2))
            if h in need[3]:
                blob = _everyone_v2(world, h, wire, everyone(h), names_cache)
                rows[3, h] = tails.add_raw(encode_hunt_section(
                    index, p.width, p.height, d, world.leaderboard(h), None, blob))
    if wire is not None:
        wire.left(mem)
    obs_tail[:] = rows[kind, obs_hunt]
    return tails.used


def _everyone_v2(world: Any, h: int, wire: WireIndex, entries: list[NameEntry],
                 cache: dict | None) -> bytes:
    """The NAME section of hunt ``h``'s version-2 keyframe: every player in play, by index.

    Cached while neither the server's name list (``entries``, a new list whenever it
    changes) nor the hunt's indices change."""
    key = (entries, wire.epoch.get(h, 0))
    if cache is not None:
        hit = cache.get(h)
        if hit is not None and hit[0] is entries and hit[1] == key[1]:
            return hit[2]
    names = {e.slot: e.name for e in entries}
    gen, index = world.players.gen, wire.index
    blob = encode_names((int(index[s]), s, int(gen[s]), names.get(s))
                        for s in world.active_slots(h).tolist())
    if cache is not None:
        cache[h] = (entries, key[1], blob)
    return blob
