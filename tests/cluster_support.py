"""Scale-out test support: `treasure-hunt serve --redis` nodes as real subprocesses.

A :class:`Node` is one server process (its log in a file, so a chatty node never
blocks on a full pipe), killed for real with SIGKILL, paused with SIGSTOP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "server"]

#: A small, quick world: 2 hunts of few treasures close together (discoveries come fast).
CONFIG = """\
[engine]
max_players = 256
max_treasures = 1024

[defaults]
max_players = 128
seed = 7
width = 200.0
height = 200.0
treasures = 60
discovery_radius = 12.0
player_speed = 200.0
tick_rate = 20

[[hunt]]
name = "alpha"

[[hunt]]
name = "beta"

[[hunt]]
name = "gamma"
"""


class Node:
    """One ``serve --redis`` process: ``ws_url``, ``http`` port, JSON log events."""

    def __init__(self, node_id: str, redis_url: str, data_dir: Path, workdir: Path,
                 *extra: str, lease: float = 1.5) -> None:
        self.node_id = node_id
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.log_path = workdir / f"node-{node_id}.log"
        self.config = workdir / "cluster.toml"
        if not self.config.exists():
            self.config.write_text(CONFIG)
        self.args = [*CLI, "serve", "--config", str(self.config), "--redis", redis_url,
                     "--node-id", node_id, "--port", "0", "--http-port", "0",
                     "--data-dir", str(data_dir), "--log-format", "json",
                     "--lease", str(lease), "--snapshot-every", "100", *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws_url = ""
        self.http = 0

    def start(self, timeout: float = 60.0) -> Node:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self._seen = self.log_path.stat().st_size
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log,
                                     cwd=Path(__file__).parent.parent)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events(since_start=True):
                if e.get("event") == "serving":
                    self.ws_url = e["ws_url"]
                    self.http = int(e["http_url"].rsplit(":", 1)[1].strip("/"))
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"node {self.node_id} did not start:\n{self.log_path.read_text()}")

    def events(self, since_start: bool = False) -> list[dict[str, Any]]:
        """The JSON log lines of this node (of its current run with ``since_start``)."""
        if not self.log_path.exists():
            return []
        data = self.log_path.read_bytes()
        if since_start:
            data = data[self._seen:]
        out = []
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET ``path`` on the node's HTTP port and decode its JSON (or raise HTTPError)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}",
                                    timeout=timeout) as r:
            return json.loads(r.read())

    def try_get(self, path: str) -> Any:
        try:
            return self.get(path, timeout=2.0)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def running(self) -> list[str]:
        """Hunts this node ticks (from /healthz)."""
        body = self.try_get("/healthz")
        if body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz",
                                            timeout=2.0) as r:
                    body = json.loads(r.read())
            except urllib.error.HTTPError as exc:
                body = json.loads(exc.read())
            except (urllib.error.URLError, OSError, ValueError):
                return []
        return list(body.get("hunts", []))

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, leases left to expire."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def wait_until(predicate: Any, timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
