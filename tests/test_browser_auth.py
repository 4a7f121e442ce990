"""The play page on a platform: a real ``treasure-hunt serve`` in ticket mode, in headless
Chromium. The page takes its user's join ticket from the URL fragment or from the host
page (postMessage), shows the ticket's display name and plays under it; without a ticket
it says the server wants one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from auth_support import AUDIENCE, SECRET
from test_browser_support import WAIT_MS, ServerProcess, capture_errors, screenshot

from server.auth import mint_ticket

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("auth-serve")
    (base / "auth-secret").write_text(SECRET)
    config = base / "meadow.toml"
    config.write_text(f"""
[server]
auth = "jwt"
auth_secret_file = "auth-secret"
auth_audience = "{AUDIENCE}"

[engine]
max_players = 16

[[hunt]]
name = "meadow"
width = 240.0
height = 160.0
view_radius = 400.0
""", encoding="utf-8")
    process = ServerProcess(config)
    try:
        yield process
    finally:
        process.stop()


def ticket(user: str, name: str) -> str:
    return mint_ticket(SECRET, user=user, name=name, audience=AUDIENCE)


PLAYING = ("() => window.game?.client.state === 'playing' && window.game.view.me && "
           "window.game.view.names.get(window.game.view.me.slot)?.name")


def test_a_ticket_in_the_fragment_plays_under_its_display_name(browser, server: ServerProcess):
    t = ticket("u-ada", "Ada Lovelace")
    page = browser.new_context().new_page()
    errors = capture_errors(page)
    page.goto(f"{server.http_url}/?hunt=meadow#ticket={t}")
    page.wait_for_function(PLAYING, timeout=WAIT_MS)  # joined at once, no form
    assert page.evaluate(PLAYING) == "Ada Lovelace"  # the name the server gave the player
    assert page.text_content("#who") == "Ada Lovelace"
    assert "ticket" not in page.evaluate("location.href")  # out of the address bar
    screenshot(page, "auth-fragment")
    assert not errors, errors
    assert not [line for line in server.lines if t[-20:] in line]  # never logged


def test_the_host_page_hands_a_ticket_over_by_postmessage(browser, server: ServerProcess):
    page = browser.new_context().new_page()
    errors = capture_errors(page)
    page.goto(server.http_url + "/")
    page.wait_for_selector("#hunt option[value=meadow]", state="attached")
    page.fill("#name", "Sneaky")
    page.click("#join-button")  # no ticket: the server wants one
    page.wait_for_function("() => document.querySelector('#join-error').textContent"
                           ".includes('ticket')", timeout=WAIT_MS)
    page.evaluate("(t) => window.postMessage({type: 'treasure-hunt:ticket', ticket: t}, '*')",
                  ticket("u-bo", "Bo"))
    page.wait_for_function("() => document.querySelector('#name').value === 'Bo'",
                           timeout=WAIT_MS)
    assert page.evaluate("document.querySelector('#name').readOnly")
    page.click("#join-button")
    page.wait_for_function(PLAYING, timeout=WAIT_MS)
    assert page.evaluate(PLAYING) == "Bo" and page.text_content("#who") == "Bo"
    assert not errors, errors


def test_ticket_claims_are_readable_for_display(browser, server: ServerProcess):
    page = browser.new_context().new_page()
    page.goto(server.http_url + "/")
    claims = page.evaluate("async (t) => (await import('/static/hunt.js')).ticketClaims(t)",
                           mint_ticket(SECRET, user="u-9", name="Zoë", audience=AUDIENCE,
                                       hunts=["meadow"]))
    assert claims["user"] == "u-9" and claims["name"] == "Zoë" and claims["hunts"] == ["meadow"]
    assert page.evaluate("async () => (await import('/static/hunt.js')).ticketClaims('x')") \
        is None


def test_the_same_user_in_a_second_tab_takes_the_player_over(browser, server: ServerProcess):
    first = browser.new_context().new_page()
    first.goto(f"{server.http_url}/?hunt=meadow#ticket={ticket('u-cy', 'Cy')}")
    first.wait_for_function(PLAYING, timeout=WAIT_MS)
    player = first.evaluate("window.game.view.me.slot")
    second = browser.new_context().new_page()
    second.goto(f"{server.http_url}/?hunt=meadow#ticket={ticket('u-cy', 'Cy')}")
    second.wait_for_function(PLAYING, timeout=WAIT_MS)
    assert second.evaluate("window.game.view.me.slot") == player  # one player, taken over
    first.wait_for_function("() => document.querySelector('#status').textContent"
                            ".includes('another tab')", timeout=WAIT_MS)
