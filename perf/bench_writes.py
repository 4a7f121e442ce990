"""What one tick's writes cost on this machine, before any game work: the send floor.

    .venv/bin/python perf/bench_writes.py              # 1,000 and 2,000 clients, ~1 min
    .venv/bin/python perf/bench_writes.py --quick      # smoke run, a few seconds

The server ends every tick with one ``write(2)`` per client (issue 3: "tick start to the
last message handed to its socket"). This benchmark isolates that step: ``--clients``
loopback TCP connections (TCP_NODELAY, as the server sets them), a receiver process that
drains them with ``epoll`` like the load generator, and the server's own nogil write kernel
(``server/_tickframes.write_frames_to_sockets``) writing one ``--size``-byte frame to every
socket every 50 ms, from one thread and from two (half the sockets each, as
``--send-threads 2``). The baseline in the same run is the same kernel's loop copying the
frames into a buffer instead of a socket (what the bytes alone cost).

Two receivers: ``blocking`` sleeps in ``epoll_wait`` between bursts, as a real client
process does, so the writer's call also wakes it; ``busy`` polls without sleeping, which
shows how much of a write is that wake-up.

Figures are printed and written to ``bench_writes.json`` under ``--out``; nothing is
asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import select
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.hunt import _tickframes as tf  # noqa: E402

PERIOD_S = 0.05


def _receiver(port: int, n: int, busy: bool, ready: Any, stop: Any) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    ep = select.epoll()
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
    buf = bytearray(1 << 16)
    ready.set()
    while not stop.is_set():
        for fd, _ in ep.poll(0 if busy else 0.1, 4096):
            try:  # noqa: SIM105 - a context manager per read would slow the receiver
                by_fd[fd].recv_into(buf)
            except BlockingIOError:
                pass


@njit(nogil=True)
def _copy_frames(n, src, offsets, dst):  # the baseline: the same loop, no syscall
    for i in range(n):
        a, b = offsets[i], offsets[i + 1]
        dst[a:b] = src[a:b]


def run_case(n: int, size: int, threads: int, busy: bool, ticks: int) -> dict[str, Any]:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4096)
    ready, stop = mp.Event(), mp.Event()
    proc = mp.Process(target=_receiver, args=(ls.getsockname()[1], n, busy, ready, stop))
    proc.start()
    conns = []
    for _ in range(n):
        c, _addr = ls.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setblocking(False)
        conns.append(c)
    ready.wait(30)
    fds = np.array([c.fileno() for c in conns], np.int32)
    frames = np.random.default_rng(0).integers(0, 255, n * size, dtype=np.uint8)
    offsets = np.arange(0, (n + 1) * size, size, dtype=np.int64)
    written = np.zeros(n, np.int64)
    copy = np.zeros_like(frames)
    pool = ThreadPoolExecutor(1) if threads > 1 else None
    half = n // 2
    send_ms, copy_ms = [], []
    try:
        for k in range(ticks + 5):
            t0 = time.perf_counter()
            if pool is None:
                tf.write_frames_to_sockets(n, fds, frames.ctypes.data, offsets, written)
            else:  # as the hub does it: the second half on a pool thread, the first here
                rest = pool.submit(tf.write_frames_to_sockets, n - half, fds[half:],
                                   frames.ctypes.data, offsets[half:], written[half:])
                tf.write_frames_to_sockets(half, fds, frames.ctypes.data, offsets, written)
                rest.result()
            t1 = time.perf_counter()
            _copy_frames(n, frames, offsets, copy)
            t2 = time.perf_counter()
            if k >= 5:  # the first ticks warm the sockets and the JIT
                send_ms.append((t1 - t0) * 1e3)
                copy_ms.append((t2 - t1) * 1e3)
            short = int((written < size).sum())
            time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - t0)))
    finally:
        stop.set()
        proc.join(10)
        for c in conns:
            c.close()
        ls.close()
        if pool is not None:
            pool.shutdown()
    s = np.asarray(send_ms)
    return {"clients": n, "size": size, "threads": threads,
            "receiver": "busy" if busy else "blocking", "ticks": ticks,
            "send_p50_ms": float(np.percentile(s, 50)), "send_p99_ms": float(np.percentile(s, 99)),
            "per_write_us": float(np.percentile(s, 50)) / n * 1e3 * threads,
            "copy_p50_ms": float(np.percentile(copy_ms, 50)), "short_writes_last": short}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_writes.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1000, 2000],
                    help="connections per case (default: 1000 2000)")
    ap.add_argument("--size", type=int, default=1150,
                    help="bytes per frame (default 1150: a 1,000-client TICK in the load test)")
    ap.add_argument("--ticks", type=int, default=100, help="measured ticks per case (100)")
    ap.add_argument("--quick", action="store_true", help="200 clients, 20 ticks")
    ap.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.ticks = [200], 20
    from rich.console import Console
    from rich.table import Table

    rows = []
    for n in args.clients:
        for busy in (False, True):
            for threads in (1, 2):
                rows.append(run_case(n, args.size, threads, busy, args.ticks))
    table = Table(title=f"one write(2) per client per tick, {args.size}-byte frames, "
                        "loopback TCP (ms per tick; us per write and thread)")
    for col in ("clients", "receiver", "threads", "send p50", "send p99", "us/write",
                "vs 1 thread", "copy p50 (baseline)"):
        table.add_column(col, justify="right")
    for r in rows:
        one = next(o for o in rows if o["clients"] == r["clients"]
                   and o["receiver"] == r["receiver"] and o["threads"] == 1)
        table.add_row(str(r["clients"]), r["receiver"], str(r["threads"]),
                      f"{r['send_p50_ms']:.2f}", f"{r['send_p99_ms']:.2f}",
                      f"{r['per_write_us']:.1f}",
                      f"{r['send_p50_ms'] / one['send_p50_ms']:.2f}x",
                      f"{r['copy_p50_ms']:.3f}")
    Console(width=130).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_writes.json"
    path.write_text(json.dumps({"rows": rows, "cores": mp.cpu_count()}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
