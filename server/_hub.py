"""The hub: one World, its fixed-rate tick, and the players' sessions.

Threads and ownership: the World is touched by one Trio task, the ticker, and
by the worker thread it hands each tick to (``trio.to_thread``; the kernels
release the GIL). Connection tasks never call the World: they queue requests
(join, resume, leave) that the ticker applies between two ticks, and they
decode moves straight into the current :class:`MoveBatch`; at tick time the
ticker swaps in the spare batch (double buffering), so sockets keep being read
while the worker ticks.

One tick, in order: apply queued requests (expired grace periods, leaves,
joins, resumes) -> worker thread: moves into the engine, ``World.tick``,
visibility of every connected player, every client's frame into one buffer
(server/_tickframes.py), written by the worker to every claimed socket ->
journal hook -> WELCOMEs of new players (the state at this tick; their first
TICK is the next one) -> for the clients not claimed, one ``send_now`` (its
ordered queue, server/_conn.py; a full queue skips the tick for that client,
which then gets a keyframe; too many skips in a row evict it). Deadlines come
from the schedule (start + n * period), not from a sleep after the work, so the
rate does not drift.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import trio

from tickengine import (
    CapacityError,
    ConfigError,
    HuntFullError,
    HuntParams,
    UnknownHuntError,
    World,
)

from . import _tickframes as tf
from . import _wsframes as wf
from ._config import ServeConfig
from ._conn import Connection, SendSlots
from ._metrics import TICK_PHASES, Metrics
from ._tails import build_tails
from .durability import token_hash
from .protocol import (
    MAX_SEQ,
    ErrorCode,
    ErrorMessage,
    MoveBatch,
    NameEntry,
    Refused,
    Welcome,
    encode,
)

#: Ticks of timings kept for /api/stats.
RING = 8192
#: Snapshot meta: its players' tokens are stored as token hashes (older snapshots: plaintext).
TOKENS_HASHED = "sha256-16"
#: Clients per thread below which the tick's writes stay on one thread.
SPLIT_MIN = 128


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


class Hub:
    """A World served to clients on a fixed tick. See the module docstring."""

    def __init__(self, config: ServeConfig, metrics: Metrics, log: Any,
                 journal: Any = None, recovered: Any = None) -> None:
        self.config = config
        self.server = config.server
        self.metrics = metrics
        self.log = log
        self.journal = journal
        self.sessions: dict[int, Session] = {}  # by slot
        #: Sessions by token hash.
        self.by_token: dict[bytes, Session] = {}
        #: Sessions without a connection (in their resume grace).
        self.lost: set[Session] = set()
        #: Players per (hunt index, IP address), connected or within their grace.
        self.address_players: dict[tuple[int, str], int] = {}
        # Inputs of the coming tick, as the journal records them (durability contract).
        self.tick_hunts: list[HuntParams] = []
        self.tick_joins: list[tuple[int, int, str, bytes]] = []
        self.tick_leaves: list[int] = []
        if recovered is None:
            self.world = World(config.world.engine, config.world.hunts)
            self.created_hunts = 0
        else:
            self.world = recovered.world
            self._restore_sessions(recovered)
            # Hunts of the config that the recovered world lacks are added now.
            for params in config.world.hunts:
                if params.name not in {p.name for p in self.world.hunt_params}:
                    self.world.add_hunt(params)
                    self.tick_hunts.append(params)
        self._init_buffers()
        self._send_pool = (ThreadPoolExecutor(1, thread_name_prefix="hub-send")
                           if self.server.send_threads > 1 else None)
        self.requests: list[JoinRequest] = []
        self.leaves: list[Session] = []
        #: Stop moves that found the batch full, for the next tick's batch.
        self.deferred_stops: list[Session] = []
        self.running = True
        self.stats: dict[str, float] = {"tick": 0, "tick_ms_p50": 0.0, "tick_ms_p99": 0.0}
        #: Ring of the last RING ticks' timings (ms) by phase, for /api/stats and load tests.
        self.ring = np.zeros((RING, len(TICK_PHASES)), np.float64)
        self.ring_count = 0
        self.evictions = 0
        self.skipped_total = 0
        #: Observers cut by a full visibility buffer since the last log line about it.
        self.truncated_since_log = 0
        self._truncation_logged = -math.inf
        self.recent_discoveries: list[deque[dict[str, Any]]] = [
            deque(maxlen=20) for _ in self.world.hunt_params]
        # Per-tick counters, flushed into the metrics once per tick.
        self.moves_received = 0
        self.moves_dropped = 0
        #: Stop moves the server put in the current batch (not received: see tick_once).
        self.stop_moves = 0
        #: Per-hunt figures and move arrival times for the metrics (server/_hunt_metrics.py).
        self.report = metrics.hub_report(self)
        self._observers_dirty = True
        self._on_tick: list[Callable[[Hub, Any], None]] = []
        #: ``time.monotonic()`` after which this node may no longer tick the hunt (scale-out:
        #: its lease in Redis may have expired). inf: no lease (one node). See server/_node.py.
        self.lease_deadline = math.inf
        #: True once a tick was refused for want of a lease (the hub then stops for good).
        self.fenced = False
        #: True while :meth:`run_ticker` runs; ``ticker_done`` is set when it returns.
        self.ticking = False
        self.ticker_done = trio.Event()

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

    def _init_buffers(self) -> None:
        cap = self.server.max_moves_per_tick
        self.batch, self.spare = MoveBatch(cap), MoveBatch(cap)
        P = self.world.players.capacity
        self.obs_sessions: list[Session] = []
        self.obs_slots = np.zeros(P, np.int32)
        self.obs_keyframe = np.zeros(P, np.uint8)
        self.obs_tail = np.zeros(P, np.int32)
        self.obs_hunt = np.zeros(P, np.int32)
        self.frame_sizes = np.zeros(P, np.int64)
        self.frame_offsets = np.zeros(P + 1, np.int64)
        self.out = np.zeros(1 << 20, np.uint8)
        self.written = np.zeros(P, np.int64)
        self.fds = np.zeros(P, np.int64)
        # Per player slot, as arrays so the tick reads and resets them in bulk:
        #: the next TICK must be a keyframe (join, resume, a skipped or truncated tick);
        self.keyframe_due = np.ones(P, np.uint8)
        #: consecutive ticks skipped because the client's outbox was full.
        self.skipped_ticks = np.zeros(P, np.int32)
        self._whole = np.zeros(P, np.bool_)
        self.send_slots = SendSlots(P)
        self._claimed = np.zeros(P, np.bool_)
        self.tails = tf.TailTable()
        self._names_blob: dict[int, list[NameEntry]] = {}

    # ------------------------------------------------------------------ requests

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

    def _close_soon(self, conn: Connection, code: int, reason: str, final: bytes) -> None:
        """``final``, then close ``code``: queued now (nothing can come between), written
        by a task."""
        conn.begin_close(code, reason, final)
        self.nursery.start_soon(conn.close, code, reason)

    # ------------------------------------------------------------------ moves

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

    # ------------------------------------------------------------------ the tick

    def _rebuild_observers(self) -> None:
        obs = [s for s in self.sessions.values() if s.conn is not None and not s.leaving]
        obs.sort(key=lambda s: s.slot)
        self.obs_sessions = obs
        n = len(obs)
        self.obs_slots[:n] = [s.slot for s in obs]
        self.obs_hunt[:n] = [s.hunt for s in obs]
        self._observers_dirty = False

    def _names(self, h: int) -> list[NameEntry]:
        cached = self._names_blob.get(h)
        if cached is None:
            gen = self.world.players.gen
            cached = [NameEntry(s.slot, int(gen[s.slot]), s.name)
                      for s in self.sessions.values() if s.hunt == h and not s.leaving]
            self._names_blob[h] = cached
        return cached

    def _compute(self, batch: MoveBatch, n_obs: int) -> tuple[Any, Any, int, dict[str, float]]:
        """Worker thread: the tick, visibility, every frame, and the writes of the clients
        the ticker claimed (``self.fds[i] >= 0``). Touches no Trio object."""
        numba.set_num_threads(self.server.tick_threads)
        world = self.world
        c0 = time.perf_counter()
        moves = batch.columns()
        world.moves.put_many(*moves)
        result = world.tick()
        journal = self.journal
        if journal is not None:
            # On disk (per the fsync policy) before any message of this tick leaves.
            t = result.tick
            journal.append_tick(t, hunts=self.tick_hunts, joins=self.tick_joins,
                                leaves=self.tick_leaves, moves=moves,
                                state_hash=world.state_hash() if journal.wants_hash(t) else None)
            journal.maybe_snapshot(world, self.journal_meta)
        c1 = time.perf_counter()
        slots = self.obs_slots[:n_obs]
        vis = world.visibility(slots, self.obs_keyframe)
        c2 = time.perf_counter()
        total = self._build_tails(result, n_obs)
        total = tf.frame_sizes(n_obs, vis.offsets, self.obs_tail, self.tails.rows,
                               self.frame_sizes)
        if total > self.out.shape[0]:
            self.out = np.zeros(max(total, 2 * self.out.shape[0]), np.uint8)
        P = world.players
        tf.write_frames(n_obs, result.tick, slots, self.obs_keyframe, vis.offsets,
                        vis.records.view(np.uint8), self.obs_tail, self.tails.rows,
                        self.tails.data, P.last_seq, P.x.view(np.int64), P.y.view(np.int64),
                        P.score, P.hint, self.out, self.frame_offsets)
        c3 = time.perf_counter()
        # Fencing: this tick is journaled; it may be acknowledged only while the lease holds
        # (a node paused past its lease must not tell clients of ticks the next owner lacks).
        if time.monotonic() >= self.lease_deadline:
            raise _Fenced
        self._write_frames(n_obs, vis)
        c4 = time.perf_counter()
        phases = {name: float(ns) * 1e-9 for name, ns in
                  zip(("membership", "movement", "grid", "discovery", "hints", "leaderboard"),
                      result.phase_ns, strict=True)}
        phases["visibility"] = c2 - c1
        phases["frames"] = c3 - c2
        phases["send"] = c4 - c3
        phases["_c0"], phases["_c4"] = c0, c4  # for the hand-off times (popped by the ticker)
        return result, vis, total, phases

    def _write_frames(self, n_obs: int, vis: Any) -> None:
        """One ``write(2)`` per claimed client in a nogil kernel: the Trio thread keeps
        reading sockets meanwhile. ``self.written[i]``: bytes taken (-2: not written)."""
        fd = self.fds
        if vis.dropped:  # truncated visibility: that client gets a keyframe later instead
            fd[:n_obs][vis.truncated[:n_obs] != 0] = -1
        base = self.out.ctypes.data
        pool = self._send_pool
        if pool is None or n_obs < 2 * SPLIT_MIN:
            tf.write_frames_to_sockets(n_obs, fd, base, self.frame_offsets, self.written)
            return
        # Each write(2) on loopback runs the receiver's TCP stack too: two threads (the
        # kernel releases the GIL) halve the time to the last frame.
        half = n_obs // 2
        rest = pool.submit(tf.write_frames_to_sockets, n_obs - half, fd[half:], base,
                           self.frame_offsets[half:], self.written[half:])
        tf.write_frames_to_sockets(half, fd, base, self.frame_offsets, self.written)
        rest.result()

    def _build_tails(self, result: Any, n_obs: int) -> int:
        """Each hunt's shared tail, and each observer's (server/_tails.py)."""
        return build_tails(self.world, result, self.tails, self.obs_hunt[:n_obs],
                           self.obs_keyframe[:n_obs], self.obs_tail[:n_obs],
                           self._joined_name, self._names)

    def _joined_name(self, slot: int) -> str | None:
        s = self.sessions.get(slot)
        return s.name if s is not None else None

    async def run_ticker(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The fixed-rate tick loop; returns when :attr:`running` turns False."""
        rate = self.world.tick_rate or 20
        period = 1.0 / rate
        start = trio.current_time()
        for s in self.lost:  # recovered players: their grace starts now
            if s.lost_at is None:
                s.lost_at = start
        self.ticking = True
        task_status.started()
        try:
            await self._tick_loop(start, period)
        finally:
            self.ticking = False
            self.report.release()
            self.ticker_done.set()

    async def _tick_loop(self, start: float, period: float) -> None:
        n = 0
        while self.running:
            n += 1
            deadline = start + n * period
            now = trio.current_time()
            if now > deadline + period:  # overran by more than a whole period: skip ahead
                missed = int((now - deadline) / period)
                n += missed
                deadline += missed * period
                self.metrics.overruns.inc(missed)
                self.report.overran(missed)
                self.log.warning("tick_overrun", missed_ticks=missed)
            await trio.sleep_until(deadline)
            if not self.running:
                break
            if time.monotonic() >= self.lease_deadline:
                self._fence()
                break
            await self.tick_once()

    async def tick_once(self) -> None:
        t0 = time.perf_counter()
        now = trio.current_time()
        accepted = self._apply_requests(now)
        if self._observers_dirty:
            self._rebuild_observers()
        obs = self.obs_sessions
        n_obs = len(obs)
        slots = self.obs_slots[:n_obs]
        self.obs_keyframe[:n_obs] = self.keyframe_due[slots]
        # The worker writes the frames of idle, welcomed connections (self.fds[i] >= 0);
        # the others go through send_now below, behind what they have queued.
        send = self.send_slots
        claimed = self._claimed[:n_obs]
        send.begin(slots, self.fds[:n_obs], claimed)
        batch, self.batch = self.batch, self.spare
        clock = self.report.swap_clocks()
        n_moves = batch.count
        # Received moves are counted per tick, not per frame (an int above 256 is an
        # allocation): the batch holds them and the server's own stop moves.
        self.moves_received, self.stop_moves = n_moves - self.stop_moves, 0
        if self.deferred_stops:  # stops that found the last batch full: into this one
            stops, self.deferred_stops = self.deferred_stops, []
            for s in stops:
                if s.conn is None and not s.leaving:
                    self._stop_move(s)
        t_call = time.perf_counter()
        try:
            result, vis, _total, phases = await trio.to_thread.run_sync(
                self._compute, batch, n_obs)
        except BaseException as exc:
            send.end()
            if isinstance(exc, _Fenced):
                self._fence(accepted)
                return
            raise
        batch.clear()
        self.spare = batch
        self.tick_hunts.clear()
        self.tick_joins.clear()
        self.tick_leaves.clear()
        t_send = time.perf_counter()
        phases["prepare"] = t_call - t0
        phases["handoff"] = (phases.pop("_c0") - t_call) + (t_send - phases.pop("_c4"))
        tick = result.tick
        # WELCOME tells the state at this tick; the client's first TICK is the next one.
        welcomed: set[int] = set()
        for req in accepted:
            if req.session is not None and self._send_welcome(req.session, tick):
                welcomed.add(req.session.slot)
            req.done.set()
        send.end()  # every claim at once: the frames written whole need nothing more
        # Frames the worker wrote whole, in bulk; the rest (welcome pending, no connection,
        # truncated view, short write, unclaimed) one by one below: usually a few.
        sizes = self.frame_sizes[:n_obs]
        whole = self._whole[:n_obs]
        np.equal(self.written[:n_obs], sizes, out=whole)
        done = slots[whole]
        self.keyframe_due[done] = 0
        self.skipped_ticks[done] = 0
        sent_msgs = len(done)
        sent_bytes = int(sizes[whole].sum())
        skipped = 0
        out = memoryview(self.out)
        offsets = self.frame_offsets
        truncated = vis.truncated
        evict_after = self.server.evict_after_ticks
        for i in np.flatnonzero(~whole).tolist():
            s = obs[i]
            slot = s.slot
            a, b = int(offsets[i]), int(offsets[i + 1])
            w = int(self.written[i])
            if claimed[i]:
                conn = send.conn[slot]  # None: lost during the tick (s.conn is None too)
                if conn is None or w == -2:  # or truncated visibility: nothing written
                    self.keyframe_due[slot] = 1
                    continue
                # Partly written, or not at all: the rest is queued (the outbox was empty
                # when claimed), so it counts as sent.
                conn.after_worker(out[a:b], w)
                self.keyframe_due[slot] = 0
                self.skipped_ticks[slot] = 0
                sent_msgs += 1
                sent_bytes += b - a
                continue
            conn = s.conn
            if conn is None or (vis.dropped and truncated[i]) or slot in welcomed:
                self.keyframe_due[slot] = 1
                continue
            if conn.send_now(out[a:b]):
                self.keyframe_due[slot] = 0
                self.skipped_ticks[slot] = 0
                sent_msgs += 1
                sent_bytes += b - a
            else:
                self.keyframe_due[slot] = 1
                self.skipped_ticks[slot] += 1
                skipped += 1
                if self.skipped_ticks[slot] >= evict_after and conn.closed is None:
                    self._evict(s)
        if vis.dropped:
            self._visibility_truncated(int(np.count_nonzero(truncated[:n_obs])),
                                       int(vis.dropped), tick, now)
        t_end = time.perf_counter()
        phases["finish"] = t_end - t_send
        phases["total"] = t_end - t0
        self._account(result, phases, sent_msgs, sent_bytes, skipped)
        world = self.world
        self.report.tick(world.hunt_params, world.hunts.players, self.obs_hunt[:n_obs],
                         result.discoveries["hunt"], vis.truncated if vis.dropped else None,
                         phases["total"], clock, n_moves, trio.current_time())
        for hook in self._on_tick:
            hook(self, result)

    def _visibility_truncated(self, observers: int, records: int, tick: int,
                              now: float) -> None:
        """Count the observers the visibility buffer cut this tick (they get a keyframe
        later; who is cut rotates, docs/rules.md) and say so, at most once a second."""
        self.metrics.visibility_cut.inc(observers)
        self.truncated_since_log += observers
        if now - self._truncation_logged >= 1.0:
            self.log.warning("visibility_truncated", tick=tick, observers=observers,
                             records=records, observers_since_last_line=self.truncated_since_log,
                             hint="raise [engine] max_visible")
            self._truncation_logged = now
            self.truncated_since_log = 0

    def _fence(self, accepted: list[JoinRequest] = ()) -> None:
        """The lease is gone: stop ticking at once, answer waiting HELLOs with HUNT_MOVED."""
        self.fenced = True
        self.running = False
        self.log.warning("fenced", hunts=[p.name for p in self.world.hunt_params],
                         tick=self.world.tick_number)
        self.answer_pending(list(accepted))

    def answer_pending(self, extra: list[JoinRequest] = (),
                       refusal: ErrorMessage | None = None) -> None:
        """Refuse every HELLO still waiting for this hub (it stopped): ``refusal``, by
        default HUNT_MOVED."""
        moved = refusal or ErrorMessage(
            ErrorCode.HUNT_MOVED, "this hunt moved to another node: reconnect to the server "
            "you first connected to, with your resume token")
        for req in [*extra, *self.requests]:
            req.session = None
            req.refusal = moved
            req.done.set()
        self.requests.clear()

    def close(self) -> None:
        """Release the hub's threads (after its ticker ended). Idempotent."""
        if self._send_pool is not None:
            self._send_pool.shutdown(wait=False)
            self._send_pool = None

    def _send_welcome(self, s: Session, tick: int) -> bool:
        """WELCOME with the player's state at ``tick`` (the tick just computed); True if
        sent."""
        conn = s.conn
        if conn is None or not s.welcome_pending:
            return False
        p = self.world.hunt_params[s.hunt]
        P = self.world.players
        welcome = Welcome(
            player_id=s.player_id, resume_token=s.token, tick=tick,
            ack=int(P.last_seq[s.slot]), width=p.width, height=p.height,
            player_speed=p.player_speed, tick_rate=p.tick_rate,
            discovery_radius=p.discovery_radius, hint_radius=p.hint_radius,
            view_radius=p.view_radius, hint_levels=p.hint_levels,
            spawn_x=float(P.x[s.slot]), spawn_y=float(P.y[s.slot]), resumed=s.resumed)
        conn.send_now(wf.frame(encode(welcome)))
        s.welcome_pending = False
        conn.bind(self.send_slots, s.slot)  # from the next tick, the worker writes its frames
        return True

    def _evict(self, s: Session) -> None:
        conn = s.conn
        assert conn is not None
        self.metrics.evictions.inc()
        self.report.evicted(s.hunt)
        self.evictions += 1
        skipped = int(self.skipped_ticks[s.slot])
        self.log.warning("evict", player=s.player_id, name=s.name, remote=conn.remote,
                         skipped_ticks=skipped, backlog=conn.backlog)
        self.disconnected(s, conn)
        # The queued TICKs are dropped for it; a client that still reads gets it.
        self._close_soon(conn, 4008, "too slow: evicted after skipped ticks", wf.frame(encode(
            ErrorMessage(ErrorCode.TOO_SLOW, f"evicted after {skipped} ticks it could not "
                         "take"))))

    def _account(self, result: Any, phases: dict[str, float], msgs: int, nbytes: int,
                 skipped: int) -> None:
        m = self.metrics
        m.observe_tick(phases)
        row = self.ring[self.ring_count % RING]
        for k, name in enumerate(TICK_PHASES):
            row[k] = phases[name] * 1e3
        self.ring_count += 1
        self.skipped_total += skipped
        m.ticks.inc()
        m.add_moves(self.moves_received, result.moves_applied, self.moves_dropped)
        self.moves_received = self.moves_dropped = 0
        if msgs:
            m.messages.inc(msgs)
            m.bytes.inc(nbytes)
        if skipped:
            m.skipped.inc(skipped)
        n_disc = len(result.discoveries)
        if n_disc:
            m.discoveries.inc(n_disc)
            for d in result.discoveries[-20:]:
                s = self.sessions.get(int(d["slot"]))
                self.recent_discoveries[int(d["hunt"])].append({
                    "tick": result.tick, "slot": int(d["slot"]),
                    "name": s.name if s else "?", "value": int(d["value"]),
                    "x": round(float(d["x"]), 1), "y": round(float(d["y"]), 1)})
        m.clients.set(len(self.obs_sessions))
        m.players.set(len(self.sessions))
        m.hunts.set(self.world.hunts.count)
        if result.tick % 10 == 0:  # for the watch view: the ring's last 200 ticks
            n = min(self.ring_count, 200)
            idx = np.arange(self.ring_count - n, self.ring_count) % RING
            total = self.ring[idx, TICK_PHASES.index("total")]
            self.stats["tick_ms_p50"] = float(np.percentile(total, 50))
            self.stats["tick_ms_p99"] = float(np.percentile(total, 99))
        self.stats["tick"] = result.tick


class _Fenced(Exception):
    """Raised in the worker when the lease ran out during a tick: nothing is sent."""


class _Refusal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:256]


