"""The play page's cost in a real browser: decode and apply a TICK, draw a frame.

Headless Chromium (the one the browser tests use) loads server/static/hunt.js and
play-render.js, applies a keyframe and 20 diff TICKs of 500 players all in view
(tests/test_browser_render.py builds them), then draws 120 animation frames with every
player interpolated. Each repeat gives the mean per TICK and per frame; the table shows
the median and the worst repeat against the budgets: a TICK arrives every 50 ms (20 Hz),
a frame is due every 16.7 ms (60 fps).

    python perf/bench_render.py               # 5 repeats
    python perf/bench_render.py --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

#: Per TICK and per frame, milliseconds: the period of 20 Hz ticks and of 60 fps frames.
TICK_BUDGET_MS = 50.0
FRAME_BUDGET_MS = 1000 / 60


def measure(repeats: int) -> list[dict[str, float]]:
    """``repeats`` runs of the page's measurement (tickMs, drawMs, players each)."""
    import numpy as np
    from test_browser_render import MEASURE, WELCOME, crowd
    from test_browser_support import BLANK_PAGE, launched_browser, static_server

    out = []
    with launched_browser() as browser, static_server() as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + BLANK_PAGE)
        for r in range(repeats):
            rng = np.random.default_rng(r + 1)
            keyframe = crowd(1201, rng, keyframe=True)
            diffs = [crowd(1202 + i, rng, keyframe=False) for i in range(20)]
            out.append(page.evaluate(MEASURE, [WELCOME, keyframe, diffs]))
            page.goto(url + BLANK_PAGE)  # a fresh page: no canvas left over from the last run
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n")[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="measurement runs (default 5)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    runs = measure(args.repeats)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"the play page, 500 players in view, {args.repeats} repeat(s)")
    for col in ("per", "median ms", "worst ms", "budget ms", "worst / budget"):
        table.add_column(col, justify="right")
    summary = {}
    for key, what, budget in (("tickMs", "TICK (decode + apply)", TICK_BUDGET_MS),
                              ("drawMs", "frame (draw)", FRAME_BUDGET_MS)):
        values = [r[key] for r in runs]
        med, worst = statistics.median(values), max(values)
        summary[key] = {"median": med, "worst": worst, "budget": budget}
        table.add_row(what, f"{med:.2f}", f"{worst:.2f}", f"{budget:.1f}",
                      f"{worst / budget:.2f}x")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
