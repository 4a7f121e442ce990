"""ROUND and RESULTS: where a round-based hunt stands, and how the last round ended.

Server -> client only, and only for hunts with a round plan (docs/rules.md,
"Rounds"); layouts in docs/protocol.md. Times are tick numbers: a client shows
the time left as ``(phase_end - TICK.tick) / tick_rate`` seconds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _constants as K
from ._constants import MessageType
from ._errors import malformed, remote_errors
from ._messages import U32, _fail, check_int, check_records
from ._records import RESULT_RECORD

ROUND = struct.Struct("<BBBBIIIQQQq")
RESULTS = struct.Struct("<BBHIQIIqI4x")

#: Round phases, as ROUND carries them (byte 1).
PHASE_LOBBY = 1
PHASE_RUNNING = 2
PHASE_RESULTS = 3
PHASE_OVER = 4
PHASES = {PHASE_LOBBY: "lobby", PHASE_RUNNING: "running", PHASE_RESULTS: "results",
          PHASE_OVER: "over"}
#: End conditions of a round (byte 3): time only, all treasures found, a player's score.
END_TIME = 0
END_ALL_FOUND = 1
END_SCORE = 2
ROUND_RESPAWN = 0x01

I64 = 2**63


@dataclass(frozen=True, slots=True)
class Round:
    """Server -> client: the hunt's round and phase, after WELCOME and at each phase change.

    ``phase_end`` is the first tick of the next phase (the phase lasts
    ``phase_end - phase_start`` ticks at most; a running phase may end sooner by its
    end condition), 0 when the hunt is over. ``tick`` is the tick this describes.
    """

    round: int
    phase: int
    tick: int
    phase_start: int
    phase_end: int
    #: Rounds in the plan; 0: forever.
    rounds: int = 0
    #: Treasures the round places when it runs.
    treasures: int = 0
    respawn: bool = True
    #: One of END_TIME, END_ALL_FOUND, END_SCORE.
    end: int = END_TIME
    #: Points that end the round (``end == END_SCORE``), else 0.
    target_score: int = 0

    def __post_init__(self) -> None:
        check_int(self, "round", 1, U32)
        check_int(self, "phase", PHASE_LOBBY, PHASE_OVER)
        check_int(self, "rounds", 0, U32)
        check_int(self, "treasures", 0, U32)
        check_int(self, "end", END_TIME, END_SCORE)
        for name in ("tick", "phase_start", "phase_end"):
            check_int(self, name, 0, I64 - 1)
        check_int(self, "target_score", 0, I64 - 1)
        object.__setattr__(self, "respawn", bool(self.respawn))
        if (self.phase == PHASE_OVER) != (self.phase_end == 0):
            _fail(self, "phase_end", "0 exactly when the phase is OVER (4)")
        if self.phase != PHASE_OVER and self.phase_end <= self.phase_start:
            _fail(self, "phase_end", "after phase_start")
        if self.phase_start > self.tick:
            _fail(self, "phase_start", "at most tick")

    @property
    def phase_name(self) -> str:
        return PHASES[self.phase]

    def ticks_left(self, tick: int) -> int | None:
        """Ticks until the phase's scheduled end as of ``tick`` (None when the hunt is over)."""
        return None if self.phase_end == 0 else max(0, self.phase_end - tick)


def _no_results() -> Any:
    return field(default_factory=lambda: np.zeros(0, RESULT_RECORD))


@dataclass(frozen=True, slots=True, eq=False)
class Results:
    """Server -> client: the final standings of a round, when it ends (and after WELCOME
    while the hunt shows them). ``standings`` holds the best rows (at most the hunt's
    ``leaderboard_size``), ranked; ``players`` how many were ranked in all. ``your_rank``
    is this client's player's rank (0: it was not in play when the round ended).
    """

    round: int
    #: The tick the round ended (the first tick of its results phase).
    tick: int
    players: int
    your_rank: int = 0
    your_score: int = 0
    your_found: int = 0
    standings: np.ndarray = _no_results()  # noqa: RUF009

    def __post_init__(self) -> None:
        check_int(self, "round", 1, U32)
        check_int(self, "tick", 1, I64 - 1)
        check_int(self, "players", 0, U32)
        check_int(self, "your_rank", 0, self.players)
        check_int(self, "your_score", -I64, I64 - 1)
        check_int(self, "your_found", 0, U32)
        check_records(self, "standings", RESULT_RECORD, min(self.players, K.MAX_RESULT_ROWS))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Results):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__
                   if f != "standings") and self.standings.tobytes() == other.standings.tobytes()

    __hash__ = None  # type: ignore[assignment]


def encode_round(e: Round) -> bytes:
    return ROUND.pack(MessageType.ROUND, e.phase, ROUND_RESPAWN if e.respawn else 0, e.end,
                      e.round, e.rounds, e.treasures, e.tick, e.phase_start, e.phase_end,
                      e.target_score)


def decode_round(view: memoryview) -> Round:
    if len(view) != ROUND.size:
        raise malformed(f"ROUND must be {ROUND.size} bytes, got {len(view)}")
    (_, phase, flags, end, number, rounds, treasures, tick, start, stop,
     target) = ROUND.unpack_from(view)
    if flags & ~ROUND_RESPAWN:
        raise malformed("ROUND has reserved bits set")
    with remote_errors():
        return Round(number, phase, tick, start, stop, rounds, treasures, bool(flags), end,
                     target)


def results_header(e: Results) -> bytes:
    """RESULTS' header: the rows that follow it are the same for every client of the hunt."""
    return RESULTS.pack(MessageType.RESULTS, 0, len(e.standings), e.round, e.tick, e.players,
                        e.your_rank, e.your_score, e.your_found)


def encode_results(e: Results) -> bytes:
    return results_header(e) + e.standings.tobytes()


def decode_results(view: memoryview) -> Results:
    if len(view) < RESULTS.size:
        raise malformed(f"RESULTS needs at least {RESULTS.size} bytes, got {len(view)}")
    (_, reserved, n_rows, number, tick, players, rank, score, found) = RESULTS.unpack_from(view)
    if reserved or bytes(view[RESULTS.size - 4:RESULTS.size]) != bytes(4):
        raise malformed("RESULTS has reserved bits set")
    expected = RESULTS.size + n_rows * RESULT_RECORD.itemsize
    if len(view) != expected:
        raise malformed(f"RESULTS of {n_rows} rows must be {expected} bytes, got {len(view)}")
    rows = np.frombuffer(view, RESULT_RECORD, n_rows, RESULTS.size).copy()
    with remote_errors():
        return Results(number, tick, players, rank, score, found, rows)
