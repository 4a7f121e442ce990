"""`treasure-hunt serve` as a real child process, for the tests that kill one for real.

:class:`ServeChild` starts the command it is given with its JSON log in a file (so a
chatty server never blocks on a full pipe), waits for the ``serving`` line and reads
``ws_url`` and the HTTP port from it; :meth:`~ServeChild.kill` is SIGKILL,
:meth:`~ServeChild.stop` SIGTERM then SIGKILL after a timeout. The single-node
(``admin_support.ServeProcess``) and scale-out (``cluster_support.Node``) helpers
differ only in the command line they build.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


class ServeChild:
    """One server process; ``args`` its command line, ``log_path`` where its log goes."""

    def __init__(self, args: list[str], log_path: Path, what: str = "serve") -> None:
        self.args = args
        self.log_path = log_path
        self.what = what
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws_url = ""
        self.http = 0
        self._seen = 0

    def start(self, timeout: float = 240.0) -> Any:
        """Start it and wait (at most ``timeout`` seconds) for its ``serving`` line."""
        self._seen = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log,
                                         cwd=ROOT)
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
        raise AssertionError(f"{self.what} did not start:\n{self.log_path.read_text()[-4000:]}")

    def events(self, since_start: bool = False) -> list[dict[str, Any]]:
        """The JSON log lines (of the current run only with ``since_start``)."""
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

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (journals, leases and sockets left as they are)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (after a SIGCONT, in case it is paused) and wait; SIGKILL after
        ``timeout`` seconds. Returns the exit status."""
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
