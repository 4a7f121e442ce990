"""Issue 15 section 3: deploy/'s dashboard and alerts against a real Prometheus.

Debian's ``prometheus`` (installed by scripts/install-test-deps.sh, like redis-server)
scrapes two real servers under bots every second: a single ``treasure-hunt serve`` and a
scale-out node (``serve --redis`` with a real redis-server). Then every PromQL expression
of deploy/grafana-dashboard.json and deploy/alerts.yml must return data, so a metric
renamed in the server fails here rather than in an operator's dashboard. ``promtool``
checks the config and the rules. Every process is killed at the end, whatever happens.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cluster_support import Node
from redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CLI = [sys.executable, "-m", "server"]
INSTALL_HINT = ("{} is not installed: run 'sh scripts/install-test-deps.sh' (it apt-installs "
                "Debian's prometheus, which ships promtool), then run the tests again")
#: Grafana's variables, as the test queries them: every server, every hunt, a 15 s window.
GRAFANA_VARS = {"$__rate_interval": "15s", "$instance": ".*", "$hunt": ".*"}


def tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise AssertionError(INSTALL_HINT.format(name))
    return exe


def test_promtool_checks_the_shipped_config_and_rules() -> None:
    promtool = tool("promtool")
    for args in (["check", "config", str(DEPLOY / "prometheus.yml")],
                 ["check", "rules", str(DEPLOY / "alerts.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_a_grafana_dashboard_of_prometheus_panels() -> None:
    """What Grafana's import needs: unique panel ids, panels inside the 24-column grid,
    every query panel on the dashboard's Prometheus data source variable."""
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance", "hunt"} <= variables
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def dashboard_queries() -> dict[str, str]:
    """Every expression of the dashboard (panels and variables), Grafana variables filled in."""
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    out = {}
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out[f"panel {panel['title']!r} {t['refId']}"] = t["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert m, var["query"]
            out[f"variable {var['name']}"] = m.group(1)
    for key, expr in out.items():
        for name, value in GRAFANA_VARS.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{key}: a Grafana variable the test does not know: {expr}"
        out[key] = expr
    return out


def alert_queries() -> dict[str, str]:
    """Each alert's expression with its final comparison made ``bool``: 0 or 1 for every
    series the measure has, so an empty answer means the measure itself has no data."""
    out = {}
    for line in (DEPLOY / "alerts.yml").read_text().splitlines():
        m = re.match(r"\s+- alert: (\w+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"\s+expr: (.+)", line)
        if m:
            out[f"alert {name}"] = with_bool(m.group(1))
    assert len(out) >= 9
    return out


def with_bool(expr: str) -> str:
    """``A > B`` -> ``A > bool B`` for the last comparison outside parentheses."""
    depth, at = 0, None
    for m in re.finditer(r"[()]|==|!=|>=|<=|>|<", expr):
        tok = m.group(0)
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if tok not in "()" and depth == 0:
            at = m.end()
    assert at is not None, f"no comparison in {expr}"
    return f"{expr[:at]} bool{expr[at:]}"


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        # The shipped job and rules, at a 1 s scrape and evaluation so the test is short.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "alerts.yml")],
            "scrape_configs": [{"job_name": "treasure-hunt", "metrics_path": "/metrics",
                                "static_configs": [{"targets": targets}]}]}))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [tool("prometheus"), f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=log)

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_single_server(workdir: Path) -> tuple[subprocess.Popen, str, int]:
    """``treasure-hunt serve`` (one process, no Redis): (process, ws url, http port)."""
    log_path = workdir / "single.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--http-port", "0",
                                 "--data-dir", str(workdir / "single-data"),
                                 "--log-format", "json"],
                                stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"serving"' in line:
                e = json.loads(line)
                return proc, e["ws_url"], int(e["http_url"].rsplit(":", 1)[1].strip("/"))
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"serve did not start:\n{log_path.read_text()}")


def bots(url: str, hunt: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "bots", "--url", url, "--hunt", hunt, "--count", str(count),
                             "--moves-per-second", "10", "--duration", "90", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def wait_for(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s")


def test_dashboard_and_alerts_return_data_from_live_servers(tmp_path: Path) -> None:
    procs: list[subprocess.Popen] = []
    redis = RedisServer(tmp_path / "redis")
    node = Node("n1", "", tmp_path / "cluster-data", tmp_path)
    prom = None
    try:
        redis.start()
        node = Node("n1", redis.url, tmp_path / "cluster-data", tmp_path)
        node.start()
        single, single_ws, single_http = start_single_server(tmp_path)
        procs.append(single)
        procs += [bots(single_ws, "demo", 20), bots(node.ws_url, "alpha", 20)]
        prom = Prometheus(tmp_path, [f"127.0.0.1:{single_http}", f"127.0.0.1:{node.http}"])
        prom.wait_ready(60)
        # Both servers scraped, bots playing on both, and enough samples for rate().
        wait_for("two healthy targets with 10 s of samples", lambda: len(prom.query(
            'count_over_time(up{job="treasure-hunt"}[1m]) >= 10 and up == 1')) == 2, 90)
        wait_for("moves on both servers", lambda: len(prom.query(
            'rate(hunt_moves_total{fate="applied"}[15s]) > 0')) == 2, 60)
        wait_for("rules evaluated", lambda: all(
            r.get("lastEvaluation", "").startswith("20")
            for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]), 30)

        queries = {**dashboard_queries(), **alert_queries()}
        empty = {key: expr for key, expr in queries.items() if not prom.query(expr)}
        assert not empty, "queries without data from the live servers:\n" + "\n".join(
            f"  {k}: {e}" for k, e in empty.items())
        rules = [r for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert len(rules) == len(alert_queries())
        assert all(r["health"] == "ok" for r in rules), rules
        # The per-hunt series name each server's hunts.
        hunts = {(r["metric"]["instance"], r["metric"]["hunt"])
                 for r in prom.query("hunt_hunt_clients > 0")}
        assert (f"127.0.0.1:{single_http}", "demo") in hunts
        assert (f"127.0.0.1:{node.http}", "alpha") in hunts
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if prom is not None:
            prom.stop()
        node.stop()
        redis.stop()
