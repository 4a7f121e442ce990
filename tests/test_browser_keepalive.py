"""The browser client keeps a standing player's connection alive (docs/protocol.md, message
flow 9): a browser cannot send WebSocket pings, so hunt.js repeats its current move after
``keepAliveMs`` without a frame. A real ``serve`` with a short ``idle_timeout``, in Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_browser_support import ServerProcess, capture_errors, serving

IDLE_TIMEOUT = 1.0
CONFIG = f"""
[server]
idle_timeout = {IDLE_TIMEOUT}

[[hunt]]
name = "still"
width = 200.0
height = 200.0
treasures = 5
"""

# Joins, never moves, and reports after `waitMs` how many connections it needed.
STAND_STILL = """async ([url, keepAliveMs, waitMs]) => {
  const { connect } = await import('/static/hunt.js');
  const client = connect(url, { name: 'Statue', hunt: 'still', keepAliveMs });
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  await new Promise((resolve) => client.on('welcome', resolve));
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  const result = { state: client.state, connections: client.connections, errors };
  client.leave();
  return result;
}"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory, "still", CONFIG) as process:
        yield process


def stand_still(browser: Any, server: ServerProcess, keep_alive_ms: int) -> dict[str, Any]:
    page = browser.new_context().new_page()
    errors = capture_errors(page)
    page.goto(server.http_url + "/")
    result = page.evaluate(STAND_STILL, [server.ws_url, keep_alive_ms,
                                         int(IDLE_TIMEOUT * 4000)])
    page.context.close()
    assert not errors
    return result


def test_a_standing_player_outlives_several_idle_timeouts(browser: Any, server: ServerProcess):
    result = stand_still(browser, server, keep_alive_ms=300)
    assert result == {"state": "playing", "connections": 1, "errors": []}


def test_without_keep_alives_the_idle_timeout_closes_and_the_client_resumes(
        browser: Any, server: ServerProcess):
    # The control: with keep-alives too rare, the server's idle timeout does close the
    # connection (ERROR UNEXPECTED, close 1000) and the client resumes on a new one.
    result = stand_still(browser, server, keep_alive_ms=600_000)
    assert result["connections"] >= 2
    assert 3 in result["errors"]  # UNEXPECTED: the idle timeout's ERROR before its close
