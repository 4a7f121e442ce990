"""The hub's players: join, resume, leave, grace, tokens, and the moves they send.

Connection tasks never call the World: a HELLO becomes a :class:`JoinRequest` and
MOVES frames are decoded into the tick's :class:`~server.protocol.MoveBatch`
(:meth:`Sessions.take_moves`); the ticker applies the requests between two ticks
(:meth:`Sessions._apply_requests`), in the order the journal replays them.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from tickengine import CapacityError, ConfigError, HuntFullError, HuntParams, UnknownHuntError

from ..durability import token_hash
from ..protocol import MAX_SEQ, ErrorCode, ErrorMessage, MoveBatch, NameEntry, Refused, encode
from ..shell import _wsframes as wf
from ..shell._conn import Connection

#: Snapshot meta: its players' tokens are stored as token hashes (older snapshots: plaintext).
TOKENS_HASHED = "sha256-16"


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
    #: Token bucket of the move rate limit (moves) and its last refill time (seconds).
    bucket: float = 0.0
    bucket_t: float = 0.0
    last_rate_warning: float = -math.inf
    leaving: bool = False
    #: Highest move seq received from the client (a stop move on disconnect goes above it).
    max_seq: int = 0
    #: IP address the player joined from ("" for players recovered from the journal).
    address: str = ""


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


class _Refusal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:256]


class Sessions:
    """Players of a hub (a mixin of :class:`server.hunt._hub.Hub`, whose state it uses):
    socket -> requests and the move batch -> the next tick."""

    def _restore_sessions(self, rec: Any) -> None:
        """Players of a recovered world: disconnected, resumable within the grace period."""
        meta = rec.meta or {}
        self.created_hunts = int(meta.get("created_hunts", 0))
        # Snapshots of an older server hold the tokens themselves: hash them on the way in.
        plain = meta.get("tokens") != TOKENS_HASHED
        players = {int(pid): (int(h), name, token_hash(bytes.fromhex(tok)) if plain
                              else bytes.fromhex(tok))
                   for pid, h, name, tok in meta.get("players", [])}
        for j in rec.joins:
            players[j.player_id] = (j.hunt, j.name, bytes(j.token))
        for leave in rec.leaves:
            players.pop(leave.player_id, None)
        for pid, (h, name, token) in players.items():
            if not self.world.is_live(pid):
                continue
            s = Session(pid, pid & 0xFFFFFFFF, h, name, b"", token, welcome_pending=False)
            self.sessions[s.slot] = s
            self.by_token[token] = s
            self.lost.add(s)

    def holds(self, token: bytes) -> bool:
        """Whether ``token`` resumes a player of this hub."""
        return token_hash(token) in self.by_token

    def journal_meta(self) -> dict[str, Any]:
        """What a snapshot keeps beside the world: players' names and tokens."""
        return {"created_hunts": self.created_hunts, "tokens": TOKENS_HASHED,
                "players": [[s.player_id, s.hunt, s.name, s.token_hash.hex()]
                            for s in self.sessions.values() if not s.leaving]}

    def new_token(self) -> bytes:
        while True:
            token = secrets.token_bytes(16)
            if token_hash(token) not in self.by_token:
                return token

    def _apply_requests(self, now: float) -> list[JoinRequest]:
        """Between ticks: grace expiries, leaves, joins, resumes. Refusals are answered
        at once; returns the accepted requests, to welcome after this tick."""
        # Joins before leaves: the order the journal replays (server/durability).
        accepted = []
        for req in self.requests:
            try:
                req.session = self._resume(req) if req.token is not None else self._join(req)
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
        self.tick_leaves.append(s.player_id)
        self.by_token.pop(s.token_hash, None)
        self.sessions.pop(s.slot, None)
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
                    address=address)
        self.address_players[h, address] = self.address_players.get((h, address), 0) + 1
        self.keyframe_due[slot] = 1
        self.skipped_ticks[slot] = 0
        self.tick_joins.append((pid, h, req.name, s.token_hash))
        s.bucket, s.bucket_t = self.server.moves_per_second, trio.current_time()
        self.sessions[slot] = s
        self.by_token[s.token_hash] = s
        self._names_blob.pop(h, None)
        self._observers_dirty = True
        self.log.info("join", player=pid, name=req.name, hunt=world.hunt_params[h].name,
                      remote=req.conn.remote)
        return s

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
            h = world.add_hunt(params)
            self.tick_hunts.append(params)
        except (ConfigError, CapacityError) as exc:
            raise _Refusal(ErrorCode.UNKNOWN_HUNT, f"cannot create hunt {name!r}: {exc}") from None
        self.created_hunts += 1
        self.recent_discoveries.append(deque(maxlen=20))
        self.log.info("hunt_created", hunt=name, index=h)
        return h

    def _resume(self, req: JoinRequest) -> Session:
        digest = token_hash(req.token or b"")
        s = self.by_token.get(digest)
        # The dict finds the candidate by hash; the comparison of the hashes is constant-time.
        if s is None or s.leaving or not hmac.compare_digest(s.token_hash, digest):
            raise _Refusal(ErrorCode.RESUME_INVALID, "this resume token is unknown, expired or "
                           "its player left; join again without it")
        old = s.conn
        if old is not None:
            old.unbind()  # no TICK before the new WELCOME
        if old is not None and old is not req.conn:
            self.log.info("replaced", player=s.player_id, name=s.name)
            frame = wf.frame(encode(ErrorMessage(ErrorCode.REPLACED, "another connection "
                                                 "resumed this player")))
            self._close_soon(old, 4007, "replaced", frame)
            # Like any connection that ends: the player stands still until the new
            # connection moves it (this tick applies the stop; WELCOME's ack counts it).
            self._stop_move(s)
        s.conn, s.lost_at, s.token = req.conn, None, req.token
        self.lost.discard(s)
        s.welcome_pending = s.resumed = True
        self.keyframe_due[s.slot] = 1
        self.skipped_ticks[s.slot] = 0
        s.bucket, s.bucket_t = self.server.moves_per_second, trio.current_time()
        self._observers_dirty = True
        self.log.info("resume", player=s.player_id, name=s.name, remote=req.conn.remote)
        return s

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
        seq = max(s.max_seq, int(self.world.players.last_seq[s.slot])) + 1
        if seq > MAX_SEQ:  # after 2**62 stops in a row: the player stood still since
            return
        c = b.count
        b.ids[c], b.seqs[c], b.dx[c], b.dy[c] = s.player_id, seq, 0.0, 0.0
        b.count = c + 1
        self.stop_moves += 1
        s.max_seq = seq

    def take_moves(self, s: Session, payload: bytes | str, now: float) -> int:
        """Rate-limit and decode one MOVES frame into the current batch (raises
        RemoteProtocolError for a bad frame). Returns the moves taken, 0 when the frame
        was over the rate limit (the caller warns the client).

        The limit is a token bucket (``moves_per_second``, a burst of one second's worth).
        Over it, a frame adds no row: its highest-seq move replaces the player's newest
        row of this tick's batch (or takes one row if it has none), so the latest
        direction always wins and an older move is what is dropped."""
        rate = self.server.moves_per_second
        bucket = min(rate, s.bucket + (now - s.bucket_t) * rate)
        s.bucket_t = now
        batch = self.batch
        if batch.room < 64:  # the tick's batch is full (server-wide): drop the frame
            s.bucket = bucket
            self.moves_dropped += 1
            self.report.drop_move(s.hunt)
            return 0
        n = batch.add(payload, s.player_id)
        c = batch.count
        top = int(batch.seqs[c - 1] if n == 1 else batch.seqs[c - n:c].max())
        if top > s.max_seq:
            s.max_seq = top
        if bucket >= 1.0:
            self.report.clock.mark(c, n, now)
            s.bucket = bucket - n
            return n
        s.bucket = bucket
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

    def _names(self, h: int) -> list[NameEntry]:
        cached = self._names_blob.get(h)
        if cached is None:
            gen = self.world.players.gen
            cached = [NameEntry(s.slot, int(gen[s.slot]), s.name)
                      for s in self.sessions.values() if s.hunt == h and not s.leaving]
            self._names_blob[h] = cached
        return cached

    def _joined_name(self, slot: int) -> str | None:
        s = self.sessions.get(slot)
        return s.name if s is not None else None
