"""pyproject.toml declares what the code imports: every third-party module imported by
tickengine/ and server/ is a dependency (not something that only happens to arrive with
another one, as wsproto and h11 do with trio-websocket), perf/ and tests/ add their extra's,
and nothing is declared that nothing imports (but for the tools named below)."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Declared but never imported, on purpose: tools and plugins run by name, and what the
#: tests need in a subprocess (``simulate --plot``, the benchmarks' PNGs).
NOT_IMPORTED = {
    "test": {"ruff", "pytest-trio", "pytest-xdist", "matplotlib"},
    "plot": {"matplotlib"},  # imported by server/ when --plot is given (an extra of server/)
    "perf": {"py-spy"},  # run by name: perf/loadtest.py --profile
}


def declared(extra: str | None = None) -> set[str]:
    reqs = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def third_party_imports(*folders: str) -> set[str]:
    """Distributions (canonical names) of the modules imported by the .py files of
    ``folders``: absolute imports that are neither the standard library nor this project's
    own packages and scripts."""
    files = [f for folder in folders for f in sorted((ROOT / folder).rglob("*.py"))]
    local = {"tickengine", "server"} | {
        f.stem for folder in ("tests", "perf") for f in (ROOT / folder).glob("*.py")}
    modules: set[str] = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    modules -= set(sys.stdlib_module_names) | local
    owners = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in owners)
    assert not missing, f"imported but not installed in this environment: {missing}"
    return {canonicalize_name(d) for m in modules for d in owners[m]}


def test_the_packages_declare_what_they_import() -> None:
    imports = third_party_imports("tickengine", "server")
    plot = declared("plot")
    assert imports - declared() - plot == set(), "declare these in [project] dependencies"
    assert declared() - imports == set(), "declared dependencies that nothing imports"
    assert plot <= imports


def test_tickengine_needs_numpy_and_numba_only() -> None:
    assert third_party_imports("tickengine") == {"numpy", "numba"}


def test_tests_and_benchmarks_declare_what_they_import() -> None:
    base = declared() | declared("plot")
    for folder, extra in (("tests", "test"), ("perf", "perf")):
        imports = third_party_imports(folder)
        assert imports - base - declared(extra) == set(), f"declare these in the {extra!r} extra"
        unused = declared(extra) - imports - NOT_IMPORTED.get(extra, set())
        assert unused == set(), f"the {extra!r} extra declares what {folder}/ never imports"


def test_plot_without_matplotlib_names_the_install_command(tmp_path: Path) -> None:
    """--plot in an install without the extra: one line that says what to install, status 2,
    before any kernel is compiled or tick run."""
    hide = ("import sys; sys.modules['matplotlib'] = None; from server.cli import main; "
            "sys.exit(main())")
    proc = subprocess.run(
        [sys.executable, "-c", hide, "simulate", "--ticks", "5", "--plot",
         str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("treasure-hunt simulate: error: --plot needs matplotlib")
    assert f"{sys.executable} -m pip install -e '.[plot]'" in line
    assert not (tmp_path / "x.png").exists()
