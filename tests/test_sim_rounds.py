"""``treasure-hunt simulate --rounds``, run for real: the per-round report, its JSON, the
ticks N rounds take, a config's own round plan, and the options' errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import PROG_ERROR, treasure_hunt

pytestmark = pytest.mark.slow


def test_rounds_report_each_round(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = treasure_hunt("simulate", "--players", "100", "--quiet", "--rounds", "3",
                         "--round-ticks", "200", "--lobby-ticks", "5", "--results-ticks", "5",
                         "--round-treasures", "20", "--round-end", "all_found",
                         "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Rounds of hunt 'hunt-0'" in proc.stdout and "never found" in proc.stdout
    report = json.loads(out.read_text())
    # --ticks defaults to what the rounds take: 3 x (5 + 200 + 5) + 1.
    assert report["summary"]["ticks"] == 631
    (hunt,) = report["rounds"]
    assert hunt["plan"]["count"] == 3 and hunt["plan"]["round"][0]["end"] == "all_found"
    rounds = hunt["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert r["players"] == 100 and len(r["winners"]) == 3
        assert r["winners"] == sorted(r["winners"], reverse=True)
        assert r["treasures"] == 20 and r["discoveries"] + r["never_found"] == 20
        # all_found: a round that ends before its 200 ticks found every treasure.
        if r["ticks"] < 200:
            assert r["never_found"] == 0 and r["last_discovery_ticks"] == r["ticks"] - 1
        assert 0 <= r["first_discovery_ticks"] <= r["last_discovery_ticks"] < r["ticks"]
        assert r["last_discovery_s"] == r["last_discovery_ticks"] / 20


def test_a_configs_round_plan_is_played(tmp_path: Path) -> None:
    config = tmp_path / "cup.toml"
    config.write_text('[[hunt]]\nname = "cup"\ntreasures = 15\nwidth = 300\nheight = 300\n'
                      '[hunt.rounds]\ncount = 2\nlobby_ticks = 3\nrunning_ticks = 40\n'
                      'results_ticks = 3\nend = "score"\ntarget_score = 12\n')
    out = tmp_path / "run.json"
    proc = treasure_hunt("simulate", "--players", "60", "--quiet", "--config", str(config),
                         "--rounds", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rounds = json.loads(out.read_text())["rounds"][0]["rounds"]
    assert len(rounds) == 2
    assert all(r["ticks"] == 40 or r["winners"][0] >= 12 for r in rounds)


@pytest.mark.parametrize(("args", "named"), [
    (("--round-ticks", "50"), "--round-ticks need --rounds N"),
    (("--rounds", "0"), "--rounds"),
    (("--rounds", "2", "--round-end", "sudden"), "--round-end must be time, all_found or"),
    (("--rounds", "2", "--round-end", "score:x"), "--round-end score:N"),
])
def test_bad_round_options_are_one_line(args: tuple[str, ...], named: str) -> None:
    proc = treasure_hunt("simulate", "--quiet", *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(PROG_ERROR) and named in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
