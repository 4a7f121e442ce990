"""perf/loadgen.c against perf/loadgen.py: the same clients, control and figures.

perf/loadtest.py runs the C load generator by default (it leaves the server the cores the
Python one took), so its figures must mean what the Python one's mean. Both run here
against one real server (a child process, two hunts) over real loopback sockets: the
result lines carry the same fields, every client plays and gets every tick in both
protocol versions, the start/stop control works on stdin, and a refused HELLO and a
failed connection are counted alike. And a peer that sends malformed frames does not make
the C one read past them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from admin_support import TWO_HUNTS, ServeProcess

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "perf"))

from loadtest import build_loadgen  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServeProcess(tmp_path_factory.mktemp("lgc"), TWO_HUNTS).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def c_loadgen(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return [str(build_loadgen(tmp_path_factory.mktemp("lgbin")))]


PYTHON_LOADGEN = [sys.executable, str(ROOT / "perf" / "loadgen.py")]


def run(cmd: list[str], *args: str, timeout: float = 60) -> list[dict]:
    """A load generator run alone (``--auto``); its JSON lines."""
    proc = subprocess.run([*cmd, *args, "--auto", "--max-seconds", "50"],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("version", [1, 2])
def test_both_load_generators_play_and_report_the_same_fields(
        server: ServeProcess, c_loadgen: list[str], tmp_path: Path, version: int) -> None:
    results = {}
    for name, cmd in (("c", c_loadgen), ("python", PYTHON_LOADGEN)):
        lat = tmp_path / f"{name}.f32"
        ready, result = run(cmd, "--url", server.ws_url, "--clients", "12", "--duration", "2",
                            "--hunt", "alpha,beta", "--protocol-version", str(version),
                            "--name-prefix", f"{name}{version}-", "--latency-out", str(lat))
        assert ready["event"] == "ready" and ready["playing"] == 12 and ready["failed"] == 0
        assert result["event"] == "result"
        results[name] = result
        # Every client played the whole window and got every tick of it, in order.
        assert result["playing"] == result["welcomed"] == 12
        assert result["tick_gaps"] == 0 and not result["closes"] and not result["errors"]
        assert all(35 <= t <= 42 for t in result["ticks_per_client"]), result["ticks_per_client"]
        # Moves were sent at the rate and acked within a few ticks.
        assert 200 <= result["moves_sent"] <= 260
        assert result["acked"] >= result["moves_sent"] - 12
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] < 500
        assert result["latency_arrival_ms"]["p99"] <= result["latency_ms"]["p99"] + 1
        assert result["fanout_ms"]["n"] >= 2 * 35  # a span per hunt and tick
        assert 0 < result["cpu_s_window"] < 2
        # The latency file: float32 ms, those read, then those at the socket.
        assert lat.stat().st_size == 2 * 4 * result["acked"]
    c, py = results["c"], results["python"]
    assert set(c) - {"loadgen"} == set(py)
    for key in ("latency_ms", "latency_arrival_ms", "fanout_ms", "send_lag_ms"):
        assert set(c[key]) == set(py[key]), key
    assert c["loadgen"] == "c"


def test_start_and_stop_on_stdin_open_and_close_the_window(
        server: ServeProcess, c_loadgen: list[str]) -> None:
    """The driven mode perf/loadtest.py uses: ready, start, stop, result; stdin closed ends it."""
    with subprocess.Popen([*c_loadgen, "--url", server.ws_url, "--clients", "4",
                           "--hunt", "alpha", "--name-prefix", "ctl-", "--drain", "0.3",
                           "--repeat"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert json.loads(proc.stdout.readline())["event"] == "ready"
            for _ in range(2):  # --repeat: a second window after the first result
                proc.stdin.write("start\n")
                proc.stdin.flush()
                time.sleep(1)
                proc.stdin.write("stop\n")
                proc.stdin.flush()
                result = json.loads(proc.stdout.readline())
                assert result["event"] == "result" and 0.9 < result["window_s"] < 1.5
                assert 15 <= min(result["ticks_per_client"]) <= 22
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def test_refusals_and_failed_connections_are_counted_like_the_python_one(
        server: ServeProcess, c_loadgen: list[str]) -> None:
    for cmd in (c_loadgen, PYTHON_LOADGEN):
        ready, result = run(cmd, "--url", server.ws_url, "--clients", "3", "--duration", "0.5",
                            "--hunt", "nosuch", "--connect-timeout", "5")
        # An unknown hunt: REFUSED with its code, then the server closes the connection.
        assert ready["playing"] == 0 and ready["failed"] == 3, ready
        assert sum(result["refused"].values()) == 3, result
        assert sum(result["connect_failures"].values()) == 3
    closed = {}
    for name, cmd in (("c", c_loadgen), ("python", PYTHON_LOADGEN)):
        # Nothing listens on port 1: each connection is refused by the kernel.
        ready, result = run(cmd, "--url", "ws://127.0.0.1:1/", "--clients", "2",
                            "--duration", "0.2", "--connect-timeout", "2")
        assert ready["failed"] == 2
        closed[name] = result["connect_failures"]
    assert closed["c"] == closed["python"] == {"connect: Connection refused": 2}


def test_short_and_malformed_frames_are_skipped_not_read_past(
        c_loadgen: list[str]) -> None:
    """A peer that is not the server: frames too short for their fields, a varint that never
    ends and a length near 2**64 are skipped or waited for, never read past; the valid TICK
    between them is counted, and the close that follows ends the client cleanly."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def frame(payload: bytes, opcode: int = 2) -> bytes:
        assert len(payload) < 126
        return bytes((0x80 | opcode, len(payload))) + payload

    def peer() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            # The upgrade answer in two pieces, then a WELCOME (type 0x81, ack 0 at byte 40).
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")
            time.sleep(0.05)
            conn.sendall(b"\r\n" + frame(b"\x81" + bytes(47)))
            time.sleep(0.6)  # the window opens when every client played
            conn.sendall(frame(b"\x83")  # a TICK of one byte
                         + frame(b"\x83\x01\x80\x80")  # a keyframe whose varint never ends
                         + frame(b"\x81")  # a WELCOME of one byte
                         + frame(b"\x83\x01\x05\x00")  # a valid keyframe: tick 5, ack 0
                         + frame(b"\x84\x00"))  # an ERROR too short for its code
            time.sleep(0.2)
            conn.sendall(frame(b"\x0f\xa0", opcode=8))  # close 4000
            time.sleep(1.5)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    try:
        ready, result = run(c_loadgen, "--url", f"ws://127.0.0.1:{port}/", "--clients", "1",
                            "--duration", "1.2", "--drain", "0.2")
    finally:
        thread.join(timeout=10)
        listener.close()
    assert ready["playing"] == 1
    assert result["messages"] == 1 and result["ticks_per_client"] == [1]
    assert result["closes"] == {"4000": 1} and not result["errors"]
