"""The attacks of tests/test_adversarial.py, longer, against 200 good clients (issue 11).

Starts ``treasure-hunt serve`` with its default limits (perf/loadtest.py's
``start_server``), and one load generator (perf/loadgen.c, or perf/loadgen.py with
``--loadgen python``) whose good clients
play throughout, spread over source addresses 127.0.1.1, 127.0.1.2, ... (25 per
address: players behind a NAT). Then, one window per phase: a quiet baseline,
then each attack, run from this process's threads on other loopback addresses
while the window lasts:

- ``ping_flood``: connections sending pings without reading, reopened when cut;
- ``fragment_flood``: one fragment, then endless empty continuations;
- ``byte_flood``: valid MOVES frames, megabytes of them, after WELCOME;
- ``slow_frames``: frames announcing a megabyte, and HELLOs dribbled a byte at a time
  (slowloris);
- ``hello_churn``: HELLO then disconnect, as fast as answers come, from one address;
- ``conn_storm``: thousands of idle sockets on each port, reopened when closed;
- ``stats_hammer``: concurrent ``GET /api/stats?ticks=8192``.

Per phase it prints the good clients' move-to-ack p50 / p99 (ms, as read) and
ticks per second per client, the p99 against the baseline's (target: at most
1.5x), tick numbers missed (target: 0), what the server's limits counted
(``hunt_limit_hits_total``) and the most players one address held
(``/api/stats``; target: at most ``max_players_per_address``). Writes
perf/results/attacks-<stamp>.json.

    python perf/attacks.py                    # 200 good clients, 15 s per phase
    python perf/attacks.py --quick            # 20 clients, 2 s per phase: a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadgen import client_frame, hello_frame
from loadtest import (
    Procs,
    add_loadgen_option,
    http_get,
    loadgen_command,
    metrics,
    server_source,
    start_server,
    tail,
)

HERE = Path(__file__).resolve().parent
ATTACKS = ("ping_flood", "fragment_flood", "byte_flood", "slow_frames", "hello_churn",
           "conn_storm", "stats_hammer")
#: The server's defaults that the targets refer to (server/_config.py).
MAX_PLAYERS_PER_ADDRESS = 64


# ---------------------------------------------------------------------- attackers

class Attack:
    """Threads that attack until :meth:`stop`; ``counts`` says what the attacker saw."""

    def __init__(self, ws: tuple[str, int], http: tuple[str, int], source: str) -> None:
        self.ws, self.http, self.source = ws, http, source
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def spawn(self, fn: Callable[[], None], n: int = 1) -> None:
        for _ in range(n):
            t = threading.Thread(target=self._loop, args=(fn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _loop(self, fn: Callable[[], None]) -> None:
        # The attackers share the server's cores here (a real one would not): a pause
        # after each refusal keeps them from taking a core of their own to spin.
        while not self.stopping.is_set():
            try:
                fn()
            except OSError:
                self.count("socket_errors")
                time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=10)

    def sock(self, addr: tuple[str, int], source: str | None = None) -> socket.socket:
        """A connected socket from ``source`` (default: the attack's address)."""
        s = socket.socket()
        s.settimeout(5)
        s.bind((source or self.source, 0))
        s.connect(addr)
        return s

    def upgraded(self, hello: bool = True, source: str | None = None) -> socket.socket:
        """A socket past the WebSocket upgrade (and its HELLO sent)."""
        s = self.sock(self.ws, source)
        host = f"{self.ws[0]}:{self.ws[1]}"
        s.sendall((f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        got = b""
        while b"\r\n\r\n" not in got:
            data = s.recv(4096)
            if not data:
                s.close()
                raise ConnectionError("closed during the upgrade")
            got += data
        if not got.startswith(b"HTTP/1.1 101"):
            # Refused (503: a connection budget): the attacker tries again 10 ms later.
            s.close()
            self.count("refused")
            raise ConnectionRefusedError(got.split(b"\r\n", 1)[0].decode())
        if hello:
            s.sendall(hello_frame("attacker", "demo"))
        return s

    def flood(self, chunk: bytes, hello: bool = False, source: str | None = None) -> None:
        """One connection writing ``chunk`` without reading until the server ends it; with
        ``hello``, from its WELCOME on (else before HELLO: the budgets hold there too)."""
        s = self.upgraded(hello, source)
        try:
            if hello:
                s.recv(4096)  # WELCOME (a TICK may follow; flood from here)
            while not self.stopping.is_set():
                s.sendall(chunk)
        except OSError:
            self.count("connections_cut")
        finally:
            s.close()


def ping_flood(a: Attack) -> None:
    a.spawn(lambda: a.flood(client_frame(b"x" * 100, 0x9) * 40), 4)


def fragment_flood(a: Attack) -> None:
    first = client_frame(b"\x02", 0x2)
    first = bytes((first[0] & 0x7F,)) + first[1:]  # FIN clear: a message begins
    empty = client_frame(b"", 0x0)
    empty = bytes((empty[0] & 0x7F,)) + empty[1:]
    a.spawn(lambda: a.flood(first + empty * 400), 4)


def byte_flood(a: Attack) -> None:
    body = bytearray(struct.pack("<BBH", 0x02, 0, 64))
    for i in range(64):
        body += struct.pack("<qff", i + 1, 1.0, 0.0)
    # Valid moves need a player: each connection joins, floods, is cut (the join budgets of
    # its one address soon refuse it the HELLO instead).
    a.spawn(lambda: a.flood(client_frame(bytes(body)) * 32, hello=True), 4)


def slow_frames(a: Attack) -> None:
    def oversized() -> None:
        s = a.upgraded()
        try:
            s.sendall(b"\x82\xff" + struct.pack("!Q", 1 << 20) + os.urandom(4))
            a.count("answered" if s.recv(4096) else "closed")
        finally:
            s.close()
        time.sleep(0.01)

    def slowloris() -> None:
        s = a.upgraded(hello=False)
        frame = hello_frame("slow", "demo")
        try:
            for b in frame:
                if a.stopping.is_set():
                    return
                s.sendall(bytes((b,)))
                time.sleep(0.5)
        except OSError:
            a.count("slowloris_cut")
        finally:
            s.close()

    a.spawn(oversized, 2)
    a.spawn(slowloris, 50)


def hello_churn(a: Attack) -> None:
    def churn() -> None:
        s = a.upgraded()
        try:
            data = s.recv(4096)
            at = 4 if len(data) > 1 and data[1] & 0x7F == 126 else 2  # the frame header
            kind = data[at:at + 1]
            a.count({b"\x81": "welcome", b"\x82": "refused"}.get(kind, "other"))
        finally:
            s.close()

    a.spawn(churn, 2)


def conn_storm(a: Attack, per_port: int = 2000) -> None:
    def hold(addr: tuple[str, int]) -> None:
        socks: list[socket.socket] = []
        try:
            while len(socks) < per_port and not a.stopping.is_set():
                try:
                    socks.append(a.sock(addr))
                except OSError:
                    a.count("connect_errors")
                    time.sleep(0.01)
            a.count("held", len(socks))
            a.stopping.wait()
        finally:
            for s in socks:
                s.close()

    for addr in (a.ws, a.http):
        t = threading.Thread(target=hold, args=(addr,), daemon=True)
        t.start()
        a.threads.append(t)


def stats_hammer(a: Attack) -> None:
    def get() -> None:
        s = a.sock(a.http)
        try:
            s.sendall(b"GET /api/stats?ticks=8192 HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while data := s.recv(65536):
                got += data
            ok = got.startswith(b"HTTP/1.1 200")
            a.count("ok" if ok else "429" if got.startswith(b"HTTP/1.1 429") else "other")
            if not ok:
                time.sleep(0.01)  # as after any refusal (see Attack._loop)
        finally:
            s.close()

    a.spawn(get, 8)


# ---------------------------------------------------------------------- the run

def window(gen: Any, procs: Procs, seconds: float, drain: float) -> dict[str, Any]:
    gen.stdin.write(b"start\n")
    gen.stdin.flush()
    time.sleep(seconds)
    gen.stdin.write(b"stop\n")
    gen.stdin.flush()
    return procs.json_line(gen, drain + 60)


def probe(fn: Callable[[str], Any], url: str) -> Any:
    """``fn(url)``, tried for up to 10 s: the HTTP port may be full while an attack ends."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return fn(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def limit_hits(m: dict[str, float]) -> dict[str, float]:
    prefix = 'hunt_limit_hits_total{limit="'
    return {k[len(prefix):-2]: v for k, v in m.items() if k.startswith(prefix)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix="attacks-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < want:  # the storm's sockets, and the server's (inherited)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    phases: list[dict[str, Any]] = []
    with Procs() as procs:
        server, ws_url, http_url = start_server(procs, args.clients, args, logdir,
                                                lift_limits=False)
        u, h = urlsplit(ws_url), urlsplit(http_url)
        ws, http = (u.hostname, u.port), (h.hostname, h.port)
        gen = procs.start([*args.loadgen_cmd, "--url", ws_url, "--clients",
                           str(args.clients), "--rate", str(args.rate), "--repeat",
                           "--source-prefix", "127.0.1.", "--per-address", "25",
                           "--connect-rate", "100", "--drain", str(args.drain)],
                          stdout_lines=True, stderr=open(logdir / "loadgen.log", "wb"))  # noqa: SIM115
        ready = procs.json_line(gen, args.clients / 100 + 90)
        print(f"  {ready['playing']}/{args.clients} good clients playing", file=sys.stderr)
        time.sleep(args.warmup)
        names = ["baseline", *[a for a in ATTACKS if a in args.attacks], "baseline_end"]
        for k, name in enumerate(names):
            attack = None
            m0 = probe(metrics, http_url)
            if not name.startswith("baseline"):
                attack = Attack(ws, http, f"127.0.{10 + k}.1")
                globals()[name](attack)
                time.sleep(0.5)  # the attack under way before the window opens
            peak = 0
            result: dict[str, Any] = {}

            def measure(result: dict[str, Any] = result) -> None:
                result.update(window(gen, procs, args.duration, args.drain))

            t = threading.Thread(target=measure)
            t.start()
            while t.is_alive():  # the most players of one address, sampled meanwhile
                with contextlib.suppress(OSError):
                    stats = json.loads(http_get(http_url + "api/stats"))
                    peak = max(peak, stats["max_players_per_address"])
                t.join(timeout=0.5)
            if attack is not None:
                attack.stop()
            m1 = probe(metrics, http_url)
            hits = {key: v - limit_hits(m0).get(key, 0.0) for key, v in limit_hits(m1).items()
                    if v > limit_hits(m0).get(key, 0.0)}
            ticks = result["ticks_per_client"]
            phases.append({
                "phase": name, "window_s": result["window_s"],
                "p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"],
                "p99_arrival_ms": result["latency_arrival_ms"]["p99"],
                "acked": result["acked"], "unacked": result["unacked"],
                "ticks_per_s": (sum(ticks) / len(ticks) / result["window_s"]
                                if ticks and result["window_s"] else 0.0),
                "tick_gaps": result["tick_gaps"], "playing": result["playing"],
                "closes": result["closes"], "limit_hits": hits,
                "attacker": attack.counts if attack else {},
                "max_players_per_address": peak})
            print(f"  {name}: p99 {phases[-1]['p99_ms']:.1f} ms, gaps "
                  f"{result['tick_gaps']}, hits {hits}", file=sys.stderr)
            time.sleep(1.0)  # what the attack left (closing sockets) settles
        gen.stdin.write(b"quit\n")
        gen.stdin.flush()
        if server.poll() is not None:
            raise RuntimeError(f"the server died:\n{tail(logdir / 'server.log')}")
    # The quiet figure: the mean of the baselines before and after the attacks.
    base = (phases[0]["p99_ms"] + phases[-1]["p99_ms"]) / 2 or 1e-9
    report_base = {"baseline_p99_ms": base}
    for p in phases:
        p["p99_over_baseline"] = p["p99_ms"] / base
        p["pass"] = (p["p99_over_baseline"] <= args.target and p["tick_gaps"] == 0
                     and p["max_players_per_address"] <= MAX_PLAYERS_PER_ADDRESS)
    return {"phases": phases, "clients": args.clients, "duration_s": args.duration,
            "target": args.target, **report_base}


def print_table(report: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, caption="p99 / baseline: over the mean of the two baselines' p99 "
              f"({report['baseline_p99_ms']:.1f} ms)")
    for col in ("phase", "p50 ms", "p99 ms", "p99 / baseline", "ticks/s", "missed ticks",
                "max players/address", "limits hit", "pass"):
        t.add_column(col, justify="left" if col in ("phase", "limits hit") else "right",
                     overflow="fold")
    for p in report["phases"]:
        hits = ", ".join(f"{k} {int(v)}" for k, v in sorted(p["limit_hits"].items()))
        t.add_row(p["phase"], f"{p['p50_ms']:.1f}", f"{p['p99_ms']:.1f}",
                  f"{p['p99_over_baseline']:.2f}", f"{p['ticks_per_s']:.2f}",
                  str(p["tick_gaps"]), str(p["max_players_per_address"]), hits or "-",
                  "yes" if p["pass"] else "NO")
    Console(width=max(150, Console().width)).print(t)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n")[-1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=200, help="good clients (default 200)")
    p.add_argument("--rate", type=float, default=10.0, help="moves per second per good client")
    p.add_argument("--tick-rate", type=int, default=20, help="server ticks per second")
    p.add_argument("--duration", type=float, default=15.0, help="window per phase, seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before the baseline")
    p.add_argument("--drain", type=float, default=1.0, help="seconds for a window's last acks")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help=f"comma-separated subset of {', '.join(ATTACKS)}")
    p.add_argument("--target", type=float, default=1.5,
                   help="largest p99 under attack over the baseline's (default 1.5)")
    add_loadgen_option(p)
    p.add_argument("--quick", action="store_true", help="smoke test: 20 clients, 2 s a phase")
    p.add_argument("--out", type=Path, default=HERE / "results", help="the JSON goes here")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.warmup = 20, 2.0, 1.0
    args.attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(args.attacks) - set(ATTACKS)
    if unknown:
        p.error(f"unknown attack(s) {', '.join(sorted(unknown))}; known: {', '.join(ATTACKS)}")
    # What perf/loadtest.py's start_server reads.
    args.tick_threads, args.max_players, args.send_threads = 1, None, None
    args.redis = args.journal = False
    args.switch_interval = None
    args.connect_rate = 100.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.server_src, server_code = server_source(None)
    args.out.mkdir(parents=True, exist_ok=True)
    args.loadgen_cmd = loadgen_command(args)
    started = time.time()
    report = run(args)
    report.update(stamp=stamp, argv=sys.argv[1:], server_code=server_code, loadgen=args.loadgen,
                  seconds=round(time.time() - started, 1), loadavg=os.getloadavg())
    path = args.out / f"attacks-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print_table(report, f"attacks {stamp}: {args.clients} good clients, {args.duration:g} s a "
                        f"phase (target: p99 <= {args.target:g}x baseline, no missed tick)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
