"""The idle timeout of a playing client (server/shell/_poller.py moves the deadline when it is
within a step, ``idle_step``, of it and moves came since): a client that keeps moving outlives
several timeouts, a silent one is told why (ERROR before the close) once the timeout passes."""

from __future__ import annotations

import pytest
import trio

from server.client import ServerError, connect
from server.protocol import ErrorCode

pytestmark = pytest.mark.usefixtures("collect_garbage")

IDLE = 1.5  # seconds


async def test_moves_keep_a_client_alive_and_silence_times_it_out(serve) -> None:
    srv = await serve(idle_timeout=IDLE)
    with trio.fail_after(20):
        async with connect(srv.url, "mover", "demo") as mover, \
                connect(srv.url, "silent", "demo") as silent:
            started = trio.current_time()

            async def keep_moving() -> None:  # every 0.25 s for three timeouts
                while trio.current_time() < started + 3 * IDLE:
                    await mover.move(1.0, 0.0)
                    await trio.sleep(0.25)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_moving)
                # The ERROR always precedes the close (docs/protocol.md, message flow 8).
                with pytest.raises(ServerError) as caught:
                    while True:  # the silent client's ticks, until the server closes it
                        await silent.next_tick()
                waited = trio.current_time() - started
            err = caught.value
            assert err.code == ErrorCode.UNEXPECTED and err.close_code == 1000
            assert "idle timeout" in err.message
            # Never before the timeout; at most a step (IDLE / 4 here) and slack after it.
            assert IDLE - 0.05 <= waited <= IDLE + 1.0
            # The mover is still playing after three timeouts: its latest move is acked.
            last = mover.seq
            for _ in range(400):  # the ticks queued while it did not read, then new ones
                tick = await mover.next_tick()
                if tick.ack >= last:
                    break
            assert tick.ack >= last
