"""One task reads the moves of every joined client: an epoll set, drained in bulk.

Why: with one Trio task per connection, each move costs a task wake-up, a
``receive_some`` and a trip through the scheduler: at thousands of clients
moving ten times a second that is the whole Trio thread (perf/README.md,
"Figures behind the code's choices"). Here the sockets of playing clients sit
in one ``epoll`` set; one task waits for the epoll descriptor itself to turn
readable (Trio polls it like any socket), then takes every ready socket in one
pass: ``read(2)``, frame parser, :meth:`Hub.take_moves` into the tick's batch.
No task switch per move.

Only MOVES frames are handled here. Anything else (BYE, a text message, a ping,
a close, a frame error, end of stream) stops polling that socket and wakes its
connection task, which handles it with the ordinary code path and then hands
the socket back (:meth:`Poller.wait`). Everything runs on the Trio thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from . import _wsframes as wf

if TYPE_CHECKING:
    from ..hunt._hub import Hub, Session
    from ._conn import Connection

_READ_BYTES = 65536
_MOVES = 0x02


def idle_step(idle_timeout: float) -> float:
    """How often a connection's idle deadline may move, in seconds: at most once a second (a
    cancel-scope update per message is a measurable share of the CPU under load), and often
    enough for a short ``idle_timeout``. The deadline is set ``idle_timeout + step`` ahead of
    the frame that moves it, so a client that sends a frame at least every ``idle_timeout``
    seconds is never closed, and a silent one is closed within one step after it."""
    return min(1.0, idle_timeout / 4)


class _Entry:
    __slots__ = (
        "bump_after",
        "conn",
        "error",
        "event",
        "fd",
        "hub",
        "message",
        "on_rate_limited",
        "scope",
        "session",
    )

    def __init__(self, conn: Connection, hub: Hub, session: Session, scope: trio.CancelScope,
                 on_rate_limited: Callable[[Connection, Session, float], None]) -> None:
        self.conn = conn
        self.hub = hub
        self.session = session
        self.scope = scope
        self.bump_after = -math.inf  # the first move moves the idle deadline
        self.event = trio.Event()
        self.message: wf.Message | None = None
        self.error: wf.FrameError | None = None
        self.fd = conn._fd
        self.on_rate_limited = on_rate_limited


class Poller:
    """The epoll set of playing clients and the task that drains it (:meth:`run`)."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle = idle_timeout
        self.step = idle_step(idle_timeout)
        self._ep = select.epoll()
        self._entries: dict[int, _Entry] = {}

    def close(self) -> None:
        self._ep.close()

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
        self._entries[e.fd] = e
        self._ep.register(e.fd, select.EPOLLIN | select.EPOLLRDHUP)
        conn.on_closed = lambda: self._release(e)
        try:
            await e.event.wait()
        finally:
            self._release(e)
            conn.on_closed = None
        return e.message, e.error

    def _release(self, e: _Entry) -> None:
        if self._entries.get(e.fd) is e:
            del self._entries[e.fd]
            # Closed meanwhile: the kernel dropped it from the set already.
            with contextlib.suppress(OSError, ValueError):
                self._ep.unregister(e.fd)
        e.event.set()

    async def run(self) -> None:
        """Drain ready sockets forever (cancel to stop)."""
        ep = self._ep
        entries = self._entries
        while True:
            await trio.lowlevel.wait_readable(ep.fileno())
            ready = ep.poll(0, 4096)
            now = trio.current_time()
            for fd, _events in ready:
                e = entries.get(fd)
                if e is None:
                    continue
                try:
                    data = os.read(fd, _READ_BYTES)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._release(e)
                    continue
                e.conn.parser.feed(data)
                if self._drain(e, now):
                    self._release(e)
                elif now > e.bump_after:
                    # The idle deadline moves at most once a step (idle_step). A
                    # comparison, not a subtraction: no float is made per read.
                    e.bump_after = now + self.step
                    e.scope.deadline = now + self.idle + self.step
            # No checkpoint here: wait_readable always parks the task until Trio's next
            # I/O poll, so every pass already yields to the other tasks.

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
                if not taken and now - s.last_rate_warning >= 1.0:
                    s.last_rate_warning = now
                    e.on_rate_limited(e.conn, s, now)
                continue
            e.message = msg
            return True



def _ignore_moves(s: Session, payload: bytes, now: float) -> int:
    return 1
