"""The nogil ingest kernel (server/shell/_intake.py) on real sockets: what it takes, what it
hands to the frame parser, and the move rate limit, against the Python decoder and the
rule of docs/protocol.md ("Move rate limit")."""

from __future__ import annotations

import itertools
import math
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import trio

from server.protocol import MAX_CLIENT_SEQ, MoveBatch, TickUpdate, decode_server_frame
from server.shell import _intake as ik

RATE = 60.0  # moves per second
IDLE, STEP = 300.0, 1.0


def masked(payload: bytes, op: int = 0x82, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        return bytes((op, 0x80 | n)) + mask + body
    return bytes((op, 0x80 | 126)) + struct.pack("!H", n) + mask + body


def moves(*records: tuple[int, float, float]) -> bytes:
    return struct.pack("<BBH", 2, 0, len(records)) + b"".join(
        struct.pack("<Qff", *r) for r in records)


class Rig:
    """One connection's row in a kernel table, a batch and the far end of its socket."""

    def __init__(self, peer: socket.socket, ours: socket.socket) -> None:
        self.peer, self.sock = peer, ours
        self.ep = select.epoll()
        self.ep.register(ours.fileno(), select.EPOLLIN)
        self.ent = ik.new_entries(4, 4096)
        self.rates = ik.new_rates(8)
        self.batch = MoveBatch(1 << 16)
        self.events = np.zeros(ik.MAX_EVENTS * ik._EV_SIZE, np.uint8)
        self.scratch = np.zeros(1100, np.uint8)
        self.todo = np.zeros(4, np.int64)
        self.out = np.zeros(2, np.int64)
        self.dropped = np.zeros(2, np.int64)
        fd = ours.fileno()
        row = self.ent.i[0]
        row[ik.FD], row[ik.SLOT], row[ik.PLAYER] = fd, 3, (7 << 32) | 3
        self.ent.of_fd[fd] = 0
        self.ent.f[0, :ik.LAST] = (1e9, time.monotonic(), 1e9, 1e9)
        self.ent.f[0, ik.LAST] = -math.inf
        self.ent.f[0, ik.DEADLINE] = math.inf
        self.rates.f[3, ik.BUCKET] = RATE

    def run(self, now: float = 1.0, rate: float = RATE) -> list[int]:
        """One pass; the rows flagged."""
        n = ik.ingest_pass(self.ep.fileno(), self.events, self.ent, self.rates, self.batch.ids,
                           self.batch.seqs, self.batch.dx, self.batch.dy, self.batch.count,
                           self.dropped, now, time.monotonic(), rate, IDLE, STEP, STEP + 0.03,
                           self.scratch, self.todo, self.out)
        self.batch.count = int(self.out[0])
        return self.todo[:n].tolist()

    def send(self, data: bytes) -> None:
        self.peer.sendall(data)

    @property
    def row(self) -> np.ndarray:
        return self.ent.i[0]

    def rows(self) -> list[tuple[int, float, float]]:
        ids, seqs, dx, dy = self.batch.columns()
        assert (ids == (7 << 32) | 3).all()
        return list(zip(seqs.tolist(), dx.tolist(), dy.tolist(), strict=True))


@contextmanager
def rig() -> Iterator[Rig]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    r = Rig(a, b)
    try:
        yield r
    finally:
        r.ep.close()
        a.close()
        b.close()


def test_frames_split_anywhere_give_the_decoders_rows() -> None:
    rnd = random.Random(5)
    frames, want = [], []
    seq = 0
    for _ in range(300):
        recs = []
        for _ in range(rnd.choice((1, 1, 1, 2, 5, 64))):
            seq += 1
            recs.append((seq, rnd.uniform(-2, 2), rnd.uniform(-2, 2)))
        frames.append(masked(moves(*recs), mask=rnd.randbytes(4)))
        want += [(s, float(np.float32(x)), float(np.float32(y))) for s, x, y in recs]
    stream = b"".join(frames)
    with rig() as r:
        r.rates.f[3, ik.BUCKET] = 1e12
        at = 0
        for _ in range(10_000):
            if at >= len(stream):
                break
            cut = min(len(stream), at + rnd.choice((1, 7, 26, 100, 1500, 5000)))
            r.send(stream[at:cut])
            at = cut
            assert r.run(rate=1e12) == []  # no rate limit here
        assert at == len(stream)
        for _ in range(10):
            r.run(rate=1e12)
        assert r.rows() == want
        assert r.row[ik.HAVE] == 0
        assert r.rates.i[3, ik.HIGH_SEQ] == seq


@pytest.mark.parametrize(("name", "frame"), [
    ("ping", masked(b"hi", op=0x89)),
    ("text move", masked(b'{"seq": 9, "dx": 0, "dy": 0}', op=0x81)),
    ("bye", masked(b"\x03")),
    ("close", masked(struct.pack("!H", 1000), op=0x88)),
    ("first fragment", masked(moves((9, 0, 0)), op=0x02)),
    ("unmasked", bytes((0x82, 20)) + moves((9, 0, 0))),
    ("rsv bit", masked(moves((9, 0, 0)), op=0xC2)),
    ("64-bit length", bytes((0x82, 0xFF)) + struct.pack("!Q", 20) + b"\0" * 24),
    ("over the size limit", masked(b"\x02\x00" + b"\0" * 1100)),
    ("count 0", masked(struct.pack("<BBH", 2, 0, 0))),
    ("count not the length", masked(struct.pack("<BBH", 2, 0, 2) + moves((9, 0, 0))[4:])),
    ("reserved byte", masked(b"\x02\x01" + moves((9, 0, 0))[2:])),
    ("seq 0", masked(moves((0, 0, 0)))),
    ("seq 2**62", masked(moves((MAX_CLIENT_SEQ + 1, 0, 0)))),
    ("seq 2**63", masked(moves((2**63, 0, 0)))),
    ("NaN", masked(moves((9, math.nan, 0)))),
    ("infinite", masked(moves((9, 0, -math.inf)))),
    ("second record bad", masked(moves((9, 0, 0), (10, math.inf, 0)))),
])
def test_anything_but_a_valid_moves_frame_is_handed_over_from_its_first_byte(
        name: str, frame: bytes) -> None:
    before = masked(moves((1, 0.5, 0.5))) + masked(moves((2, 0.5, 0.5)))
    after = masked(moves((3, 0.5, 0.5)))
    with rig() as r:
        r.send(before + frame + after)
        assert r.run() == [0]
        assert r.row[ik.FLAGS] & ik.HANDOVER
        rest, have = int(r.row[ik.REST]), int(r.row[ik.HAVE])
        assert r.ent.stage[0, rest:have].tobytes() == frame + after
        assert [s for s, _, _ in r.rows()] == [1, 2]
        # Flagged: not read again until Python took the bytes.
        r.send(after)
        assert r.run() == []
        assert r.row[ik.HAVE] == have


def test_rate_limit_keeps_the_newest_move_and_warns_once_a_second() -> None:
    with rig() as r:
        r.rates.f[3, ik.BUCKET_T] = 1.0
        # A burst of 80 one-move frames at one instant: 60 tokens, then the rest
        # replace the newest pending row (the highest seq wins).
        r.send(b"".join(masked(moves((s, s / 100, 0))) for s in range(1, 81)))
        assert r.run(now=1.0) == [0]
        assert r.row[ik.FLAGS] & ik.WARN
        rows = r.rows()
        assert [s for s, _, _ in rows] == [*range(1, 60), 80]
        assert rows[-1][1] == pytest.approx(0.8)
        assert r.dropped[0] == 20 and r.out[1] == 20  # per hunt (hunt 0) and in all
        r.row[ik.FLAGS] = 0
        # Half a second later: 30 tokens back; no second warning within the second.
        r.send(b"".join(masked(moves((s, 0, 0))) for s in range(81, 121)))
        assert r.run(now=1.5) == []
        seqs = [s for s, _, _ in r.rows()]
        assert seqs == [*range(1, 60), 80, *range(81, 110), 120]
        # An older seq over the limit does not replace a newer pending one.
        r.send(masked(moves((115, 0, 0))))
        r.run(now=1.5)
        assert [s for s, _, _ in r.rows()] == seqs
        assert r.rates.i[3, ik.HIGH_SEQ] == 120


def test_a_frame_over_the_limit_takes_a_row_when_none_is_pending() -> None:
    with rig() as r:
        r.rates.f[3, ik.BUCKET] = 0.5
        r.rates.f[3, ik.BUCKET_T] = 1.0
        r.send(masked(moves((5, 1, 0), (7, 0, 1), (6, 1, 1))))
        r.run(now=1.0)
        assert r.rows() == [(7, 0.0, 1.0)]


def test_moves_of_a_replaced_connection_are_read_and_ignored() -> None:
    with rig() as r:
        r.row[ik.GEN] = -1
        r.send(masked(moves((1, 0, 0))) * 300)
        assert r.run() == []
        assert r.batch.count == 0 and r.row[ik.HAVE] == 0


def test_a_full_batch_drops_the_frame() -> None:
    with rig() as r:
        r.batch.count = r.batch.seqs.shape[0] - 63
        r.send(masked(moves((1, 0, 0))))
        assert r.run() == [0]
        assert r.row[ik.FLAGS] & ik.WARN
        assert r.out[1] == 1 and r.batch.count == r.batch.seqs.shape[0] - 63


def test_a_read_over_the_byte_budget_is_handed_over_uncharged() -> None:
    with rig() as r:
        r.ent.f[0, :ik.LAST] = (20.0, time.monotonic(), 1.0, 20.0)  # bytes, s, bytes/s
        frame = masked(moves((1, 0, 0)))  # 26 bytes
        r.send(frame)
        assert r.run() == [0]
        assert r.row[ik.FLAGS] & ik.HANDOVER and r.row[ik.OWED] == len(frame)
        assert r.row[ik.REST] == 0 and r.batch.count == 0
        assert 20.0 <= r.ent.f[0, ik.LEVEL] < 21.0  # refilled, not charged


def test_end_of_stream_and_idle_deadline_are_flagged() -> None:
    with rig() as r:
        r.ent.f[0, ik.DEADLINE] = 10.0
        r.send(masked(moves((1, 0, 0))))
        assert r.run(now=5.0) == []  # a frame, the deadline far
        assert r.run(now=9.5) == [0]  # near: moved, to 5 + idle + step
        assert r.row[ik.FLAGS] & ik.BUMP
        r.row[ik.FLAGS] = 0
        r.ent.f[0, ik.DEADLINE] = 5.0 + IDLE + STEP
        assert r.run(now=9.6) == []
        r.peer.close()
        assert r.run(now=9.7) == [0]
        assert r.row[ik.FLAGS] & ik.EOF


# ---------------------------------------------------------------------- through the server

async def test_moves_split_anywhere_around_a_ping_reach_the_tick(serve) -> None:
    """A real server: MOVES frames cut at odd places, a ping among them (handed to the
    connection's own task and answered, then the kernel takes over again), every move
    applied in order and the connection left open."""
    from test_send_path import ARENA, ONE_ADDRESS, raw_join
    from ws_support import raw_ws

    srv = await serve(ARENA, **ONE_ADDRESS, http_port=-1, moves_per_second=1000.0)
    with trio.fail_after(20):
        async with raw_ws(srv.url) as ws:
            await raw_join(ws, "splitter")
            stream = ws._stream  # under trio-websocket: bytes exactly as we cut them
            frames = [masked(moves((s, 0.0, 1.0)), mask=bytes((s, 7, 9, s)))
                      for s in range(1, 41)]
            frames.insert(20, masked(b"ping", op=0x89))
            data = b"".join(frames)
            cuts = [0, 1, 5, 27, 60, 61, 333, 334, 500, len(data)]
            for a, b in itertools.pairwise(cuts):
                await stream.send_all(data[a:b])
                await trio.sleep(0.005)
            for _ in range(200):
                tick = decode_server_frame(await ws.get_message())
                if isinstance(tick, TickUpdate) and tick.ack >= 40:
                    break
            assert tick.ack == 40
            assert not ws.closed
    assert srv.metric("hunt_moves_total", fate="received") >= 40
