"""Rounds on the server: round control requests, the results of each round, their files,
and the ROUND / RESULTS messages (docs/protocol.md, "Rounds"; docs/server.md, "Rounds").

- :class:`RoundControl`: operators' "start the next round now" / "end the round now",
  queued by any Trio task and applied by the ticker at the next tick boundary through
  ``World.request_round``, journaled with that tick (so recovery and replay apply it
  again), and answered once that tick is journaled.
- :func:`round_record`: a round's final standings as JSON-ready data (rank, player id,
  user id, name, score, discoveries, tick of the last discovery).
- :class:`ResultsStore`: each record as ``round-<n>.json`` under the hunt's directory
  of the data dir (written with fsync before the round's messages leave), and the
  records kept in memory for a server without a data dir.
- :func:`round_message` and :func:`results_frames`: the wire messages.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from tickengine import RoundError, RoundState, World

from ..protocol import MAX_RESULT_ROWS, RESULT_RECORD, Results, Round, encode, results_header

#: The results directory inside a hunt's directory, and its file names.
RESULTS_DIR = "rounds"
RESULT_FILE = re.compile(r"^round-(\d{6,})\.json$")
#: Results kept in memory per hunt (all of them are on disk with a data dir).
MEMORY_ROUNDS = 100


def result_path(directory: Path, number: int) -> Path:
    return directory / f"round-{number:06d}.json"


# ------------------------------------------------------------------ control


@dataclass(eq=False)
class RoundRequest:
    """One operator request, answered when the tick that applied it is journaled."""

    hunt: str
    action: str
    done: trio.Event = field(default_factory=trio.Event)
    #: Why it was refused (a RoundError's message), or None.
    error: str | None = None
    #: The hunt's round clock after the tick that applied it.
    state: RoundState | None = None
    #: The tick whose step 0 applied it.
    tick: int = 0


class RoundControl:
    """Round requests waiting for the next tick boundary (see the module docstring).

    The hub's ticker calls :meth:`apply` between ticks (the World is its own then) and
    :meth:`settle` once the tick is journaled; :meth:`submit` may be awaited from any
    Trio task of the server's thread.
    """

    def __init__(self) -> None:
        self.waiting: list[RoundRequest] = []
        self.applied: list[RoundRequest] = []

    async def submit(self, hunt: str, action: str, timeout: float = 10.0) -> RoundRequest:
        """Queue ``action`` ("start" or "end") for ``hunt`` and wait, at most ``timeout``
        seconds, for the tick that applies it. Returns the request: ``error`` set when the
        engine refused it (RoundError's message), else ``state`` and ``tick``. Raises
        ``trio.TooSlowError`` when no tick came (the hub stopped)."""
        req = RoundRequest(hunt, action)
        self.waiting.append(req)
        with trio.fail_after(timeout):
            await req.done.wait()
        return req

    def apply(self, world: World) -> list[dict[str, Any]]:
        """Ticker, between ticks: hand each waiting request to the World; returns the
        journal events of those accepted (``{"round": action, "hunt": index}``)."""
        events = []
        for req in self.waiting:
            try:
                h = world.hunt_index(req.hunt)
                world.request_round(h, req.action)
            except (RoundError, LookupError) as exc:
                req.error = str(exc)
                req.done.set()
                continue
            events.append({"round": req.action, "hunt": h})
            self.applied.append(req)
        self.waiting.clear()
        return events

    def settle(self, world: World) -> None:
        """Ticker, after the tick (journaled): answer the requests it applied."""
        for req in self.applied:
            req.tick = world.tick_number
            req.state = world.round_state(req.hunt)
            req.done.set()
        self.applied.clear()

    def refuse_all(self, message: str) -> None:
        """The hub stops: answer every request still waiting."""
        for req in [*self.waiting, *self.applied]:
            req.error = message
            req.done.set()
        self.waiting.clear()
        self.applied.clear()


# ------------------------------------------------------------------ results


def round_record(world: World, h: int, number: int, rows: np.ndarray, tick: int, *,
                 names: dict[int, str], users: dict[int, str] | None = None) -> dict[str, Any]:
    """Round ``number`` of hunt ``h`` as JSON-ready data. ``rows``: its ``RESULT_DTYPE``
    records (rank 1 first; none when nobody was in play); ``tick``: the tick it ended;
    ``names`` and ``users``: by player id (a missing name or user is null)."""
    params = world.hunt_params[h]
    standings = []
    for r in rows.tolist():
        _, _, rank, slot, gen, found, score, last_tick = r
        pid = (gen << 32) | slot
        standings.append({
            "rank": rank, "player_id": pid, "user": (users or {}).get(pid),
            "name": names.get(pid), "score": score, "found": found,
            "last_tick": None if last_tick < 0 else last_tick})
    plan = params.rounds
    spec = plan.spec(number)
    return {
        "hunt": params.name, "round": number, "rounds": plan.count, "ended_tick": tick,
        "tick_rate": params.tick_rate, "treasures": spec.treasures, "end": spec.end,
        "target_score": spec.target_score, "players": len(standings),
        "key": f"{params.name}#{number}", "standings": standings,
    }


def ended_rounds(result: Any) -> list[tuple[int, int, np.ndarray]]:
    """The rounds a tick ended, as ``(hunt, round, standings)``: ``TickResult.rounds_ended``
    with each one's ``RESULT_DTYPE`` records (copies; empty when nobody was in play)."""
    out = []
    results = result.results
    hunts = results["hunt"]
    for h, number in result.rounds_ended.tolist():
        out.append((h, number, results[hunts == h].copy()))
    return out


class ResultsStore:
    """Every round's record of one hunt: files under ``directory`` (None: memory only)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.recent: list[dict[str, Any]] = []

    def save(self, record: dict[str, Any]) -> bool:
        """Keep ``record``; with a directory, write its file durably unless it exists.
        Returns True when it was new."""
        kept = [r for r in self.recent if r["round"] != record["round"]]
        self.recent = [*kept[-MEMORY_ROUNDS + 1:], record]
        if self.directory is None:
            return True
        path = result_path(self.directory, record["round"])
        if path.exists():
            return False
        write_json_durably(path, record)
        return True

    def list(self) -> list[dict[str, Any]]:
        """Every round's record, oldest first (files, else what memory holds)."""
        if self.directory is None or not self.directory.is_dir():
            return list(self.recent)
        return read_results(self.directory)


def read_results(directory: Path) -> list[dict[str, Any]]:
    """The records of ``directory``'s ``round-<n>.json`` files, by round number; a file
    that does not parse is skipped (it can only be one cut by a crash before its rename,
    which never happens: files are renamed into place)."""
    out = []
    for path in sorted(directory.glob("round-*.json")):
        if not RESULT_FILE.match(path.name):
            continue
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def write_json_durably(path: Path, data: Any) -> None:
    """``path`` holds ``data`` as JSON completely or not at all: tmp file, fsync, rename,
    fsync of the directory."""
    from ..durability._files import DIR_MODE, FILE_MODE, fsync_dir

    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ------------------------------------------------------------------ wire


def round_message(world: World, h: int, tick: int) -> Round | None:
    """The ROUND describing hunt ``h`` at ``tick`` (None: the hunt has no rounds)."""
    state = world.round_state(h)
    if state is None:
        return None
    spec = state.spec
    return Round(state.number, state.phase_code, tick, state.phase_start,
                 state.phase_end or 0, state.count, spec.treasures, spec.respawn,
                 {"time": 0, "all_found": 1, "score": 2}[spec.end], spec.target_score)


@dataclass(frozen=True, slots=True)
class ResultsFrames:
    """One round's RESULTS for every client of its hunt: the shared rows, and per player
    its rank, score and found count (a client not ranked gets zeros)."""

    round: int
    tick: int
    players: int
    rows: bytes
    n_rows: int
    mine: dict[int, tuple[int, int, int]]  # player id -> (rank, score, found)

    def frame(self, player_id: int) -> bytes:
        rank, score, found = self.mine.get(player_id, (0, 0, 0))
        head = results_header(Results(self.round, self.tick, self.players, rank, score, found,
                                      _EMPTY[: 0]))
        # The header's row count is that of the empty standings above: patch it in.
        return head[:2] + self.n_rows.to_bytes(2, "little") + head[4:] + self.rows


_EMPTY = np.zeros(0, RESULT_RECORD)


def results_frames(number: int, rows: np.ndarray, tick: int, top: int) -> ResultsFrames:
    """RESULTS of round ``number`` (``rows``: its RESULT_DTYPE records) with the best
    ``top``."""
    n = min(len(rows), top, MAX_RESULT_ROWS)
    wire = np.zeros(n, RESULT_RECORD)
    for name in RESULT_RECORD.names:
        wire[name] = rows[name][:n]
    mine = {(int(g) << 32) | int(s): (int(r), int(sc), int(f)) for r, s, g, f, sc in zip(
        rows["rank"].tolist(), rows["slot"].tolist(), rows["gen"].tolist(),
        rows["found"].tolist(), rows["score"].tolist(), strict=True)}
    return ResultsFrames(number, tick, len(rows), wire.tobytes(), n, mine)


def encode_round(message: Round) -> bytes:
    return encode(message)
