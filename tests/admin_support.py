"""Calls to the admin API (server/shell/_admin.py) from tests: raw HTTP/1.1 on a real socket.

``await admin_call(port, "POST", "/api/admin/hunts", {"name": "cup"}, token="s3cret")``
returns ``(status, headers, body)`` with the body decoded from JSON (bytes if it is
not JSON); :func:`admin_call_sync` does the same from a thread or a plain test
(urllib), for servers run as subprocesses.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import trio
from serve_support import ServeChild

TOKEN = "s3cret-admin"
#: A small server config: two hunts, "alpha" and "beta", 200 x 200 world units.
TWO_HUNTS = """\
[engine]
max_players = 256
max_treasures = 1024

[defaults]
width = 200.0
height = 200.0
treasures = 20
max_players = 64

[[hunt]]
name = "alpha"

[[hunt]]
name = "beta"
"""


def _encode(body: Any) -> bytes:
    if body is None:
        return b""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


async def admin_call(port: int, method: str, path: str, body: Any = None, *,
                     token: str | None = TOKEN, headers: dict[str, str] | None = None,
                     timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """One request to 127.0.0.1:port; ``token`` None sends no Authorization header."""
    data = _encode(body)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(data)}", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
            raw = bytearray()
            while chunk := await stream.receive_some(65536):
                raw += chunk
    head, _, payload = bytes(raw).partition(b"\r\n\r\n")
    status_line, *rest = head.decode("latin-1").split("\r\n")
    got = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in rest)}
    return int(status_line.split()[1]), got, _decode(payload)


def admin_call_sync(port: int, method: str, path: str, body: Any = None, *,
                    token: str | None = TOKEN, timeout: float = 30.0) -> tuple[int, Any]:
    """The same from synchronous code: ``(status, body)``."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=_encode(body) if method != "GET" else None,
                                 headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, _decode(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload


class ServeProcess(ServeChild):
    """``treasure-hunt serve`` on one node as a real process (its JSON log in a file).

    ``ServeProcess(tmp, config_text, "--allow-create-hunts").start()``; ``http`` and
    ``ws_url`` come from its ``serving`` line; :meth:`events` reads the current run's log.
    """

    def __init__(self, workdir: Path, config: str, *extra: str) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        (workdir / "serve.toml").write_text(config)
        super().__init__([sys.executable, "-m", "server", "serve", "--config",
                          str(workdir / "serve.toml"), "--port", "0", "--http-port", "0",
                          "--data-dir", str(self.data_dir), "--log-format", "json",
                          "--admin-token", TOKEN, *extra], workdir / "serve.log")

    def events(self, since_start: bool = True) -> list[dict[str, Any]]:
        """The JSON log lines of the current run (of every run with ``since_start=False``)."""
        return super().events(since_start)
