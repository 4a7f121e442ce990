"""The tick's claim on sockets (server/shell/_conn.py SendSlots): the worker may write a client's
frame only while nothing else is queued or being written on that connection, so a frame
never overtakes another; claims end for every connection at once. Real TCP sockets."""

from __future__ import annotations

import os
import socket

import numpy as np
import trio

from server.shell import _wsframes as wf
from server.shell._conn import Connection, SendSlots


async def _pair() -> tuple[Connection, socket.socket]:
    """A server-side Connection over loopback TCP, and the client's plain socket."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    server.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(server))
    return Connection(stream, 4096, outbox_limit=64), client


def _read_all(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(5)
    data = b""
    while len(data) < n:
        chunk = sock.recv(1 << 20)
        assert chunk
        data += chunk
    return data


def _claim(slots: SendSlots, slot: int) -> int:
    fds = np.zeros(1, np.int64)
    claimed = np.zeros(1, np.bool_)
    slots.begin(np.array([slot], np.int32), fds, claimed)
    return int(fds[0])


async def test_an_idle_bound_connection_is_claimed_and_all_claims_end_at_once() -> None:
    slots = SendSlots(4)
    conns = [await _pair() for _ in range(2)]
    for k, (conn, _) in enumerate(conns):
        assert slots.fd[k] == -1  # not bound yet: its WELCOME is not out
        conn.bind(slots, k)
        assert slots.fd[k] == conn._fd
    fds, claimed = np.zeros(2, np.int64), np.zeros(2, np.bool_)
    slots.begin(np.array([0, 1], np.int32), fds, claimed)
    assert claimed.tolist() == [True, True]
    assert all(conn._worker_claim for conn, _ in conns)
    slots.end()
    assert not any(conn._worker_claim for conn, _ in conns)
    for conn, client in conns:
        client.close()
        await conn.abort()


async def test_a_claimed_connection_queues_what_the_trio_side_sends_meanwhile() -> None:
    slots = SendSlots(2)
    conn, client = await _pair()
    conn.bind(slots, 1)
    assert _claim(slots, 1) == conn._fd
    # The worker writes its frame; an ERROR sent meanwhile must follow it, not interleave.
    worker_frame, error = wf.frame(b"\x81tick"), wf.frame(b"\x83error")
    assert conn.send_now(error)
    assert conn.backlog == 1 and slots.fd[1] == -1  # busy: the next tick will not claim it
    assert os.write(conn._fd, worker_frame) == len(worker_frame)  # as the worker does
    slots.end()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run_writer)
        assert await trio.to_thread.run_sync(
            _read_all, client, len(worker_frame) + len(error)) == worker_frame + error
        with trio.fail_after(5):
            while conn.backlog:
                await trio.sleep(0.01)
        await trio.sleep(0.01)
        assert slots.fd[1] == conn._fd  # drained: idle again, claimable
        client.close()
        await conn.abort()
        assert slots.fd[1] == -1
        nursery.cancel_scope.cancel()


async def test_a_short_write_is_finished_before_anything_queued() -> None:
    slots = SendSlots(1)
    conn, client = await _pair()
    conn.bind(slots, 0)
    _claim(slots, 0)
    frame = wf.frame(bytes(range(200)))
    conn.send_now(wf.frame(b"later"))  # queued during the claim
    slots.end()
    conn.after_worker(memoryview(frame), 50)  # the worker's write took 50 bytes
    assert conn.backlog == 2 and slots.fd[0] == -1
    assert os.write(conn._fd, frame[:50]) == 50
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run_writer)
        want = frame + wf.frame(b"later")
        assert await trio.to_thread.run_sync(_read_all, client, len(want)) == want
        client.close()
        await conn.abort()
        nursery.cancel_scope.cancel()


async def test_a_replaced_connection_cannot_publish_into_its_old_slot() -> None:
    slots = SendSlots(1)
    old, old_client = await _pair()
    new, new_client = await _pair()
    old.bind(slots, 0)
    old.unbind()
    assert slots.fd[0] == -1
    new.bind(slots, 0)
    old._sync_slot()  # e.g. its writer drained after the resume
    assert slots.fd[0] == new._fd
    await old.close(4007, "replaced")
    assert slots.fd[0] == new._fd
    await new.close(1000)
    assert slots.fd[0] == -1  # closing: never claimed again
    old_client.close()
    new_client.close()


async def test_abort_waits_for_the_claim_so_the_fd_is_not_reused_under_the_worker() -> None:
    slots = SendSlots(1)
    conn, client = await _pair()
    conn.bind(slots, 0)
    _claim(slots, 0)
    conn.unbind()  # lost during the tick: the claim still holds
    assert conn._worker_claim
    closed_at = []

    async def abort() -> None:
        await conn.abort()
        closed_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(abort)
        await trio.sleep(0.05)
        assert not closed_at
        ended = trio.current_time()
        slots.end()
    assert closed_at and closed_at[0] >= ended
    client.close()


async def test_a_close_asked_while_the_writer_is_blocked_keeps_its_error() -> None:
    """The writer task is inside a write the client does not read yet; a close asked then
    (bad input, an eviction) must still send the frame in flight, its ERROR, then the close
    frame: the queued frames nobody began are the only ones dropped."""
    conn, client = await _pair()
    conn.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    tick = wf.frame(b"\x83" + bytes(4000))
    error = wf.frame(b"\x84" + b"error")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run_writer)
        for _ in range(8):  # more than the socket buffers hold: the writer blocks
            assert conn.send_now(tick)
        await trio.sleep(0.2)
        assert conn._pumping and conn.backlog < 8  # a frame is in flight, the rest wait
        assert conn.begin_close(1002, "bad", error)

        def read_until_close() -> bytes:
            client.settimeout(5)
            data = b""
            while not data.endswith(wf.close_frame(1002, "bad")):
                chunk = client.recv(1 << 20)
                assert chunk, data[-64:]
                data += chunk
            return data

        data = await trio.to_thread.run_sync(read_until_close)
        nursery.cancel_scope.cancel()
    # Whole frames only, the ERROR right before the close frame.
    assert data.endswith(error + wf.close_frame(1002, "bad"))
    body = data[: -len(error + wf.close_frame(1002, "bad"))]
    assert len(body) % len(tick) == 0 and body == tick * (len(body) // len(tick))
    assert len(body) >= len(tick)  # the frame in flight was finished, not cut
    client.close()
    await conn.abort()
