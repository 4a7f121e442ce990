"""Shared by the browser tests: the system Chromium, a static file server, page error capture.

Holds no tests itself. The browser is Debian's ``/usr/bin/chromium`` driven by Playwright
(never a downloaded browser); the tests skip with a message saying what to install when
it is missing.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "server" / "static"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def require_chromium() -> None:
    """Skip (with the fix) when the system browser or Playwright is missing; in CI
    (``CI`` set) fail instead: nothing is skipped silently there."""
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: scripts/install-test-deps.sh installs it")
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    pytest.importorskip("playwright", reason="install the test extras: pip install -e '.[test]'")


@contextlib.contextmanager
def launched_browser() -> Iterator[object]:
    """A headless system Chromium (Playwright sync API), closed on exit."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


#: An empty page to load modules from (its icon is inline: no favicon 404 in the console).
BLANK_PAGE = "/__blank__.html"
_BLANK = b'<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title></title>'


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != BLANK_PAGE:
            super().do_GET()
            return
        body = _BLANK
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test output is for failures, not for access logs


@contextlib.contextmanager
def static_server(directory: Path = ROOT) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def capture_errors(page: object) -> list[str]:
    """A list that fills with the page's uncaught errors and console errors."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    return errors


def screenshot(page: object, name: str) -> Path:
    """Save a screenshot under tests/artifacts/ (gitignored) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


class ServerProcess:
    """A ``treasure-hunt serve`` subprocess on free ports; its log lines are kept in ``lines``."""

    def __init__(self, config: Path, *extra: str, startup_timeout: float = 120.0) -> None:
        """Start it with a fresh world: no journal (``--data-dir ''``), nothing recovered."""
        exe = Path(sys.executable).with_name("treasure-hunt")
        self.lines: list[str] = []
        self._ready: queue.Queue[dict[str, object]] = queue.Queue()
        self.process = subprocess.Popen(
            [str(exe), "serve", "--config", str(config), "--port", "0", "--http-port", "0",
             "--log-format", "json", "--data-dir", "", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=config.parent)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            serving = self._ready.get(timeout=startup_timeout)
        except queue.Empty:
            serving = {}
        if not serving:  # timed out, or the output ended: the server exited
            self.stop()
            raise RuntimeError(f"treasure-hunt serve did not start within {startup_timeout} s"
                               " (no 'serving' log line); its output:\n" + "\n".join(self.lines))
        self.http_url = str(serving["http_url"]).rstrip("/")
        self.ws_url = str(serving["ws_url"])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "serving":
                    self._ready.put(event)
        self._ready.put({})  # the output ended: the server exited

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> object:
        request = urllib.request.Request(self.http_url + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """SIGINT (a clean shutdown), then kill if it takes more than 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def serving(tmp_path_factory: object, name: str, config: str) -> Iterator[ServerProcess]:
    """A :class:`ServerProcess` of ``config`` (TOML text) for a module's tests, stopped after."""
    path = tmp_path_factory.mktemp("serve") / f"{name}.toml"  # type: ignore[attr-defined]
    path.write_text(config, encoding="utf-8")
    process = ServerProcess(path)
    try:
        yield process
    finally:
        process.stop()


#: Browser contexts: a phone (touch, 2x pixels) and a desktop window.
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
#: How long a page may take to reach a state (ms), on a loaded CI machine.
WAIT_MS = 15_000


def join_page(browser: Any, server: ServerProcess, name: str, hunt: str, path: str = "/",
              **context: Any) -> tuple[Any, list[str]]:
    """A new page (browser context options ``context``) that opens the play page at
    ``path``, joins ``hunt`` as ``name`` and waits until it plays with its first keyframe
    applied; returns the page and the list its errors go to."""
    page = browser.new_context(**context).new_page()
    errors = capture_errors(page)
    page.goto(server.http_url + path)
    page.wait_for_selector(f"#hunt option[value={hunt}]", state="attached")
    page.fill("#name", name)
    page.click("#join-button")
    page.wait_for_function("() => window.game?.client.state === 'playing' && "
                           "window.game.view.tick > window.game.view.params.tick", timeout=WAIT_MS)
    return page, errors
