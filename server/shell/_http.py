"""A small HTTP/1.1 server on Trio and h11: the page, /metrics, /healthz and /api.

One request per connection (``Connection: close``): the routes are a few
polls per second at most, so keep-alive would buy nothing but code. Routes are
plain functions ``(request) -> Response`` registered by the application.

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


class HttpServer:
    """Routes by exact path; ``prefixes`` route a path prefix (for static files)."""

    def __init__(self, log: Any, *, max_connections: int = 64, timeout: float = 3.0,
                 rates: AddressRates | None = None,
                 on_limit: Callable[[str], None] = lambda limit: None) -> None:
        """``timeout``: seconds a connection has for its request and the answer;
        ``rates``: requests per address (over: 429 at once); ``on_limit("http_connections"
        | "http_rate_per_address" | "http_timeout")`` counts the limits hit."""
        self.routes: dict[str, Handler] = {}
        self.prefixes: list[tuple[str, Handler]] = []
        self.log = log
        self.max_connections = max_connections
        self.timeout = timeout
        self.on_limit = on_limit
        self.rates = rates
        self.open = 0

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def route_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefixes.append((prefix, handler))

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
                response = await self._dispatch(request)
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

    async def _dispatch(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
        handler = self.routes.get(request.path)
        if handler is None:
            for prefix, h in self.prefixes:
                if request.path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            return Response(404, b"not found\n")
        try:
            result = handler(request)
            if not isinstance(result, Response):
                result = await result
            return result
        except Exception as exc:  # a bug in a route must not take the server down
            self.log.exception("http_error", path=request.path)
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)
