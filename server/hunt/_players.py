"""What a hub knows of its players, as the stages of its tick pass it on.

:class:`Session` (a player, connected or within its resume grace), :class:`JoinRequest`
(a HELLO waiting for the tick boundary), :class:`TickInputs` (what a tick changes
besides moves, as the journal records it) and :class:`Observers` (who a tick is sent
to). server/hunt/_sessions.py makes them; the pipeline and the broadcaster read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from tickengine import HuntParams

from ..protocol import ErrorMessage
from ..shell._conn import Connection


@dataclass(eq=False)
class Session:
    """A player as the server knows it: alive in a hunt, connected or within its grace."""

    player_id: int
    slot: int
    hunt: int
    name: str
    #: The resume token as the client holds it (b"" for a recovered player until it
    #: resumes), and its hash (server.durability.token_hash): the journal keeps only that.
    token: bytes
    token_hash: bytes
    conn: Connection | None = None
    #: trio.current_time() when the connection was lost (None while connected).
    lost_at: float | None = None
    #: WELCOME not sent yet on the current connection.
    welcome_pending: bool = True
    resumed: bool = False
    leaving: bool = False
    #: IP address the player joined from ("" for players recovered from the journal).
    address: str = ""
    #: The user of the join ticket (ticket mode; server/auth), "" for an anonymous player.
    user: str = ""


@dataclass(eq=False)
class JoinRequest:
    """A HELLO waiting for the next tick boundary; the ticker fills ``session`` or ``refusal``."""

    conn: Connection
    name: str
    hunt: str
    token: bytes | None
    done: trio.Event = field(default_factory=trio.Event)
    session: Session | None = None
    refusal: ErrorMessage | None = None  # Refused, or ERROR HUNT_MOVED
    #: The ticket's user (ticket mode): the user's player in the hunt is taken over, else a
    #: new one joins for the user; "" for an anonymous HELLO.
    user: str = ""


@dataclass(eq=False)
class TickInputs:
    """What the coming tick changes besides moves, as the journal records it (its
    durability contract): hunts added, joins (player id, hunt index, name, token hash,
    user id), leaves (player ids) and server events (JSON-able, e.g. a player's new token
    hash after a takeover: ``{"retoken": [player id, hex]}``, or an operator's round request:
    ``{"round": "start", "hunt": 0}``)."""

    hunts: list[HuntParams] = field(default_factory=list)
    joins: list[tuple[int, int, str, bytes, str]] = field(default_factory=list)
    leaves: list[int] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.hunts.clear()
        self.joins.clear()
        self.leaves.clear()
        self.events.clear()


class Observers:
    """The connected players a tick is sent to, in slot order: ``sessions[i]``, its
    player slot ``slots[i]``, hunt index ``hunts[i]`` and its connection's protocol
    version ``versions[i]`` for ``i < count``."""

    def __init__(self, capacity: int) -> None:
        self.sessions: list[Session] = []
        self._slots = np.zeros(capacity, np.int32)
        self._hunts = np.zeros(capacity, np.int32)
        self._versions = np.ones(capacity, np.uint8)
        self.slots = self._slots[:0]
        self.hunts = self._hunts[:0]
        self.versions = self._versions[:0]
        self.count = 0

    def rebuild(self, sessions: list[Session]) -> None:
        sessions.sort(key=lambda s: s.slot)
        n = self.count = len(sessions)
        self.sessions = sessions
        self._slots[:n] = [s.slot for s in sessions]
        self._hunts[:n] = [s.hunt for s in sessions]
        self._versions[:n] = [s.conn.version for s in sessions]
        self.slots = self._slots[:n]
        self.hunts = self._hunts[:n]
        self.versions = self._versions[:n]


#: ``close_soon(conn, code, reason, final)``: send ``final``, then close ``code``.
CloseSoon = Callable[[Connection, int, str, bytes], None]


