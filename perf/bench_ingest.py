"""Per-message cost of the server's WebSocket paths against trio-websocket's, in one run.

Why the server parses client frames itself (server/shell/_wsframes.py, server/shell/_conn.py)
instead of using trio-websocket's reader, and writes pre-framed messages
instead of calling ``send_message``: this script measures both ways on the
same machine in the same run.

Receive: a client process (raw sockets, this file with ``--client blast``)
opens ``--connections`` WebSockets, then sends ``--messages`` one-move MOVES
frames (20-byte payload, masked, ``--burst`` frames per write) round-robin as
fast as it can. This process receives them with one Trio task per connection:

- ``trio-websocket``: ``serve_websocket`` + ``await ws.get_message()``
  (its default 4 KiB ``receive_buffer_size``, then 64 KiB);
- ``server.shell._conn``: ``Connection.receive()`` (wsproto handshake, own frame parser);
- ``server.shell._conn + MoveBatch.add``: the same plus the decode into the tick's
  move columns, i.e. the hub's ingest path without its rate limiter.

From the first message to the last: messages per second and CPU microseconds
of this process per message (the client's CPU is not counted). Sent as fast as
possible, frames pile up and one wake-up reads several; ``--paced`` (default
1,000 connections x 10 frames/s, the load test's pattern) sends them one at a
time so that every frame costs a wake-up of its connection's task.

Send: the client (``--client sink``) reads and discards; this process sends
``--messages`` TICK-sized binary messages (``--size`` bytes) round-robin, one
per connection per round as a tick does: ``await ws.send_message(payload)``
against ``Connection.send_now(frame)`` of a pre-framed message (the rest drained
by each connection's writer task). CPU per message covers until everything
was handed to the kernel.

    python perf/bench_ingest.py                 # defaults: 50 connections, 3 repeats
    python perf/bench_ingest.py --quick         # a few seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MOVE_PAYLOAD = 20


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------- the client process

def client_main(args: argparse.Namespace) -> int:
    """Raw-socket client: ``blast`` MOVES frames, or ``sink`` what the server sends."""
    sys.path.insert(0, str(HERE))
    from loadgen import move_frame

    socks: list[socket.socket] = []
    early: list[int] = []
    request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    for _ in range(args.connections):
        s = socket.create_connection(("127.0.0.1", args.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("server closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise SystemExit(f"handshake refused: {head[:80]!r}")
        socks.append(s)
        early.append(len(head) - head.index(b"\r\n\r\n") - 4)  # data right after the 101
    try:
        if args.client == "blast" and args.pace:
            # One frame at a time, round-robin, args.pace frames per second in all: every
            # frame reaches an idle socket, as when many players each send a few moves.
            frame = move_frame(1, 0)
            start = time.perf_counter()
            for k in range(args.messages):
                due = start + k / args.pace
                delay = due - time.perf_counter()
                if delay > 0.001:
                    time.sleep(delay)
                socks[k % len(socks)].sendall(frame)
        elif args.client == "blast":
            burst = int(args.burst)
            chunk = b"".join(move_frame(k + 1, k % 8) for k in range(burst))
            rounds = -(-args.messages // (burst * len(socks)))
            for _ in range(rounds):
                for s in socks:
                    s.sendall(chunk)
        else:
            sel = selectors.DefaultSelector()
            left = {}
            for s, got in zip(socks, early, strict=True):
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
                left[s] = args.expect_bytes - got
            deadline = time.monotonic() + 300
            while left and time.monotonic() < deadline:
                for key, _ in sel.select(1.0):
                    s = key.fileobj
                    data = s.recv(1 << 18)
                    left[s] -= len(data)
                    if not data or left[s] <= 0:
                        sel.unregister(s)
                        del left[s]
    except OSError:
        pass  # the server closed first: it had counted what it needed
    for s in socks:
        s.close()
    return 0


def spawn_client(mode: str, port: int, args: argparse.Namespace, **extra: int
                 ) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--client", mode, "--port", str(port),
           "--connections", str(args.connections), "--messages", str(args.messages),
           "--burst", str(args.burst), "--pace", str(getattr(args, "pace", 0))]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(cmd)


# ---------------------------------------------------------------------- receive benchmarks

class Meter:
    """Counts messages; times wall and CPU from the first to the ``n``-th."""

    def __init__(self, n: int) -> None:
        import trio

        self.n = n
        self.count = 0
        self.done = trio.Event()
        self.t0 = self.c0 = self.t1 = self.c1 = 0.0

    def hit(self) -> None:
        self.count += 1
        if self.count == 1:
            self.t0, self.c0 = time.perf_counter(), cpu_now()
        elif self.count == self.n:
            self.t1, self.c1 = time.perf_counter(), cpu_now()
            self.done.set()

    def figures(self, counted: int | None = None) -> dict[str, float]:
        n = (counted or self.n) - 1  # intervals between the first and the last
        wall, cpu = self.t1 - self.t0, self.c1 - self.c0
        return {"messages": n, "wall_s": wall, "cpu_s": cpu, "per_s": n / wall,
                "cpu_us": cpu / n * 1e6, "cpu_pct": cpu / wall * 100}


async def receive_trio_websocket(args: argparse.Namespace, buffer: int) -> dict[str, float]:
    import trio
    from trio_websocket import ConnectionClosed, serve_websocket

    meter = Meter(args.messages)

    async def handler(request: Any) -> None:
        ws = await request.accept()
        with __import__("contextlib").suppress(ConnectionClosed):
            while True:
                await ws.get_message()
                meter.hit()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_websocket(
            handler, "127.0.0.1", 0, None, receive_buffer_size=buffer,
            task_status=task_status))
        proc = spawn_client("blast", server.port, args)
        await finish(meter, proc, nursery)
    return meter.figures()


async def receive_own(args: argparse.Namespace, decode: bool) -> dict[str, float]:
    import trio

    from server.protocol import MAX_CLIENT_FRAME_BYTES, MoveBatch
    from server.shell._conn import Connection, ConnectionClosed

    meter = Meter(args.messages)
    batch = MoveBatch(65536)

    async def handler(stream: trio.SocketStream) -> None:
        conn = Connection(stream, MAX_CLIENT_FRAME_BYTES, 8)
        await conn.handshake()
        try:
            while True:
                msg = await conn.receive()
                if decode:
                    batch.add(msg.payload, 7)
                    if batch.room < 64:
                        batch.clear()
                meter.hit()
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        proc = spawn_client("blast", port, args)
        await finish(meter, proc, nursery)
    return meter.figures()


async def finish(meter: Meter, proc: subprocess.Popen, nursery: Any) -> None:
    import trio

    with trio.move_on_after(300) as scope:
        await meter.done.wait()
    if scope.cancelled_caught:
        proc.kill()
        raise RuntimeError(f"only {meter.count} of {meter.n} messages in 300 s")
    nursery.cancel_scope.cancel()
    await trio.to_thread.run_sync(lambda: proc.wait(timeout=60))


# ---------------------------------------------------------------------- send benchmarks

async def send_trio_websocket(args: argparse.Namespace) -> dict[str, float]:
    import trio
    from trio_websocket import serve_websocket

    payload = bytes(args.size)
    sockets: list[Any] = []
    ready = trio.Event()

    async def handler(request: Any) -> None:
        ws = await request.accept()
        sockets.append(ws)
        if len(sockets) == args.connections:
            ready.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_websocket(
            handler, "127.0.0.1", 0, None, task_status=task_status))
        rounds = args.messages // args.connections
        proc = spawn_client("sink", server.port, args,
                            expect_bytes=rounds * (args.size + header(args.size)))
        await ready.wait()
        t0, c0 = time.perf_counter(), cpu_now()
        for _ in range(rounds):
            for ws in sockets:
                await ws.send_message(payload)
        t1, c1 = time.perf_counter(), cpu_now()
        await trio.to_thread.run_sync(lambda: proc.wait(timeout=120))
        nursery.cancel_scope.cancel()
    return send_figures(rounds * args.connections, t1 - t0, c1 - c0)


async def send_own(args: argparse.Namespace) -> dict[str, float]:
    import trio

    from server.shell import _wsframes as wf
    from server.shell._conn import Connection

    frame = wf.frame(bytes(args.size))
    rounds = args.messages // args.connections
    conns: list[Connection] = []
    ready = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        conn = Connection(stream, 1028, rounds)  # an outbox that never refuses: count all
        await conn.handshake()
        conns.append(conn)
        if len(conns) == args.connections:
            ready.set()
        await conn.run_writer()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        proc = spawn_client("sink", port, args, expect_bytes=rounds * len(frame))
        await ready.wait()
        t0, c0 = time.perf_counter(), cpu_now()
        for _ in range(rounds):  # one "tick": one message to each connection, no await
            for conn in conns:
                if not conn.send_now(frame):
                    raise RuntimeError("send_now refused a message")
            await trio.sleep(0)  # let the writers of full sockets run, as between ticks
        while any(c.backlog for c in conns):
            await trio.sleep(0.001)
        t1, c1 = time.perf_counter(), cpu_now()
        await trio.to_thread.run_sync(lambda: proc.wait(timeout=120))
        nursery.cancel_scope.cancel()
    return send_figures(rounds * len(conns), t1 - t0, c1 - c0)


def header(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


def send_figures(n: int, wall: float, cpu: float) -> dict[str, float]:
    return {"messages": n, "wall_s": wall, "cpu_s": cpu, "per_s": n / wall,
            "cpu_us": cpu / n * 1e6, "cpu_pct": cpu / wall * 100}


# ---------------------------------------------------------------------- main

RECEIVE_CASES = {
    "trio-websocket get_message (4 KiB buffer)": lambda a: receive_trio_websocket(a, 4096),
    "trio-websocket get_message (64 KiB buffer)": lambda a: receive_trio_websocket(a, 65536),
    "server.shell._conn Connection.receive": lambda a: receive_own(a, False),
    "server.shell._conn + MoveBatch.add": lambda a: receive_own(a, True),
}
SEND_CASES = {
    "trio-websocket send_message": send_trio_websocket,
    "server.shell._conn send_now (pre-framed)": send_own,
}


def cases(args: argparse.Namespace) -> list[tuple[str, str, Any, argparse.Namespace]]:
    """(group, name, case, its args): receive cases per burst, then the send cases."""
    out = []
    if args.paced:
        k, rate = (int(x) for x in args.paced.lower().split("x"))
        seconds = 3 if args.quick else 8
        sub = argparse.Namespace(**{**vars(args), "burst": 1, "connections": k,
                                    "pace": k * rate, "messages": k * rate * seconds})
        out += [(f"receive, paced: {k} connections x {rate} frames/s (one per wake-up)",
                 name, case, sub) for name, case in RECEIVE_CASES.items()]
    for burst in args.bursts:
        sub = argparse.Namespace(**{**vars(args), "burst": burst})
        out += [(f"receive, {burst} frame(s) per client write", name, case, sub)
                for name, case in RECEIVE_CASES.items()]
    out += [(f"send, {args.size}-byte messages", name, case, args)
            for name, case in SEND_CASES.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=50, help="WebSocket connections")
    p.add_argument("--messages", type=int, default=100_000, help="messages per case")
    p.add_argument("--burst", default="1,16",
                   help="MOVES frames per client write, comma separated (1: as players send "
                        "them; 16: enough to saturate the receiver)")
    p.add_argument("--paced", default="1000x10", metavar="CONNECTIONSxRATE",
                   help="also receive from this many connections sending RATE frames/s each, "
                        "paced (the load test's pattern; messages/s is then the pace, CPU "
                        "us/msg is the figure); '' for none")
    p.add_argument("--size", type=int, default=1024, help="bytes of a sent message (a TICK)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case (the median is kept)")
    p.add_argument("--quick", action="store_true", help="20,000 messages, 1 repeat")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_ingest.json")
    p.add_argument("--client", choices=("blast", "sink"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--expect-bytes", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pace", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        return client_main(args)
    args.bursts = [int(b) for b in str(args.burst).split(",")]
    if args.quick:
        args.messages, args.repeat = 20_000, 1

    import os

    import trio
    from rich.console import Console
    from rich.table import Table

    load = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for group, name, case, sub in cases(args):
        runs = [trio.run(case, sub) for _ in range(args.repeat)]
        runs.sort(key=lambda r: r["cpu_us"])
        m = runs[len(runs) // 2]
        results.setdefault(group, {})[name] = {"median": m, "runs": runs}
        print(f"{group}: {name}: {m['per_s']:,.0f} msg/s, {m['cpu_us']:.2f} us CPU/msg",
              file=sys.stderr)

    t = Table(title=f"WebSocket paths, per message ({args.connections} connections, "
                    f"{args.messages:,} messages, median of {args.repeat}; "
                    f"loadavg {load[0]:.2f})")
    for col in ("case", "messages/s", "CPU us/msg", "CPU %", "CPU vs trio-websocket"):
        t.add_column(col, justify="right" if col != "case" else "left")
    for group, rows in results.items():
        t.add_section()
        t.add_row(f"[bold]{group}[/bold]")
        base = next(iter(rows.values()))["median"]["cpu_us"]  # trio-websocket comes first
        for name, r in rows.items():
            m = r["median"]
            r["cpu_ratio_vs_trio_websocket"] = ratio = base / m["cpu_us"]
            t.add_row(name, f"{m['per_s']:,.0f}", f"{m['cpu_us']:.2f}", f"{m['cpu_pct']:.0f}",
                      f"{ratio:.1f}x less")
    Console(width=140).print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_before": load,
        "loadavg_after": os.getloadavg(), "connections": args.connections,
        "messages": args.messages, "bursts": args.bursts, "paced": args.paced, "size": args.size,
        "move_payload_bytes": MOVE_PAYLOAD, "results": results}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
