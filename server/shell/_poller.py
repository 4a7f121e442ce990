"""One task reads the moves of every joined client: one epoll set per hub, drained in bulk.

Why: with one Trio task per connection, each move costs a task wake-up, a
``receive_some`` and a trip through the scheduler: at thousands of clients
moving ten times a second that is the whole Trio thread (perf/README.md,
"Figures behind the code's choices"). Here the sockets of a hub's playing clients
sit in one ``epoll`` set, and one task takes every ready socket of every hub in one
nogil kernel call per hub (server/shell/_intake.py): reads, frames, MOVES decode and
rate limit straight into the tick's batch, no Python object per move.

Passes run on a timer (:data:`PASS_INTERVAL`) rather than on every socket's readiness:
a wake-up through Trio costs a few dozen allocations and tens of microseconds whatever
it reads, so its cost is fixed per second instead of growing with the moves. Moves lose
no tick for it: the hub runs a pass of its own sockets just before it takes the batch
(:meth:`Poller.pass_hub`). What waits up to one interval is what is not a move.

Only MOVES frames are handled in the kernel. Anything else (BYE, a text message, a
ping, a close, a frame error, end of stream) is handed to the connection's frame
parser; moves before it are taken here as before (:meth:`Hub.take_moves`), and the
first other message stops polling that socket and wakes its connection task, which
handles it with the ordinary code path and then hands the socket back
(:meth:`Poller.wait`). Everything runs on the Trio thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import trio

from ..protocol import MAX_CLIENT_FRAME_BYTES
from . import _intake as ik
from . import _wsframes as wf

if TYPE_CHECKING:
    from ..hunt._hub import Hub, Session
    from ._conn import Connection

#: Seconds between two passes over the sockets (the hub's own pass before each tick
#: aside): how long a ping, a BYE or a bad frame may wait to be read.
PASS_INTERVAL = 0.02
_READ_BYTES = 65536


def idle_step(idle_timeout: float) -> float:
    """The slack of a connection's idle deadline, in seconds: at most a second, and a quarter
    of a short ``idle_timeout``. The deadline lies ``idle_timeout + step`` after a frame; the
    connection task moves it at most once a step for the frames it reads itself (a
    cancel-scope update per message is a measurable share of the CPU under load), and the
    poller only when it is near (within a step) and frames came since, to the last one. So
    a client that sends a frame at least every ``idle_timeout`` seconds is never closed,
    and a silent one is closed within one step after it."""
    return min(1.0, idle_timeout / 4)


class _Entry:
    __slots__ = ("conn", "error", "event", "hub", "message", "on_rate_limited", "row", "scope",
                 "session")

    def __init__(self, conn: Connection, hub: Hub, session: Session, scope: trio.CancelScope,
                 on_rate_limited: Callable[[Connection, Session, float], None]) -> None:
        self.conn = conn
        self.hub = hub
        self.session = session
        self.scope = scope
        self.event = trio.Event()
        self.message: wf.Message | None = None
        self.error: wf.FrameError | None = None
        self.on_rate_limited = on_rate_limited
        self.row = -1  # the connection's row in its hub's Intake while polled


class _Intake:
    """One hub's epoll set and its connections' rows (server/shell/_intake.py)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: The hub's move intake: its batch, rate limit and figures.
        self.sessions = hub.sessions
        self.ep = select.epoll()
        self.epfd = self.ep.fileno()
        self.ent = ik.new_entries(64, 1024)
        self.entries: list[_Entry | None] = [None] * 64
        self.free = list(range(63, -1, -1))
        self.todo = np.zeros(64, np.int64)
        self.out = np.zeros(2, np.int64)

    def __len__(self) -> int:
        return len(self.entries) - len(self.free)

    def add(self, e: _Entry) -> None:
        conn, s = e.conn, e.session
        if not self.free:
            self._grow(2 * len(self.entries))
        fd = conn._fd
        if fd >= self.ent.of_fd.shape[0]:
            of_fd = np.full(max(2 * self.ent.of_fd.shape[0], fd + 1), -1, np.int64)
            of_fd[:self.ent.of_fd.shape[0]] = self.ent.of_fd
            self.ent = self.ent._replace(of_fd=of_fd)
        r = self.free.pop()
        ent, parser = self.ent, conn.parser
        left = parser.take_buffered()
        ent.stage[r, :len(left)] = np.frombuffer(left, np.uint8)
        row = ent.i[r]
        row[ik.HAVE] = len(left)
        row[ik.SLOT], row[ik.PLAYER], row[ik.HUNT] = s.slot, s.player_id, s.hunt
        # A connection replaced by a resume reads on until it is closed: its moves are no
        # longer the player's (they would undo the stop of the replace).
        row[ik.GEN] = self.sessions.move_rates.i[s.slot, ik.R_GEN] if s.conn is conn else -1
        row[ik.FLAGS] = ik.SLOW if (parser.in_fragment or
                                    parser.clock is not time.monotonic) else 0
        budget = parser.bytes_budget
        ent.f[r, :ik.LAST] = ((budget.level, budget.t, budget.rate, budget.burst) if budget
                              else (math.inf, 0.0, math.inf, math.inf))
        ent.f[r, ik.LAST] = -math.inf
        ent.f[r, ik.DEADLINE] = e.scope.deadline
        row[ik.FD] = fd
        ent.of_fd[fd] = r
        self.entries[r] = e
        e.row = r
        self.ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)

    def remove(self, e: _Entry) -> None:
        """Stop polling ``e``: its unread bytes and its byte budget back to its parser."""
        r, e.row = e.row, -1
        ent, parser = self.ent, e.conn.parser
        row = ent.i[r]
        fd = int(row[ik.FD])
        # Closed meanwhile: the kernel dropped it from the set already.
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(fd)
        have = int(row[ik.HAVE])
        if have:
            parser.feed(ent.stage[r, :have].tobytes(), charged=True)
        budget = parser.bytes_budget
        if budget is not None:
            budget.level, budget.t = float(ent.f[r, ik.LEVEL]), float(ent.f[r, ik.REFILL])
        row[ik.FD] = -1
        row[ik.HAVE] = row[ik.FLAGS] = 0
        if ent.of_fd[fd] == r:
            ent.of_fd[fd] = -1
        self.entries[r] = None
        self.free.append(r)

    def _grow(self, capacity: int) -> None:
        old, n = self.ent, len(self.entries)
        new = ik.new_entries(capacity, old.of_fd.shape[0])
        new.i[:n], new.f[:n], new.stage[:n], new.of_fd[:] = old.i, old.f, old.stage, old.of_fd
        self.ent = new
        self.entries.extend([None] * (capacity - n))
        self.free.extend(range(capacity - 1, n - 1, -1))
        self.todo = np.zeros(capacity, np.int64)

    def close(self) -> None:
        self.ep.close()


class Poller:
    """The epoll sets of playing clients and the task that drains them (:meth:`run`)."""

    def __init__(self, idle_timeout: float, moves_per_second: float = 60.0) -> None:
        self.idle = idle_timeout
        self.step = idle_step(idle_timeout)
        self.rate = moves_per_second
        # A deadline is moved once it is this near (a pass may come up to an interval late).
        self.margin = self.step + 3 * PASS_INTERVAL
        self._intakes: dict[Hub, _Intake] = {}
        self._events = np.zeros(ik.MAX_EVENTS * ik._EV_SIZE, np.uint8)
        self._scratch = np.zeros(MAX_CLIENT_FRAME_BYTES + 16, np.uint8)
        self._timer = _timerfd(PASS_INTERVAL)
        self._polling = trio.Event()  # set while any socket is polled

    def close(self) -> None:
        for intake in self._intakes.values():
            intake.close()
        self._intakes.clear()
        os.close(self._timer)

    async def wait(self, conn: Connection, hub: Hub, session: Session, scope: trio.CancelScope,
                   on_rate_limited: Callable[[Connection, Session, float], None]
                   ) -> tuple[wf.Message | None, wf.FrameError | None]:
        """Poll ``conn`` until it has something other than moves: that message (None at the
        end of the stream or when the connection closed), or the frame error."""
        e = _Entry(conn, hub, session, scope, on_rate_limited)
        # Bytes already parsed-ahead stay in the parser: take them before waiting.
        if self._drain(e, trio.current_time()):
            return e.message, e.error
        if conn.closed is not None:
            return None, None
        intake = self._intakes.get(hub)
        if intake is None:
            intake = self._intakes[hub] = _Intake(hub)
            hub.sessions.before_batch = lambda: self.pass_hub(hub)
        intake.add(e)
        self._polling.set()
        conn.on_closed = lambda: self._release(e)
        try:
            await e.event.wait()
        finally:
            self._release(e)
            conn.on_closed = None
        return e.message, e.error

    def _release(self, e: _Entry) -> None:
        if e.row >= 0:
            intake = self._intakes[e.hub]
            intake.remove(e)
            if not len(intake):
                del self._intakes[e.hub]
                intake.sessions.before_batch = None
                intake.close()
                if not self._intakes:
                    self._polling = trio.Event()
        e.event.set()

    async def run(self) -> None:
        """Drain the ready sockets every PASS_INTERVAL, forever (cancel to stop)."""
        timer = self._timer
        while True:
            if not self._intakes:
                await self._polling.wait()
            await trio.lowlevel.wait_readable(timer)
            with contextlib.suppress(BlockingIOError):
                os.read(timer, 8)
            now, mono = trio.current_time(), time.monotonic()
            for intake in list(self._intakes.values()):
                self._pass(intake, now, mono)

    def pass_hub(self, hub: Hub) -> None:
        """A pass over ``hub``'s sockets now (the hub calls it just before it takes the
        batch, so that no move that arrived before the tick waits for the next)."""
        intake = self._intakes.get(hub)
        if intake is not None:
            self._pass(intake, trio.current_time(), time.monotonic())

    def _pass(self, intake: _Intake, now: float, mono: float) -> None:
        sessions = intake.sessions
        batch = sessions.batch
        c0 = batch.count
        out = intake.out
        n = ik.ingest_pass(intake.epfd, self._events, intake.ent, sessions.move_rates,
                           batch.ids, batch.seqs, batch.dx, batch.dy, c0,
                           sessions.report.dropped, now, mono, self.rate, self.idle, self.step,
                           self.margin, self._scratch, intake.todo, out)
        count = int(out[0])
        if count != c0:
            batch.count = count
            sessions.report.clock.mark(count, count - c0, now)
        if out[1]:
            sessions.moves_dropped += int(out[1])
            out[1] = 0
        if n:
            self._attend(intake, intake.todo[:n].tolist(), now)

    def _attend(self, intake: _Intake, rows: list[int], now: float) -> None:
        """The connections the kernel flagged: warnings, idle deadlines, hand-overs."""
        ent = intake.ent
        for r in rows:
            e = intake.entries[r]
            flags = int(ent.i[r, ik.FLAGS])
            ent.i[r, ik.FLAGS] = flags & ik.SLOW
            if e is None:
                continue
            if flags & ik.WARN:
                e.on_rate_limited(e.conn, e.session, now)
                if e.row < 0:  # closed meanwhile
                    continue
            if flags & ik.BUMP:
                deadline = float(ent.f[r, ik.LAST]) + self.idle + self.step
                ent.f[r, ik.DEADLINE] = e.scope.deadline = deadline
            if flags & (ik.HANDOVER | ik.READ_ERROR | ik.EOF):
                self._hand_over(intake, e, flags, now)

    def _hand_over(self, intake: _Intake, e: _Entry, flags: int, now: float) -> None:
        """Give the connection's unread bytes to its parser and take what it makes of them
        on the ordinary path; stop polling at the first message that is not moves."""
        ent, r, parser = intake.ent, e.row, e.conn.parser
        row = ent.i[r]
        more = b""
        if flags & ik.READ_ERROR:  # the kernel cannot see errno: read again to know
            try:
                more = os.read(int(row[ik.FD]), _READ_BYTES)
            except BlockingIOError:
                return
            except OSError:
                more = b""
            if not more:
                flags |= ik.EOF
        if flags & ik.EOF:
            self._release(e)
            return
        rest, have, owed = int(row[ik.REST]), int(row[ik.HAVE]), int(row[ik.OWED])
        data = ent.stage[r, rest:have].tobytes()
        row[ik.HAVE] = row[ik.OWED] = 0
        budget = parser.bytes_budget
        if budget is not None:
            budget.level, budget.t = float(ent.f[r, ik.LEVEL]), float(ent.f[r, ik.REFILL])
        parser.feed(data[:len(data) - owed], charged=True)
        if owed:  # the read the kernel found over the budget: the parser refuses it
            parser.feed(data[len(data) - owed:])
        if more:
            parser.feed(more)
        if self._drain(e, now):
            self._release(e)
            return
        # Only moves: polling goes on from the parser's unread bytes and budget.
        left = parser.take_buffered()
        ent.stage[r, :len(left)] = np.frombuffer(left, np.uint8)
        row[ik.HAVE] = len(left)
        if budget is not None:
            ent.f[r, ik.LEVEL], ent.f[r, ik.REFILL] = budget.level, budget.t
        if parser.in_fragment:
            row[ik.FLAGS] |= ik.SLOW
        else:
            row[ik.FLAGS] &= ~ik.SLOW

    @staticmethod
    def _drain(e: _Entry, now: float) -> bool:
        """Take the parsed moves; True when a message for the connection task turned up."""
        parser = e.conn.parser
        take = e.hub.take_moves
        s = e.session
        # A connection replaced by a resume reads on until it is closed: its moves are
        # no longer the player's (they would undo the stop of the replace).
        if s.conn is not e.conn:
            take = _ignore_moves
        while True:
            try:
                msg = parser.next()
            except wf.FrameError as exc:
                e.error = exc
                return True
            if msg is None:
                return False
            payload = msg.payload
            if msg.opcode == wf.OP_BINARY and payload[:1] == b"\x02":
                try:
                    taken = take(s, payload, now)
                except Exception:  # a bad MOVES frame: the connection task says why
                    e.message = msg
                    return True
                if not taken and e.hub.sessions.rate_warning_due(s, now):
                    e.on_rate_limited(e.conn, s, now)
                continue
            e.message = msg
            return True


def _ignore_moves(s: Session, payload: bytes, now: float) -> int:
    return 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _timerfd(interval: float) -> int:
    """A non-blocking timerfd (Linux) that turns readable every ``interval`` seconds:
    one wait of the Trio task per pass, the cheapest wake-up Trio has (no deadline)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create failed")
    ns = int(interval * 1e9)
    every = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
    if libc.timerfd_settime(fd, 0, ctypes.byref(_Itimerspec(every, every)), None) < 0:
        os.close(fd)
        raise OSError(ctypes.get_errno(), "timerfd_settime failed")
    return fd
