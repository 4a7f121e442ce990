"""The hub's players: join, resume, leave, grace, tokens, and the moves they send.

The first stage of a hub's tick (server/hunt/_hub.py), on the Trio thread; the types it
hands on are in server/hunt/_players.py. Connection tasks never call the World: a HELLO
becomes a :class:`JoinRequest` and MOVES frames are
decoded into the tick's :class:`~server.protocol.MoveBatch` (:meth:`Sessions.take_moves`);
the ticker applies the requests between two ticks (:meth:`Sessions.apply_requests`), in
the order the journal replays them, then takes the batch (:meth:`Sessions.take_batch`),
the tick's inputs as the journal records them (:class:`TickInputs`) and who is sent the
tick (:class:`Observers`). This stage reads nothing from the later ones: what they need
to know about a player (a fresh WELCOME, a keyframe) the hub passes on from what
:meth:`Sessions.apply_requests` returns.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Callable, ItemsView, Iterator, ValuesView
from typing import Any

import numpy as np
import trio

from tickengine import CapacityError, ConfigError, HuntFullError, HuntParams, UnknownHuntError

from ..durability import token_hash
from ..protocol import MAX_SEQ, ErrorCode, ErrorMessage, MoveBatch, NameEntry, Refused, encode
from ..shell import _wsframes as wf
from ..shell._conn import Connection
from ..shell._intake import BUCKET, BUCKET_T, HIGH_SEQ, R_GEN, WARNED, new_rates
from ._players import CloseSoon, JoinRequest, Observers, Session, TickInputs

#: Snapshot meta: its players' tokens are stored as token hashes (older snapshots: plaintext).
TOKENS_HASHED = "sha256-16"


class _Refusal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:256]


class Sessions:
    """The players of a hub, by player slot (read like a dict: ``hub.sessions[slot]``,
    ``.get``, ``.values()``, ``len``), and what the sockets hand the next tick.

    Takes, on the Trio thread at any time: HELLOs (append a :class:`JoinRequest` to
    :attr:`requests`), BYEs (append the session to :attr:`leaves`), MOVES
    (:meth:`take_moves`) and lost connections (:meth:`disconnected`). Gives the ticker,
    between ticks: the accepted requests (:meth:`apply_requests`), who is sent the tick
    (:meth:`refresh_observers`), the move batch (:meth:`take_batch`, :meth:`batch_done`)
    and :attr:`inputs`; and the players' names to the tails (:meth:`joined_name`,
    :meth:`names`). ``world`` is the hub's: joins and leaves change it between ticks.
    """

    def __init__(self, config: Any, world: Any, metrics: Any, log: Any, report: Any,
                 close_soon: CloseSoon, recovered: Any = None) -> None:
        self.config = config
        self.server = config.server
        self.world = world
        self.metrics = metrics
        self.log = log
        #: Per-hunt figures and move arrival times (server/_hunt_metrics.py).
        self.report = report
        self.close_soon = close_soon
        self.by_slot: dict[int, Session] = {}
        #: Sessions by token hash.
        self.by_token: dict[bytes, Session] = {}
        #: Ticket mode: each user's player, by (hunt index, user id): one per user per hunt.
        self.by_user: dict[tuple[int, str], Session] = {}
        #: Sessions without a connection (in their resume grace).
        self.lost: set[Session] = set()
        #: Players per (hunt index, IP address), connected or within their grace.
        self.address_players: dict[tuple[int, str], int] = {}
        self.inputs = TickInputs()
        self.created_hunts = 0
        #: HELLOs waiting for the next tick boundary, and sessions that said BYE.
        self.requests: list[JoinRequest] = []
        self.leaves: list[Session] = []
        cap = self.server.max_moves_per_tick
        #: The batch connection tasks decode moves into, and the one the worker ticks.
        self.batch, self.spare = MoveBatch(cap), MoveBatch(cap)
        #: Stop moves that found the batch full, for the next tick's batch.
        self.deferred_stops: list[Session] = []
        # Per-tick counters, taken by the ticker once per tick.
        self.moves_dropped = 0
        #: Stop moves the server put in the current batch (not received: see take_batch).
        self.stop_moves = 0
        self.observers = Observers(world.players.capacity)
        #: The move rate limit per player slot, as the poller's kernel reads and writes it.
        self.move_rates = new_rates(world.players.capacity)
        #: Called first thing in :meth:`take_batch`: the poller's pass over this hub's
        #: sockets, so that no move read before the tick waits for the next one.
        self.before_batch: Callable[[], None] | None = None
        self._observers_dirty = True
        self._names_blob: dict[int, list[NameEntry]] = {}
        if recovered is not None:
            self._restore_sessions(recovered)
            # Hunts of the config that the recovered world lacks are added now.
            for params in config.world.hunts:
                if params.name not in {p.name for p in world.hunt_params}:
                    self._add_hunt(params)

    # The mapping of sessions by slot, as the rest of the server reads it.
    def __len__(self) -> int:
        return len(self.by_slot)

    def __iter__(self) -> Iterator[int]:
        return iter(self.by_slot)

    def __getitem__(self, slot: int) -> Session:
        return self.by_slot[slot]

    def __contains__(self, slot: object) -> bool:
        return slot in self.by_slot

    def get(self, slot: int) -> Session | None:
        return self.by_slot.get(slot)

    def values(self) -> ValuesView[Session]:
        return self.by_slot.values()

    def items(self) -> ItemsView[int, Session]:
        return self.by_slot.items()

    def _restore_sessions(self, rec: Any) -> None:
        """Players of a recovered world: disconnected, resumable within the grace period."""
        meta = rec.meta or {}
        self.created_hunts = int(meta.get("created_hunts", 0))
        # Snapshots of an older server hold the tokens themselves: hash them on the way in.
        plain = meta.get("tokens") != TOKENS_HASHED
        # Rows [id, hunt, name, token (hash)] and, from ticket mode on, the user id.
        players = {int(row[0]): (int(row[1]), row[2], token_hash(bytes.fromhex(row[3]))
                                 if plain else bytes.fromhex(row[3]),
                                 str(row[4]) if len(row) > 4 else "")
                   for row in meta.get("players", [])}
        for j in rec.joins:
            players[j.player_id] = (j.hunt, j.name, bytes(j.token), j.user)
        for _tick, event in rec.events:  # a takeover gave the player a new token
            if isinstance(event, dict) and "retoken" in event:
                pid, digest = event["retoken"]
                if pid in players:
                    players[pid] = (*players[pid][:2], bytes.fromhex(digest), players[pid][3])
        for leave in rec.leaves:
            players.pop(leave.player_id, None)
        for pid, (h, name, token, user) in players.items():
            if not self.world.is_live(pid):
                continue
            s = Session(pid, pid & 0xFFFFFFFF, h, name, b"", token, welcome_pending=False,
                        user=user)
            self.by_slot[s.slot] = s
            self.by_token[token] = s
            if user:
                self.by_user[h, user] = s
            self.lost.add(s)

    def holds(self, token: bytes) -> bool:
        """Whether ``token`` resumes a player of this hub."""
        return token_hash(token) in self.by_token

    def journal_meta(self) -> dict[str, Any]:
        """What a snapshot keeps beside the world: players' names, token hashes and users."""
        return {"created_hunts": self.created_hunts, "tokens": TOKENS_HASHED,
                "players": [[s.player_id, s.hunt, s.name, s.token_hash.hex(), s.user]
                            for s in self.by_slot.values() if not s.leaving]}

    def new_token(self) -> bytes:
        while True:
            token = secrets.token_bytes(16)
            if token_hash(token) not in self.by_token:
                return token

    def apply_requests(self, now: float) -> list[JoinRequest]:
        """Between ticks: grace expiries, leaves, joins, resumes. Refusals are answered
        at once; returns the accepted requests, to welcome after this tick."""
        # Joins before leaves: the order the journal replays (server/durability).
        accepted = []
        for req in self.requests:
            try:
                if req.user:  # ticket mode: the user's player, whatever token came along
                    req.session = self._take_over(req) or self._join(req)
                elif req.token is not None:
                    req.session = self._resume(req)
                else:
                    req.session = self._join(req)
            except _Refusal as exc:
                req.refusal = Refused(exc.code, exc.message)
                req.done.set()
            else:
                accepted.append(req)
        self.requests.clear()
        grace = self.server.resume_grace
        for s in [s for s in self.lost if s.lost_at is not None and now - s.lost_at >= grace]:
                self.log.info("leave", player=s.player_id, name=s.name, reason="grace expired")
                self._leave(s)
        for s in self.leaves:
            if not s.leaving and self.world.is_live(s.player_id):
                self._leave(s)
        self.leaves.clear()
        return accepted

    def _leave(self, s: Session) -> None:
        s.leaving = True
        self.lost.discard(s)
        self.world.leave(s.player_id)
        self.inputs.leaves.append(s.player_id)
        self.by_token.pop(s.token_hash, None)
        self.by_slot.pop(s.slot, None)
        if s.user and self.by_user.get((s.hunt, s.user)) is s:
            del self.by_user[s.hunt, s.user]
        key = (s.hunt, s.address)
        if s.address and key in self.address_players:
            self.address_players[key] -= 1
            if not self.address_players[key]:
                del self.address_players[key]
        self._names_blob.pop(s.hunt, None)
        if s.conn is not None:
            s.conn.unbind()
            self._observers_dirty = True

    def _join(self, req: JoinRequest) -> Session:
        world = self.world
        try:
            h = world.hunt_index(req.hunt)
        except UnknownHuntError:
            h = self._create_hunt(req.hunt)
        address = req.conn.remote
        cap = self.server.max_players_per_address
        if self.address_players.get((h, address), 0) >= cap:
            self.metrics.limits.labels("players_per_address").inc()
            raise _Refusal(ErrorCode.ADDRESS_FULL, f"{address} already has {cap} players in "
                           "this hunt (the server's max_players_per_address): one must leave "
                           "(BYE) or its resume grace end first")
        try:
            pid = world.join(h)
        except HuntFullError as exc:
            raise _Refusal(ErrorCode.HUNT_FULL, str(exc)) from None
        except CapacityError as exc:
            raise _Refusal(ErrorCode.SERVER_FULL, str(exc)) from None
        slot = pid & 0xFFFFFFFF
        token = self.new_token()
        s = Session(pid, slot, h, req.name, token, token_hash(token), conn=req.conn,
                    address=address, user=req.user)
        self.address_players[h, address] = self.address_players.get((h, address), 0) + 1
        self.inputs.joins.append((pid, h, req.name, s.token_hash, req.user))
        if req.user:
            self.by_user[h, req.user] = s
        self._fresh_bucket(slot, joined=True)
        self.by_slot[slot] = s
        self.by_token[s.token_hash] = s
        self._names_blob.pop(h, None)
        self._observers_dirty = True
        self.log.info("join", player=pid, name=req.name, hunt=world.hunt_params[h].name,
                      remote=req.conn.remote, user=req.user or None)
        return s

    def _add_hunt(self, params: HuntParams) -> int:
        h = self.world.add_hunt(params)
        self.inputs.hunts.append(params)
        return h

    def _create_hunt(self, name: str) -> int:
        server, world = self.server, self.world
        if not server.allow_create_hunts:
            names = ", ".join(p.name for p in world.hunt_params)
            raise _Refusal(ErrorCode.UNKNOWN_HUNT, f"no hunt named {name!r}; hunts: {names}")
        if self.created_hunts >= server.max_created_hunts:
            raise _Refusal(ErrorCode.UNKNOWN_HUNT, f"no hunt named {name!r}, and clients have "
                           f"created the most allowed ({server.max_created_hunts})")
        try:
            params = HuntParams.from_dict({**self.config.hunt_defaults, "name": name})
            h = self._add_hunt(params)
        except (ConfigError, CapacityError) as exc:
            raise _Refusal(ErrorCode.UNKNOWN_HUNT, f"cannot create hunt {name!r}: {exc}") from None
        self.created_hunts += 1
        self.log.info("hunt_created", hunt=name, index=h)
        return h

    def _resume(self, req: JoinRequest) -> Session:
        digest = token_hash(req.token or b"")
        s = self.by_token.get(digest)
        # The dict finds the candidate by hash; the comparison of the hashes is constant-time.
        if s is None or s.leaving or not hmac.compare_digest(s.token_hash, digest):
            raise _Refusal(ErrorCode.RESUME_INVALID, "this resume token is unknown, expired or "
                           "its player left; join again without it")
        return self._attach(s, req, req.token or b"", "another connection resumed this player")

    def _take_over(self, req: JoinRequest) -> Session | None:
        """Ticket mode: the player the request's user already has in its hunt, attached to
        the request's connection (its other connection replaced, as by a resume), or None.
        The client gets the player's token; a player recovered from disk, whose token only
        the client knew, gets a new one, journaled (``retoken``) so that a restart keeps it."""
        try:
            h = self.world.hunt_index(req.hunt)
        except UnknownHuntError:
            return None
        s = self.by_user.get((h, req.user))
        if s is None or s.leaving:
            return None
        token = s.token
        if not token:
            token = self.new_token()
            self.by_token.pop(s.token_hash, None)
            s.token_hash = token_hash(token)
            self.by_token[s.token_hash] = s
            self.inputs.events.append({"retoken": [s.player_id, s.token_hash.hex()]})
        return self._attach(s, req, token, "another connection of this user took this "
                            "player over")

    def _attach(self, s: Session, req: JoinRequest, token: bytes, why: str) -> Session:
        """Give player ``s`` the request's connection (a resume or a takeover)."""
        old = s.conn
        if old is not None:
            old.unbind()  # no TICK before the new WELCOME
        if old is not None and old is not req.conn:
            self.log.info("replaced", player=s.player_id, name=s.name)
            frame = wf.frame(encode(ErrorMessage(ErrorCode.REPLACED, why)))
            self.close_soon(old, 4007, "replaced", frame)
            # Like any connection that ends: the player stands still until the new
            # connection moves it (this tick applies the stop; WELCOME's ack counts it).
            self._stop_move(s)
        s.conn, s.lost_at, s.token = req.conn, None, token
        self.lost.discard(s)
        s.welcome_pending = s.resumed = True
        self._fresh_bucket(s.slot)
        self._observers_dirty = True
        self.log.info("resume", player=s.player_id, name=s.name, remote=req.conn.remote,
                      user=s.user or None)
        return s

    def _fresh_bucket(self, slot: int, joined: bool = False) -> None:
        """A connection takes the player over (a join or a resume): a full token bucket,
        and the moves of any connection it had before are no longer the player's."""
        f, i = self.move_rates
        f[slot, BUCKET], f[slot, BUCKET_T] = self.server.moves_per_second, trio.current_time()
        if joined:  # a new player in the slot
            f[slot, WARNED] = -math.inf
            i[slot, HIGH_SEQ] = 0
        i[slot, R_GEN] += 1

    def rate_warning_due(self, s: Session, now: float) -> bool:
        """A frame of ``s`` was over the rate limit: True (and noted) when its client is to
        be warned, at most once a second (docs/protocol.md, "Move rate limit")."""
        f = self.move_rates.f
        if now - f[s.slot, WARNED] < 1.0:
            return False
        f[s.slot, WARNED] = now
        return True

    def refresh_observers(self) -> Observers:
        """Who is sent the coming tick: every connected player not leaving (rebuilt only
        after a join, resume, leave or lost connection)."""
        if self._observers_dirty:
            self.observers.rebuild([s for s in self.by_slot.values()
                                    if s.conn is not None and not s.leaving])
            self._observers_dirty = False
        return self.observers

    def read_ahead(self) -> None:
        """Shortly before the tick: the poller's pass over this hub's sockets, into the
        current batch (the pass in :meth:`take_batch` then has less to read)."""
        if self.before_batch is not None:
            self.before_batch()

    def take_batch(self) -> tuple[MoveBatch, int]:
        """At the tick: the batch of moves to tick, and how many of them clients sent
        (the rest are the server's stop moves). Moves go into the spare batch meanwhile
        (double buffering); hand the batch back with :meth:`batch_done`."""
        if self.before_batch is not None:
            self.before_batch()
        batch, self.batch = self.batch, self.spare
        # Received moves are counted per tick, not per frame (an int above 256 is an
        # allocation): the batch holds them and the server's own stop moves.
        received, self.stop_moves = batch.count - self.stop_moves, 0
        if self.deferred_stops:  # stops that found the last batch full: into this one
            stops, self.deferred_stops = self.deferred_stops, []
            for s in stops:
                if s.conn is None and not s.leaving:
                    self._stop_move(s)
        return batch, received

    def batch_done(self, batch: MoveBatch) -> None:
        """The tick applied ``batch`` and journaled :attr:`inputs`: both start afresh."""
        batch.clear()
        self.spare = batch
        self.inputs.clear()

    def take_dropped(self) -> int:
        """MOVES frames dropped (rate limit or full batch) since the last call."""
        dropped, self.moves_dropped = self.moves_dropped, 0
        return dropped

    def answer_pending(self, extra: list[JoinRequest] = (),
                       refusal: ErrorMessage | None = None) -> None:
        """Refuse every HELLO still waiting (the hub stopped): ``refusal``, by default
        HUNT_MOVED."""
        moved = refusal or ErrorMessage(
            ErrorCode.HUNT_MOVED, "this hunt moved to another node: reconnect to the server "
            "you first connected to, with your resume token")
        for req in [*extra, *self.requests]:
            req.session = None
            req.refusal = moved
            req.done.set()
        self.requests.clear()

    def disconnected(self, s: Session, conn: Connection) -> None:
        """A session's connection ended: keep the player for its grace period."""
        if s.conn is conn:
            conn.unbind()
            s.conn = None
            s.lost_at = trio.current_time()
            if not s.leaving:
                self.lost.add(s)
                self._stop_move(s)
            self._observers_dirty = True

    def _stop_move(self, s: Session) -> None:
        """A player whose connection ended (lost, closed, replaced, evicted) stands still:
        the server moves it (0, 0) with the next seq, through the batch like any move, so
        the journal replays it. A resumed client continues from WELCOME's ack + 1. Client
        seqs stop at MAX_CLIENT_SEQ, so the seqs above it are always free for stops."""
        b = self.batch
        if b.room < 1:  # the batch is full: the stop goes into the next tick's batch
            self.deferred_stops.append(s)
            return
        rates = self.move_rates.i[s.slot]
        seq = max(int(rates[HIGH_SEQ]), int(self.world.players.last_seq[s.slot])) + 1
        if seq > MAX_SEQ:  # after 2**62 stops in a row: the player stood still since
            return
        c = b.count
        b.ids[c], b.seqs[c], b.dx[c], b.dy[c] = s.player_id, seq, 0.0, 0.0
        b.count = c + 1
        self.stop_moves += 1
        rates[HIGH_SEQ] = seq

    def take_moves(self, s: Session, payload: bytes | str, now: float) -> int:
        """Rate-limit and decode one MOVES frame into the current batch (raises
        RemoteProtocolError for a bad frame). Returns the moves taken, 0 when the frame
        was over the rate limit (the caller warns the client).

        The limit is a token bucket (``moves_per_second``, a burst of one second's worth)
        per player slot in :attr:`move_rates`, shared with the poller's kernel
        (server/shell/_intake.py), which takes binary frames by the same rule. Over it,
        a frame adds no row: its highest-seq move replaces the player's newest row of
        this tick's batch (or takes one row if it has none), so the latest direction
        always wins and an older move is what is dropped."""
        rate = self.server.moves_per_second
        f, i = self.move_rates.f[s.slot], self.move_rates.i[s.slot]
        bucket = min(rate, float(f[BUCKET]) + (now - float(f[BUCKET_T])) * rate)
        f[BUCKET_T] = now
        batch = self.batch
        if batch.room < 64:  # the tick's batch is full (server-wide): drop the frame
            f[BUCKET] = bucket
            self.moves_dropped += 1
            self.report.drop_move(s.hunt)
            return 0
        n = batch.add(payload, s.player_id)
        c = batch.count
        top = int(batch.seqs[c - 1] if n == 1 else batch.seqs[c - n:c].max())
        if top > i[HIGH_SEQ]:
            i[HIGH_SEQ] = top
        if bucket >= 1.0:
            self.report.clock.mark(c, n, now)
            f[BUCKET] = bucket - n
            return n
        f[BUCKET] = bucket
        self._keep_newest(s, batch, n, top, now)
        return 0

    def _keep_newest(self, s: Session, batch: MoveBatch, n: int, top: int, now: float) -> None:
        """Over the rate limit: of the frame's ``n`` rows (the batch's last), keep only the
        highest seq ``top``, in the player's pending row of this batch if it has one
        (replacing it if older), else as one new row. The rare path: a scan of the batch."""
        self.moves_dropped += 1
        self.report.drop_move(s.hunt)
        c0 = batch.count - n
        seqs = batch.seqs
        new = c0 + int(seqs[c0:c0 + n].argmax())
        pending = np.flatnonzero(batch.ids[:c0] == s.player_id)
        if len(pending):
            row = int(pending[seqs[pending].argmax()])
            if top > seqs[row]:
                seqs[row], batch.dx[row], batch.dy[row] = top, batch.dx[new], batch.dy[new]
            batch.count = c0
            return
        seqs[c0], batch.dx[c0], batch.dy[c0] = top, batch.dx[new], batch.dy[new]
        batch.ids[c0] = s.player_id
        batch.count = c0 + 1
        self.report.clock.mark(c0 + 1, 1, now)

    def names(self, h: int) -> list[NameEntry]:
        """Every player of hunt ``h`` (for a keyframe's tail); cached until one joins or leaves."""
        cached = self._names_blob.get(h)
        if cached is None:
            gen = self.world.players.gen
            cached = [NameEntry(s.slot, int(gen[s.slot]), s.name)
                      for s in self.by_slot.values() if s.hunt == h and not s.leaving]
            self._names_blob[h] = cached
        return cached

    def joined_name(self, slot: int) -> str | None:
        """The name of the player in ``slot``; None when there is none."""
        s = self.by_slot.get(slot)
        return s.name if s is not None else None
