"""The hub's tick thread: one persistent thread that runs each tick's worker part.

``trio.to_thread.run_sync`` costs a tick more than its thread: it takes the default
capacity limiter, whose acquisition is a checkpoint, so the ticker yields to every
task ready then (the poller's pass over the ready sockets) before the thread is even
asked to start; and it copies a context and builds closures per call. Here the
ticker hands the job to a thread that waits for it, then parks until the thread
reschedules it with one ``run_sync_soon``: no checkpoint between the hand-off and
the thread's start, nothing allocated but the job's tuple and its outcome.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class TickThread:
    """Runs ``fn(*args)`` in a thread of its own, one call at a time (the ticker awaits
    each). Started at the first :meth:`run`; :meth:`close` ends it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread; its value, or its exception raised here. Like
        ``trio.to_thread.run_sync`` without ``abandon_on_cancel``: a cancellation waits
        for the call to end (a tick cannot be abandoned half done)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, trio.lowlevel.current_trio_token(),
                        trio.lowlevel.current_task()))
        return await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED)

    def _loop(self) -> None:
        jobs = self._jobs
        reschedule = trio.lowlevel.reschedule
        while (job := jobs.get()) is not None:
            fn, args, token, task = job
            result = outcome.capture(fn, *args)
            del job, fn, args  # nothing of the tick stays alive here until the next one
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(reschedule, task, result)
            del result, task, token

    def close(self) -> None:
        """End the thread once it is idle (after the ticker's last call). Idempotent."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
