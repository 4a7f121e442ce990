"""The commands of README.md and docs/*.md run as written from a clone: every fenced ``sh``
block is split into simple commands, each program must exist (the project's own spelled
``.venv/bin/...``, the rest on PATH), ``treasure-hunt`` command lines must parse with the
real argument parser, and a script's flags must appear in its ``--help``. The README's test
command is the one CI runs (.ci/run)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from server.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: What the venv provides: spelled ``.venv/bin/NAME`` in the pages, never bare.
VENV_PROGRAMS = {"treasure-hunt", "python", "pip", "pytest", "ruff"}
#: Shell builtins and keywords the pages use (no program to find).
BUILTINS = {"kill", "cd", "wait", ".", "export"}
OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
OPTIONAL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"]
EXTRAS = set(OPTIONAL)
#: Programs an extra installs into the venv (``py-spy`` with ``perf``): by distribution name.
EXTRA_PROGRAMS = {re.match(r"[\w.-]+", req).group(0): extra
                  for extra, reqs in OPTIONAL.items() for req in reqs}


def fenced_blocks(page: Path) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the opening fence, lines) of every fenced block."""
    blocks, current = [], None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current = (line[3:].strip(), number, [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def simple_commands(lines: list[str]) -> list[list[str]]:
    """The simple commands of shell lines (continuations joined, comments and operators
    dropped), with a ``for`` loop's variable replaced by its first value."""
    commands: list[list[str]] = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands.append([])
        for token in lexer:
            if token in OPERATORS:
                commands.append([])
            else:
                commands[-1].append(token)
    variables: dict[str, str] = {}
    out = []
    for words in filter(None, commands):
        if words[0] == "for" and len(words) >= 4 and words[2] == "in":
            variables[words[1]] = words[3]
            continue
        if words[0] in ("do", "then", "else"):
            words = words[1:]
        if not words or words[0] in ("done", "fi"):
            continue
        for name, value in variables.items():
            words = [re.sub(rf"\$(\{{{name}\}}|{name}\b)", value, w) for w in words]
        out.append(words)
    return out


def page_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for lang, line, lines in fenced_blocks(page):
            if lang in ("sh", "bash", "shell"):
                found += [(f"{page.name}:{line}", words) for words in simple_commands(lines)]
    return found


COMMANDS = page_commands()


@cache
def script_help(script: str) -> str:
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, f"{script} --help failed: {proc.stderr}"
    return proc.stdout


def check_treasure_hunt(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        build_parser().parse_args(args)
    except SystemExit as exit_:
        err = capsys.readouterr().err
        assert exit_.code == 0, f"treasure-hunt {shlex.join(args)}: {err.strip()}"


def check_python(args: list[str]) -> None:
    script, *flags = args
    assert (ROOT / script).is_file(), f"no script {script}"
    help_text = script_help(script)
    for flag in flags:
        if flag.startswith("--"):
            name = flag.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", help_text), (
                f"{script} does not accept {name} (not in its --help)")


def check_pip(args: list[str]) -> None:
    assert args[0] == "install"
    for target in (a for a in args if a.startswith(".")):
        extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
        assert extras, f"pip install of {target!r}: install the clone ('.' or '.[extra]')"
        unknown = set(filter(None, (extras.group(1) or "").split(","))) - EXTRAS
        assert not unknown, f"no extra {unknown} in pyproject.toml (extras: {sorted(EXTRAS)})"


@pytest.mark.parametrize(("where", "words"), COMMANDS,
                         ids=[f"{w}:{' '.join(c)[:40]}" for w, c in COMMANDS])
def test_every_fenced_command_runs_as_written(where: str, words: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]  # environment assignments
    program, *args = words
    assert program not in VENV_PROGRAMS, (
        f"{where}: spell {program!r} as .venv/bin/{program} (the README's convention: the "
        "system python has no numba)")
    if program.startswith(".venv/bin/"):
        name = program.removeprefix(".venv/bin/")
        assert (Path(sys.executable).parent / name).exists() or name in EXTRA_PROGRAMS, (
            f"{where}: the venv has no {name}, and no extra in pyproject.toml installs it")
        if name == "treasure-hunt":
            check_treasure_hunt(args, capsys)
        elif name == "python":
            check_python(args)
        elif name == "pip":
            check_pip(args)
    elif program == "sh":
        assert (ROOT / args[0]).is_file(), f"{where}: no script {args[0]}"
    elif program not in BUILTINS:
        assert shutil.which(program), f"{where}: {program!r} is not installed"


def test_every_block_with_commands_is_marked_sh() -> None:
    """A command in an unmarked block would escape the test above."""
    starts = (*(f"{p} " for p in VENV_PROGRAMS), ".venv/bin/", "curl ", "redis-server ")
    for page in PAGES:
        for lang, line, lines in fenced_blocks(page):
            if lang == "":  # output is marked ```text
                bad = [ln for ln in lines if ln.startswith(starts)]
                assert not bad, f"{page.name}:{line}: mark the block ```sh: {bad[0]}"


def test_the_readme_keeps_its_two_set_up_commands_and_ci_runs_the_second() -> None:
    lines = next(lines for lang, _, lines in fenced_blocks(ROOT / "README.md") if lang == "sh")
    serve, test = (ln for ln in lines if ln and not ln.startswith("#"))
    assert serve == ("python3 -m venv .venv && .venv/bin/pip install -q -e . && "
                     ".venv/bin/treasure-hunt serve")
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln and not ln.startswith("#")]
    assert test == ci[-1]


def test_the_cluster_recipe_keeps_redis_local_and_its_files_ignored() -> None:
    redis = next(words for _, words in COMMANDS if words[0] == "redis-server")
    assert redis[redis.index("--bind") + 1] == "127.0.0.1"
    folder = redis[redis.index("--dir") + 1]
    mkdir = next(words for _, words in COMMANDS if words[0] == "mkdir")
    assert folder in mkdir
    data_dir = next(words for _, words in COMMANDS if "--data-dir" in words)
    for path in (f"{folder}/appendonlydir", data_dir[data_dir.index("--data-dir") + 1],
                 "appendonlydir/", "dump.rdb"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"git does not ignore {path}"
