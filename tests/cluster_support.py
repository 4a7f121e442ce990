"""Scale-out test support: `treasure-hunt serve --redis` nodes as real subprocesses.

A :class:`Node` is one server process (its log in a file, so a chatty node never
blocks on a full pipe), killed for real with SIGKILL, paused with SIGSTOP.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from serve_support import ServeChild

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


class Node(ServeChild):
    """One ``serve --redis`` process: ``ws_url``, ``http`` port, JSON log events; killed
    for real with SIGKILL, paused with SIGSTOP."""

    def __init__(self, node_id: str, redis_url: str, data_dir: Path, workdir: Path,
                 *extra: str, lease: float = 1.5) -> None:
        self.node_id = node_id
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.config = workdir / "cluster.toml"
        if not self.config.exists():
            self.config.write_text(CONFIG)
        super().__init__(
            [*CLI, "serve", "--config", str(self.config), "--redis", redis_url,
             "--node-id", node_id, "--port", "0", "--http-port", "0",
             "--data-dir", str(data_dir), "--log-format", "json",
             "--lease", str(lease), "--snapshot-every", "100", *extra],
            workdir / f"node-{node_id}.log", what=f"node {node_id}")

    def start(self, timeout: float = 60.0) -> Node:
        return super().start(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        return super().stop(timeout)

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
