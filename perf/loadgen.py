"""One load-generator process: --clients WebSocket players on raw non-blocking sockets.

Lean on purpose (it must not be the bottleneck of the load test): one thread,
one ``select.epoll``, no WebSocket library and no client library. Per client:
a hand-written HTTP upgrade request (fixed Sec-WebSocket-Key), a HELLO, then
one MOVES frame every ``1 / rate`` seconds. Client frames are masked with a
fixed key (RFC 6455 wants a random one; a load tool may cheat): a MOVES frame
is a constant prefix, the masked seq and one of 8 pre-masked directions.
Server frames are parsed minimally: the 2/4/10-byte header, then only the
fields needed (TICK: ``tick`` and ``ack``; WELCOME; ERROR/REFUSED codes; close).
``--protocol-version`` 2 (the default) reads version-2 TICKs: a keyframe's tick
and ack, a diff's ack step (docs/protocol.md, "TICK, version 2").

Move-to-ack latency, on this process's clock: the time from the send of move
``seq`` to the first TICK whose ``ack >= seq`` (docs/protocol.md: of several
moves in one tick the highest seq wins, and acks them all). Two ends are kept:
when this process read the TICK (``latency_ms``: includes its own queueing when
a tick's burst of messages arrives at once) and when the TICK's bytes reached
the socket, from the kernel's receive timestamp (``latency_arrival_ms``,
SO_TIMESTAMPNS: what a client with a core of its own would see).

Control (driven by perf/loadtest.py), JSON lines on stdout:
  - ``{"event": "ready", ...}`` once every client got its WELCOME (or failed);
  - a line ``start`` on stdin opens the measuring window, ``stop`` closes it;
    moves sent in the window are timed, ticks received in it are counted;
  - after ``stop`` and a drain (``--drain`` s, for the acks of the window's last
    moves): ``{"event": "result", ...}``, then the process exits.
  - stdin closed (the driver died) or ``--max-seconds`` passed: exit at once.
  - with ``--repeat``, the process stays after a result: the next ``start`` opens
    a new window (counters start again from zero); ``quit`` or stdin closed ends it.

``--hunt a,b,c`` spreads the clients over several hunts, round robin (client i joins
hunt ``(i + --index-offset) % 3``). Tick fan-out: for each hunt's tick, the time from
the first of this process's clients of that hunt to receive it to the last
(kernel receive timestamps); what a client waits because others of its hunt
were written before it.

``--source-prefix 127.0.5. --per-address 25`` spreads the clients over source
addresses 127.0.5.1, 127.0.5.2, ... (Linux: all of 127/8 is loopback), so that
a server's per-address limits see many players behind a few addresses, not
thousands behind one.

perf/loadgen.c is the same load generator in C (perf/loadtest.py's default; it spends a
fraction of this one's CPU); a change to what one does or reports belongs in both, and
tests/test_loadgen_c.py holds them to the same fields and counts.

Run alone for a quick look (it starts measuring when ready, for --duration s):
    python perf/loadgen.py --url ws://127.0.0.1:8765/ --clients 100 --duration 10
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import json
import os
import random
import resource
import select
import socket
import struct
import sys
import time
from collections import Counter, deque
from urllib.parse import urlsplit

MASK = b"\x37\xfa\x21\x3d"
_MASK_Q = int.from_bytes(MASK * 2, "little")
_QQ = struct.Struct("<QQ")
_Q = struct.Struct("<Q")
_H = struct.Struct("!H")
_HH = struct.Struct("<HH")
_TIMESPEC = struct.Struct("@qq")
#: Linux: a receive timestamp (CLOCK_REALTIME, ns) on every read; Python has no name for it.
SO_TIMESTAMPNS = 35

CONNECTING, UPGRADING, WAIT_WELCOME, PLAYING, CLOSED = range(5)
_RECV = 262144


def mask_bytes(payload: bytes, offset: int = 0) -> bytes:
    """``payload`` XOR the repeating mask, starting at mask byte ``offset``."""
    key = (MASK * (len(payload) // 4 + 2))[offset % 4: offset % 4 + len(payload)]
    return bytes(a ^ b for a, b in zip(payload, key, strict=True))


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One complete masked client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _H.pack(n)
    return head + MASK + mask_bytes(payload)


def hello_frame(name: str, hunt: str, version: int = 2) -> bytes:
    """HELLO (docs/protocol.md): type 1, ``version``, no resume token."""
    nb, hb = name.encode(), hunt.encode()
    return client_frame(struct.pack("<BBBBHH16s", 0x01, version, 0, len(nb), len(hb), 0, b"")
                        + nb + hb)


def varint(data: bytes, at: int) -> tuple[int, int]:
    """The LEB128 varint at ``at``, and where the next field starts."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


# A one-move MOVES frame: header, mask, then the masked 20-byte payload
# [02 00 01 00][seq u64][dx f32][dy f32]; the seq is XORed with the mask at send time.
_MOVE_PREFIX = bytes((0x82, 0x80 | 20)) + MASK + mask_bytes(b"\x02\x00\x01\x00")
_DIRS = [mask_bytes(struct.pack("<ff", dx, dy), 12) for dx, dy in
         ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))]


def move_frame(seq: int, direction: int) -> bytes:
    return _MOVE_PREFIX + _Q.pack(seq ^ _MASK_Q) + _DIRS[direction]


class Client:
    __slots__ = ("ack", "buf", "close_code", "fd", "gaps", "hello", "hunt", "index",
                 "last_tick", "out", "pending", "seq", "sock", "state", "wticks")

    def __init__(self, index: int, hello: bytes, hunt: int = 0) -> None:
        self.index = index
        self.hello = hello
        self.hunt = hunt  # index in --hunt's list
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CONNECTING
        self.buf = b""
        self.out = b""  # bytes the socket did not take yet
        self.seq = 0
        self.pending: deque[tuple[int, float]] = deque()  # (seq, send time) not acked yet
        self.last_tick = 0
        self.ack = 0  # the last TICK's (version 2 diffs carry only its growth)
        self.gaps = 0  # tick numbers missed while in the window
        self.wticks = 0  # TICKs received in the window
        self.close_code: int | None = None


class LoadGen:
    """The event loop. Times are ``time.time()`` seconds (CLOCK_REALTIME, the clock of the
    kernel's receive timestamps)."""

    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        self.addr = (url.hostname or "127.0.0.1", url.port or 80)
        self.request = (f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.args = args
        self.version = args.protocol_version
        hunts = args.hunt.split(",")
        self.clients = []
        for i in range(args.clients):
            h = (i + args.index_offset) % len(hunts)
            hello = hello_frame(f"{args.name_prefix}{i}", hunts[h], args.protocol_version)
            self.clients.append(Client(i, hello, h))
        self.by_fd: dict[int, Client] = {}
        self.ep = select.epoll()
        self.rng = random.Random(args.seed)
        # Move schedule: a wheel of `slots` slots per move period, each client in one, as
        # many in each slot, so the clients' phases are spread evenly over the period. The
        # slots are dealt at random (seeded), not by client index: clients round robin over
        # the hunts, so with as many slots as hunts slot k % slots would put every client
        # of a hunt in one slot, and each hunt's moves would all come at one phase of its
        # tick (a latency set by how the phases happen to line up, not by the server).
        self.period = 1.0 / args.rate
        self.n_slots = max(1, min(50, args.clients))
        self.wheel: list[list[Client]] = [[] for _ in range(self.n_slots)]
        self.slot_of = [k % self.n_slots for k in range(args.clients)]
        self.rng.shuffle(self.slot_of)
        self.wstart = float("inf")
        self.wend = float("inf")
        self.latencies = array.array("d")  # move sent -> its ack read by this process
        self.lat_arrival = array.array("d")  # move sent -> its ack reached the socket
        self.send_lag = array.array("d")
        #: (hunt, tick) -> [first, last] arrival of that TICK at this process's clients.
        self.fanout: dict[tuple[int, int], list[float]] = {}
        self.moves_window = 0
        self.bytes_window = 0
        self.msgs_window = 0
        self.errors: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()
        self.closes: Counter[str] = Counter()
        self.connect_failures: Counter[str] = Counter()
        self.send_stalls = 0
        self.playing = 0
        self.welcomed = 0
        self.ru_start: resource.struct_rusage | None = None
        self.ru_stop: resource.struct_rusage | None = None

    # ------------------------------------------------------------------ connections

    def connect(self, c: Client) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if self.args.source_prefix:
            s.bind((f"{self.args.source_prefix}{1 + c.index // self.args.per_address}", 0))
        err = s.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self.fail(c, f"connect: {os.strerror(err)}")
            return
        c.sock, c.fd = s, s.fileno()
        self.by_fd[c.fd] = c
        self.ep.register(c.fd, select.EPOLLOUT)

    def fail(self, c: Client, why: str) -> None:
        if c.state < PLAYING:
            self.connect_failures[why] += 1
        self.close(c)

    def close(self, c: Client, code: int | None = None) -> None:
        if c.state == CLOSED:
            return
        if c.state == PLAYING:
            self.playing -= 1
            self.closes[str(code if code is not None else 1006)] += 1
        c.state = CLOSED
        c.close_code = code
        if c.sock is not None:
            self.by_fd.pop(c.fd, None)
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(c.fd)
            c.sock.close()

    def send(self, c: Client, data: bytes) -> None:
        if c.out:
            c.out += data
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.close(c)
            return
        if n < len(data):
            self.send_stalls += 1
            c.out = data[n:]
            self.ep.modify(c.fd, select.EPOLLIN | select.EPOLLOUT)

    def on_writable(self, c: Client) -> None:
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, f"connect: {os.strerror(err)}")
                return
            c.state = UPGRADING
            self.ep.modify(c.fd, select.EPOLLIN)
            self.send(c, self.request)
            return
        data, c.out = c.out, b""
        self.ep.modify(c.fd, select.EPOLLIN)
        self.send(c, data)  # re-arms EPOLLOUT if the socket still takes only part

    # ------------------------------------------------------------------ receiving

    def on_readable(self, c: Client, now: float) -> None:
        try:
            data, anc, _, _ = c.sock.recvmsg(_RECV, 64)
        except BlockingIOError:
            return
        except OSError:
            data, anc = b"", None
        # When the bytes reached the socket: excludes this process's own queueing delay.
        arrived = now
        if anc:
            sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
            arrived = sec + nsec * 1e-9
        if not data:
            if c.state < PLAYING:
                self.fail(c, "closed before WELCOME")
            else:
                self.close(c)
            return
        if self.wstart <= now < self.wend:
            self.bytes_window += len(data)
        if c.buf:
            data = c.buf + data
            c.buf = b""
        if c.state == UPGRADING:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                c.buf = data
                return
            status = data[:end].split(b"\r\n", 1)[0]
            if status.split(b" ")[1:2] != [b"101"]:
                self.fail(c, f"upgrade refused: {status.decode(errors='replace')}")
                return
            c.state = WAIT_WELCOME
            self.send(c, c.hello)
            data = data[end + 4:]
        n, pos = len(data), 0
        while n - pos >= 2:
            ln = data[pos + 1] & 0x7F
            h = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                h = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 10], "big")
                h = 10
            p = pos + h
            end = p + ln
            if end > n:
                break
            op = data[pos] & 0x0F
            if op == 2:
                t = data[p]
                if t == 0x83:
                    self.on_tick(c, data, p, now, arrived)
                elif t == 0x81:
                    self.on_welcome(c, data, p, now)
                elif t == 0x84:
                    self.errors[_HH.unpack_from(data, p + 2)[0]] += 1
                elif t == 0x82:
                    self.refused[_HH.unpack_from(data, p + 2)[0]] += 1
            elif op == 8:
                code = _H.unpack_from(data, p)[0] if ln >= 2 else 1005
                if c.state < PLAYING:
                    self.fail(c, f"closed {code} before WELCOME")
                else:
                    self.close(c, code)
                return
            elif op == 9:
                self.send(c, client_frame(data[p:end], 0xA))
            pos = end
        if pos < n:
            c.buf = data[pos:]

    def on_tick(self, c: Client, data: bytes, p: int, now: float, arrived: float) -> None:
        if self.version == 1:
            tick, ack = _QQ.unpack_from(data, p + 8)
        else:
            flags = data[p + 1]
            if flags & 1:  # a keyframe: the tick and the ack
                tick, at = varint(data, p + 2)
                ack, _ = varint(data, at)
            else:  # a diff: the tick from its low byte, and the ack's growth if any
                tick = c.last_tick + 1 + ((data[p + 2] - c.last_tick - 1) & 0xFF)
                ack = c.ack
                if flags & 2:
                    ack += varint(data, p + 3)[0]
            c.ack = ack
        if self.wstart <= now < self.wend:
            self.msgs_window += 1
            c.wticks += 1
            if c.last_tick and tick != c.last_tick + 1:
                c.gaps += max(0, tick - c.last_tick - 1)
            span = self.fanout.get((c.hunt, tick))
            if span is None:
                self.fanout[(c.hunt, tick)] = [arrived, arrived]
            elif arrived > span[1]:
                span[1] = arrived
            elif arrived < span[0]:
                span[0] = arrived
        c.last_tick = tick
        pend = c.pending
        while pend and pend[0][0] <= ack:
            _, sent = pend.popleft()
            if self.wstart <= sent < self.wend:
                self.latencies.append(now - sent)
                self.lat_arrival.append(arrived - sent)

    def on_welcome(self, c: Client, data: bytes, p: int, now: float) -> None:
        if c.state != WAIT_WELCOME:
            return
        c.state = PLAYING
        c.seq = _Q.unpack_from(data, p + 40)[0]  # ack: continue from it
        self.playing += 1
        self.welcomed += 1
        self.wheel[self.slot_of[c.index]].append(c)

    # ------------------------------------------------------------------ moves

    def send_moves(self, clients: list[Client], now: float) -> None:
        measuring = self.wstart <= now < self.wend
        rnd = self.rng.getrandbits
        for c in clients:
            if c.state != PLAYING:
                continue
            c.seq += 1
            self.send(c, move_frame(c.seq, rnd(3)))
            c.pending.append((c.seq, now))
            if measuring:
                self.moves_window += 1

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        args = self.args
        t0 = time.time()
        hard_end = t0 + args.max_seconds
        connect_gap = 1.0 / args.connect_rate
        next_connect, to_connect = t0, 0
        slot_width = self.period / self.n_slots
        next_slot_t, slot = t0 + self.period, 0
        ready_sent = False
        ready_deadline = None
        drain_until = float("inf")
        auto = sys.stdin.isatty() or args.auto
        stdin_fd = sys.stdin.fileno()
        if not auto:
            os.set_blocking(stdin_fd, False)
            self.ep.register(stdin_fd, select.EPOLLIN)
        poll = self.ep.poll
        by_fd = self.by_fd
        while True:
            now = time.time()
            if now >= hard_end:
                raise SystemExit(f"loadgen: --max-seconds {args.max_seconds} passed")
            if now >= drain_until:
                if not args.repeat:
                    return self.result(now)
                emit(self.result(now))
                self.reset()
                drain_until = float("inf")
            while to_connect < len(self.clients) and next_connect <= now:
                self.connect(self.clients[to_connect])
                to_connect += 1
                next_connect += connect_gap
            lag_n = 0
            while next_slot_t <= now and lag_n < self.n_slots:  # bounded catch-up
                self.send_lag.append(now - next_slot_t)
                self.send_moves(self.wheel[slot], now)
                slot = (slot + 1) % self.n_slots
                next_slot_t += slot_width
                lag_n += 1
            if next_slot_t <= now:  # hopelessly behind: skip ahead, and say so
                self.send_lag.append(now - next_slot_t)
                next_slot_t = now + slot_width
            if not ready_sent and to_connect == len(self.clients):
                settled = all(c.state >= PLAYING for c in self.clients)
                if ready_deadline is None:
                    ready_deadline = now + args.connect_timeout
                if settled or now >= ready_deadline:
                    ready_sent = True
                    emit({"event": "ready", "playing": self.playing,
                          "failed": sum(self.connect_failures.values()),
                          "pending": sum(c.state < PLAYING for c in self.clients),
                          "seconds": round(now - t0, 3)})
                    if auto:
                        now = time.time()
                        self.start(now)
                        drain_until = now + args.duration + args.drain
                        self.wend = now + args.duration
            if auto and now >= self.wend and self.ru_stop is None:
                self.ru_stop = resource.getrusage(resource.RUSAGE_SELF)
            timeout = next_slot_t - now
            if to_connect < len(self.clients):
                timeout = min(timeout, next_connect - now)
            for fd, ev in poll(max(0.0, timeout)):
                if fd == stdin_fd and not auto:
                    stop = self.on_control(time.time())
                    if stop is not None:
                        drain_until = stop + args.drain
                    continue
                c = by_fd.get(fd)
                if c is None:
                    continue
                if ev & select.EPOLLIN:
                    self.on_readable(c, time.time())
                if ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP) and \
                        c.state != CLOSED:
                    if ev & select.EPOLLOUT or c.state == CONNECTING:
                        self.on_writable(c)
                    elif not ev & select.EPOLLIN:
                        self.close(c)

    def on_control(self, now: float) -> float | None:
        """Read stdin: 'start' opens the window, 'stop' closes it (returns its time)."""
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return None
        if not data:
            raise SystemExit(0)  # the driver is gone: stop at once
        stop = None
        for word in data.decode().split():
            if word == "quit":
                raise SystemExit(0)
            if word == "start" and self.wstart == float("inf"):
                self.start(now)
            elif word == "stop" and self.wend == float("inf"):
                self.wend = now
                self.ru_stop = resource.getrusage(resource.RUSAGE_SELF)
                stop = now
        return stop

    def start(self, now: float) -> None:
        self.wstart = now
        self.ru_start = resource.getrusage(resource.RUSAGE_SELF)

    def reset(self) -> None:
        """Forget the last window's figures (``--repeat``: the next ``start`` opens another)."""
        self.wstart = self.wend = float("inf")
        self.latencies = array.array("d")
        self.lat_arrival = array.array("d")
        self.send_lag = array.array("d")
        self.fanout = {}
        self.moves_window = self.bytes_window = self.msgs_window = 0
        self.errors.clear()
        self.refused.clear()
        self.closes.clear()
        self.ru_start = self.ru_stop = None
        for c in self.clients:
            c.wticks = c.gaps = 0

    def result(self, now: float) -> dict:
        lat = self.latencies
        unacked = sum(1 for c in self.clients for _, t in c.pending
                      if self.wstart <= t < self.wend)
        out_file = self.args.latency_out
        if out_file:
            with open(out_file, "wb") as f:  # float32 ms: all read latencies, then arrivals
                array.array("f", (x * 1e3 for x in lat)).tofile(f)
                array.array("f", (x * 1e3 for x in self.lat_arrival)).tofile(f)
        ru0, ru1 = self.ru_start, self.ru_stop or resource.getrusage(resource.RUSAGE_SELF)
        ru_end = resource.getrusage(resource.RUSAGE_SELF)
        window = (self.wend - self.wstart) if self.wstart < self.wend < float("inf") else 0.0
        lag = sorted(self.send_lag)
        fanout = [(last - first) * 1e3 for first, last in self.fanout.values()]
        return {
            "event": "result", "clients": len(self.clients), "playing": self.playing,
            "welcomed": self.welcomed, "window_s": window,
            "moves_sent": self.moves_window, "acked": len(lat), "unacked": unacked,
            "latency_ms": summary([x * 1e3 for x in lat]),
            "latency_arrival_ms": summary([x * 1e3 for x in self.lat_arrival]),
            "latency_file": out_file or None,
            "ticks_per_client": [c.wticks for c in self.clients],
            "tick_gaps": sum(c.gaps for c in self.clients),
            "clients_with_gaps": sum(1 for c in self.clients if c.gaps),
            "messages": self.msgs_window, "bytes": self.bytes_window,
            "errors": {str(k): v for k, v in self.errors.items()},
            "refused": {str(k): v for k, v in self.refused.items()},
            "closes": dict(self.closes), "connect_failures": dict(self.connect_failures),
            "send_stalls": self.send_stalls,
            "send_lag_ms": {"p99": pct(lag, 99) * 1e3, "max": (lag[-1] if lag else 0) * 1e3},
            "fanout_ms": summary(fanout),
            "cpu_s_window": (cpu(ru1) - cpu(ru0)) if ru0 else 0.0,
            "cpu_s_total": cpu(ru_end),
        }


def cpu(ru: resource.struct_rusage) -> float:
    return ru.ru_utime + ru.ru_stime


def pct(sorted_values: list[float], q: float) -> float:
    """Percentile ``q`` (0-100) of sorted values, nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def summary(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99),
            "max": v[-1] if v else 0.0, "mean": sum(v) / len(v) if v else 0.0}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server's WebSocket URL, ws://host:port/")
    p.add_argument("--clients", type=int, default=100, help="players in this process")
    p.add_argument("--rate", type=float, default=10.0, help="moves per second per client")
    p.add_argument("--hunt", default="demo",
                   help="hunt to join; several, comma separated: the clients round robin")
    p.add_argument("--index-offset", type=int, default=0,
                   help="with several hunts, client i joins hunt number (i + OFFSET) %% hunts")
    p.add_argument("--protocol-version", type=int, choices=(1, 2), default=2,
                   help="the HELLO's protocol version: 2 (compact TICKs) or 1")
    p.add_argument("--name-prefix", default="lg-", help="player names are PREFIX + index")
    p.add_argument("--connect-rate", type=float, default=500.0,
                   help="new connections per second (the ramp)")
    p.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds after the last connect to wait for WELCOMEs")
    p.add_argument("--drain", type=float, default=1.0,
                   help="seconds after 'stop' to wait for acks of the window's moves")
    p.add_argument("--duration", type=float, default=10.0,
                   help="window length (s) when run alone (stdin a terminal, or --auto)")
    p.add_argument("--auto", action="store_true",
                   help="measure for --duration once ready, without start/stop on stdin")
    p.add_argument("--latency-out", help="write every window latency (ms, float32) here")
    p.add_argument("--max-seconds", type=float, default=900.0, help="hard limit on the run")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the move directions and of the clients' places in the move "
                   "schedule")
    p.add_argument("--repeat", action="store_true",
                   help="after a window's result, wait for the next 'start' (until 'quit')")
    p.add_argument("--source-prefix", default="",
                   help="bind clients to source addresses PREFIX1, PREFIX2, ... (e.g. 127.0.5.)")
    p.add_argument("--per-address", type=int, default=25,
                   help="clients per source address with --source-prefix")
    args = p.parse_args(argv)
    if args.clients < 1 or args.rate <= 0 or args.connect_rate <= 0:
        p.error("--clients, --rate and --connect-rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gen = LoadGen(args)
    try:
        emit(gen.run())
    finally:
        for c in gen.clients:
            if c.sock is not None:
                c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
