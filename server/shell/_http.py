"""A small HTTP/1.1 server on Trio and h11: the page, /metrics, /healthz and /api.

One request per connection (``Connection: close``): the routes are a few
polls per second at most, so keep-alive would buy nothing but code. Routes are
plain functions ``(request) -> Response`` registered by the application, each
with the methods it takes (GET and HEAD by default) and the request body it
accepts (none by default; a route that takes one names its cap in bytes: a
larger body gets 413 without being read past the cap).

Limits: at most ``max_connections`` connections at once (the next gets 503 at
once, its request unread), a rate of requests per address (429 at once), and
``timeout`` seconds for a connection to send its request and take the answer,
so idle or slow sockets cannot pile up and one address cannot hammer a route.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from ._ratelimit import AddressRates

_MAX_REQUEST_BYTES = 16384
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
         b"Connection: close\r\n\r\n")
_TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n")
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
          ".html": "text/html; charset=utf-8", ".json": "application/json",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    #: The request's body (empty unless its route accepts one).
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode(), "application/json")


def file_response(root: Path, relative: str) -> Response:
    """A file under ``root`` (404 outside it, missing, or a path that cannot name a file:
    a NUL, bytes that are not UTF-8)."""
    base = root.resolve()
    try:
        name = unquote(relative, errors="strict").lstrip("/")
        target = (base / name).resolve()
        found = target.is_relative_to(base) and target.is_file()
    except (UnicodeError, ValueError, OSError):
        found = False
    if not found:
        return Response(404, b"not found\n")
    kind = (_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
            or "application/octet-stream")
    return Response(200, target.read_bytes(), kind, [("Cache-Control", "no-cache")])


Handler = Callable[[Request], Response | Awaitable[Response]]
#: A request body left unread (refused as too large, or sent to a route that takes none)
#: is read and dropped, at most this many bytes for at most LINGER_SECONDS, before the
#: close: closing a socket with unread input resets it, and the client would lose the answer.
LINGER_BYTES = 1 << 20
LINGER_SECONDS = 1.0
_READ_ONLY = ("GET", "HEAD")
_WITH_BODY = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class Route:
    """A handler, the methods it answers and the largest request body it takes (bytes)."""

    handler: Handler
    methods: tuple[str, ...] = _READ_ONLY
    max_body: int = 0
    #: Seconds the handler may take once the request is read (None: what is left of the
    #: server's ``timeout``); the request itself is always read within ``timeout``.
    run_timeout: float | None = None


class HttpServer:
    """Routes by exact path; ``prefixes`` route a path prefix (static files, the admin API)."""

    def __init__(self, log: Any, *, max_connections: int = 64, timeout: float = 3.0,
                 rates: AddressRates | None = None,
                 on_limit: Callable[[str], None] = lambda limit: None) -> None:
        """``timeout``: seconds a connection has for its request and the answer;
        ``rates``: requests per address (over: 429 at once); ``on_limit("http_connections"
        | "http_rate_per_address" | "http_timeout")`` counts the limits hit."""
        self.routes: dict[str, Route] = {}
        self.prefixes: list[tuple[str, Route]] = []
        self.log = log
        self.max_connections = max_connections
        self.timeout = timeout
        self.on_limit = on_limit
        self.rates = rates
        self.open = 0

    def route(self, path: str, handler: Handler, *, methods: tuple[str, ...] = _READ_ONLY,
              max_body: int = 0, run_timeout: float | None = None) -> None:
        """Answer ``path`` with ``handler`` for ``methods``; ``max_body``: bytes of request
        body taken at most (0: none; a larger one gets 413); ``run_timeout``: seconds the
        handler may take (see :class:`Route`)."""
        self.routes[path] = Route(handler, methods, max_body, run_timeout)

    def route_prefix(self, prefix: str, handler: Handler, *,
                     methods: tuple[str, ...] = _READ_ONLY, max_body: int = 0,
                     run_timeout: float | None = None) -> None:
        self.prefixes.append((prefix, Route(handler, methods, max_body, run_timeout)))

    async def handle(self, stream: trio.SocketStream) -> None:
        limit = None
        if self.open >= self.max_connections:
            limit, answer = "http_connections", _BUSY
        elif self.rates is not None:
            try:
                peer = str(stream.socket.getpeername()[0])
            except OSError:
                peer = "?"
            if not self.rates.allow(peer):
                limit, answer = "http_rate_per_address", _TOO_MANY
        if limit is not None:
            # Answered without reading the request: a fresh socket's buffer takes it at once.
            self.on_limit(limit)
            with contextlib.suppress(OSError):
                os.write(stream.socket.fileno(), answer)
            stream.socket.close()
            return
        self.open += 1
        try:
            await self._handle(stream)
        finally:
            self.open -= 1

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
        try:
            with trio.move_on_after(self.timeout) as scope:
                request = await self._read_request(conn, stream)
                if request is None:
                    return
                response = await self._dispatch(conn, stream, request, scope)
                headers = [("Content-Type", response.content_type),
                           ("Content-Length", str(len(response.body))),
                           ("Connection", "close"), *response.headers]
                # h11 sends an empty reason phrase unless given one; curl -i and others print it.
                reason = HTTPStatus(response.status).phrase.encode()
                await stream.send_all(conn.send(h11.Response(status_code=response.status,
                                                             headers=headers, reason=reason)))
                if request.method != "HEAD":
                    await stream.send_all(conn.send(h11.Data(data=response.body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if _body_left(conn):
                    await _linger(stream)
            if scope.cancelled_caught:
                self.on_limit("http_timeout")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream
                            ) -> Request | None:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                      b"Connection: close\r\n\r\n")
                return None
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_MAX_REQUEST_BYTES)
                if not data:
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                url = urlsplit(event.target.decode("latin-1"))
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                           for k, v in event.headers}
                return Request(event.method.decode("latin-1"), url.path, query, headers)
            return None

    def _find(self, path: str) -> Route | None:
        route = self.routes.get(path)
        if route is None:
            for prefix, r in self.prefixes:
                if path.startswith(prefix):
                    return r
        return route

    async def _dispatch(self, conn: h11.Connection, stream: trio.SocketStream,
                        request: Request, scope: trio.CancelScope) -> Response:
        route = self._find(request.path)
        methods = route.methods if route is not None else _READ_ONLY
        if request.method not in methods:
            return Response(405, b"method not allowed\n", headers=[("Allow", ", ".join(methods))])
        if route is None:
            return Response(404, b"not found\n")
        if route.max_body and request.method in _WITH_BODY:
            body = await self._read_body(conn, stream, request, route.max_body)
            if isinstance(body, Response):
                return body
            request = Request(request.method, request.path, request.query, request.headers,
                              body)
        if route.run_timeout is not None:
            scope.deadline = trio.current_time() + route.run_timeout
        try:
            result = route.handler(request)
            if not isinstance(result, Response):
                result = await result
            return result
        except Exception as exc:  # a bug in a route must not take the server down
            self.log.exception("http_error", path=request.path)
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

    async def _read_body(self, conn: h11.Connection, stream: trio.SocketStream,
                         request: Request, cap: int) -> bytes | Response:
        """The request's body, or the answer when it is larger than ``cap`` bytes (413,
        refused from Content-Length before reading when it says so) or malformed (400)."""
        too_big = json_response({"error": f"the request body is larger than {cap} bytes"}, 413)
        length = request.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > cap:
            return too_big
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return json_response({"error": f"malformed request body: {exc}"}, 400)
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_MAX_REQUEST_BYTES)
                if not data:
                    return json_response({"error": "the request body ended early"}, 400)
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > cap:
                    return too_big
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                return json_response({"error": "malformed request body"}, 400)


def _body_left(conn: h11.Connection) -> bool:
    """Whether the request's body is still on its way (what arrived with it is dropped)."""
    while conn.their_state is h11.SEND_BODY:
        try:
            if conn.next_event() is h11.NEED_DATA:
                return True
        except h11.RemoteProtocolError:
            return False
    return False


async def _linger(stream: trio.SocketStream) -> None:
    with trio.move_on_after(LINGER_SECONDS):
        await stream.send_eof()
        dropped = 0
        while dropped < LINGER_BYTES:
            data = await stream.receive_some(65536)
            if not data:
                return
            dropped += len(data)
