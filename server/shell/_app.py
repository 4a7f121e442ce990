"""The server application: listeners, one task per connection, HTTP routes, shutdown.

``HuntServer(config).run(task_status=...)`` is the whole server; started with
``await nursery.start(server.run)`` it reports its bound ports (tests bind
port 0 and never sleep waiting for start-up). Start-up, in order: bind the
ports (a clash fails at once, before anything is written), warm the kernels up
(compiled the first time), start the hunts (recovering their journals), then
accept clients. Where each hunt runs is the placement's business
(server/hunt/_placement.py: here, or across a cluster); the app only routes each
HELLO to the hub the placement names. ``server.shutdown()`` (SIGINT or SIGTERM
in ``treasure-hunt serve``) stops every tick after the current one, sends every
client ERROR ``GOING_AWAY`` and close 1001, and returns.

``gc.freeze()``: after start-up the server moves every object that exists then
(modules, kernels, the worlds' buffers) out of the cyclic collector's sight, so
that a full collection scans only what play creates. This affects the whole
process: a program that embeds the server gets its own start-up objects frozen
too (they are never collected, which is harmless for objects that live as long
as the process); call ``gc.unfreeze()`` after the server returns to undo it.
While it runs, the server also sets the interpreter's thread switch interval
(``[server] switch_interval``, ``sys.setswitchinterval``) for the whole process, and
restores the previous one when it returns.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import trio

import tickengine

from .._config import ServeConfig
from .._log import get_logger
from .._metrics import Metrics
from ..durability import warm_up as durability_warm_up
from ..hunt import _tickframes
from ..hunt._hub import Hub, JoinRequest, Session
from ..hunt._local import LocalPlacement
from ..hunt._placement import Placement
from ..protocol import (
    CLOSE_REDIRECT,
    MAX_CLIENT_FRAME_BYTES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ErrorCode,
    ErrorMessage,
    Hello,
    MessageType,
    ProtocolError,
    Redirect,
    Refused,
    RemoteProtocolError,
    decode_client_frame,
    encode,
)
from . import _intake
from . import _wsframes as wf
from ._conn import Connection, ConnectionClosed, HandshakeFailed
from ._http import HttpServer, Request, Response, file_response, json_response
from ._poller import Poller, idle_step
from ._ratelimit import AddressRates
from ._stats import StatsCache

if TYPE_CHECKING:
    from ..auth import Identity, TicketVerifier

STATIC = Path(__file__).parent.parent / "static"

#: The whole answer to a WebSocket connection over a socket limit, sent without reading
#: its request: holding the socket for the handshake would let idle sockets pile up.
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
         b"Connection: close\r\n\r\n")


class ListenError(OSError):
    """A port could not be bound (in use, or not allowed): raised by :meth:`HuntServer.run`
    before anything else happens."""


class ThreadingLayerError(RuntimeError):
    """Neither TBB nor OpenMP could be loaded as Numba's threading layer."""


@dataclass(frozen=True, slots=True)
class Ports:
    """Where a started server listens (port numbers; ``http`` is None without HTTP)."""

    host: str
    ws: int
    http: int | None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws}/"


class HuntServer:
    """A hunt server: WebSocket clients, an HTTP port, the hub's tick. See module docstring."""

    def __init__(self, config: ServeConfig | None = None, *, fresh: bool = False) -> None:
        """Set the server up; nothing is bound or read before :meth:`run`.

        ``fresh``: move an existing journal aside first (``--fresh``). :meth:`run` raises
        :class:`ListenError` when a port cannot be bound,
        :class:`server.hunt._placement.StartError` when a hunt cannot start (its cause: the
        data dir's OSError, :class:`server.durability.RecoveryError`, ...) and
        :class:`server.durability.JournalError` when another server uses the data dir.
        """
        self.config = config = config if config is not None else ServeConfig()
        self.server = config.server
        self.metrics = Metrics()
        self.log = get_logger()
        self.nursery: trio.Nursery | None = None
        self.connections: set[Connection] = set()
        self.per_address: Counter[str] = Counter()
        cfg = self.server
        self.hello_rates = AddressRates(cfg.hellos_per_second_per_address,
                                        cfg.hello_burst_per_address)
        self.connect_rates = AddressRates(cfg.connections_per_second_per_address,
                                          cfg.connection_burst_per_address)
        #: Ticket mode's verifier (None in anonymous mode): keys are read now, so a bad
        #: key file stops the server before it binds anything.
        self.verifier: TicketVerifier | None = None
        if cfg.auth != "none":  # PyJWT and its crypto are loaded by ticket mode only
            from ..auth import verifier_from_config

            self.verifier = verifier_from_config(cfg)
        self.user_hello_rates = AddressRates(cfg.hellos_per_second_per_user,
                                             cfg.hello_burst_per_user)
        self.stats_cache = StatsCache()
        self.ports: Ports | None = None
        self._stop = trio.Event()
        self.poller = Poller(self.server.idle_timeout, self.server.moves_per_second)
        self.placement: Placement
        if self.server.redis:
            from ..hunt._node import RedisPlacement

            self.placement = RedisPlacement(self)
        else:
            self.placement = LocalPlacement(self, fresh=fresh)

    def hubs(self) -> list[Hub]:
        """The hubs this server ticks: one per hunt (one for all hunts of an older data dir)."""
        return self.placement.hubs()

    @property
    def hub(self) -> Hub | None:
        """The first hunt's hub (tests and embedders serving one hunt), None before start."""
        return self.placement.hub_named(None)

    def shutdown(self) -> None:
        """Ask the server to stop (safe to call from any Trio task, any number of times)."""
        self._stop.set()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # Process-wide, like gc.freeze (see the module docstring); restored on return.
        previous = sys.getswitchinterval()
        if self.server.switch_interval:
            sys.setswitchinterval(self.server.switch_interval)
        try:
            await self._run(task_status)
        finally:
            sys.setswitchinterval(previous)

    async def _run(self, task_status: Any) -> None:
        cfg = self.server
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            ws_listeners = await _listen(cfg.port, cfg.host, "--port")
            ws_port = ws_listeners[0].socket.getsockname()[1]
            http_listeners, http_port = [], None
            if cfg.http_port >= 0:
                http_listeners = await _listen(cfg.http_port, cfg.host, "--http-port")
                http_port = http_listeners[0].socket.getsockname()[1]
            self.ports = Ports(cfg.host, ws_port, http_port)
            http_url = f"http://{cfg.host}:{http_port}/" if http_port else None
            self.log.info("warming_up", hint="compiling the kernels takes about 20 s the "
                          "first time; later starts load them from the cache")
            report = await trio.to_thread.run_sync(self._warm_up)
            self.log.info("warm_up", seconds=round(report.seconds, 2),
                          compiled=report.compiled, loaded=report.loaded,
                          threading_layer=numba.threading_layer())
            # What exists now (modules, compiled kernels) lives as long as the server: out
            # of the collector's sight (see the module docstring). Collected before the
            # hunts tick: a full collection here takes longer than a tick period.
            gc.collect()
            gc.freeze()
            await nursery.start(self.placement.run, self.ports.ws_url, http_url or "")
            gc.freeze()  # the hubs too (no collection: freezing alone is cheap)
            if http_listeners:
                nursery.start_soon(trio.serve_listeners, self._http().handle, http_listeners)
            nursery.start_soon(self.poller.run)
            nursery.start_soon(trio.serve_listeners, self._handle_stream, ws_listeners)
            hubs = self.hubs()
            self.log.info("serving", ws_url=self.ports.ws_url, http_url=http_url,
                          hunts=[p.name for h in hubs for p in h.world.hunt_params],
                          tick_rate=hubs[0].world.tick_rate if hubs else None,
                          node=self.placement.node_id, redis=cfg.redis or None)
            task_status.started(self.ports)
            await self._stop.wait()
            self.log.info("shutting_down", clients=len(self.connections))
            await self.placement.leave()
            bye = wf.frame(encode(ErrorMessage(ErrorCode.GOING_AWAY,
                                               "the server is shutting down")))
            async with trio.open_nursery() as closing:
                for conn in list(self.connections):
                    closing.start_soon(conn.close, 1001, "server shutting down", bye)
            nursery.cancel_scope.cancel()
        self.poller.close()
        self.log.info("stopped")

    def _warm_up(self) -> tickengine.WarmUpReport:
        pin_threading_layer()
        numba.set_num_threads(self.server.tick_threads)
        report = tickengine.warm_up()
        _tickframes.warm_up()
        _intake.warm_up()
        durability_warm_up()
        return report

    # ------------------------------------------------------------------ connections

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            await self._handle(stream)
        except Exception:  # a bug in one connection must never take the server down
            self.log.exception("connection_error")
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        cfg = self.server
        addr = _peer(stream)
        busy = ("connections" if len(self.connections) >= cfg.max_connections else
                "connections_per_address"
                if self.per_address[addr] >= cfg.max_connections_per_address else
                "connection_rate_per_address" if not self.connect_rates.allow(addr) else None)
        if busy is not None:
            # The cheapest answer: no Connection, no task switch; a fresh socket's buffer
            # takes the 503 at once, and the close does not wait.
            self.metrics.events.labels("refused_busy").inc()
            self.metrics.limits.labels(busy).inc()
            sock = stream.socket
            with contextlib.suppress(OSError):
                os.write(sock.fileno(), _BUSY)
            sock.close()
            return
        conn = Connection(stream, MAX_CLIENT_FRAME_BYTES, cfg.outbox_messages)
        conn.parser.set_budgets(max_fragments=cfg.max_message_fragments,
                                control_per_second=cfg.control_frames_per_second,
                                bytes_per_second=cfg.bytes_per_second)
        self.connections.add(conn)
        self.per_address[addr] += 1
        self.metrics.connections.set(len(self.connections))
        session: Session | None = None
        hub: Hub | None = None
        try:
            async with trio.open_nursery() as nursery:
                # The queue's writer, from the first frame on (a REFUSED may queue too).
                nursery.start_soon(conn.run_writer)
                with contextlib.suppress(ConnectionClosed):
                    opened = await self._open(conn)
                    if opened is not None:
                        hub, session = opened
                        await self._read_loop(conn, hub, session)
                nursery.cancel_scope.cancel()
        finally:
            if conn.parser.exceeded:
                self.metrics.limits.labels(conn.parser.exceeded).inc()
            if session is not None:
                hub.disconnected(session, conn)
                self.log.info("disconnect", player=session.player_id, name=session.name,
                              code=conn.closed.code if conn.closed else None)
            await conn.abort()
            self.connections.discard(conn)
            self.per_address[addr] -= 1
            if not self.per_address[addr]:
                del self.per_address[addr]
            self.metrics.connections.set(len(self.connections))

    async def _open(self, conn: Connection) -> tuple[Hub, Session] | None:
        """Handshake, HELLO, and the hub's answer at the next tick (or a REDIRECT)."""
        cfg = self.server
        hello = None
        with trio.move_on_after(cfg.handshake_timeout):
            try:
                await conn.handshake()
            except HandshakeFailed as exc:
                self.metrics.events.labels("bad_handshake").inc()
                self.log.info("bad_handshake", remote=conn.remote, error=str(exc))
                return None
            msg = await conn.receive()
            try:
                if msg.opcode == wf.OP_TEXT:
                    raise RemoteProtocolError("the first message must be a binary HELLO",
                                              ErrorCode.UNEXPECTED)
                event = decode_client_frame(msg.payload)
                if not isinstance(event, Hello):
                    raise RemoteProtocolError("the first message must be HELLO",
                                              ErrorCode.UNEXPECTED)
                hello = event
            except ProtocolError as exc:
                await self._protocol_error(conn, exc, None)
                return None
        if hello is None:
            if conn.closed is None:
                await self._fail(conn, ErrorMessage(ErrorCode.HANDSHAKE_TIMEOUT,
                                                    f"no HELLO within {cfg.handshake_timeout} s"))
            return None
        self.metrics.events.labels("hello").inc()
        if not self.hello_rates.allow(conn.remote):
            self.metrics.limits.labels("hellos_per_address").inc()
            refusal = Refused(ErrorCode.TOO_MANY_JOINS, (
                f"more than {cfg.hellos_per_second_per_address:g} HELLOs per second from "
                f"{conn.remote}: retry in a second or more"))
            self.log.info("refused", remote=conn.remote, name=hello.name, hunt=hello.hunt,
                          code="TOO_MANY_JOINS", reason=refusal.message)
            await self._fail(conn, refusal)
            return None
        identity = None
        if self.verifier is not None:
            identity = await self._check_ticket(conn, hello)
            if identity is False:
                return None
        target = await self.placement.route(hello.hunt, hello.resume_token)
        if isinstance(target, Redirect):
            self.metrics.events.labels("redirect").inc()
            self.log.info("redirect", remote=conn.remote, hunt=hello.hunt,
                          node=target.node, url=target.url)
            await conn.close(CLOSE_REDIRECT, "redirect", wf.frame(encode(target)))
            return None
        if isinstance(target, ErrorMessage):
            self.metrics.events.labels("refused").inc()
            self.log.info("refused", remote=conn.remote, name=hello.name, hunt=hello.hunt,
                          code=ErrorCode(target.code).name, reason=target.message)
            await self._fail(conn, target)
            return None
        hub = target
        conn.version = hello.version
        name = identity.name if identity else hello.name
        req = JoinRequest(conn, name, hello.hunt, hello.resume_token,
                          user=identity.user if identity else "")
        hub.requests.append(req)
        await req.done.wait()
        if req.refusal is not None:
            self.metrics.events.labels("refused").inc()
            self.log.info("refused", remote=conn.remote, name=hello.name, hunt=hello.hunt,
                          code=ErrorCode(req.refusal.code).name, reason=req.refusal.message)
            await self._fail(conn, req.refusal)
            return None
        self.metrics.events.labels("resume" if hello.resume_token else "join").inc()
        return hub, req.session

    async def _check_ticket(self, conn: Connection, hello: Hello) -> Identity | bool | None:
        """Ticket mode: the HELLO's identity; None for a resume without a ticket (its token
        is the proof); False when refused (REFUSED sent, the connection closing). The
        ticket itself is never logged."""
        from ..auth import TicketError

        if not hello.ticket and hello.resume_token is not None:
            return None
        try:
            identity = self.verifier.verify(hello.ticket, hello.hunt)
        except TicketError as exc:
            refusal = Refused(exc.code, exc.message)
        else:
            refusal = None
            if not self.user_hello_rates.allow(identity.user):
                self.metrics.limits.labels("hellos_per_user").inc()
                refusal = Refused(ErrorCode.TOO_MANY_JOINS, (
                    f"more than {self.server.hellos_per_second_per_user:g} HELLOs per second "
                    f"for user {identity.user}: retry in a second or more"))
        result = "ok" if refusal is None else ErrorCode(refusal.code).name
        self.metrics.tickets.labels(result).inc()
        if refusal is None:
            return identity
        self.metrics.events.labels("refused").inc()
        self.log.info("refused", remote=conn.remote, hunt=hello.hunt, code=result,
                      reason=refusal.message)
        await self._fail(conn, refusal)
        return False

    async def _read_loop(self, conn: Connection, hub: Hub, s: Session) -> None:
        idle = self.server.idle_timeout
        # One cancel scope for the whole loop, its deadline pushed back at most once a
        # step (idle_step): updating a scope per message is a measurable share of the
        # server's CPU under load (perf/README.md, "Figures behind the code's choices").
        with trio.CancelScope(deadline=trio.current_time() + idle) as scope:
            await self._read_messages(conn, hub, s, scope)
        if scope.cancelled_caught:
            await self._fail(conn, ErrorMessage(
                ErrorCode.UNEXPECTED, f"no message for {idle:g} s (idle timeout); "
                "send moves, or reconnect with your resume token", 1000))

    async def _read_messages(self, conn: Connection, hub: Hub, s: Session,
                             scope: trio.CancelScope) -> None:
        idle = self.server.idle_timeout
        step = idle_step(idle)
        bumped = trio.current_time()
        poller = self.poller
        while True:
            # Moves are taken by the poller; it hands back what needs this task.
            msg, err = await poller.wait(conn, hub, s, scope, self._rate_limited)
            if err is not None:
                self.metrics.protocol_errors.labels(f"FRAME_{err.close_code}").inc()
                self.log.info("protocol_error", remote=conn.remote, player=s.player_id,
                              code=f"FRAME_{err.close_code}", error=err.message)
                await conn.fail_frame(err)
            if msg is None:
                if conn.closed is not None:
                    raise conn.closed
                conn.lost()
            now = trio.current_time()
            if now - bumped > step:  # any frame counts, a ping or pong too (keep-alives)
                bumped = now
                scope.deadline = now + idle + step
            if await conn.take_control(msg):
                continue
            try:
                payload = msg.payload
                if s.conn is not conn:  # replaced: closing, its moves are not the player's
                    taken = 1
                elif msg.opcode == wf.OP_TEXT:
                    taken = hub.take_moves(s, payload.decode(), now)
                elif payload[:1] == b"\x02":
                    taken = hub.take_moves(s, payload, now)
                elif payload == b"\x03":
                    hub.leaves.append(s)
                    self.log.info("leave", player=s.player_id, name=s.name, reason="bye")
                    await conn.close(1000, "bye")
                    return
                else:
                    decode_client_frame(payload)  # raises for what is not a client message
                    raise RemoteProtocolError(
                        f"{MessageType(payload[0]).name} is only allowed as the first message",
                        ErrorCode.UNEXPECTED)
            except ProtocolError as exc:
                await self._protocol_error(conn, exc, s)
                return
            if not taken and hub.sessions.rate_warning_due(s, now):
                self._rate_limited(conn, s, now)

    def _rate_limited(self, conn: Connection, s: Session, now: float) -> None:
        conn.send_now(wf.frame(encode(ErrorMessage(
            ErrorCode.RATE_LIMITED, f"more than {self.server.moves_per_second:g} moves "
            "per second: the excess is dropped"))))

    async def _protocol_error(self, conn: Connection, exc: ProtocolError,
                              s: Session | None) -> None:
        self.metrics.protocol_errors.labels(ErrorCode(exc.code).name).inc()
        self.log.info("protocol_error", remote=conn.remote,
                      player=s.player_id if s else None, code=ErrorCode(exc.code).name,
                      error=str(exc))
        await self._fail(conn, exc.event_hint)

    async def _fail(self, conn: Connection, event: ErrorMessage) -> None:
        """Send ERROR or REFUSED, then close with its close code (if any)."""
        frame = wf.frame(encode(event))
        if event.close_code:
            await conn.close(event.close_code, event.message[:100], frame)
        else:
            conn.send_now(frame)

    # ------------------------------------------------------------------ HTTP

    def _http(self) -> HttpServer:
        cfg = self.server
        http = HttpServer(self.log, max_connections=cfg.http_max_connections,
                          timeout=cfg.http_timeout,
                          rates=AddressRates(cfg.http_requests_per_second_per_address,
                                             cfg.http_request_burst_per_address),
                          on_limit=lambda limit: self.metrics.limits.labels(limit).inc())
        http.route("/", lambda r: file_response(STATIC, "index.html"))
        http.route("/watch", lambda r: file_response(STATIC, "watch.html"))
        http.route_prefix("/static/", lambda r: file_response(STATIC, r.path[len("/static/"):]))
        http.route("/metrics", self._metrics)
        http.route("/healthz", self._healthz)
        http.route("/favicon.ico", lambda r: Response(204))
        http.route("/api/info", self._info)
        http.route("/api/watch", self._watch)
        http.route("/api/stats", self._stats)
        http.route("/hunts", self._hunts)
        http.route("/leaderboard", self._leaderboard)
        from ._admin import AdminApi

        AdminApi(self).install(http)
        from . import _rounds_http

        _rounds_http.install(http, self)
        return http

    def _metrics(self, request: Request) -> Response:
        hubs = self.hubs()  # the gauges of many hubs: their sums, at scrape time
        m = self.metrics
        m.clients.set(sum(len(h.obs_sessions) for h in hubs))
        m.players.set(sum(len(h.sessions) for h in hubs))
        m.hunts.set(sum(h.world.hunts.count for h in hubs))
        self.placement.update_metrics(m)
        return Response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    def _healthz(self, request: Request) -> Response:
        """200 while every hunt here ticks; 200 "degraded" while some hunt is failed (the
        others still serve: a load balancer must keep sending their players); 503 down."""
        hubs = self.hubs()
        status, details = self.placement.health()
        if self.ports is None:
            status = "down"
        body: dict[str, Any] = {"ok": status == "ok", "status": status,
                                "tick": max((int(h.stats["tick"]) for h in hubs), default=0),
                                "clients": sum(len(h.obs_sessions) for h in hubs), **details}
        return json_response(body, 503 if status == "down" else 200)

    def _stats(self, request: Request) -> Response:
        """Counters, each phase's p50/p99/max over the last 200 ticks, and with ``?ticks=N``
        the last N ticks' timings in ms by phase (N capped to ``stats_max_ticks``; for load
        tests); ``?hunt=NAME`` picks the hunt on a scale-out node (default: the first)."""
        hub = self.placement.hub_named(request.query.get("hunt"))
        if hub is None:
            return json_response({"error": "this node runs no such hunt (see /hunts)"}, 404)
        try:
            n = max(0, int(request.query.get("ticks", "0")))
        except ValueError:
            return json_response({"error": "ticks must be an integer"}, 400)
        cap = self.server.stats_max_ticks
        if n > cap:
            self.metrics.limits.labels("stats_ticks").inc()
            n = cap
        body = self.stats_cache.get(hub, n, lambda: {
            "tick": int(hub.stats["tick"]), "clients": len(hub.obs_sessions),
            "connections": len(self.connections), "players": len(hub.sessions),
            "evictions": hub.evictions, "skipped": hub.skipped_total,
            "max_players_per_address": max(hub.address_players.values(), default=0),
            "ticks_cap": cap})
        return Response(200, body, "application/json")

    def _info(self, request: Request) -> Response:
        ports = self.ports
        host = request.headers.get("host", "").rsplit(":", 1)[0] or (ports.host if ports else "")
        hunts = []
        for hub in self.hubs():
            world = hub.world
            hunts += [{"name": p.name, "players": int(world.hunts.players[h]),
                       "max_players": p.max_players, "width": p.width, "height": p.height,
                       "tick_rate": p.tick_rate} for h, p in enumerate(world.hunt_params)]
        return json_response({
            "ws_port": ports.ws if ports else None,
            "ws_url": f"ws://{host}:{ports.ws}/" if ports else None,
            "protocol_version": PROTOCOL_VERSION,
            "protocol_versions": sorted(SUPPORTED_VERSIONS), "hunts": hunts,
            "moves_per_second": self.server.moves_per_second,
            "node": self.placement.node_id,
            "watch": bool(self.server.admin_token) or self.verifier is not None})

    async def _hunts(self, request: Request) -> Response:
        """Every hunt and the node that runs it (the cluster's view on a scale-out node)."""
        from ..cluster import ClusterUnavailable

        try:
            return json_response({"hunts": await self.placement.hunts_view()})
        except ClusterUnavailable as exc:
            return json_response({"error": str(exc)}, 503)

    async def _leaderboard(self, request: Request) -> Response:
        """The best players of all hunts (``?limit=N``, default 10, at most 1000)."""
        try:
            limit = min(1000, max(1, int(request.query.get("limit", "10"))))
        except ValueError:
            return json_response({"error": "limit must be an integer"}, 400)
        from ..cluster import ClusterUnavailable

        try:
            rows = await self.placement.leaderboard(limit)
        except ClusterUnavailable as exc:
            return json_response({"error": str(exc)}, 503)
        return json_response({"leaderboard": rows})

    def _watch_refusal(self, given: str, hunt: str) -> str | None:
        """Why ``given`` may not watch ``hunt`` (None: it may): the admin token, or in ticket
        mode an admin ticket (server.auth.verify_admin_ticket) whose hunts claim, if any,
        lists the hunt."""
        token = self.server.admin_token
        if token and hmac.compare_digest(given.encode(), token.encode()):
            return None
        if self.verifier is None:
            return ("the watch view is disabled (no admin_token in [server])" if not token
                    else "a valid admin token is needed (Authorization: Bearer ...)")
        from ..auth import TicketError, verify_admin_ticket

        try:
            who = verify_admin_ticket(self.verifier, given)
        except TicketError as exc:
            return f"the admin token or an admin ticket is needed: {exc.message}"
        if who.hunts is not None and hunt not in who.hunts:
            return f"this admin ticket does not admit to hunt {hunt!r} (its hunts claim)"
        return None

    def _watch(self, request: Request) -> Response:
        given = request.query.get("token") or request.headers.get(
            "authorization", "").removeprefix("Bearer ").strip()
        hunt = request.query.get("hunt") or None
        hub = self.placement.hub_named(hunt)
        name = hunt or (hub.world.hunt_params[0].name if hub is not None else "")
        why = self._watch_refusal(given, name)
        if why is not None:
            return json_response({"error": why}, 401)
        if hub is None:
            return json_response({"error": f"this node runs no hunt {hunt!r} (see /hunts)"}, 404)
        try:
            h = hub.world.hunt_index(hunt) if hunt else 0
        except tickengine.UnknownHuntError as exc:
            return json_response({"error": str(exc)}, 404)
        from ._watch import watch_payload

        names = {s.slot: s.name for s in hub.sessions.values() if s.hunt == h}
        stats = {**hub.stats, "clients": len(hub.obs_sessions)}
        return json_response(watch_payload(hub.world, h, names,
                                           list(hub.recent_discoveries[h]), stats))


def pin_threading_layer() -> None:
    """Make Numba use a threading layer that is safe for concurrent callers.

    Every hub's worker thread, and every recovery, calls the parallel kernels, from
    different threads at once; Numba's ``workqueue`` layer (its fallback when neither TBB
    nor OpenMP loads) aborts the process when that happens. ``threadsafe`` picks TBB or
    OpenMP. Takes effect only before the first parallel kernel runs in the process (the
    server calls it before its warm-up); an explicit ``NUMBA_THREADING_LAYER`` is kept.
    Raises :class:`ThreadingLayerError`, saying what to install, when neither can be loaded.
    """
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "threadsafe"
    try:
        _probe_parallel(np.zeros(2))
    except ValueError as exc:  # Numba: "No threading layer could be loaded"
        raise ThreadingLayerError(
            f"no thread-safe Numba threading layer: {exc}. Install TBB (pip install tbb) or "
            "OpenMP (libgomp, e.g. apt install libgomp1)") from exc


@numba.njit(parallel=True, cache=True)
def _probe_parallel(a: np.ndarray) -> float:
    total = 0.0
    for i in numba.prange(a.shape[0]):
        total += a[i]
    return total


async def _listen(port: int, host: str, flag: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}; is "
                          f"another server running? Pick another port with {flag}") from exc


def _peer(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"
