"""The load test (issue 3, section 5): a real server, C clients, figures over a fixed window.

Starts ``treasure-hunt serve`` as a subprocess (sized for the run: connection
limits, a move rate limit above --rate, no journal unless --journal), spreads C
clients over --procs load-generator processes that connect at a bounded rate
(perf/loadgen.c, compiled on first use, or with --loadgen python perf/loadgen.py:
the same clients and figures), warms up, then measures over --duration seconds:

- move-to-ack latency on the client clock (send of seq -> first TICK with
  ack >= seq): p50 / p90 / p99 / max, ms, as the load generator read the TICK
  (what the pass/fail uses) and as it reached the socket (kernel timestamp:
  without the load generator's own queueing);
- the server's tick processing ("total": tick start to the last message handed
  to its socket) p50 / p99 / max from /api/stats over the window's ticks, each
  phase's p50 / p99, and the /metrics histogram's bucket bounds for p50 / p99;
- messages and bytes per second (server counters), moves received / applied /
  dropped per second; evictions, skipped TICKs, tick overruns;
- server CPU % (/proc/<pid>/stat over the window; its Trio thread apart from
  the tick's worker threads, and its time in the kernel: ``cpu_pct_system`` in the
  JSON) and the load generators' CPU %;
- TICKs per second received per client (min / mean) and missing tick numbers;
- tick fan-out: per hunt and tick, first to last client to receive it, p50 / p99.

``--hunts N`` (many small hunts): the server gets a config of N hunts named
``load-000``, ``load-001``, ... (each sized for its share of the clients), and
client i joins hunt i % N, so N hunts of C / N clients; the server's tick
timings are those of the first hunt.

``--ramp`` runs increasing C (a fresh server each) until p99 latency exceeds
--budget-ms or ticks stop reaching every client, and reports the largest C
that passed. Writes perf/results/loadtest-<stamp>.json and .png, prints a table.

    python perf/loadtest.py --clients 1000              # 1,000 x 10 moves/s, 20 Hz, 20 s
    python perf/loadtest.py --ramp                      # 250, 500, 1000, ... until it fails
    python perf/loadtest.py --clients 1000 --hunts 50   # 50 hunts of 20 clients
    python perf/loadtest.py --quick                     # 20 clients, 3 s: a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from loadtest_report import plot, profile_summary, table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
RAMP = (250, 500, 1000, 1500, 2000, 3000)


# ---------------------------------------------------------------------- processes

class Procs:
    """Every subprocess of a step; all are stopped on exit, also on error or Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lines: dict[int, queue.Queue] = {}

    def start(self, cmd: list[str], *, stdout_lines: bool, stderr: Any, **kw: Any
              ) -> subprocess.Popen:
        kw.setdefault("cwd", ROOT)
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdout_lines else subprocess.DEVNULL,
                             stdout=subprocess.PIPE if stdout_lines else subprocess.DEVNULL,
                             stderr=stderr, **kw)
        self.procs.append(p)
        if stdout_lines:
            q: queue.Queue = queue.Queue()
            self.lines[p.pid] = q
            threading.Thread(target=_pump, args=(p.stdout, q), daemon=True).start()
        return p

    def json_line(self, p: subprocess.Popen, timeout: float) -> dict:
        try:
            line = self.lines[p.pid].get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"process {p.pid} sent nothing for {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"process {p.pid} exited (status {p.wait()}) before reporting")
        return json.loads(line)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:  # loadgens exit when their stdin closes; the server on SIGTERM
            with contextlib.suppress(OSError):
                if p.stdin:
                    p.stdin.close()
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def _pump(stream: Any, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def start_server(procs: Procs, clients: int, args: argparse.Namespace, logdir: Path,
                 *, lift_limits: bool = True) -> tuple[subprocess.Popen, str, str]:
    """``treasure-hunt serve`` on free ports; returns (process, ws_url, http_url).

    ``lift_limits``: every client comes from 127.0.0.1, so the connection and per-address
    join limits are raised to fit them; False keeps the server's defaults (perf/attacks.py
    spreads its clients over source addresses instead)."""
    limit = str(clients + 64)
    # sys.argv[1]: the switch interval (0: Python's default); --switch-interval explains it.
    launcher = [PY, "-c", "import sys; s = float(sys.argv.pop(1)); s and sys.setswitchinterval(s)"
                "; from server.cli import main; sys.exit(main())", str(args.switch_interval or 0)]
    cmd = [*launcher, "serve", "--port", "0", "--http-port", "0",
           "--log-format", "json", "--tick-rate", str(args.tick_rate),
           "--moves-per-second", str(max(60.0, 3 * args.rate)),
           "--tick-threads", str(args.tick_threads)]
    if lift_limits:
        cmd += ["--max-connections", limit, "--max-connections-per-address", limit]
        if "max_players_per_address" in (args.server_src / "server" / "_config.py").read_text():
            # The per-address budgets exist only in servers since they came (--commit may
            # run an older one, to compare in the same run).
            # The rates refill the (default) bursts within milliseconds: the load
            # generator's connects come in clumps faster than their mean rate.
            rate = str(max(10.0 * clients, 2 * args.connect_rate))
            cmd += ["--max-players-per-address", limit,
                    "--hellos-per-second-per-address", rate,
                    "--connections-per-second-per-address", rate]
    if args.max_players:
        cmd += ["--max-players", str(args.max_players)]
    # perf/attacks.py passes its own arguments: one hunt, the server's groups.
    if getattr(args, "hunts", 1) > 1:
        config = logdir / "hunts.toml"
        config.write_text(hunts_config(clients, args))
        cmd += ["--config", str(config)]
    if getattr(args, "tick_groups", None) is not None:
        cmd += ["--tick-groups", str(args.tick_groups)]
    if args.send_threads:
        cmd += ["--send-threads", str(args.send_threads)]
    if args.redis:  # a scale-out node of one: the Redis path (leases, event sink) included
        cmd += ["--redis", args.redis_url, "--node-id", "loadtest"]
    cmd += ["--data-dir", str(logdir / "data") if args.journal else ""]
    if args.journal and getattr(args, "fsync", None):
        cmd += ["--fsync", args.fsync]
    log = logdir / "server.log"
    with open(log, "wb") as err:
        p = procs.start(cmd, stdout_lines=False, stderr=err, cwd=args.server_src,
                        env={**os.environ, "PYTHONPATH": str(args.server_src)})
    return p, *wait_serving(p, log)


def build_loadgen(out: Path) -> Path:
    """Compile perf/loadgen.c once per version of its source; returns the binary's path."""
    source = (HERE / "loadgen.c").read_bytes()
    binary = out / f"loadgen-c-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("loadtest: --loadgen c needs a C compiler (apt-get install gcc), "
                         "or use --loadgen python")
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(HERE / "loadgen.c"), "-lm"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"loadtest: compiling perf/loadgen.c failed:\n{done.stderr}")
    tmp.replace(binary)
    return binary


def add_loadgen_option(p: argparse.ArgumentParser) -> None:
    """``--loadgen`` (read by :func:`loadgen_command`), for every script that runs clients."""
    p.add_argument("--loadgen", choices=("c", "python"),
                   help="the load generators: perf/loadgen.c, compiled on first use (the "
                        "default when a C compiler is found; a fraction of the CPU), or "
                        "perf/loadgen.py")


def loadgen_command(args: argparse.Namespace) -> list[str]:
    """The load generator's command line up to its options (``--loadgen``, or the default)."""
    kind = args.loadgen or ("c" if shutil.which("cc") or shutil.which("gcc") else "python")
    args.loadgen = kind
    if kind == "python":
        return [PY, str(HERE / "loadgen.py")]
    return [str(build_loadgen(args.out))]


def hunt_names(args: argparse.Namespace) -> list[str]:
    """The hunts the clients join: the demo, or ``--hunts`` of the many-hunts mode."""
    if args.hunts <= 1:
        return ["demo"]
    return [f"load-{k:03d}" for k in range(args.hunts)]


def hunts_config(clients: int, args: argparse.Namespace) -> str:
    """The server's TOML config of the many-hunts mode: ``--hunts`` demo-like hunts, each
    sized for its share of the clients (a World's buffers follow its max_players)."""
    per_hunt = -(-clients // args.hunts)
    # Every client comes from 127.0.0.1 and their HELLOs reach the hunts in clumps: the
    # per-address bursts are lifted as the flags lift the rates (start_server), in the
    # servers that have them (--commit may run an older one).
    lines = []
    if "hello_burst_per_address" in (args.server_src / "server" / "_config.py").read_text():
        lines += ["[server]", f"hello_burst_per_address = {clients + 64}",
                  f"connection_burst_per_address = {clients + 64}", ""]
    lines += ["[defaults]", f"max_players = {max(64, 2 * per_hunt)}",
             f"width = {args.world_size:g}", f"height = {args.world_size:g}", ""]
    for k, name in enumerate(hunt_names(args)):
        lines += ["[[hunt]]", f'name = "{name}"', f"seed = {k}", ""]
    return "\n".join(lines)


def wait_serving(p: subprocess.Popen, log: Path) -> tuple[str, str]:
    """The (ws_url, http_url) of the server ``p`` once its log ``log`` has the 'serving' line."""
    deadline = time.monotonic() + 300  # the first run compiles the kernels (minutes when busy)
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"serving"' in line:
                info = json.loads(line)
                return info["ws_url"], info["http_url"]
        if p.poll() is not None:
            raise RuntimeError(f"the server exited ({p.returncode}):\n{tail(log)}")
        time.sleep(0.1)
    raise RuntimeError(f"no 'serving' line from the server within 300 s:\n{tail(log)}")


def server_source(commit: str | None) -> tuple[Path, str]:
    """Where the server's code comes from, and which code that is.

    None: this working tree (other people's uncommitted edits included: the
    description says "+dirty"). A commit: ``git archive`` of it under
    perf/results/src-<commit>/ (kept, so Numba's cache survives between runs).
    """
    def git(*a: str, cwd: Path = ROOT) -> str:
        return subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    if commit is None:
        dirty = git("status", "--porcelain", "--", "server", "tickengine")
        return ROOT, git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    rev = git("rev-parse", "--short", commit)
    dest = HERE / "results" / f"src-{rev}"
    if not (dest / "server").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", rev, "server", "tickengine"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest, rev


def newest_version(server_src: Path) -> int:
    """The newest protocol version the server in ``server_src`` speaks (a --commit from
    before version 2 speaks only 1)."""
    return 2 if (server_src / "server" / "protocol" / "_compact.py").exists() else 1


def protocol_version(args: argparse.Namespace) -> int:
    """The HELLO version of the load generators: --protocol-version, else the newest."""
    return args.protocol_version or newest_version(args.server_src)


def tail(path: Path, n: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# ---------------------------------------------------------------------- server probes

def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def metrics(http_url: str) -> dict[str, float]:
    """Prometheus text to {'name{labels}': value} (labels as the server writes them)."""
    out = {}
    for line in http_get(http_url + "metrics").decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process: 'all' (user + system), 'main' (its first thread) and
    'system' (the whole process's time in the kernel: its system calls)."""
    def read(path: str) -> tuple[float, float]:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    user, system = read(f"/proc/{pid}/stat")
    return {"all": user + system, "system": system,
            "main": sum(read(f"/proc/{pid}/task/{pid}/stat"))}


def syscalls(pid: int) -> dict[str, int]:
    """Read-like and write-like system calls of a process so far (``/proc/<pid>/io``'s
    ``syscr``, ``syscw``: reads, receives and the like; writes, sends); {} where
    unreadable."""
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        return {"reads": int(fields["syscr"]), "writes": int(fields["syscw"])}
    except (OSError, KeyError, ValueError):
        return {}


def machine_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds from /proc/stat: process time (user, nice, system),
    interrupt time (irq, softirq: loopback TCP work lands here) and steal (time the
    hypervisor ran something else while this virtual machine had work), all cores."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return {"procs": (v[0] + v[1] + v[2]) / CLK_TCK, "irq": (v[5] + v[6]) / CLK_TCK,
            "steal": v[7] / CLK_TCK if len(v) > 7 else 0.0}


def run_queue_seconds(pid: int) -> dict[str, float]:
    """Seconds each thread of process ``pid`` has spent runnable but waiting for a CPU
    (the run-queue delay of its ``/proc/<pid>/task/<tid>/schedstat``), by thread id."""
    delays = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            delays[stat.parent.name] = int(stat.read_text().split()[1]) * 1e-9
    return delays


def run_queue_delta(r0: dict[str, float], r1: dict[str, float]) -> float:
    """The run-queue delay (seconds) of the threads alive at the end of a window, during
    it (a thread that ended within the window takes its delay with it: summing each
    snapshot whole would count it as negative)."""
    return sum(v - r0.get(tid, 0.0) for tid, v in r1.items())


def snapshot(server: subprocess.Popen, http_url: str, stats_url: str) -> dict[str, Any]:
    return {"t": time.monotonic(), "cpu": cpu_seconds(server.pid), "machine": machine_cpu(),
            "syscalls": syscalls(server.pid),
            "run_queue": run_queue_seconds(server.pid),
            "stats": json.loads(http_get(stats_url)), "metrics": metrics(http_url)}


def gc_max_bound(m0: dict[str, float], m1: dict[str, float], gen: str) -> float | None:
    """Upper bound (ms) of the histogram bucket that holds the longest pause of collector
    generation ``gen`` during the window (None: no collection; inf: over the last bound)."""
    prefix = f'hunt_gc_pause_seconds_bucket{{generation="{gen}",le="'
    rows = sorted((float(k[len(prefix):-2]), v - m0.get(k, 0.0))
                  for k, v in m1.items() if k.startswith(prefix))
    if not rows or rows[-1][1] <= 0:
        return None
    # Cumulative buckets: the first that counts every pause of the window holds the longest.
    return next(le * 1e3 for le, n in rows if n >= rows[-1][1])


def bucket_quantile(m0: dict[str, float], m1: dict[str, float], phase: str, q: float
                    ) -> float | None:
    """Upper bound (ms) of the histogram bucket holding quantile ``q`` over the window."""
    rows = []
    for key, v in m1.items():
        if key.startswith("hunt_tick_seconds_bucket{") and f'phase="{phase}"' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            rows.append((float(le), v - m0.get(key, 0.0)))
    rows.sort()
    if not rows or rows[-1][1] <= 0:
        return None
    for le, count in rows:
        if count >= q * rows[-1][1]:
            return le * 1e3
    return None


# ---------------------------------------------------------------------- one step

def run_step(clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server, ``clients`` clients, one measuring window. Returns its figures."""
    logdir = Path(tempfile.mkdtemp(prefix="loadtest-"))
    procs_n = max(1, min(args.procs, clients))
    shares = [clients // procs_n + (k < clients % procs_n) for k in range(procs_n)]
    try:
        with Procs() as procs, contextlib.ExitStack() as stack:
            if args.redis == "auto":
                sys.path.insert(0, str(ROOT / "tests"))
                from redis_server import RedisServer

                args.redis_url = stack.enter_context(RedisServer(logdir / "redis")).url
            elif args.redis:
                args.redis_url = args.redis
            server, ws_url, http_url = start_server(procs, clients, args, logdir)
            gens = []
            for k, share in enumerate(shares):
                cmd = [*args.loadgen_cmd, "--url", ws_url, "--clients", str(share),
                       "--hunt", ",".join(hunt_names(args)),
                       "--index-offset", str(sum(shares[:k])),
                       "--rate", str(args.rate), "--name-prefix", f"lg{k}-",
                       "--connect-rate", str(args.connect_rate / procs_n),
                       "--latency-out", str(logdir / f"lat{k}.f32"), "--seed", str(k),
                       "--drain", str(args.drain),
                       "--protocol-version", str(protocol_version(args))]
                gens.append(procs.start(cmd, stdout_lines=True,
                                        stderr=open(logdir / f"loadgen{k}.log", "wb")))  # noqa: SIM115
            ramp_s = clients / args.connect_rate + 90
            ready = [procs.json_line(g, ramp_s) for g in gens]
            playing = sum(r["playing"] for r in ready)
            print(f"  {playing}/{clients} clients playing after "
                  f"{max(r['seconds'] for r in ready):.1f} s; warm-up {args.warmup:g} s",
                  file=sys.stderr)
            time.sleep(args.warmup)
            stats_url = http_url + (f"api/stats?hunt={hunt_names(args)[0]}&"
                                    if args.hunts > 1 else "api/stats?")
            s0 = snapshot(server, http_url, stats_url)
            for g in gens:
                g.stdin.write(b"start\n")
                g.stdin.flush()
            spies = start_profile(procs, server.pid, clients, args) if args.profile else []
            time.sleep(args.duration)
            for g in gens:
                g.stdin.write(b"stop\n")
                g.stdin.flush()
            s1 = snapshot(server, http_url, stats_url)
            results = [procs.json_line(g, args.drain + 60) for g in gens]
            n_ticks = int(s1["stats"]["tick"]) - int(s0["stats"]["tick"])
            stats = json.loads(http_get(stats_url + f"ticks={n_ticks + 400}"))
            read, arrival = [], []
            for k in range(procs_n):  # each file: read latencies, then arrival latencies
                both = np.fromfile(logdir / f"lat{k}.f32", np.float32)
                read.append(both[: len(both) // 2])
                arrival.append(both[len(both) // 2:])
            lat = np.concatenate(read), np.concatenate(arrival)
            out = figures(clients, args, ready, results, s0, s1, stats, lat)
            if spies:
                for spy, _ in spies:
                    spy.wait(timeout=60)
                raw = spies[0][1]
                out["profile"] = (profile_summary(raw, server.pid, args.duration)
                                  if raw.suffix == ".txt" else {})
                out["profile"]["files"] = [str(f) for _, f in spies]
            return out
    except BaseException:
        for log in sorted(logdir.glob("*.log")):
            print(f"--- {log.name}:\n{tail(log)}", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def figures(clients: int, args: argparse.Namespace, ready: list[dict], results: list[dict],
            s0: dict, s1: dict, stats: dict, lats: tuple[np.ndarray, np.ndarray]
            ) -> dict[str, Any]:
    """The step's figures. ``lats``: latencies (ms) as read, and at socket arrival."""
    lat, arrival = lats
    wall = s1["t"] - s0["t"]
    m0, m1 = s0["metrics"], s1["metrics"]

    def rate(key: str) -> float:
        return (m1.get(key, 0.0) - m0.get(key, 0.0)) / wall

    def delta(key: str) -> int:
        return int(m1.get(key, 0.0) - m0.get(key, 0.0))

    # /api/stats timings end at stats["tick"]; keep the ticks run inside the window.
    t0, t1, tnow = int(s0["stats"]["tick"]), int(s1["stats"]["tick"]), int(stats["tick"])
    timings = {}
    for phase, values in stats["timings_ms"].items():
        v = np.asarray(values, np.float64)
        first = tnow - len(v) + 1
        timings[phase] = v[max(0, t0 + 1 - first): max(0, t1 + 1 - first)]
    total = timings["total"]
    window = float(np.mean([r["window_s"] for r in results]))
    per_client = np.concatenate([np.asarray(r["ticks_per_client"], np.float64)
                                 for r in results]) / window
    lg_cpu = sum(r["cpu_s_window"] for r in results) / window * 100
    q = lambda a, p: float(np.percentile(a, p)) if len(a) else 0.0  # noqa: E731
    fanouts = [r["fanout_ms"] for r in results if "fanout_ms" in r]
    out = {
        "clients": clients, "hunts": args.hunts, "tick_groups": args.tick_groups,
        "playing": sum(r["playing"] for r in results),
        "connect_failures": merge([r["connect_failures"] for r in results]),
        "rate": args.rate, "tick_rate": args.tick_rate, "procs": len(results),
        "window_s": round(window, 3),
        "latency_ms": {"n": len(lat), "p50": q(lat, 50), "p90": q(lat, 90), "p99": q(lat, 99),
                       "max": float(lat.max()) if len(lat) else 0.0,
                       "mean": float(lat.mean()) if len(lat) else 0.0},
        "latency_arrival_ms": {"p50": q(arrival, 50), "p90": q(arrival, 90),
                               "p99": q(arrival, 99),
                               "max": float(arrival.max()) if len(arrival) else 0.0},
        "latency_hist": {"edges_ms": [0, 500], "counts": np.histogram(
            lat, bins=250, range=(0, 500))[0].tolist(), "over": int((lat > 500).sum())},
        "tick_total_series_ms": [round(float(v), 3) for v in total],
        "slowest_ticks_ms": [{k: round(float(v[i]), 3) for k, v in timings.items()}
                             for i in np.argsort(total)[::-1][:10]],
        "moves_sent": sum(r["moves_sent"] for r in results),
        "unacked": sum(r["unacked"] for r in results),
        "tick_ms": {"ticks": len(total), "p50": q(total, 50), "p99": q(total, 99),
                    "max": float(total.max()) if len(total) else 0.0,
                    "hist_p50_le": bucket_quantile(m0, m1, "total", 0.5),
                    "hist_p99_le": bucket_quantile(m0, m1, "total", 0.99)},
        "phase_ms": {k: {"p50": q(v, 50), "p99": q(v, 99)} for k, v in timings.items()},
        # Everything but the writes: prepare, hand-off, engine, visibility, frames, finish.
        "tick_but_writes_ms": {"p50": q(total - timings["send"], 50),
                               "p99": q(total - timings["send"], 99)},
        # The same and the hand-off less the time the server's threads had no CPU (other
        # processes, the load generator, had the cores): the code's own part. A server
        # without these phases (an older --commit) reports none.
        **({"tick_but_writes_minus_cpu_ms": {
            "p50": q(total - timings["send"] - timings["cpu_wait"], 50),
            "p99": q(total - timings["send"] - timings["cpu_wait"], 99)},
            "handoff_minus_cpu_ms": {
            "p50": q(timings["handoff"] - timings["handoff_cpu"], 50),
            "p99": q(timings["handoff"] - timings["handoff_cpu"], 99)}}
           if "cpu_wait" in timings else {}),
        "server": {
            "ticks_per_s": rate("hunt_ticks_total") / args.hunts,  # per hunt
            "messages_per_s": rate("hunt_messages_sent_total"),
            "bytes_per_s": rate("hunt_bytes_sent_total"),
            # Of every message (TICKs, and the few WELCOMEs), WebSocket header included.
            "bytes_per_message": delta("hunt_bytes_sent_total")
            / max(1.0, delta("hunt_messages_sent_total")),
            "moves_received_per_s": rate('hunt_moves_total{fate="received"}'),
            "moves_applied_per_s": rate('hunt_moves_total{fate="applied"}'),
            "moves_dropped_per_s": rate('hunt_moves_total{fate="dropped"}'),
            "evictions": delta("hunt_evictions_total"),
            "skipped": delta("hunt_ticks_skipped_total"),
            "overruns": delta("hunt_tick_overruns_total"),
            "cpu_pct": (s1["cpu"]["all"] - s0["cpu"]["all"]) / wall * 100,
            "cpu_pct_trio_thread": (s1["cpu"]["main"] - s0["cpu"]["main"]) / wall * 100,
            # Of cpu_pct, the time in the kernel (system calls: the sockets' reads and writes).
            "cpu_pct_system": (s1["cpu"]["system"] - s0["cpu"]["system"]) / wall * 100,
            # Read-like and write-like system calls a second (reads of the moves, writes of
            # the TICKs), where /proc/<pid>/io is readable.
            "syscalls_per_s": {k: (s1["syscalls"][k] - s0["syscalls"].get(k, 0)) / wall
                               for k in s1["syscalls"]},
            # Per second of the window, how long the server's threads were runnable but
            # had no CPU (other processes had the cores): what no code change recovers.
            "run_queue_ms_per_s": run_queue_delta(s0["run_queue"], s1["run_queue"]) / wall * 1e3,
            # The cyclic collector over the window, by generation: collections and the
            # pauses' total (ms) and largest bucket bound (ms), all threads.
            "gc": {g: {"collections": delta(f'hunt_gc_pause_seconds_count{{generation="{g}"}}'),
                       "pause_ms": round((m1.get(f'hunt_gc_pause_seconds_sum{{generation="{g}"}}',
                                                 0.0) - m0.get(
                           f'hunt_gc_pause_seconds_sum{{generation="{g}"}}', 0.0)) * 1e3, 3),
                       "max_le_ms": gc_max_bound(m0, m1, g)}
                   for g in ("0", "1", "2")},
            "evictions_total": int(stats["evictions"]), "clients_end": int(stats["clients"]),
        },
        "clients_side": {
            "ticks_per_s_min": float(per_client.min()),
            "ticks_per_s_mean": float(per_client.mean()),
            "tick_gaps": sum(r["tick_gaps"] for r in results),
            "clients_with_gaps": sum(r["clients_with_gaps"] for r in results),
            "messages_per_s": sum(r["messages"] for r in results) / window,
            "bytes_per_s": sum(r["bytes"] for r in results) / window,
            "errors": merge([r["errors"] for r in results]),
            "closes": merge([r["closes"] for r in results]),
            "send_stalls": sum(r["send_stalls"] for r in results),
            "send_lag_ms_max": max(r["send_lag_ms"]["max"] for r in results),
            # Per load generator (a hunt's clients in one process: all of them with --procs 1).
            "fanout_ms": {k: max(f[k] for f in fanouts) for k in ("p50", "p99", "max")}
            if fanouts else None,
        },
        "loadgen_cpu_pct": lg_cpu,
        "loadgen_cpu_pct_per_proc": [r["cpu_s_window"] / window * 100 for r in results],
        "loadavg_end": os.getloadavg(),
    }
    # Other processes (in cores): machine process time minus the server's and the
    # generators'. Above ~0.2 the figures of this step are suspect: rerun it.
    ours = (s1["cpu"]["all"] - s0["cpu"]["all"]) / wall + lg_cpu / 100
    out["other_cores"] = max(0.0, (s1["machine"]["procs"] - s0["machine"]["procs"]) / wall - ours)
    out["softirq_cores"] = (s1["machine"]["irq"] - s0["machine"]["irq"]) / wall
    # Invisible as processes: a window with steal ran on a slower machine than it looks.
    out["steal_cores"] = (s1["machine"]["steal"] - s0["machine"]["steal"]) / wall
    cs = out["clients_side"]
    out["every_tick"] = bool(out["playing"] == clients and cs["tick_gaps"] == 0
                             and cs["ticks_per_s_min"] >= 0.975 * args.tick_rate
                             and out["server"]["evictions"] == 0 and not cs["closes"])
    out["pass"] = bool(out["every_tick"] and out["latency_ms"]["p99"] <= args.budget_ms)
    return out


def start_profile(procs: Procs, pid: int, clients: int, args: argparse.Namespace
                  ) -> list[tuple[subprocess.Popen, Path]]:
    """py-spy over the window: raw stacks (for the shares below) and a flamegraph SVG."""
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    base = args.out / f"server-profile-{args.stamp}-{clients}"
    out = []
    fmt, suffix = ("raw", ".txt") if args.profile == "raw" else ("flamegraph", ".svg")
    # One sampler only, and --nonblocking: py-spy must not stall the server it measures.
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(args.duration)),
           "--rate", "100", "--nonblocking", "--threads", "--format", fmt,
           "-o", str(base.with_suffix(suffix))]
    if args.profile_gil:  # only the thread holding the GIL: the Python work, not the waits
        cmd.insert(-2, "--gil")
    out.append((procs.start(cmd, stdout_lines=False, stderr=subprocess.DEVNULL),
                base.with_suffix(suffix)))
    return out


def merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


# ---------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n")[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=1000, help="concurrent clients (default 1000)")
    p.add_argument("--rate", type=float, default=10.0, help="moves per second per client")
    p.add_argument("--tick-rate", type=int, default=20, help="server ticks per second")
    p.add_argument("--hunts", type=int, default=1,
                   help="hunts the clients spread over, round robin (default 1: the demo hunt)")
    p.add_argument("--world-size", type=float, default=1000.0,
                   help="with --hunts: each hunt's width and height, world units (default 1000)")
    p.add_argument("--tick-groups", type=int,
                   help="server --tick-groups (default: the server's own choice)")
    p.add_argument("--duration", type=float, default=20.0, help="measuring window, seconds")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds between ramp and window")
    p.add_argument("--procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--connect-rate", type=float, default=500.0,
                   help="new connections per second, all load generators together")
    p.add_argument("--ramp", nargs="?", const=",".join(map(str, RAMP)), metavar="C1,C2,...",
                   help=f"increasing client counts until one fails (default {RAMP})")
    p.add_argument("--budget-ms", type=float, default=100.0,
                   help="ramp: largest acceptable p99 move-to-ack latency (ms)")
    p.add_argument("--drain", type=float, default=1.0,
                   help="seconds after the window for the acks of its last moves")
    p.add_argument("--tick-threads", type=int, default=1, help="server --tick-threads")
    p.add_argument("--max-players", type=int, help="server --max-players (engine slots)")
    p.add_argument("--redis", nargs="?", const="auto", metavar="URL",
                   help="run the server as a scale-out node (serve --redis): of this Redis, or "
                        "of one started for the step (no URL; needs redis-server)")
    p.add_argument("--send-threads", type=int, choices=(1, 2),
                   help="server --send-threads (default: the server's, 2)")
    p.add_argument("--journal", action="store_true",
                   help="run the server with its journal (a temporary --data-dir)")
    p.add_argument("--fsync", help="with --journal: server --fsync (tick, off or a number of "
                   "ms; default: the server's, tick)")
    p.add_argument("--profile", nargs="?", const="raw", choices=("raw", "svg"),
                   help="py-spy the server over the window: raw stacks in --out and "
                        "function shares in the JSON (raw, the default), or a flamegraph SVG")
    p.add_argument("--profile-gil", action="store_true",
                   help="--profile samples only the thread that holds the GIL")
    p.add_argument("--switch-interval", type=float, metavar="SECONDS",
                   help="experiment: run the server with sys.setswitchinterval(SECONDS) "
                        "(Python's default 0.005): how long the tick's worker thread waits "
                        "for the GIL after each kernel while the Trio thread is busy")
    p.add_argument("--tries", type=int, default=3,
                   help="runs of a step at most while other processes use > --max-other cores")
    p.add_argument("--max-other", type=float, default=0.2,
                   help="cores other processes may use during a window before it is re-run")
    p.add_argument("--commit", help="run the server of this git commit (an export under "
                   "perf/results/), not the working tree with whatever edits it holds")
    p.add_argument("--protocol-version", type=int, choices=(1, 2),
                   help="the clients' protocol version (default: the newest the server speaks)")
    add_loadgen_option(p)
    p.add_argument("--quick", action="store_true", help="smoke test: 20 clients, 3 s")
    p.add_argument("--out", type=Path, default=HERE / "results", help="JSON and PNG go here")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.warmup, args.ramp, args.tries = 20, 3.0, 1.0, None, 1
    if args.clients < 1 or args.duration <= 0 or args.procs < 1 or args.hunts < 1:
        p.error("--clients, --duration, --procs and --hunts must be positive")
    if args.fsync and not args.journal:
        p.error("--fsync applies to the journal: give --journal too")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(c) for c in args.ramp.split(",")] if args.ramp else [args.clients]
    stamp = args.stamp = time.strftime("%Y%m%d-%H%M%S")
    args.server_src, server_code = server_source(args.commit)
    args.out.mkdir(parents=True, exist_ok=True)
    args.loadgen_cmd = loadgen_command(args)
    steps: list[dict[str, Any]] = []
    started = time.time()
    for c in counts:
        load = os.getloadavg()
        print(f"step: {c} clients in {args.hunts} hunt(s) x {args.rate:g} moves/s, "
              f"{args.tick_rate} Hz, "
              f"{args.procs} load generator(s); loadavg before {load[0]:.2f}", file=sys.stderr)
        tries = []
        for _ in range(args.tries):  # a step disturbed by other processes is run again
            step = run_step(c, args)
            step["loadavg_before"] = load
            tries.append(step)
            if step["other_cores"] <= args.max_other:
                break
            print(f"  other processes used {step['other_cores']:.2f} cores: trying again",
                  file=sys.stderr)
            load = os.getloadavg()
        step = min(tries, key=lambda t: t["other_cores"])  # the quietest, never the fastest
        step["tries"] = len(tries)
        step["other_cores_of_tries"] = [round(t["other_cores"], 3) for t in tries]
        step["disturbed"] = step["other_cores"] > args.max_other
        steps.append(step)
        # The ramp ends at a failure, unless other processes disturbed it: then one more
        # step decides (two failures in a row end it anyway).
        if args.ramp and not step["pass"] and (
                not step["disturbed"] or (len(steps) > 1 and not steps[-2]["pass"])):
            break
    passing = [s["clients"] for s in steps if s["pass"]]
    report = {"stamp": stamp, "argv": sys.argv[1:], "server_code": server_code,
              "loadgen": args.loadgen,
              "protocol_version": protocol_version(args),
              "seconds": round(time.time() - started, 1),
              "budget_ms": args.budget_ms, "steps": steps,
              "largest_passing": max(passing) if passing else None}
    path = args.out / f"loadtest-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    plot(steps, path.with_suffix(".png"), args.budget_ms)
    table(steps, f"load test {stamp} (latency and tick in ms; pass: every tick to every "
                 f"client and p99 <= {args.budget_ms:g} ms)")
    for s in steps:
        if "profile" in s:
            prof = s["profile"]
            print(f"profile at {s['clients']} clients (% of one core): "
                  f"{prof.get('pct_of_core_by_thread')}; files {prof['files']}")
            for name, pct in prof.get("self_pct_of_core", [])[:15]:
                print(f"  self {pct:5.1f}%  {name}")
    if args.ramp:
        print(f"largest passing C: {report['largest_passing']}")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    print(json.dumps({"json": str(path)}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
