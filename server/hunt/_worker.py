"""The hub's tick thread: one persistent thread that runs each tick's worker part; and
the clock that tells how long a thread of the tick waited for a CPU.

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
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

#: A :class:`RunQueueClock` read this soon after its last read gives that read again
#: (seconds): the hubs of a tick group read their threads' clocks one after the other.
REUSE_WITHIN = 50e-6


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


class RunQueueClock:
    """How long the thread that made it has waited for a CPU (seconds, read from any
    thread): the run-queue delay of its ``/proc/thread-self/schedstat``, the time it was
    runnable while other threads or processes had every core. The tick subtracts it
    from its phases to tell the machine's share from the code's (``handoff_cpu`` and
    ``cpu_wait`` in server/_metrics.py). Reads 0.0 where the kernel has no schedstat.

    A read within :data:`REUSE_WITHIN` of the clock's last read returns that read (a
    read is a system call, and a tick group's hubs read one after the other): the delay
    of that short a time then counts toward the next read instead, so each difference
    of two reads may count or miss up to that much of it."""

    __slots__ = ("_fd", "_last")

    def __init__(self) -> None:
        #: (time.perf_counter(), value) of the last read, as one object: read from two threads.
        self._last = (-1.0, 0.0)
        try:
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = -1

    def __call__(self) -> float:
        now = time.perf_counter()
        at, value = self._last
        if now - at < REUSE_WITHIN:
            return value
        if self._fd < 0:
            return 0.0
        try:
            value = int(os.pread(self._fd, 64, 0).split()[1]) * 1e-9
        except (OSError, IndexError, ValueError):  # the thread ended
            return 0.0
        self._last = (now, value)
        return value

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


_own = threading.local()


def own_clock() -> RunQueueClock:
    """The calling thread's :class:`RunQueueClock` (made at its first call; closed when
    the thread ends)."""
    clock = getattr(_own, "clock", None)
    if clock is None:
        clock = _own.clock = RunQueueClock()
    return clock


class TickWaits:
    """The run-queue delay of one hub's tick, taken at the tick's steps (seconds).

    On the Trio thread: :meth:`start` (the tick begins), :meth:`call` (the hand-off to
    the worker), :meth:`back` (the ticker runs again), :meth:`end` (the tick is done);
    on the worker: :meth:`work_begins`, :meth:`work_computed` (before the writes) and
    :meth:`work_ends` (after them). :meth:`end` gives ``(handoff_cpu, cpu_wait)``:
    the waiting thread's delay during the two legs of the hand-off (the worker's to
    start, the Trio thread's to take the result back), and the delay of the tick's
    threads over everything but the writes (prepare, hand-off, engine to frames,
    finish). The send thread's share of the writes is not counted.
    """

    __slots__ = ("_go", "_t0", "_t1", "_t2", "_tc4", "_trio", "_w0", "_w3")

    def __init__(self) -> None:
        self._trio: RunQueueClock | None = None  # the ticker's thread's (at its first tick)
        self._t0 = self._t1 = self._t2 = self._tc4 = self._go = self._w0 = self._w3 = 0.0

    def start(self) -> None:
        if self._trio is None:  # the thread's own: the hubs it ticks share its reads
            self._trio = own_clock()
        self._t0 = self._trio()

    def call(self) -> None:
        self._t1 = self._trio()

    def work_begins(self) -> None:
        clock = own_clock()
        self._w0 = w0 = clock()
        # Since the end of this thread's last job: the wait to run after its wake-up; on
        # the ticker's own thread (a trip run there, server/hunt/_groups.py): since the call.
        self._go = w0 - (self._t1 if clock is self._trio else getattr(_own, "after", w0))

    def work_computed(self) -> None:
        self._w3 = own_clock()()

    def work_ends(self) -> None:
        _own.after = own_clock()()
        self._tc4 = self._trio()

    def back(self) -> None:
        self._t2 = self._trio()

    def end(self, handoff: float, but_writes: float) -> tuple[float, float]:
        """``(handoff_cpu, cpu_wait)``, at most the ``handoff`` and ``but_writes`` they
        are shares of (seconds; the go leg's delay counts from the worker's last job)."""
        t3 = self._trio()
        go_back = self._go + (self._t2 - self._tc4)
        wait = (self._t1 - self._t0) + go_back + (self._w3 - self._w0) + (t3 - self._t2)
        # >= 0: a read another thread took at the same moment may be the older one.
        return max(0.0, min(go_back, handoff)), max(0.0, min(wait, but_writes))

    def close(self) -> None:
        """Nothing to release: the clocks are their threads' (:func:`own_clock`)."""
