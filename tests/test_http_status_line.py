"""The HTTP routes, and the WebSocket port's refusal of a request that is no upgrade, answer
with a full status line: code and reason phrase (RFC 9112 allows an empty reason, but curl -i,
browsers' devtools and proxies' logs print it)."""

from __future__ import annotations

import trio


async def status_line(port: int, path: str) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Connection: close\r\n\r\n".encode())
        data = bytearray()
        while b"\r\n" not in data and (chunk := await stream.receive_some(65536)):
            data += chunk
    return bytes(data).partition(b"\r\n")[0].decode("latin-1")


async def test_status_lines_carry_the_reason_phrase(serve) -> None:
    srv = await serve({"name": "demo", "treasures": 10})
    with trio.fail_after(15):
        assert await status_line(srv.ports.http, "/healthz") == "HTTP/1.1 200 OK"
        assert await status_line(srv.ports.http, "/no/such/page") == "HTTP/1.1 404 Not Found"
        assert (await status_line(srv.ports.http, "/api/stats?ticks=x")
                == "HTTP/1.1 400 Bad Request")
        # The WebSocket port answers a plain GET (no upgrade) with 400, reason included.
        assert await status_line(srv.ports.ws, "/") == "HTTP/1.1 400 Bad Request"
