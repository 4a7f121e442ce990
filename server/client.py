"""A small Trio client of the hunt server: join, steer, and follow the hunt tick by tick.

.. code-block:: python

    import trio
    from server.client import connect

    async def main():
        async with connect("ws://127.0.0.1:8765/", "alice", "demo") as hunt:
            await hunt.move(1.0, 0.0)               # full speed east (a direction, length <= 1)
            async for update in hunt.ticks():       # one TickUpdate per server tick
                print(hunt.tick, hunt.x, hunt.y, hunt.hint, hunt.score, len(hunt.others))

    trio.run(main)

One :class:`HuntClient` is one WebSocket connection (trio-websocket) and one
player. It keeps the state docs/protocol.md ("What a client does with a TICK")
asks a client to keep: its own authoritative position, score and hint, the
players in view (``others``), their names and the leaderboard. Positions are in
world units, time in ticks; the hunt's parameters are in :attr:`HuntClient.welcome`.

Scale-out: a node that does not own the hunt answers the HELLO with a REDIRECT;
:func:`connect` sends the same HELLO to the owner (at most ``max_redirects``
times). The client remembers its ``entry_url`` (the URL given) and the node it
is on (``url``): after a drop or ``HUNT_MOVED``, resume through the entry URL
(:meth:`HuntClient.reconnect`), which knows the hunt's new owner.

Errors (all :class:`HuntError`): a refused HELLO raises :class:`JoinRefused`;
a fatal server ERROR raises :class:`ServerError` (its close code says why:
4008 too slow, 1001 the server is going away, 4011 the hunt moved to another
node, 4014 the hunt failed and restarts ...); a connection that ends without one
raises :class:`ConnectionLost`.
Non-fatal ERRORs (``RATE_LIMITED``) are counted, never raised. A TICK that does
not follow the previous one (a diff whose tick is not the last one plus one)
raises :class:`TickGap` and leaves the state untouched: reconnect with
``hunt.reconnect()``, which starts again from a keyframe (the server never skips ticks without
sending a keyframe, so a gap means a lost message or a server bug).

Round-based hunts (docs/protocol.md, "Rounds"): the ROUND and RESULTS messages
are taken on the way to the next TICK. :attr:`HuntClient.round` is the current
phase, :meth:`HuntClient.ticks_left` the time left in it, :attr:`HuntClient.results`
the last round's standings; ``round_events`` keeps both kinds in arrival order.
Moves work in every phase, so a player (or a bot) just keeps playing across rounds.

Nothing here waits without a bound when the server stops answering, except
:meth:`HuntClient.next_tick` (a tick is due every 1/tick_rate seconds): wrap
it in ``trio.fail_after`` when the server may hang.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import numpy as np
import trio
import trio_websocket

from .protocol import (
    DISCOVERY_RECORD,
    LEADER_RECORD,
    MAX_SERVER_FRAME_BYTES,
    PROTOCOL_VERSION,
    Bye,
    ErrorCode,
    ErrorMessage,
    Hello,
    LocalProtocolError,
    Move,
    Moves,
    Redirect,
    Refused,
    RemoteProtocolError,
    Results,
    Round,
    TickDecoder,
    TickUpdate,
    Welcome,
    decode_server_frame,
    encode,
)

#: Bytes read from the socket at once (keyframes of large hunts are big).
RECEIVE_BUFFER_BYTES = 1 << 16
_BYE = encode(Bye())


class HuntError(Exception):
    """Base class of the errors this client raises on purpose."""


class ConnectFailed(HuntError):
    """No WebSocket connection to the server (refused, HTTP error, timeout): check the URL,
    or that the server runs; the cause is in ``__cause__``. Also: more than ``max_redirects``
    REDIRECTs (the message names the chain of URLs), or an answer to the HELLO that the
    protocol forbids (a :class:`RemoteProtocolError` in ``__cause__``)."""


class _Notice(HuntError):
    def __init__(self, code: int, message: str, close_code: int) -> None:
        self.code = code
        self.message = message
        self.close_code = close_code
        super().__init__(f"{_code_name(code)} (close {close_code}): {message}")

    @property
    def name(self) -> str:
        """The error code's name (``HUNT_FULL``), or its number if this client does not know it."""
        return _code_name(self.code)


class JoinRefused(_Notice):
    """The server refused the HELLO (REFUSED): ``code`` is an :class:`ErrorCode` such as
    ``UNKNOWN_HUNT`` or ``HUNT_FULL``, ``message`` says why, ``close_code`` closed the socket.

    ``TOO_MANY_JOINS`` (4012): this IP address sent too many HELLOs lately; try again in a
    second or more. ``ADDRESS_FULL`` (4013): this IP address has the most players the
    server allows in that hunt; one of them must leave (BYE) first.
    """


class ServerError(_Notice):
    """The server sent a fatal ERROR and closed the connection with ``close_code``.

    ``TOO_SLOW`` (4008): this client did not read its ticks fast enough.
    ``GOING_AWAY`` (1001): the server is shutting down; resume later.
    ``REPLACED`` (4007): another connection resumed this player.
    ``HUNT_MOVED`` (4011): the hunt stopped on this node (scale-out); resume through the
    entry URL: ``async with hunt.reconnect() as hunt: ...``.
    ``HUNT_FAILED`` (4014): the hunt failed on the server (a full disk, a bug) and stopped at
    its last durable tick; it restarts after a backoff (or on another node): retry
    ``hunt.reconnect()`` after a few seconds, with a growing delay while it refuses.
    ``OVER_BUDGET`` (1008): this connection sent more control frames (pings) or bytes per
    second than the server allows.
    Anything else (1002, 1008, 1009) means this client broke the protocol.
    """


class ConnectionLost(HuntError):
    """The connection closed without an ERROR first. ``code`` is the WebSocket close code
    (1006: the TCP connection broke); resume with the token within the server's grace period."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        self.code = code
        self.reason = reason or ""
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''}); "
                         "reconnect with the resume token to take the player back")


class TickGap(HuntError):
    """A diff that does not follow the last TICK (``expected`` tick, ``got`` tick): a message
    was lost. The state is as before it; reconnect with the resume token (a keyframe follows)."""

    def __init__(self, expected: int, got: int) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"TICK diff {got} after tick {expected - 1} (expected {expected}): "
                         "a message was lost; reconnect with the resume token")


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


class HuntClient:
    """One player in a hunt over one connection. Made by :func:`connect`; see the module doc.

    State after each :meth:`next_tick` (as of the server's last TICK):

    - ``tick``: the TICK's number (WELCOME's ``tick`` before the first one);
    - ``x``, ``y``: own authoritative position, world units; ``score``; ``hint``
      (0: no treasure within ``hint_radius``, up to ``welcome.hint_levels``: very
      close); ``ack``: last move seq the server applied;
    - ``others``: ``{slot: (gen, x, y)}`` of the players in view (``gen``: the
      low 16 bits of the generation), ``names``: ``{slot: name}`` of the hunt's
      players, ``leaderboard``: LEADER_RECORD rows, best first;
    - ``discoveries``: DISCOVERY_RECORD rows of the last tick (the whole hunt's);
    - ``rate_limited``: RATE_LIMITED warnings received; ``warnings``: the last
      non-fatal ERRORs; ``ticks_received``; ``keyframes``;
    - round-based hunts: ``round`` (the last :class:`~server.protocol.Round`, None
      for a hunt without rounds), ``results`` (the last
      :class:`~server.protocol.Results`), ``round_events`` (the last 64 of both).
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, welcome: Welcome, *,
                 url: str = "", entry_url: str | None = None,
                 redirects: list[str] | None = None, hello: Hello | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.websocket = ws
        self.welcome = welcome
        #: The node this connection is on, and the URL given to :func:`connect`.
        self.url = url
        self.entry_url = url if entry_url is None else entry_url
        #: The REDIRECT URLs followed to get here, in order ([] if the entry node owns the hunt).
        self.redirects = list(redirects or ())
        self._hello = hello
        self._options = dict(options or {})
        #: Decodes the TICKs of the connection's protocol version (WELCOME's).
        self._tick_decoder = TickDecoder.for_welcome(welcome)
        self.player_id = welcome.player_id
        self.resume_token = welcome.resume_token
        self.tick = welcome.tick
        self.ack = welcome.ack
        self.x = welcome.spawn_x
        self.y = welcome.spawn_y
        #: Own score: 0 until the first TICK (a resumed player's score comes with it).
        self.score = 0
        self.hint = 0
        self.others: dict[int, tuple[int, float, float]] = {}
        self.names: dict[int, str] = {}
        self._name_gen: dict[int, int] = {}
        self.leaderboard: np.ndarray = np.zeros(0, LEADER_RECORD)
        self.discoveries: np.ndarray = np.zeros(0, DISCOVERY_RECORD)
        self.rate_limited = 0
        self.warnings: deque[ErrorMessage] = deque(maxlen=16)
        self.ticks_received = 0
        self.keyframes = 0
        self.round: Round | None = None
        self.results: Results | None = None
        self.round_events: deque[Round | Results] = deque(maxlen=64)
        self._seq = welcome.ack  # moves go on from ack + 1, across resumes
        self._synced = False  # a keyframe has arrived on this connection
        self._closed = False

    @property
    def slot(self) -> int:
        """This player's slot (the low 32 bits of its id): how TICK records name it."""
        return self.player_id & 0xFFFFFFFF

    def ticks_left(self) -> int | None:
        """Ticks until the current phase's scheduled end, as of the last TICK (None for a hunt
        without rounds, or one whose rounds are over). Seconds: divide by
        ``welcome.tick_rate``."""
        return None if self.round is None else self.round.ticks_left(self.tick)

    @property
    def seq(self) -> int:
        """The sequence number of the last move sent."""
        return self._seq

    def reconnect(self, **options: Any) -> AbstractAsyncContextManager[HuntClient]:
        """``async with hunt.reconnect() as hunt:`` take this player back on a new connection:
        :func:`connect` to the **entry URL** with its resume token, name and hunt (and the same
        options, unless overridden). After ``HUNT_MOVED`` or a drop, the entry node knows the
        hunt's new owner. Raises like :func:`connect` (``RESUME_INVALID`` once the grace period
        is over). The resume token is the proof: no ticket is sent unless ``ticket=`` is given
        (a ticket admits once; it may have expired since).
        """
        if self._hello is None:
            raise RuntimeError("this HuntClient was not made by connect(): nothing to resume")
        return connect(self.entry_url, self._hello.name, self._hello.hunt,
                       resume_token=self.resume_token, **{**self._options, **options})

    # ------------------------------------------------------------------ sending

    async def move(self, dx: float, dy: float) -> int:
        """Steer towards ``(dx, dy)`` (a direction; longer than 1 counts as 1) until the next
        move. Returns its sequence number; ``ack`` reaches it once a tick has applied it.

        Raises ValueError for a non-finite direction, :class:`ConnectionLost` when the
        connection is closed.
        """
        seq = self._seq + 1
        try:
            frame = encode(Moves((Move(seq, dx, dy),)))
        except LocalProtocolError as exc:
            raise ValueError(f"cannot send this move: {exc.message}") from None
        await self._send(frame)
        self._seq = seq
        return seq

    async def bye(self, timeout: float = 5.0) -> None:
        """Leave the hunt for good (the resume token dies) and wait, at most ``timeout``
        seconds, for the server to close the connection."""
        if self._closed:
            return
        await self._send(_BYE)
        self._closed = True
        with trio.move_on_after(timeout):
            try:
                while True:
                    await self.websocket.get_message()
            except trio_websocket.ConnectionClosed:
                pass
        await self.websocket.aclose()

    async def _send(self, frame: bytes) -> None:
        ws = self.websocket
        try:
            await ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise _lost(exc.reason) from None

    # ------------------------------------------------------------------ receiving

    async def next_tick(self) -> TickUpdate:
        """Wait for the next TICK, apply it to this client's state, and return it.

        Warnings are counted on the way. Raises :class:`ServerError`,
        :class:`ConnectionLost` or :class:`TickGap` (see the module doc).
        """
        while True:
            event = await self._receive()
            if isinstance(event, TickUpdate):
                self._apply(event)
                return event
            if isinstance(event, Round):
                self.round = event
                self.round_events.append(event)
                continue
            if isinstance(event, Results):
                self.results = event
                self.round_events.append(event)
                continue
            if isinstance(event, ErrorMessage) and not isinstance(event, Refused):
                if event.close_code == 0:
                    if event.code == ErrorCode.RATE_LIMITED:
                        self.rate_limited += 1
                    self.warnings.append(event)
                    continue
                self._closed = True
                raise ServerError(event.code, event.message, event.close_code)
            raise await self._violation(f"unexpected {type(event).__name__} after WELCOME")

    def ticks(self) -> AsyncIterator[TickUpdate]:
        """``async for update in client.ticks()``: :meth:`next_tick` forever (until it raises)."""
        return _Ticks(self)

    async def _receive(self) -> Any:
        try:
            data = await self.websocket.get_message()
        except trio_websocket.ConnectionClosed as exc:
            self._closed = True
            raise _lost(exc.reason) from None
        try:
            return decode_server_frame(data, self._tick_decoder)
        except RemoteProtocolError as exc:
            await self.websocket.aclose(exc.close_code, exc.message[:100])
            self._closed = True
            raise

    async def _violation(self, message: str) -> RemoteProtocolError:
        exc = RemoteProtocolError(message, ErrorCode.UNEXPECTED)
        await self.websocket.aclose(exc.close_code, message[:100])
        self._closed = True
        return exc

    def _apply(self, t: TickUpdate) -> None:
        """Apply one TICK as docs/protocol.md says, after checking that it follows the last."""
        if not t.keyframe and (not self._synced or t.tick != self.tick + 1):
            raise TickGap(self.tick + 1, t.tick)
        others = self.others
        names, name_gen = self.names, self._name_gen
        if t.keyframe:  # it lists everyone in view, and names everyone in the hunt
            others.clear()
            names.clear()
            name_gen.clear()
            self._synced = True
            self.keyframes += 1
        for slot, gen, flags, x, y in t.visible.tolist():
            if flags & 1:
                others[slot] = (gen, x, y)
            else:
                others.pop(slot, None)
        for slot, gen in t.leaves.tolist():
            seen = others.get(slot)
            if seen is not None and seen[0] == gen & 0xFFFF:
                del others[slot]
            if name_gen.get(slot) == gen:
                del names[slot], name_gen[slot]
        for entry in t.names:
            names[entry.slot] = entry.name
            name_gen[entry.slot] = entry.gen
        if t.leaderboard is not None:
            self.leaderboard = t.leaderboard
        self.discoveries = t.discoveries
        self.tick, self.ack = t.tick, t.ack
        self.x, self.y = t.x, t.y
        self.score, self.hint = t.score, t.hint
        self.ticks_received += 1


class _Ticks:
    """The async iterator of :meth:`HuntClient.ticks` (a class, not an async generator:
    nothing to finalize when the caller breaks out of the loop)."""

    def __init__(self, client: HuntClient) -> None:
        self._client = client

    def __aiter__(self) -> _Ticks:
        return self

    async def __anext__(self) -> TickUpdate:
        return await self._client.next_tick()


def _lost(reason: Any) -> ConnectionLost:
    if reason is None:
        return ConnectionLost(None, None)
    return ConnectionLost(reason.code, reason.reason)


@asynccontextmanager
async def connect(url: str, name: str, hunt: str, *, resume_token: bytes | None = None,
                  ticket: str = "", max_redirects: int = 3, connect_timeout: float = 10.0,
                  disconnect_timeout: float = 5.0,
                  version: int = PROTOCOL_VERSION) -> AsyncIterator[HuntClient]:
    """Join ``hunt`` as ``name`` (or take a player back with ``resume_token``) on the server
    at ``url`` (``ws://host:port/``). Send the hunt's name on a resume too: a scale-out node
    routes the HELLO by it.

    ``ticket``: the join ticket a platform signed for its user (a JWT, docs/server.md,
    "Authentication"), needed by a server in ticket mode and ignored by one in anonymous
    mode. With a ticket the server names the player by the ticket's display name (see
    ``hunt.names[hunt.slot]`` after the first TICK), and a user has one player per hunt: a
    second connect with a ticket of the same user takes that player over.

    A REDIRECT (another node owns the hunt) is followed: the same HELLO goes to its URL, at
    most ``max_redirects`` times. ``connect_timeout`` (seconds) bounds the WebSocket
    handshake and the wait for WELCOME, on each node; ``disconnect_timeout`` the close when
    the block ends. Leaving the block closes the connection without BYE: the player stays in
    its hunt for the server's resume grace period (call :meth:`HuntClient.bye` to leave).
    ``version``: the protocol version to speak (2, compact TICKs; 1 for an older server).

    Raises ValueError for a name the protocol forbids (before connecting),
    :class:`ConnectFailed`, :class:`JoinRefused`, :class:`ServerError` or
    :class:`ConnectionLost`.
    """
    try:
        hello = Hello(name, hunt, version, resume_token=resume_token, ticket=ticket)
    except LocalProtocolError as exc:
        raise ValueError(f"cannot join: {exc.message}") from None
    options = {"max_redirects": max_redirects, "connect_timeout": connect_timeout,
               "disconnect_timeout": disconnect_timeout, "version": version}
    target, redirects = url, []
    while True:
        async with AsyncExitStack() as stack:
            ws = await _open(stack, target, connect_timeout, disconnect_timeout)
            answer = await _join(ws, hello, connect_timeout, target)
            if isinstance(answer, Welcome):
                yield HuntClient(ws, answer, url=target, entry_url=url, redirects=redirects,
                                 hello=hello, options=options)
                return
        # A REDIRECT: that connection is closed (the server closes it with 4010 anyway).
        if answer.hunt != hunt:
            raise ConnectFailed(f"{target} redirected a HELLO for hunt {hunt!r} with a "
                                f"REDIRECT for hunt {answer.hunt!r}: a server bug")
        if len(redirects) >= max_redirects:
            chain = " -> ".join([url, *redirects, answer.url])
            raise ConnectFailed(f"more than {max_redirects} redirects for hunt {hunt!r}: {chain}; "
                                "the nodes disagree about its owner: retry in a few seconds")
        redirects.append(answer.url)
        target = answer.url


async def _open(stack: AsyncExitStack, url: str, connect_timeout: float,
                disconnect_timeout: float) -> trio_websocket.WebSocketConnection:
    """A WebSocket to ``url`` whose closing (and its TCP stream's) ``stack`` owns."""
    opened: list[trio_websocket.WebSocketConnection] = []
    stack.push_async_callback(_close_transport, opened)
    try:
        ws = await stack.enter_async_context(trio_websocket.open_websocket_url(
            url, max_message_size=MAX_SERVER_FRAME_BYTES, connect_timeout=connect_timeout,
            disconnect_timeout=disconnect_timeout, receive_buffer_size=RECEIVE_BUFFER_BYTES))
    except (trio_websocket.HandshakeError, OSError) as exc:
        raise ConnectFailed(f"cannot open a WebSocket to {url}: {_why(exc)}") from exc
    opened.append(ws)
    return ws


async def _close_transport(opened: list[trio_websocket.WebSocketConnection]) -> None:
    """Close the TCP stream under a WebSocket that trio-websocket has closed.

    trio-websocket 0.12 leaves a client's stream open when the server closes
    first (its ``aclose`` returns early once a close reason is known), which
    leaks the socket until garbage collection (a ResourceWarning).
    tests/test_client.py pins this: warnings are errors there.
    """
    for ws in opened:
        stream = getattr(ws, "_stream", None)
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def _join(ws: trio_websocket.WebSocketConnection, hello: Hello, timeout: float,
                url: str) -> Welcome | Redirect:
    """Send HELLO; the WELCOME or REDIRECT that answers it, or raise."""
    try:
        await ws.send_message(encode(hello))
    except trio_websocket.ConnectionClosed as exc:
        raise _lost(exc.reason) from None
    with trio.move_on_after(timeout):
        try:
            data = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _lost(exc.reason) from None
        try:
            event = decode_server_frame(data)
            if isinstance(event, Refused):
                raise JoinRefused(event.code, event.message, event.close_code)
            if isinstance(event, ErrorMessage):
                raise ServerError(event.code, event.message, event.close_code)
            if not isinstance(event, Welcome | Redirect):
                raise RemoteProtocolError(f"expected WELCOME, REFUSED or REDIRECT, got "
                                          f"{type(event).__name__}", ErrorCode.UNEXPECTED)
        except RemoteProtocolError as exc:
            await ws.aclose(exc.close_code, exc.message[:100])
            raise ConnectFailed(f"{url} answered the HELLO with a frame the protocol forbids: "
                                f"{exc.message}") from exc
        return event
    raise ConnectFailed(f"no WELCOME from {url} within {timeout:g} s: is it a hunt server?")


def _why(exc: BaseException) -> str:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"HTTP {exc.status_code} (the server is full, or this is not its WebSocket port)"
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return "timed out"
    cause = exc.__cause__ or exc.__context__
    return str(cause or exc) or type(exc).__name__


__all__ = ["ConnectFailed", "ConnectionLost", "HuntClient", "HuntError", "JoinRefused",
           "ServerError", "TickGap", "connect"]
