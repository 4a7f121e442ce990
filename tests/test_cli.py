"""The installed ``treasure-hunt`` console script, run for real in subprocesses.

Small runs (200 bots, 50 ticks) check the report on stdout, the --json and --plot
files, determinism by seed, --config, and that every bad option is one line on
stderr with exit status 2. The first run may compile the kernels (~15 s); the
rest load them from Numba's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickengine import PHASES, load_config

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "treasure-hunt"
FOREST = Path(__file__).resolve().parent.parent / "examples" / "forest.toml"
SMALL = ("--players", "200", "--ticks", "50", "--quiet")
PROG_ERROR = "treasure-hunt simulate: error: "
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def treasure_hunt(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    # A wide report (no wrapped cells) and no colours, whatever the caller's terminal.
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def simulate_json(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp / "run.json"
    proc = treasure_hunt("simulate", *SMALL, *args, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    """One run with --json and --plot, shared by the tests that read its output."""
    tmp = tmp_path_factory.mktemp("first")
    proc, report = simulate_json(tmp, "--seed", "5", "--plot", str(tmp / "run.png"))
    return proc, report, tmp / "run.png"


def test_report_on_stdout(first_run) -> None:
    proc, report, _ = first_run
    out = proc.stdout
    assert report["summary"]["state_hash"] in out
    for phase in (*PHASES, "bots", "total"):
        assert phase in out
    for label in ("State hash", "Ticks per second", "Real-time factor", "Discoveries", "Top 10"):
        assert label in out
    assert "Traceback" not in proc.stderr
    assert "JIT warm-up:" in proc.stderr
    assert "Wrote" in out and "run.json" in out and "run.png" in out


def test_json_report(first_run) -> None:
    _, report, _ = first_run
    assert report["schema"] == "treasure-hunt/simulate/1"
    assert report["interrupted"] is False
    s = report["summary"]
    assert s["ticks"] == s["ticks_requested"] == 50
    assert s["players"] == 200 and s["hunts"] == 1 and s["treasures"] == 20
    assert s["tick_rate"] == 20 and s["simulated_s"] == 2.5
    assert s["width"] == s["height"] == 283.0  # sqrt(200 * 400), rounded
    for key in ("wall_s", "ticks_per_s", "realtime_factor", "warm_up_s", "setup_s",
                "discoveries_per_simulated_s"):
        assert isinstance(s[key], float) and s[key] >= 0, key
    for key in ("discoveries", "value_found", "respawns", "dropped_events", "threads", "seed"):
        assert isinstance(s[key], int) and not isinstance(s[key], bool), key
    assert isinstance(s["state_hash"], str) and len(s["state_hash"]) == 32
    assert s["bots"] == {"hunter": 1.0}

    assert list(report["phases_ms"]) == [*PHASES, "bots", "total"]
    for name, st in report["phases_ms"].items():
        assert set(st) == {"p50", "p99", "max", "mean"}
        assert all(isinstance(v, float) and v >= 0 for v in st.values()), name
        assert st["p50"] <= st["p99"] <= st["max"]
    assert report["visibility"] is None

    (hunt,) = report["hunts"]
    assert hunt["name"] == "hunt-0" and hunt["params"]["seed"] == 5
    assert hunt["discoveries"] == s["discoveries"] and hunt["bots"] == {"hunter": 200}
    board = hunt["leaderboard"]
    assert 0 < len(board) <= 10
    assert [row["rank"] for row in board] == list(range(1, len(board) + 1))
    scores = [row["score"] for row in board]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert all(row["player_id"] & 0xFFFFFFFF == row["slot"] for row in board)
    # Leaders are named by policy and number in the hunt, not by 64-bit player ids.
    assert all(row["policy"] == "hunter" and 0 <= row["bot"] < 200 for row in board)
    assert all(row["name"] == f"hunter-{row['bot']}" for row in board)


def test_leaders_are_named_by_policy_and_number(first_run, tmp_path: Path) -> None:
    proc, report, _ = first_run
    for row in report["hunts"][0]["leaderboard"]:
        assert f" {row['name']} " in proc.stdout
        assert str(row["player_id"]) not in proc.stdout
    # With two policies the hunters join first, then the wanderers: bot 50 is a random bot.
    _, mixed = simulate_json(tmp_path, "--seed", "5", "--bots", "hunter=0.25,random=0.75")
    (hunt,) = mixed["hunts"]
    assert {row["policy"] for row in hunt["leaderboard"]} <= {"hunter", "random"}
    assert all((row["bot"] < 50) == (row["policy"] == "hunter") for row in hunt["leaderboard"])


def test_plot_is_a_png(first_run) -> None:
    _, _, png = first_run
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000


def test_same_seed_same_hash_whatever_the_threads(first_run, tmp_path: Path) -> None:
    _, report, _ = first_run
    _, again = simulate_json(tmp_path, "--seed", "5", "--threads", "1")
    assert again["summary"]["threads"] == 1
    assert again["summary"]["state_hash"] == report["summary"]["state_hash"]
    assert again["hunts"][0]["leaderboard"] == report["hunts"][0]["leaderboard"]


def test_other_seed_other_hash(first_run, tmp_path: Path) -> None:
    _, report, _ = first_run
    _, other = simulate_json(tmp_path, "--seed", "6")
    assert other["summary"]["state_hash"] != report["summary"]["state_hash"]


def test_config_file_with_overrides(tmp_path: Path) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        '[defaults]\nwidth = 400\nheight = 300\n\n'
        '[[hunt]]\nname = "north"\nseed = 3\ntreasures = 30\n\n'
        '[[hunt]]\nname = "south"\nseed = 4\nhint_radius = 60.0\n'
    )
    proc, report = simulate_json(tmp_path, "--config", str(config), "--treasures", "7",
                                 "--bots", "hunter=0.75,random=0.25")
    assert "north" in proc.stdout and "south" in proc.stdout
    north, south = report["hunts"]
    assert (north["name"], south["name"]) == ("north", "south")
    # --treasures overrides both tables; the rest comes from the file.
    assert north["params"]["treasures"] == south["params"]["treasures"] == 7
    assert north["params"]["width"] == 400.0 and south["params"]["height"] == 300.0
    assert (north["params"]["seed"], south["params"]["seed"]) == (3, 4)
    assert south["params"]["hint_radius"] == 60.0
    assert north["bots"] == {"hunter": 150, "random": 50}
    assert report["summary"]["players"] == 400


def test_example_config_with_visibility(tmp_path: Path) -> None:
    assert [h.name for h in load_config(FOREST).hunts] == ["forest", "lake"]
    proc, report = simulate_json(tmp_path, "--config", str(FOREST), "--visibility", "20")
    assert [h["name"] for h in report["hunts"]] == ["forest", "lake"]
    assert "visibility" in report["phases_ms"]
    assert report["visibility"]["observers"] == 20
    assert report["visibility"]["truncated"] == 0
    assert "visibility" in proc.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--players", "-5"), "--players must be an integer in [1, 100000000], got '-5'"),
        (("--players", "abc"), "--players must be an integer"),
        (("--ticks", "1.5"), "--ticks must be an integer"),
        (("--tick-rate", "0"), "--tick-rate"),
        (("--width", "wide"), "--width must be a number of world units"),
        (("--bots", "hunter=0.5,sniper=0.5"), "unknown policy 'sniper'"),
        (("--bots", "hunter=0.5,random=0.4"), "sum to 0.9"),
        (("--bots", "hunter=lots"), "bad fraction 'lots'"),
        (("--threads", "0"), "--threads must be an integer in [1, "),
        (("--plot", "out.jpg"), "--plot must name a .png file"),
        (("--config", "no/such/file.toml"), "--config: no/such/file.toml: cannot read"),
        (("--frobnicate",), "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_option_is_one_line_and_status_2(args: tuple[str, ...], named: str) -> None:
    proc = treasure_hunt("simulate", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(PROG_ERROR)
    assert named in lines[0]


@pytest.mark.parametrize("option", ["--plot", "--json"])
def test_an_output_file_that_cannot_be_written_is_status_1(option: str, tmp_path: Path) -> None:
    """--help's exit status 1, whether the folder is missing (found before the run, nothing
    is computed) or the write fails at the end (the report is still printed)."""
    missing = tmp_path / "no" / "such" / "run.png"
    proc = treasure_hunt("simulate", *SMALL, option, str(missing))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(PROG_ERROR + f"{option}: cannot write ")
    assert "does not exist (create it first)" in line
    # A file every write to fails (ENOSPC), even for root: the run happens, the write fails.
    full = tmp_path / "full.png"
    full.symlink_to("/dev/full")
    proc = treasure_hunt("simulate", *SMALL, option, str(full))
    assert proc.returncode == 1, proc.stderr
    assert "State hash" in proc.stdout and "Wrote" not in proc.stdout
    assert f"{PROG_ERROR}cannot write {str(full)!r}: No space left on device" in proc.stderr
    assert "1 an output file cannot be written" in treasure_hunt("simulate", "--help").stdout


def test_unknown_toml_key_is_one_line_and_status_2(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text('[[hunt]]\nname = "x"\ntresures = 5\n')
    proc = treasure_hunt("simulate", "--config", str(config))
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith(PROG_ERROR + "--config: ")
    assert "unknown key(s) tresures" in line and str(config) in line


def test_help() -> None:
    top = treasure_hunt("--help")
    assert top.returncode == 0
    assert "simulate" in top.stdout and "examples:" in top.stdout
    sub = treasure_hunt("simulate", "--help")
    assert sub.returncode == 0
    for option in ("--config", "--hunts", "--players", "--treasures", "--width", "--height",
                   "--ticks", "--tick-rate", "--bots", "--seed", "--threads", "--visibility",
                   "--json", "--plot", "--quiet", "--no-color", "world units", "examples:"):
        assert option in sub.stdout, option


def test_python_dash_m_server() -> None:
    proc = subprocess.run([sys.executable, "-m", "server", "simulate", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: treasure-hunt simulate")


def test_no_command_shows_help_and_fails() -> None:
    proc = treasure_hunt()
    assert proc.returncode == 2
    assert "simulate" in proc.stderr


def test_cli_policy_names_are_the_engines() -> None:
    from server.tools.sim_plan import POLICY_NAMES
    from tickengine import BOT_POLICIES

    assert set(POLICY_NAMES) == set(BOT_POLICIES)
