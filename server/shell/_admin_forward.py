"""Forward an admin API request to the node that runs the hunt (scale-out).

Any node of a cluster accepts an operator's call; a call about a hunt that
another node runs goes to that node's HTTP port (the ``http_url`` it
heartbeats, docs/cluster.md) as the same request: method, path, query, body
and the caller's ``Authorization`` header (every node checks it again), plus
:data:`FORWARDED_BY` naming the forwarding node so that the owner never
forwards it once more (a hunt that moved meanwhile gets 503: retry). The
owner's answer goes back to the caller unchanged.

One request per connection, as the HTTP server itself (server/shell/_http.py):
h11 on a Trio stream, bounded in time and in the size of the answer.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import h11
import trio

from ._http import Request, Response

#: Header naming the node that forwarded a request (a forwarded request is never forwarded).
FORWARDED_BY = "x-treasure-hunt-forwarded-by"
#: Bytes of an owner's answer read at most (a hunt list of a large cluster fits).
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class ForwardError(Exception):
    """The owner could not be reached, or its answer was not HTTP (the message says which)."""


async def forward(http_url: str, request: Request, node_id: str, timeout: float,
                  path: str | None = None) -> Response:
    """Send ``request`` (to ``path`` instead of its own, if given) to the node at
    ``http_url`` and return its answer; raises :class:`ForwardError` within ``timeout``
    seconds when there is none."""
    url = urlsplit(http_url)
    if url.scheme != "http" or not url.hostname or not url.port:
        raise ForwardError(f"the node's HTTP address {http_url!r} is not http://HOST:PORT/ "
                           "(does it run without --http-port?)")
    target = path or request.path
    if request.query and path is None:
        target += "?" + urlencode(request.query)
    headers = [("Host", f"{url.hostname}:{url.port}"), ("Connection", "close"),
               ("Content-Length", str(len(request.body))), ("Content-Type", "application/json"),
               (FORWARDED_BY, node_id)]
    auth = request.headers.get("authorization")
    if auth is not None:
        headers.append(("Authorization", auth))
    conn = h11.Connection(h11.CLIENT)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(url.hostname, url.port)
            async with stream:
                await stream.send_all(conn.send(h11.Request(
                    method=request.method, target=target, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=request.body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                return await _answer(conn, stream)
    except trio.TooSlowError as exc:
        raise ForwardError(f"no answer from {http_url} within {timeout:g} s") from exc
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        raise ForwardError(f"{http_url} failed: {exc}") from exc


async def _answer(conn: h11.Connection, stream: trio.SocketStream) -> Response:
    status, kind, parts, size = 0, "application/json", [], 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            # b"" at the end of the stream: h11 then raises for an answer cut short.
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            for name, value in event.headers:
                if name == b"content-type":
                    kind = value.decode("latin-1")
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_ANSWER_BYTES:
                raise ForwardError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Response(status, b"".join(parts), kind)
