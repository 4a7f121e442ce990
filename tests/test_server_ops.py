"""Operating the server: its HTTP routes with real clients playing, and ``treasure-hunt serve``
as a real process stopped with SIGTERM (issue 3, sections 3 and 6)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio

from server.client import ServerError, connect
from server.protocol import PROTOCOL_VERSION, ErrorCode

pytestmark = pytest.mark.usefixtures("collect_garbage")

EXE = Path(sys.executable).parent / "treasure-hunt"


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from 127.0.0.1:port: (status, headers in lower case, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                              "Connection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split()[1]), headers, body


async def get_json(port: int, path: str) -> dict:
    status, headers, body = await http_get(port, path)
    assert status == 200 and headers["content-type"] == "application/json"
    return json.loads(body)


def metrics(text: bytes) -> dict[str, float]:
    """Prometheus text format: {"name{labels}": value} (comments left out)."""
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_http_routes_report_a_live_server(serve) -> None:
    srv = await serve({"name": "demo", "treasures": 300, "width": 100.0, "height": 100.0,
                       "discovery_radius": 10.0})
    port = srv.ports.http
    with trio.fail_after(15):
        health = await get_json(port, "/healthz")
        assert health["ok"] is True and health["clients"] == 0
        status, _, _ = await http_get(port, "/no/such/page")
        assert status == 404
        before = metrics((await http_get(port, "/metrics"))[2])
        async with connect(srv.url, "a", "demo") as a, connect(srv.url, "b", "demo") as b:
            await a.move(1.0, 1.0)
            await b.move(-1.0, 0.0)
            for _ in range(10):
                await a.next_tick()
                await b.next_tick()
            health = await get_json(port, "/healthz")
            info = await get_json(port, "/api/info")
            stats = await get_json(port, "/api/stats?ticks=5")
            # The worker writes a tick's frames before the ticker counts them, and a's next
            # tick may already be waiting in its socket: the one after it comes only once
            # every message read above is counted.
            await a.next_tick()
            await a.next_tick()
            status, headers, body = await http_get(port, "/metrics")
    assert health["ok"] is True and health["clients"] == 2 and health["tick"] >= 10
    assert info["protocol_version"] == PROTOCOL_VERSION and info["moves_per_second"] == 60.0
    assert info["protocol_versions"] == [1, 2]
    assert info["ws_url"] == srv.url and info["ws_port"] == srv.ports.ws
    assert [(h["name"], h["players"]) for h in info["hunts"]] == [("demo", 2)]
    assert stats["clients"] == 2 and stats["players"] == 2 and stats["evictions"] == 0
    assert stats["tick"] >= 10
    assert all(len(v) == 5 for v in stats["timings_ms"].values())
    assert "total" in stats["timings_ms"]
    # The machine's shares of the hand-off and of everything but the writes.
    t = {k: np.asarray(v) for k, v in stats["timings_ms"].items()}
    assert (t["handoff_cpu"] >= 0).all() and (t["handoff_cpu"] <= t["handoff"] + 1e-3).all()
    assert (t["cpu_wait"] >= 0).all()
    assert (t["cpu_wait"] <= t["total"] - t["send"] + 1e-3).all()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    after = metrics(body)
    grew = {k for k in after if after[k] > before.get(k, 0.0)}
    for key in ("hunt_ticks_total", "hunt_messages_sent_total", "hunt_bytes_sent_total",
                'hunt_moves_total{fate="received"}', 'hunt_moves_total{fate="applied"}',
                'hunt_connection_events_total{kind="join"}', "hunt_discoveries_total",
                'hunt_tick_seconds_count{phase="total"}'):
        assert key in grew, key
    assert after["hunt_connected_clients"] == 2 and after["hunt_players"] == 2
    assert after["hunt_messages_sent_total"] >= 20
    status, _, _ = await http_get(port, "/api/stats?ticks=x")
    assert status == 400


async def test_serve_process_shuts_down_cleanly_on_sigterm(tmp_path) -> None:
    """The real command: clients get ERROR GOING_AWAY and close 1001, the exit status is 0."""
    lines: list[dict] = []
    serving = trio.Event()
    cmd = [str(EXE), "serve", "--port", "0", "--http-port", "-1", "--log-format", "json"]
    with trio.fail_after(40):
        proc = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            async with trio.open_nursery() as nursery:

                async def read_log() -> None:
                    buf = b""
                    while chunk := await proc.stderr.receive_some(65536):
                        buf += chunk
                        *done, buf = buf.split(b"\n")
                        for raw in done:
                            lines.append(json.loads(raw))
                            if lines[-1]["event"] == "serving":
                                serving.set()

                nursery.start_soon(read_log)
                await serving.wait()
                url = next(e["ws_url"] for e in lines if e["event"] == "serving")
                async with connect(url, "alice", "demo") as alice:
                    await alice.next_tick()
                    proc.send_signal(signal.SIGTERM)
                    with pytest.raises(ServerError) as going:
                        while True:
                            await alice.next_tick()
                status = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stderr.aclose()
    assert going.value.code == ErrorCode.GOING_AWAY and going.value.close_code == 1001
    assert status == 0
    events = [e["event"] for e in lines]
    for expected in ("signal", "shutting_down", "stopped"):
        assert expected in events
    assert events.index("signal") < events.index("shutting_down") < events.index("stopped")
    assert not [e for e in lines if e.get("level") in ("error", "critical")]
