"""The play and watch pages against a real ``treasure-hunt serve``, in headless Chromium.

Two pages (a desktop and a phone-sized one) join one small hunt: key presses in one move
its player and the other page sees it move; a discovery updates the score and both
leaderboards; a dropped connection resumes the same player with the same score; the watch
view shows both players. Screenshots go to tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
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

ADMIN_TOKEN = "watch-me"
WIDTH, HEIGHT = 240.0, 160.0
# A small field crowded with treasures and a wide discovery radius, so that walking finds
# one within seconds; a view radius larger than the map, so that everyone sees everyone.
CONFIG = f"""
[server]
admin_token = "{ADMIN_TOKEN}"
resume_grace = 60.0

[engine]
max_players = 64
max_treasures = 200

[[hunt]]
name = "meadow"
width = {WIDTH}
height = {HEIGHT}
treasures = 60
discovery_radius = 14.0
hint_radius = 60.0
view_radius = 400.0
respawn_delay = 10
seed = 5
"""


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory, "meadow", CONFIG) as process:
        yield process


def join(browser: Any, server: ServerProcess, name: str, **context: Any) -> tuple[Any, list]:
    return join_page(browser, server, name, "meadow", **context)


def me(page: Any) -> dict[str, Any]:
    return page.evaluate("() => ({...window.game.view.me, resumes: window.game.client.resumes,"
                         " connections: window.game.client.connections})")


def seen_by(page: Any, slot: int) -> dict[str, Any] | None:
    return page.evaluate("(slot) => { const p = window.game.view.players.get(slot);"
                         " return p ? {...p} : null; }", slot)


def hold(page: Any, key: str, ms: int) -> None:
    page.keyboard.down(key)
    page.wait_for_timeout(ms)
    page.keyboard.up(key)


def test_two_pages_play_together_score_resume_and_are_watched(browser: Any,
                                                              server: ServerProcess):
    ada, ada_errors = join(browser, server, "Ada", **DESKTOP)
    bo, bo_errors = join(browser, server, "Bo", **PHONE)
    a = me(ada)
    bo.wait_for_function("(slot) => window.game.view.players.has(slot)", arg=a["slot"],
                         timeout=WAIT_MS)
    assert bo.evaluate("(slot) => window.game.view.nameOf(slot)", a["slot"]) == "Ada"

    # Key presses on Ada's page move Ada, and Bo's page sees it.
    key, sign = ("KeyD", 1) if a["x"] < WIDTH / 2 else ("KeyA", -1)
    before = seen_by(bo, a["slot"])
    hold(ada, key, 700)
    bo.wait_for_function(
        "([slot, x0, sign]) => { const p = window.game.view.players.get(slot);"
        " return p && sign * (p.x - x0) >= 20; }",
        arg=[a["slot"], before["x"], sign], timeout=WAIT_MS)
    assert sign * (me(ada)["x"] - a["x"]) >= 20, "Ada's own page moved her too"

    # Walk around the crowded field until Ada finds a treasure.
    for key in ["KeyS", "KeyA", "KeyW", "KeyD"] * 6:
        if me(ada)["score"] > 0:
            break
        hold(ada, key, 600)
    ada.keyboard.press("Space")  # stop, so that the score holds still for the checks below
    ada.wait_for_timeout(300)
    score = me(ada)["score"]
    assert score > 0, "a field crowded with treasures yields one within 15 s of walking"

    ada.wait_for_function("(s) => document.querySelector('#score').textContent === String(s)",
                          arg=score, timeout=WAIT_MS)
    expected_row = f"Ada (you){score}"
    ada.wait_for_function("(row) => [...document.querySelectorAll('#board li')]"
                          ".some((li) => li.textContent.replace(/^\\d+\\./, '') === row)",
                          arg=expected_row, timeout=WAIT_MS)
    bo.wait_for_function("(row) => [...document.querySelectorAll('#board li')]"
                         ".some((li) => li.textContent.replace(/^\\d+\\./, '') === row)",
                         arg=f"Ada{score}", timeout=WAIT_MS)
    bo.wait_for_function("() => document.querySelector('#feed').textContent"
                         ".includes('Ada found a treasure')", timeout=WAIT_MS)
    assert "You found a treasure" in ada.text_content("#feed")
    screenshot(ada, "play-desktop")
    screenshot(bo, "play-phone")
    for page in (ada, bo):  # nothing sticks out sideways, on the phone either
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")

    # A dropped connection: the client resumes by itself, same player, same score.
    ada.evaluate("() => window.game.client.dropConnection()")
    ada.wait_for_function("() => window.game.client.resumes >= 1 && "
                          "window.game.client.state === 'playing'", timeout=WAIT_MS)
    after = me(ada)
    assert (after["slot"], after["gen"], after["score"]) == (a["slot"], a["gen"], score)
    assert after["connections"] == 2
    ada.wait_for_function("(s) => document.querySelector('#score').textContent === String(s)",
                          arg=score, timeout=WAIT_MS)
    hold(ada, "KeyW" if after["y"] > HEIGHT / 2 else "KeyS", 400)  # it still steers
    bo.wait_for_function("([slot, y0]) => Math.abs(window.game.view.players.get(slot).y - y0)"
                         " >= 10", arg=[a["slot"], after["y"]], timeout=WAIT_MS)

    # The watch view shows both players, the treasures and the server's figures.
    watch = browser.new_context(**DESKTOP).new_page()
    watch_errors = capture_errors(watch)
    watch.goto(f"{server.http_url}/watch?token={ADMIN_TOKEN}&hunt=meadow")
    try:
        watch.wait_for_function("() => { const p = window.watch?.payload; return p &&"
                                " Object.values(p.names).sort().join() === 'Ada,Bo'; }",
                                timeout=WAIT_MS)
    except Exception:
        print(watch.evaluate("() => [window.watch?.payload, document.body.innerText]"),
              watch_errors, server.lines[-20:])
        raise
    assert "token=" not in watch.url, "the admin token is taken out of the address bar"
    payload = watch.evaluate("() => window.watch.payload")
    assert len(payload["treasures"]["x"]) == 60
    assert payload["stats"]["clients"] == 2
    watch.wait_for_function("() => document.querySelector('#s-clients').textContent === '2'",
                            timeout=WAIT_MS)
    i = payload["players"]["slot"].index(a["slot"])
    assert payload["players"]["score"][i] >= score, "Ada kept her score (and may have found more)"
    assert "Ada" in watch.text_content("#board")
    watch.wait_for_timeout(400)
    screenshot(watch, "watch")
    assert not ada_errors + bo_errors + watch_errors
    for page in (ada, bo, watch):
        page.context.close()


def test_a_reload_resumes_the_same_player(browser: Any, server: ServerProcess):
    page, errors = join(browser, server, "Cy", **DESKTOP)
    first = me(page)
    page.reload()
    page.wait_for_function("() => window.game?.client.state === 'playing' && "
                           "window.game.client.resumes === 1", timeout=WAIT_MS)
    again = me(page)
    assert (again["slot"], again["gen"]) == (first["slot"], first["gen"])
    assert page.is_hidden("#join")
    page.click("#leave")  # BYE: the player leaves for good, the form comes back
    page.wait_for_selector("#join", state="visible")
    assert page.evaluate("() => sessionStorage.length") == 0
    assert not errors


def test_a_network_outage_resumes_the_same_player(browser: Any, server: ServerProcess):
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    errors = capture_errors(page)
    page.goto(server.http_url + "/")
    page.wait_for_selector("#hunt option[value=meadow]", state="attached")
    page.fill("#name", "Dee")
    page.click("#join-button")
    page.wait_for_function("() => window.game?.client.state === 'playing' && "
                           "window.game.view.tick > window.game.view.params.tick", timeout=WAIT_MS)
    first = me(page)
    context.set_offline(True)  # no close frame, no error: the ticks just stop coming
    page.wait_for_function("() => window.game.client.state === 'reconnecting'", timeout=WAIT_MS)
    page.wait_for_timeout(1500)  # a few attempts fail while offline, backing off
    assert page.evaluate("() => window.game.client.connections") >= 2
    context.set_offline(False)
    page.wait_for_function("() => window.game.client.resumes >= 1 && "
                           "window.game.client.state === 'playing'", timeout=WAIT_MS)
    again = me(page)
    assert (again["slot"], again["gen"], again["score"]) == (
        first["slot"], first["gen"], first["score"])
    assert page.text_content("#status") == "Playing in meadow"
    # The browser reports each attempt made while offline; nothing else may go wrong.
    assert [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e] == []
    context.close()


CLIENT_WITH_TOKEN = """async ([url, token]) => {
  const { connect } = await import('/static/hunt.js');
  const client = connect(url, { name: 'Eve', hunt: 'meadow', resumeToken: token });
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  const welcome = await new Promise((resolve) => client.on('welcome', resolve));
  client.leave();
  return { resumed: welcome.resumed, errors, connections: client.connections };
}"""


@pytest.mark.parametrize(("token", "connections", "errors"), [
    ("00112233445566778899aabbccddeeff", 2, [4005]),  # unknown to the server: RESUME_INVALID
    ("not a token", 1, []),  # mangled in storage: never sent
])
def test_a_refused_resume_token_joins_as_a_new_player(browser: Any, server: ServerProcess,
                                                      token: str, connections: int,
                                                      errors: list[int]):
    page = browser.new_context().new_page()
    page.goto(server.http_url + "/")
    result = page.evaluate(CLIENT_WITH_TOKEN, [server.ws_url, token])
    assert result == {"resumed": False, "errors": errors, "connections": connections}
    page.context.close()


def test_the_documented_example_client_plays(browser: Any, server: ServerProcess):
    doc = (Path(__file__).resolve().parent.parent / "docs" / "js-client.md").read_text("utf-8")
    example = doc.split("```html\n", 1)[1].split("```", 1)[0]
    page = browser.new_context().new_page()
    # The page must come from the server itself: Chromium lets only a page served from a
    # local address open a WebSocket to 127.0.0.1 (Local Network Access).
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))  # not the test's point
    errors = capture_errors(page)
    page.goto(server.http_url + "/healthz")
    page.set_content(f"<link rel=icon href='data:,'>{example}")
    page.keyboard.press("ArrowRight")
    # It draws: some pixel of the canvas is no longer transparent.
    page.wait_for_function("() => document.getElementById('map').getContext('2d')"
                           ".getImageData(0, 0, 600, 600).data.some((v) => v)", timeout=WAIT_MS)
    assert not errors
    page.context.close()


def test_a_lost_tick_is_noticed_and_the_client_resumes(browser: Any, server: ServerProcess):
    page, errors = join(browser, server, "Flo", **DESKTOP)
    first = me(page)
    # Lose one message on the way in, as a broken proxy would: the next diff does not follow.
    page.evaluate("""() => {
      const client = window.game.client;
      const receive = client._receive.bind(client);
      let dropped = false;
      client._receive = (ws, data) => {
        if (!dropped && client.view.tick > client.view.params.tick + 3) {
          dropped = true;
          return;
        }
        receive(ws, data);
      };
    }""")
    page.wait_for_function("() => window.game.client.resumes === 1 && "
                           "window.game.client.state === 'playing' && "
                           "!window.game.view.waitingForKeyframe", timeout=WAIT_MS)
    again = me(page)
    assert (again["slot"], again["gen"], again["connections"]) == (first["slot"], first["gen"], 2)
    assert not errors
    page.context.close()


def test_join_form_reports_a_refused_name_and_watch_a_wrong_token(browser: Any,
                                                                  server: ServerProcess):
    page = browser.new_context(**DESKTOP).new_page()
    page.goto(server.http_url + "/")
    page.wait_for_selector("#hunt option[value=meadow]", state="attached")
    page.fill("#name", " Ada ")  # trimmed by the form: accepted
    page.evaluate("() => { document.querySelector('#name').value = 'bad\\u0007name'; }")
    page.click("#join-button")
    page.wait_for_function("() => document.querySelector('#join-error').textContent.length > 0",
                           timeout=WAIT_MS)
    assert "name" in page.text_content("#join-error").lower()
    assert page.is_visible("#join")

    watch = browser.new_context(**DESKTOP).new_page()
    watch.goto(f"{server.http_url}/watch?token=wrong")
    watch.wait_for_selector("#login", state="visible")
    watch.wait_for_function("() => document.querySelector('#login-error').textContent.length",
                            timeout=WAIT_MS)
    assert "token" in watch.text_content("#login-error").lower()
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.get_json("/api/watch?hunt=meadow", {"Authorization": "Bearer wrong"})
    assert refused.value.code == 401
    refused.value.close()


def test_static_files_are_served_with_module_content_types(server: ServerProcess):
    import urllib.request

    for path, kind in [("/static/hunt.js", "text/javascript"), ("/static/style.css", "text/css"),
                       ("/", "text/html"), ("/watch", "text/html")]:
        with urllib.request.urlopen(server.http_url + path, timeout=10) as response:
            assert response.headers["Content-Type"].startswith(kind), path
    static = Path(__file__).resolve().parent.parent / "server" / "static"
    assert {p.name for p in static.iterdir()} >= {"hunt.js", "index.html", "watch.html"}
