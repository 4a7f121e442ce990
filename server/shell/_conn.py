"""One client's WebSocket connection: wsproto handshake, frame parsing, one ordered send path.

The handshake is wsproto's (``H11Handshake``: the HTTP/1.1 upgrade, header
checks, the accept token). After it, frames are parsed by
:class:`server.shell._wsframes.FrameParser` and written pre-framed.

Sending: every byte a connection sends after the handshake leaves through one
ordered queue (:attr:`Connection.outbox`), whoever sends it: the tick's bulk
write, a WELCOME or an ERROR, a pong, the close. The queue has three ways out,
and each one is taken only when nothing is ahead of it, so frames never
overtake each other nor interleave:

- the tick's worker thread writes a client's frame itself (one ``write(2)``
  in a nogil kernel, :class:`SendSlots`) only while that connection's queue is
  empty, no task is writing it and it is not closing; anything sent during
  such a claim queues behind the tick's frame, and the rest of a frame the
  socket did not take whole goes back to the head of the queue;
- :meth:`Connection.send_now` writes straight to the non-blocking socket
  when the queue is empty and nothing writes it (one syscall, no task switch);
- otherwise the frame waits in the queue (at most ``outbox_limit`` messages)
  for the writer (:meth:`Connection.run_writer`), which first waits for the
  tick's claim to end: an event of :class:`SendSlots`, set once per tick for
  every connection at once.

"Final message, then close" is one operation (:meth:`Connection.close` with
``final``): from its call nothing else is accepted, queued frames nobody began
are dropped (a closing client has no use for stale TICKs, and a slow one would
never let the close through), a frame already begun ends first, then the final
message, then the close frame. A client whose queue is full is the hub's
business (skip, then evict): nothing here ever waits on a client in the tick.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import NoReturn

import numpy as np
import trio
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError as WsHandshakeError

from ..protocol import ErrorCode, ErrorMessage, encode
from . import _wsframes as wf

_RECEIVE_BYTES = 65536


class ConnectionClosed(Exception):
    """The connection is closed (by either side, or it broke); ``code`` is the close code."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The peer did not complete a valid WebSocket opening handshake."""


class SendSlots:
    """Which sockets the tick's worker thread may write, per player slot, as arrays: the
    tick claims every client in bulk instead of visiting 1,000 connection objects.

    ``fd[slot]`` is the socket of the slot's bound connection while that connection is
    idle (queue empty, no task writing, not closing), else -1. A connection binds once
    its WELCOME is out (:meth:`Connection.bind`) and keeps ``fd`` current at each change
    of its state. ``claim[slot]`` is the claim generation the slot was last claimed in:
    a connection is claimed while that generation is ``active``, so :meth:`end` releases
    every claim with one store and one wake-up of the tasks parked on ``released``.
    """

    def __init__(self, capacity: int) -> None:
        self.fd = np.full(capacity, -1, np.int64)
        self.claim = np.zeros(capacity, np.int64)
        self.conn: list[Connection | None] = [None] * capacity
        self.gen = 0
        self.active = 0  # 0: no claim in force (generations start at 1)
        #: Tasks waiting for the claim in force to end (writers, closes, aborts).
        self.released = trio.lowlevel.ParkingLot()

    def begin(self, slots: np.ndarray, fds: np.ndarray, claimed: np.ndarray) -> None:
        """Claim the idle sockets of ``slots``: their fds into ``fds`` (-1: not claimed,
        the frame goes through :meth:`Connection.send_now`), the mask into ``claimed``."""
        self.gen += 1
        np.take(self.fd, slots, out=fds)
        np.greater_equal(fds, 0, out=claimed)
        self.claim[slots[claimed]] = self.gen
        self.active = self.gen

    def end(self) -> None:
        """End every claim (the worker wrote its frames) and wake whoever waits for it."""
        self.active = 0
        if self.released:
            self.released.unpark_all()


class Connection:
    """A server-side WebSocket connection over a Trio socket stream.

    ``max_message``: largest data message accepted (bytes; over it: close 1009).
    ``outbox_limit``: messages that may wait for a slow socket before
    :meth:`send_now` refuses more.
    """

    def __init__(self, stream: trio.SocketStream, max_message: int, outbox_limit: int) -> None:
        self.stream = stream
        self.parser = wf.FrameParser(max_message)
        #: The ordered queue of frames not yet handed to the socket (see the module docstring).
        self.outbox: collections.deque[memoryview] = collections.deque()
        self.outbox_limit = outbox_limit
        self.closed: ConnectionClosed | None = None
        self.path = "/"
        #: The protocol version of its HELLO: WELCOME echoes it, its TICKs are of it.
        self.version = 1
        self.remote = _peer(stream)
        self._fd = stream.socket.fileno()
        self._wake = trio.Event()
        self._head_partial = False  # the outbox head is the rest of a frame already begun
        self._pumping = False  # a task is writing the outbox to the socket
        self._close_frame: bytes | None = None  # set by close(): goes out after the outbox
        self._close_code = 1000
        self._close_reason = ""
        self._finished = trio.Event()  # set once ``closed`` is set
        self._slots: SendSlots | None = None
        self._slot = 0
        #: Called when the connection closes (the poller stops watching its socket).
        self.on_closed: Callable[[], None] | None = None

    @property
    def closing(self) -> bool:
        """A close is under way or done: nothing more is accepted for sending."""
        return self._close_frame is not None or self.closed is not None

    # ------------------------------------------------------------------ handshake

    async def handshake(self) -> None:
        """Complete the opening handshake (the caller bounds it in time).

        Raises :class:`HandshakeFailed` after answering a bad request with 400.
        """
        hs = H11Handshake(ConnectionType.SERVER)
        while True:
            data = await self.stream.receive_some(_RECEIVE_BYTES)
            if not data:
                raise HandshakeFailed("peer closed during the handshake")
            try:
                hs.receive_data(data)
                for event in hs.events():
                    if isinstance(event, Request):
                        self.path = event.target
                        await self.stream.send_all(hs.send(AcceptConnection()))
                        # Bytes the client sent right after its request (h11 keeps
                        # them as trailing data of the upgrade; tests pin this).
                        trailing = hs._h11_connection.trailing_data[0]
                        if trailing:
                            self.parser.feed(bytes(trailing))
                        return
            except WsHandshakeError as exc:
                hint = exc.event_hint or RejectConnection(status_code=400)
                if not isinstance(hint, RejectConnection):
                    hint = RejectConnection(status_code=400)
                with contextlib.suppress(Exception):
                    await self.stream.send_all(_with_reason(hs.send(hint)))
                raise HandshakeFailed(str(exc)) from None

    # ------------------------------------------------------------------ receiving

    async def receive(self) -> wf.Message:
        """The next text or binary message. Answers pings; raises :class:`ConnectionClosed`.

        A protocol violation is answered with an ERROR and a close frame of its code,
        then raised as :class:`ConnectionClosed`.
        """
        parser = self.parser
        while True:
            try:
                msg = parser.next()
            except wf.FrameError as exc:
                await self.fail_frame(exc)
            if msg is None:
                if self.closed is not None:
                    raise self.closed
                try:
                    data = await self.stream.receive_some(_RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.lost()
                parser.feed(data)
                continue
            if not await self.take_control(msg):
                return msg

    async def take_control(self, msg: wf.Message) -> bool:
        """Answer a ping, or a close (raising :class:`ConnectionClosed`); False for data."""
        op = msg.opcode
        if op == wf.OP_BINARY or op == wf.OP_TEXT:
            return False
        if op == wf.OP_PING:
            await self.send(wf.frame(msg.payload, wf.OP_PONG))
        elif op == wf.OP_CLOSE:
            code = msg.close_code
            await self.close(1000 if code == 1005 else code, msg.reason)
            raise ConnectionClosed(code, msg.reason)
        return True

    async def fail_frame(self, exc: wf.FrameError) -> NoReturn:
        """Answer a frame-level violation with its ERROR, then its close code; raise."""
        await self.close(exc.close_code, exc.message, final=_error_frame(exc))
        raise ConnectionClosed(exc.close_code, exc.message) from None

    def lost(self) -> NoReturn:
        """The peer's end of the stream: raise :class:`ConnectionClosed` (1006)."""
        self._mark_closed(1006, "connection lost")
        raise self.closed  # type: ignore[misc]

    # ------------------------------------------------------------------ sending

    def send_now(self, data: bytes | memoryview) -> bool:
        """Hand one pre-framed message to the queue without waiting.

        Written to the socket at once when nothing is ahead of it and the socket
        takes it; queued otherwise (the writer task sends it). Returns False
        (nothing queued) when the queue already holds ``outbox_limit`` messages or
        the connection is closing.
        """
        if self._close_frame is not None or self.closed is not None:
            return False
        outbox = self.outbox
        if outbox or self._pumping or self._worker_claim:
            if len(outbox) >= self.outbox_limit:
                return False
            # A copy: the hub passes views of its frame buffer, rewritten every tick.
            outbox.append(memoryview(bytes(data)))
            self._sync_slot()
            self._wake.set()
            return True
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._mark_closed(1006, f"send failed: {exc.strerror}")
            return False
        if n < len(data):
            outbox.append(memoryview(bytes(memoryview(data)[n:])))
            self._head_partial = n > 0
            self._sync_slot()
            self._wake.set()
        return True

    async def send(self, data: bytes) -> None:
        """Queue one pre-framed message (a pong) and write the queue (raises ConnectionClosed).
        Dropped when the queue is full: the client is not reading anyway."""
        if self.closed is not None:
            raise self.closed
        if self.send_now(data) and self.outbox:
            await self._pump()

    # ------------------------------------------------------------------ the tick's writes

    def bind(self, slots: SendSlots, slot: int) -> None:
        """Let the tick's worker write this connection's frames (its WELCOME is out)."""
        self._slots, self._slot = slots, slot
        slots.conn[slot] = self
        self._sync_slot()

    def unbind(self) -> None:
        """Not the slot's connection any more (lost, replaced, left): the worker's next
        ticks skip it. A claim in force still holds until the tick's writes end."""
        slots = self._slots
        if slots is not None and slots.conn[self._slot] is self:
            slots.fd[self._slot] = -1
            slots.conn[self._slot] = None

    def _sync_slot(self) -> None:
        """Publish whether the worker may write this socket: only while idle, so a frame
        never overtakes one queued or being written, nor follows the close."""
        slots = self._slots
        if slots is not None and slots.conn[self._slot] is self:
            idle = (self.closed is None and self._close_frame is None and not self.outbox
                    and not self._pumping)
            slots.fd[self._slot] = self._fd if idle else -1

    @property
    def _worker_claim(self) -> bool:
        """The tick's worker may be writing to this socket (its slot's claim is in force).
        Conservative once unbound: a new connection's claim on the slot counts too."""
        slots = self._slots
        return (slots is not None and slots.active != 0
                and slots.claim[self._slot] == slots.active)

    async def _claim_ended(self) -> None:
        """Wait until the tick's worker no longer writes this socket (a tick at most)."""
        while self._worker_claim:
            await self._slots.released.park()  # type: ignore[union-attr]

    def after_worker(self, data: memoryview, written: int) -> None:
        """Back on the Trio thread, after the claim ended, for a frame the worker did not
        write whole: queue a copy of the rest at the head of the queue (a frame already
        begun must end first, and anything queued during the claim came after it). When
        the connection is closing, a frame not begun is dropped like any queued one."""
        if written < len(data) and (written > 0 or self._close_frame is None):
            self.outbox.appendleft(memoryview(bytes(data[written:])))
            self._head_partial = written > 0
            self._sync_slot()
        if self.outbox or self._close_frame is not None:
            self._wake.set()

    @property
    def backlog(self) -> int:
        """Messages waiting for the socket."""
        return len(self.outbox)

    async def run_writer(self) -> None:
        """Write what the queue holds for as long as the connection lives (run it in a task)."""
        while self.closed is None:
            if self._pumping or not (self.outbox or self._close_frame is not None):
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            with contextlib.suppress(ConnectionClosed):
                await self._pump()

    async def _pump(self) -> None:
        """Write the queue in order, then the close frame if a close was asked for: the only
        code that awaits the socket after the handshake. Returns at once if another task is
        at it (that one takes whatever is queued meanwhile)."""
        if self._pumping or self.closed is not None:
            return
        self._pumping = True
        self._sync_slot()  # from here on the tick queues its frame behind these
        try:
            await self._claim_ended()
            outbox = self.outbox
            while outbox and self.closed is None:
                # Out of the queue before the await: a close asked for meanwhile
                # (begin_close) then finds only frames nobody began, and the final
                # ERROR it queues cannot be taken for this one and dropped.
                data = outbox.popleft()
                self._head_partial = False
                await self._send_all(data)
            if self._close_frame is not None and self.closed is None:
                with contextlib.suppress(ConnectionClosed):
                    await self._send_all(self._close_frame)
                self._mark_closed(self._close_code, self._close_reason)
        finally:
            self._pumping = False
            self._sync_slot()

    async def _send_all(self, data: bytes | memoryview) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._mark_closed(1006, "connection lost while sending")
            raise self.closed from None  # type: ignore[misc]

    def begin_close(self, code: int, reason: str = "", final: bytes | None = None) -> bool:
        """Final message, then close: queue ``final`` (a pre-framed ERROR or REFUSED, or
        None) and the close frame of ``code``, behind a frame already begun; drop the
        queued frames nobody began; accept nothing more. Synchronous, so nothing can slip
        in between; :meth:`close` does the writing. False if a close was already asked."""
        if self.closing:
            return False
        outbox = self.outbox
        if outbox:
            begun = outbox[0] if self._head_partial else None
            outbox.clear()
            if begun is not None:
                outbox.append(begun)
        if final is not None:
            outbox.append(memoryview(bytes(final)))
        self._close_code, self._close_reason = code, reason
        self._close_frame = wf.close_frame(code, reason)
        self._sync_slot()
        self._wake.set()
        return True

    async def close(self, code: int, reason: str = "", final: bytes | None = None,
                    timeout: float = 2.0) -> None:
        """Send ``final`` (if any) and a close frame of ``code`` after a frame already
        begun (see :meth:`begin_close`), then close the TCP connection. Never raises;
        bounded by ``timeout`` seconds (a client that does not read is cut off)."""
        self.begin_close(code, reason, final)
        with trio.move_on_after(timeout):
            with contextlib.suppress(ConnectionClosed):
                await self._pump()
            await self._finished.wait()  # another task was writing: it sends the close
        if self.closed is None:
            self._mark_closed(code, reason)
        await self.abort()

    async def abort(self) -> None:
        """Close the TCP connection now."""
        if self.closed is None:
            self._mark_closed(1006, "aborted")
        with trio.CancelScope(shield=True):
            # The tick's worker may be writing to this fd: closing it now could let a new
            # connection reuse the number and receive the rest. Wait for the claim (a tick).
            await self._claim_ended()
            await self.stream.aclose()

    def _mark_closed(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = ConnectionClosed(code, reason)
            self._sync_slot()
            self._finished.set()
        self._wake.set()
        if self.on_closed is not None:
            self.on_closed()

def _error_frame(exc: wf.FrameError) -> bytes:
    """The ERROR before the close of a WebSocket-level violation (docs/protocol.md: every
    close for a reason follows an ERROR with its close code)."""
    code = ErrorCode[exc.error]
    return wf.frame(encode(ErrorMessage(code, exc.message[:256], exc.close_code)))


def _peer(stream: trio.SocketStream) -> str:
    try:
        host = stream.socket.getpeername()[0]
    except OSError:
        return "?"
    return str(host)


def _with_reason(response: bytes) -> bytes:
    """The status line with its reason phrase: wsproto's ``RejectConnection`` has no field for
    one, so h11 writes ``HTTP/1.1 400 `` (valid, but curl -i and proxies' logs print it)."""
    line, sep, rest = response.partition(b"\r\n")
    version, _, tail = line.partition(b" ")
    code, _, reason = tail.partition(b" ")
    if reason or not code.isdigit():
        return response
    try:
        phrase = HTTPStatus(int(code)).phrase.encode()
    except ValueError:
        return response
    return b"%s %s %s%s%s" % (version, code, phrase, sep, rest)
