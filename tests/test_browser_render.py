"""The play page takes hundreds of players in view (headless Chromium).

Decodes and applies a keyframe and 20 diff TICKs of 500 players in the real browser,
draws frames with every player interpolated, and saves a screenshot of that crowd; the
timings it takes go to tests/artifacts/render.json. What they must stay under is
perf/bench_render.py's business (timings are never asserted in tests: CI is noisy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_browser_support import (
    ARTIFACTS,
    BLANK_PAGE,
    capture_errors,
    launched_browser,
    screenshot,
    static_server,
)

from server.protocol import VISIBLE_RECORD, NameEntry, TickUpdate, encode

PLAYERS = 500
WELCOME = "8101000514000000030000000100000000112233445566778899aabbccddeeffb00400000000000000000000000000000000000000408f4000000000000089400000000000005940000000000000144000000000000059400000000000c0624000000000000480400000000000105040"  # noqa: E501  (welcome-join vector: 1000 x 800 world, view radius 150, spawn (512.5, 64.25))

MEASURE = """async ([welcome, keyframe, diffs]) => {
  const P = await import('/server/static/hunt.js');
  const { MapRenderer } = await import('/server/static/play-render.js');
  const bytes = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
  document.body.style.margin = '0';
  const canvas = document.createElement('canvas');
  canvas.style.cssText = 'width: 1280px; height: 800px; display: block';
  document.body.append(canvas);
  const view = new P.HuntView();
  view.welcome(P.decodeServerFrame(bytes(welcome)));
  view.apply(P.decodeServerFrame(bytes(keyframe)));
  const frames = diffs.map((h) => bytes(h));
  let t0 = performance.now();
  for (const f of frames) if (!view.apply(P.decodeServerFrame(f))) throw new Error('gap');
  const tickMs = (performance.now() - t0) / frames.length;
  const renderer = new MapRenderer(canvas);
  renderer.burst(520, 70, 9, true);
  const draws = 120;
  t0 = performance.now();
  for (let i = 0; i < draws; i++) renderer.draw(view, (i % 10) / 10, [560, 120], 'Ada');
  canvas.getContext('2d').getImageData(0, 0, 1, 1);  // wait for the drawing to be done
  const drawMs = (performance.now() - t0) / draws;
  renderer.draw(view, 0.5, [560, 120], 'Ada');
  return { tickMs, drawMs, players: view.players.size };
}"""


def crowd(tick: int, rng: np.random.Generator, keyframe: bool) -> str:
    """A TICK with PLAYERS players around the spawn point (512.5, 64.25), all in view."""
    rows = np.zeros(PLAYERS, VISIBLE_RECORD)
    rows["slot"] = np.arange(10, 10 + PLAYERS)
    rows["gen"] = 1
    rows["flags"] = 1
    angle = rng.uniform(0, 2 * np.pi, PLAYERS)
    radius = 140 * np.sqrt(rng.uniform(0, 1, PLAYERS))
    rows["x"] = 512.5 + radius * np.cos(angle)
    rows["y"] = np.clip(64.25 + radius * np.sin(angle), 0, 800)
    names = tuple(NameEntry(10 + i, 1, f"bot {i}") for i in range(PLAYERS)) if keyframe else ()
    return encode(TickUpdate(tick, 0, 512.5, 64.25, 0, 3, rows, keyframe, names=names)).hex()


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with launched_browser() as browser, static_server() as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = capture_errors(page)
        page.goto(url + BLANK_PAGE)
        yield page
        assert not errors, errors


def test_five_hundred_players_in_view_decode_apply_and_draw(page: Any):
    rng = np.random.default_rng(1)
    keyframe = crowd(1201, rng, keyframe=True)
    diffs = [crowd(1202 + i, rng, keyframe=False) for i in range(20)]
    figures = page.evaluate(MEASURE, [WELCOME, keyframe, diffs])
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "render.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    screenshot(page, "render-500-players")
    assert figures["players"] == PLAYERS
    assert figures["tickMs"] > 0 and figures["drawMs"] > 0, figures
