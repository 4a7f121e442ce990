"""Rounds in the browser against a real ``treasure-hunt serve``, in headless Chromium.

The play page shows the lobby's countdown, the time left while the round runs and, when
it ends, the results screen with the podium and the player's own rank; the watch page
shows the phase and the results history. The phases are long, so only the admin API's
round controls (the operator) move the hunt on: the screenshots (tests/artifacts/) show
each phase. Two pages play: a desktop one that scores and a phone-sized one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from admin_support import admin_call_sync
from test_browser_support import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    ServerProcess,
    capture_errors,
    join_page,
    screenshot,
    serving,
)

TOKEN = "rounds-admin"
LONG = 20_000  # ticks: 1,000 s at 20 Hz, so no phase ends by itself during the test
CONFIG = f"""
[server]
admin_token = "{TOKEN}"

[engine]
max_players = 64
max_treasures = 200

[[hunt]]
name = "cup"
width = 200.0
height = 140.0
treasures = 60
discovery_radius = 14.0
hint_radius = 60.0
view_radius = 400.0
seed = 11

[hunt.rounds]
count = 2
lobby_ticks = {LONG}
running_ticks = {LONG}
results_ticks = {LONG}
treasures = 60
"""

CLOCK = re.compile(r"^\d+:\d\d$")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory, "rounds", CONFIG) as process:
        yield process


def admin(server: ServerProcess, action: str) -> dict[str, Any]:
    port = int(server.http_url.rsplit(":", 1)[1])
    status, body = admin_call_sync(port, "POST", f"/api/admin/hunts/cup/rounds/{action}",
                                   token=TOKEN)
    assert status == 200, body
    return body


def join(browser: Any, server: ServerProcess, name: str, **context: Any) -> tuple[Any, list]:
    return join_page(browser, server, name, "cup", "/?hunt=cup", **context)


def banner(page: Any) -> tuple[str, str, str]:
    return page.evaluate("() => [document.querySelector('#round-banner').dataset.phase,"
                         " document.querySelector('#round-label').textContent,"
                         " document.querySelector('#round-clock').textContent]")


def seconds(text: str) -> int:
    minutes, secs = text.split(":")
    return int(minutes) * 60 + int(secs)


def wait_phase(page: Any, phase: str) -> None:
    page.wait_for_function("(p) => !document.querySelector('#round-banner').hidden && "
                           "document.querySelector('#round-banner').dataset.phase === p",
                           arg=phase, timeout=WAIT_MS)


def test_lobby_countdown_time_left_results_and_the_watch_history(browser: Any,
                                                                 server: ServerProcess):
    ada, ada_errors = join(browser, server, "Ada", **DESKTOP)

    # The lobby: a countdown to the round's start, counting down.
    wait_phase(ada, "lobby")
    _, label, first = banner(ada)
    assert label == "Round 1 of 2 starts in" and CLOCK.match(first), (label, first)
    assert seconds(first) <= LONG // 20 + 1
    ada.wait_for_timeout(2200)
    assert seconds(banner(ada)[2]) < seconds(first), "the countdown runs"
    screenshot(ada, "rounds-lobby")

    # The operator starts the round: the time left while it runs.
    admin(server, "next")
    wait_phase(ada, "running")
    _, label, left = banner(ada)
    assert label == "Round 1 of 2 · time left" and abs(seconds(left) - LONG // 20) <= 2
    bo, bo_errors = join(browser, server, "Bo", **PHONE)
    wait_phase(bo, "running")
    assert banner(bo)[1] == "Round 1 of 2 · time left"

    for key in ["KeyD", "KeyS", "KeyA", "KeyW"] * 8:  # Ada walks until she scores
        if ada.evaluate("() => window.game.view.me.score") > 0:
            break
        ada.keyboard.down(key)
        ada.wait_for_timeout(500)
        ada.keyboard.up(key)
    ada.keyboard.press("Space")
    score = ada.evaluate("() => window.game.view.me.score")
    assert score > 0, "a map crowded with treasures yields one within 15 s of walking"
    screenshot(ada, "rounds-running")

    # The operator ends the round early: the results screen, podium and own rank.
    admin(server, "end")
    for page in (ada, bo):
        page.wait_for_selector("#results", state="visible", timeout=WAIT_MS)
    assert ada.text_content("#results-title") == "Round 1 results"
    # Bo stands still but may stand on a treasure: the podium is whatever the RESULTS say.
    results = ada.evaluate("() => window.game.client.results")
    names = {ada.evaluate("() => window.game.view.me.slot"): "Ada",
             bo.evaluate("() => window.game.view.me.slot"): "Bo"}
    rows = results["standings"]
    assert results["players"] == 2 and [r["rank"] for r in rows] == [1, 2]
    assert {names[r["slot"]] for r in rows} == {"Ada", "Bo"}
    for page, me in ((ada, "Ada"), (bo, "Bo")):
        for row, place in zip(rows, ("first", "second"), strict=True):
            who = names[row["slot"]]
            shown = f"{who} (you)" if who == me else who
            assert page.text_content(f"#podium li.{place} .who") == shown
            assert page.text_content(f"#podium li.{place} .pts").startswith(
                f"{row['score']} pts · {row['found']} found")
        mine = next(r for r in rows if names[r["slot"]] == me)
        rank = "1st" if mine["rank"] == 1 else "2nd"
        finds = f"{mine['found']} treasure{'' if mine['found'] == 1 else 's'}"
        assert page.text_content("#my-rank") == (
            f"You finished {rank} of 2 with {mine['score']} points ({finds}).")
    assert next(r for r in rows if names[r["slot"]] == "Ada")["score"] >= score > 0
    winner = rows[0]
    ada.wait_for_function("() => document.querySelector('#results-next').textContent"
                          ".startsWith('Round 2 opens its lobby in')", timeout=WAIT_MS)
    assert banner(ada)[0] == "results"
    screenshot(ada, "rounds-results")
    screenshot(bo, "rounds-results-phone")
    for page in (ada, bo):  # nothing sticks out sideways, on the phone either
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")

    # The watch page: the phase and the results history.
    watch = browser.new_context(**DESKTOP).new_page()
    watch_errors = capture_errors(watch)
    watch.goto(f"{server.http_url}/watch?token={TOKEN}&hunt=cup")
    watch.wait_for_function("() => document.querySelector('#w-phase').textContent"
                            ".startsWith('Round 1 of 2 · results')", timeout=WAIT_MS)
    watch.wait_for_function("() => document.querySelector('#history').textContent"
                            ".includes('Round 1')", timeout=WAIT_MS)
    history = watch.text_content("#history")
    assert f"1. {names[winner['slot']]} {winner['score']}" in history, history
    assert "2 ranked" in history
    watch.wait_for_timeout(300)
    screenshot(watch, "watch-rounds")

    # Round 2 straight from the results: the results screen goes, the clock runs again.
    admin(server, "next")
    for page in (ada, bo):
        wait_phase(page, "running")
        page.wait_for_selector("#results", state="hidden", timeout=WAIT_MS)
    assert banner(ada)[1] == "Round 2 of 2 · time left"
    watch.wait_for_function("() => document.querySelector('#w-phase').textContent"
                            ".startsWith('Round 2 of 2 · running')", timeout=WAIT_MS)
    assert not ada_errors + bo_errors + watch_errors
    for page in (ada, bo, watch):
        page.context.close()
