"""The hub's round stage: what a round-based hunt adds to each tick (docs/server.md, "Rounds").

Composed by the Hub beside its sessions, pipeline and broadcaster; a hunt without
a round plan costs one attribute test per tick. In tick order:

- :meth:`HubRounds.before_tick` (ticker, between ticks): operators' requests into the
  World (server/hunt/_rounds.py's :class:`RoundControl`), their journal events into
  the tick's inputs;
- :meth:`HubRounds.after_journal` (worker, once the tick is journaled and on disk, before
  anything of it is sent or snapshotted): each ended round's record, its file written;
- :meth:`HubRounds.after_tick` (Trio thread, after the tick's TICKs are handed over):
  the requests answered, a ROUND to every client of a hunt whose phase changed, then
  its RESULTS, the metrics, and the listeners (the Redis publisher);
- :meth:`HubRounds.greet` (Trio thread, right after a WELCOME): the ROUND of the
  player's hunt, and the last RESULTS while the hunt shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tickengine import RESULT_DTYPE, World

from ..protocol import encode
from ..shell import _wsframes as wf
from ._rounds import (
    RESULTS_DIR,
    ResultsFrames,
    ResultsStore,
    RoundControl,
    RoundRequest,
    ended_rounds,
    results_frames,
    round_message,
    round_record,
)

#: Phases (as ROUND carries them) during which a joining client also gets the last RESULTS.
_SHOWING_RESULTS = (3, 4)

#: A listener of ended rounds: ``(record, results directory or None)``.
Listener = Callable[[dict[str, Any], Path | None], None]


class HubRounds:
    """See the module docstring. ``data_dir``: the server's (None: records in memory);
    ``name_of(slot)`` and ``user_of(slot)``: a player's name and user id (None: unknown)."""

    def __init__(self, world: World, data_dir: str | Path | None, log: Any, report: Any,
                 name_of: Callable[[int], str | None],
                 user_of: Callable[[int], str | None]) -> None:
        self.world = world
        self.data_dir = Path(data_dir) if data_dir else None
        self.log = log
        self.report = report
        self.name_of = name_of
        self.user_of = user_of
        self.control = RoundControl()
        self.stores: dict[str, ResultsStore] = {}
        #: Per hunt index: the RESULTS of its last ended round (for clients joining later).
        self.last: dict[int, ResultsFrames] = {}
        #: Rounds the worker saw end this tick, for the Trio thread: (hunt, record, rows).
        self._ended: list[tuple[int, dict[str, Any], np.ndarray]] = []
        self.listeners: list[Listener] = []
        #: Hunts whose round figures the metrics have (see :meth:`after_tick`).
        self._reported = 0

    # ------------------------------------------------------------------ control

    async def request(self, hunt: str, action: str, timeout: float = 10.0) -> RoundRequest:
        """``Hub.control_round``: see :meth:`RoundControl.submit`."""
        return await self.control.submit(hunt, action, timeout)

    def before_tick(self, events: list[dict[str, Any]]) -> None:
        """Ticker, between ticks: queued requests into the World; accepted ones' journal
        events appended to ``events``."""
        if self.control.waiting:
            events += self.control.apply(self.world)

    # ------------------------------------------------------------------ results

    def store(self, h: int) -> ResultsStore:
        name = self.world.hunt_params[h].name
        store = self.stores.get(name)
        if store is None:
            directory = None
            if self.data_dir is not None:
                from ._admin_state import hunt_dir

                directory = hunt_dir(self.data_dir, name) / RESULTS_DIR
            store = self.stores[name] = ResultsStore(directory)
        return store

    def results(self, hunt: str) -> list[dict[str, Any]]:
        """Every record of ``hunt``'s rounds, oldest first (``GET .../rounds``)."""
        h = self.world.hunt_index(hunt)
        return self.store(h).list()

    def after_journal(self, result: Any) -> None:
        """Worker, after ``append_tick``: write the record of each round that ended."""
        if not len(result.rounds_ended):
            return
        for h, number, rows in ended_rounds(result):
            record, _ = self._save(h, number, rows, result.tick)
            self._ended.append((h, record, rows))

    def _save(self, h: int, number: int, rows: np.ndarray, tick: int
              ) -> tuple[dict[str, Any], bool]:
        """The record of round ``number`` of hunt ``h``, kept and written; True if its file
        is new."""
        slots = rows["slot"].tolist()
        gens = rows["gen"].tolist()
        names, users = {}, {}
        for s, g in zip(slots, gens, strict=True):
            pid = (g << 32) | s
            names[pid] = self.name_of(s)
            user = self.user_of(s)
            if user:
                users[pid] = user
        record = round_record(self.world, h, number, rows, tick, names=names, users=users)
        return record, self.store(h).save(record)

    def replayed(self, ended: Iterable[tuple[int, list[tuple[int, int, np.ndarray]]]]) -> int:
        """After recovery: the rounds that ended in the replayed ticks (``(tick,
        ended_rounds(result))``), their files written where missing (a crash between the
        journal and the file). Returns how many were written."""
        written = 0
        for tick, rounds in ended:
            for h, number, rows in rounds:
                _, new = self._save(h, number, rows, tick)
                self.last[h] = results_frames(number, rows, tick, self._top(h))
                written += new
        return written

    def _top(self, h: int) -> int:
        return self.world.hunt_params[h].leaderboard_size

    # ------------------------------------------------------------------ clients

    def after_tick(self, result: Any, sessions: Iterable[Any]) -> None:
        """Trio thread, after the tick's TICKs: answer requests, tell the clients."""
        world = self.world
        self.control.settle(world)
        changed = result.round_changed
        if not len(changed) and not self._ended:
            if world.has_rounds and len(world.hunt_params) != self._reported:
                self.report.rounds(world, changed, 0)  # the phase of a hunt new here
                self._reported = len(world.hunt_params)
            return
        ended, self._ended = self._ended, []
        tick = result.tick
        rounds = {h: wf.frame(encode(round_message(world, h, tick))) for h in changed.tolist()}
        results = {}
        for h, record, rows in ended:
            results[h] = self.last[h] = results_frames(record["round"], rows, tick,
                                                       self._top(h))
            self.log.info("round_ended", hunt=record["hunt"], round=record["round"],
                          tick=tick, players=record["players"],
                          winner=record["standings"][0]["name"] if record["standings"] else None)
        for s in sessions:
            conn = s.conn
            if conn is None or s.welcome_pending or s.hunt not in rounds:
                continue
            conn.send_now(rounds[s.hunt])
            if s.hunt in results:
                conn.send_now(wf.frame(results[s.hunt].frame(s.player_id)))
        self.report.rounds(world, changed, len(ended))
        for h, record, _ in ended:
            for listener in self.listeners:
                listener(record, self.store(h).directory)

    def greet(self, s: Any, tick: int) -> list[bytes]:
        """The frames that follow a WELCOME at ``tick`` for session ``s`` (none for a hunt
        without rounds)."""
        message = round_message(self.world, s.hunt, tick)
        if message is None:
            return []
        frames = [wf.frame(encode(message))]
        if message.phase in _SHOWING_RESULTS:
            last = self.last.get(s.hunt)
            if last is None or last.round != message.round:
                last = self._from_store(s.hunt, message.round)
            if last is not None:
                frames.append(wf.frame(last.frame(s.player_id)))
        return frames

    def _from_store(self, h: int, number: int) -> ResultsFrames | None:
        """The RESULTS of round ``number`` rebuilt from its record (a round that ended
        before this process took the hunt over, and before its last snapshot)."""
        record = next((r for r in reversed(self.store(h).list()) if r["round"] == number), None)
        if record is None:
            return None
        rows = np.zeros(len(record["standings"]), RESULT_DTYPE)
        for row, x in zip(rows, record["standings"], strict=True):
            pid = x["player_id"]
            row["hunt"], row["round"], row["rank"] = h, number, x["rank"]
            row["slot"], row["gen"] = pid & 0xFFFFFFFF, pid >> 32
            row["found"], row["score"] = x["found"], x["score"]
            row["last_tick"] = -1 if x["last_tick"] is None else x["last_tick"]
        self.last[h] = results_frames(number, rows, record["ended_tick"], self._top(h))
        return self.last[h]
