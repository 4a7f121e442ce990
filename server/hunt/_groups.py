"""Tick groups: a server's hunts tick in groups, each group at its own phase of the period.

Why: a hunt's tick ends with one message to each of its clients. When every hunt
ticks at the same instant, all those messages leave as one burst and the last
client of the burst waits for all the others (at 1,000 clients, 10-20 ms). With
G groups ticking ``period / G`` apart, a tick's burst reaches only its group's
clients and the bursts are spread over the period, as a server of independent
rooms spreads them; the work per second is the same, but each group's tick has a
fixed cost (a small group ticks on the Trio thread: one wake-up of it; with a journal,
a trip to the disk lane and back as well), so the automatic count
(:func:`auto_groups`) makes only as many groups as hold about
:data:`PLAYERS_PER_GROUP` players each (:data:`NO_JOURNAL_PLAYERS_PER_GROUP` without a
journal).

Where a group's tick runs (:class:`BatchedOffload`): a group of at most
:data:`INLINE_PLAYERS` players ticks on the Trio thread; with a journal, its hunts'
records are then written and synced together in the disk lane (:class:`DiskLane`, one
thread, one ``syncfs`` for the batch), which then sends their clients' messages, so no
message leaves before its tick is on disk and nothing on the Trio thread waits for a
disk. A larger group goes to a tick thread, which does all of that itself.

What grouping changes is *when* in the period a hunt ticks, never what its tick
computes: every hunt keeps its own World, journal, tick numbers and state hash
(``replay --verify`` of a grouped hunt's journal reproduces each recorded hash).
perf/README.md ("Tick groups") has the measurements behind that design (a World
per group would batch the kernels but tie the hunts' states together).

Groups are balanced by players: each hunt goes to the group with the fewest
players (longest-processing-time first), so one big hunt ends up alone in its
group while small ones share theirs. Players come and go, so the groups are
rebalanced every :data:`REBALANCE_EVERY` seconds when the largest group holds
more than its fair share by :data:`IMBALANCE`, or when the automatic count changed
with the players (a hunt that changes group ticks once a fraction of a period early or
late, then at its new phase).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from ..durability import settle_together
from ._worker import TickThread

#: Seconds between two looks at the groups' balance.
REBALANCE_EVERY = 2.0
#: The groups are rebalanced when the largest holds more than its fair share
#: (players / groups, or the largest hunt) times (1 + IMBALANCE) ...
IMBALANCE = 0.25
#: ... and at least this many players more than that share.
IMBALANCE_MIN_PLAYERS = 8
#: A group's trip to a tick thread (a group of more than :data:`INLINE_PLAYERS` players)
#: waits while another group's trip is in flight, for at most this long (seconds) after
#: that trip began; past it, the other trip counts as stalled (a bug) and the waiting one
#: takes a thread of its own.
STALLED_AFTER = 0.05
#: A trip whose hunts hold at most this many players in all runs on the Trio thread, in
#: its group's turn, instead of in a tick thread: a small hunt's tick costs less than a
#: trip's two thread wake-ups, and a hunt of 1,000 players no longer waits for a core at
#: each hand-off (perf/README.md, "Ticks on the Trio thread"). Nothing that can block runs
#: there: the sockets are non-blocking, and what waits for the disk (a journal's write and
#: fsync, round records, snapshots) goes to the :class:`DiskLane` with the writes to
#: clients that must follow it. Above it the kernels and writes (about 10 ms a tick at
#: 2,000 players) would keep the Trio thread from the sockets too long: the trip goes to a
#: thread.
INLINE_PLAYERS = 1024
#: Automatic group count, for a server whose hunts keep a journal: at most as many groups
#: as hunts, with phases at least this far apart (seconds) ...
MIN_PHASE_GAP = 0.0025
#: ... and no more groups than it takes to keep a group to about this many players. Each
#: group's tick costs a trip to the disk lane and back (two thread wake-ups, one sync), a
#: fixed cost whatever the group holds, and each of those wake-ups makes a thread take the
#: interpreter lock from a busy Trio thread; with small groups they came often enough to
#: hold ticks back, and the server could stay late (perf/README.md, "One sync for many
#: journals"). The hunts of a group tick one after the other, so the last waits for the
#: others: fewer, larger groups cost less CPU and more latency. A server of idle hunts
#: ticks them in one group.
PLAYERS_PER_GROUP = 100
#: The same two for a server without a journal: a group's tick is then one wake-up of
#: the Trio thread and no trip, so a small hunt gets a group of its own, with phases down
#: to 1 ms apart (the same CPU as fewer groups, and no hunt waits for another's tick).
NO_JOURNAL_MIN_PHASE_GAP = 0.001
NO_JOURNAL_PLAYERS_PER_GROUP = 20
#: The automatic count falls only once the players would fit in one group fewer with this
#: much room to spare (a fraction of a group's players), so that players coming and going
#: at a boundary do not move the hunts between phases every few seconds.
SHRINK_MARGIN = 0.2


def group_cap(hunts: int, period: float, journal: bool = True) -> int:
    """The most groups worth having for ``hunts`` hunts ticking every ``period`` seconds
    (``journal``: on a server whose hunts keep one)."""
    gap = MIN_PHASE_GAP if journal else NO_JOURNAL_MIN_PHASE_GAP
    return max(1, min(hunts, int(period / gap + 1e-9)))


def auto_groups(hunts: int, period: float, players: int, current: int = 0,
                journal: bool = True) -> int:
    """The automatic number of groups for ``hunts`` hunts of ``players`` players in all,
    ticking every ``period`` seconds; ``current``: the count in use (0: none yet), kept
    while one group fewer would not hold the players with room to spare; ``journal``: on
    a server whose hunts keep one (else :data:`NO_JOURNAL_PLAYERS_PER_GROUP`)."""
    per_group = PLAYERS_PER_GROUP if journal else NO_JOURNAL_PLAYERS_PER_GROUP
    want = max(1, math.ceil(players / per_group))
    if want < current and players > (current - 1) * per_group * (1 - SHRINK_MARGIN):
        want = current
    return min(group_cap(hunts, period, journal), want)


def balance(loads: Mapping[str, int], groups: int,
            current: Mapping[str, int] | None = None) -> dict[str, int]:
    """Hunts (name -> players) into ``groups`` groups balanced by players: largest hunt
    first, each to the group with the fewest players (then the fewest hunts). Group
    numbers are then matched to ``current`` so that as few hunts as possible move."""
    fill = [[0, 0, g] for g in range(groups)]  # players, hunts, group
    out: dict[str, int] = {}
    for name in sorted(loads, key=lambda n: (-loads[n], n)):
        least = min(fill)
        least[0] += loads[name]
        least[1] += 1
        out[name] = least[2]
    if not current:
        return out
    # Relabel: the new group that shares the most players with an old one takes its number.
    overlap: dict[tuple[int, int], int] = {}
    for name, g in out.items():
        old = current.get(name)
        if old is not None and old < groups:
            overlap[(g, old)] = overlap.get((g, old), 0) + loads[name] + 1
    label: dict[int, int] = {}
    for (new, old), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
        if new not in label and old not in label.values():
            label[new] = old
    free = iter(g for g in range(groups) if g not in label.values())
    for g in range(groups):
        if g not in label:
            label[g] = next(free)
    return {name: label[g] for name, g in out.items()}


def imbalanced(loads: Mapping[str, int], assignment: Mapping[str, int], groups: int) -> bool:
    """Whether the largest group holds clearly more than its fair share of players."""
    if not loads or groups <= 1:
        return False
    per_group = [0] * groups
    for name, players in loads.items():
        per_group[assignment.get(name, 0) % groups] += players
    fair = max(sum(loads.values()) / groups, max(loads.values()))
    worst = max(per_group)
    return worst > fair * (1 + IMBALANCE) and worst - fair >= IMBALANCE_MIN_PLAYERS


@dataclass(eq=False)
class _Member:
    name: str
    players: Callable[[], int]
    #: The hunt's tick period (seconds).
    period: float
    group: int = 0


class TickGroups:
    """The tick groups of one server. :meth:`schedule` gives a hunt's ticker its
    deadlines; :meth:`run` rebalances while the server runs.

    ``configured``: the number of groups (``tick_groups``; 0: automatic, one group to
    start with, then :func:`auto_groups` of the players at each rebalance). ``epoch``:
    ``trio.current_time()`` the phases count from. ``journal``: the server's hunts keep
    a journal (the automatic count's ``journal``).
    """

    def __init__(self, configured: int = 0, epoch: float = 0.0, journal: bool = True) -> None:
        self.configured = configured
        self.epoch = epoch
        self.journal = journal
        self.members: dict[str, _Member] = {}
        self.rebalances = 0
        # Every ticker asks for its phase and its group's size each tick: both are kept
        # here and recomputed only when a hunt comes, goes or changes group, so a tick
        # costs the same whatever the number of hunts.
        self._count = configured or 1
        self._sizes = [0] * self._count

    def _refresh(self, players: int | None = None) -> None:
        """Recompute the hunts per group after a change. The automatic count keeps within
        :func:`group_cap` as hunts come and go, and follows ``players`` (the players of
        every hunt, given at a rebalance) by :func:`auto_groups`."""
        if self.configured or not self.members:
            count = self.configured or 1
        else:
            period = min(m.period for m in self.members.values())
            hunts, journal = len(self.members), self.journal
            count = (min(self._count, group_cap(hunts, period, journal)) if players is None
                     else auto_groups(hunts, period, players, self._count, journal))
        sizes = [0] * count
        for m in self.members.values():
            sizes[m.group % count] += 1
        self._count, self._sizes = count, sizes

    @property
    def count(self) -> int:
        """Groups in use now (automatic: for the shortest tick period of the hunts)."""
        return self._count

    def phase(self, name: str) -> float:
        """The fraction of the period at which hunt ``name`` ticks (group / groups)."""
        m = self.members.get(name)
        groups = self._count
        return 0.0 if m is None else (m.group % groups) / groups

    def groups(self) -> dict[int, list[str]]:
        """The hunts of each group in use (by group number)."""
        out: dict[int, list[str]] = {g: [] for g in range(self.count)}
        for m in self.members.values():
            out[m.group % self.count].append(m.name)
        return out

    def schedule(self, name: str, players: Callable[[], int], period: float
                 ) -> Callable[[float], float]:
        """Add hunt ``name`` (``players()``: its players now) to the lightest group; returns
        its ticker's schedule: the deadline that follows a given deadline (seconds,
        ``trio.current_time()``), ``epoch + (k + phase) * period`` at least half a period on."""
        m = self.members[name] = _Member(name, players, period)
        self._refresh()
        load = [0] * self.count
        hunts = [0] * self.count
        for other in self.members.values():
            if other is not m:
                load[other.group % self.count] += other.players()
                hunts[other.group % self.count] += 1
        m.group = min(range(self.count), key=lambda g: (load[g], hunts[g], g))
        self._refresh()

        def next_deadline(after: float) -> float:
            groups = self._count
            phase = (m.group % groups) / groups
            k = math.ceil((after + period / 2 - self.epoch) / period - phase)
            return self.epoch + (k + phase) * period
        return next_deadline

    def remove(self, name: str) -> None:
        """Hunt ``name`` no longer ticks here."""
        if self.members.pop(name, None) is not None:
            self._refresh()

    def together(self, name: str) -> int:
        """Hunts that tick at the same instant as hunt ``name`` (itself included)."""
        m = self.members.get(name)
        return 1 if m is None else self._sizes[m.group % self._count]

    def rebalance(self, force: bool = False) -> bool:
        """Rebalance by players if the groups are out of balance, the automatic count
        changed with the players (or ``force``); True if any hunt changed phase."""
        before = self._count
        loads = {m.name: m.players() for m in self.members.values()}
        if not self.configured and self.members:
            self._refresh(sum(loads.values()))
        groups = self._count
        current = {m.name: m.group % groups for m in self.members.values()}
        recounted = groups != before
        if not (force or recounted) and not imbalanced(loads, current, groups):
            return False
        new = balance(loads, groups, current)
        moved = recounted
        for name, g in new.items():
            m = self.members[name]
            moved = moved or current[name] != g
            m.group = g
        self.rebalances += moved
        self._refresh()
        return moved

    async def run(self, log: Any = None) -> None:
        """Rebalance every :data:`REBALANCE_EVERY` seconds, until cancelled."""
        while True:
            await trio.sleep(REBALANCE_EVERY)
            if self.rebalance() and log is not None:
                log.info("tick_groups_rebalanced", groups={
                    g: len(names) for g, names in self.groups().items()})


class _Job:
    __slots__ = ("args", "done", "error", "fn", "players", "result", "taken", "task")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], players: int) -> None:
        self.fn, self.args = fn, args
        #: The players of the hunt it ticks; -1: one that must leave the Trio thread.
        self.players = players
        self.result: Any = None
        self.error: BaseException | None = None
        #: A trip carries the job (``taken``) and has run it (``done``).
        self.taken = self.done = False
        #: The task parked until the job is done (None: none parked).
        self.task: Any = None


def _uncancellable(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class Staged:
    """What a job returns when the rest of it must wait for its tick to be on disk:
    ``journal`` holds the tick's record, pending (``Journal.append_tick(defer=True)``);
    ``after()`` is what follows its write and sync, off the Trio thread (round records, a
    snapshot); ``then()`` is the rest of the job (the writes to clients), whose value is
    the job's. The records of many staged jobs are written and synced together
    (:class:`DiskLane`, ``settle_together``)."""

    __slots__ = ("after", "journal", "then")

    def __init__(self, journal: Any, after: Callable[[], None], then: Callable[[], Any]
                 ) -> None:
        self.journal, self.after, self.then = journal, after, then


def _first(jobs: list[_Job]) -> list[_Job]:
    """Each job's work, or its first part; returns the jobs that gave a :class:`Staged`."""
    staged: list[_Job] = []
    for job in jobs:  # one hunt's failure is that hunt's (its ticker re-raises it)
        try:
            job.result = job.fn(*job.args)
        except BaseException as exc:  # handed to the job's caller
            job.error = exc
        else:
            if type(job.result) is Staged:
                staged.append(job)
    return staged


def _durable(staged: list[_Job]) -> None:
    """Off the Trio thread: the staged jobs' records written and synced together, then
    each one's ``after``; a job whose write, sync or ``after`` fails gets that error."""
    errors = settle_together([job.result.journal for job in staged])
    for job, error in zip(staged, errors, strict=True):
        try:
            if error is not None:
                raise error
            job.result.after()
        except BaseException as exc:
            job.result, job.error = None, exc


def _then(staged: list[_Job]) -> None:
    """The rest of each staged job still standing."""
    for job in staged:
        if job.error is None:
            try:
                job.result = job.result.then()
            except BaseException as exc:
                job.result, job.error = None, exc


def _run(jobs: list[_Job]) -> None:
    """A trip in a tick thread: every job, the staged ones' records on disk together."""
    staged = _first(jobs)
    if staged:
        _durable(staged)
        _then(staged)


def _reschedule_all(tasks: list[Any]) -> None:
    for task in tasks:
        trio.lowlevel.reschedule(task)


class DiskLane:
    """One thread where the staged jobs of the trips run on the Trio thread get their
    records written and synced (:func:`_durable`), then the rest of each done (its
    ``then``: the writes to its clients), in batches: every request that came while the
    thread was busy goes in its next batch, so the more ticks wait for the disk, the more
    share one sync (group commit). The writes to clients go from here rather than from
    the Trio thread so that a tick's messages never wait for a busy Trio thread."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[list[_Job], Any, Any] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None

    async def run(self, staged: list[_Job]) -> None:
        """:func:`_durable`, then ``then``, of ``staged`` in the lane's thread; returns once
        both are done. Not cancellable: a tick whose record is being written ends."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tick-disk", daemon=True)
            self._thread.start()
        self._requests.put((staged, trio.lowlevel.current_trio_token(),
                            trio.lowlevel.current_task()))
        await trio.lowlevel.wait_task_rescheduled(_uncancellable)

    def _loop(self) -> None:
        requests = self._requests
        stop = False
        while not stop:
            batch = [requests.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(requests.get_nowait())
            stop = None in batch
            taken = [r for r in batch if r is not None]
            jobs = [job for staged, _, _ in taken for job in staged]
            try:
                _durable(jobs)
                _then(jobs)
            except BaseException as exc:  # a bug here: the ticks fail, the waiters wake
                for job in jobs:
                    if job.error is None:
                        job.result, job.error = None, exc
            del jobs
            # One wake-up of the Trio thread for the batch: each call made here takes the
            # GIL back after a system call, which waits while the Trio thread is busy.
            if taken:
                with contextlib.suppress(trio.RunFinishedError):
                    taken[0][1].run_sync_soon(_reschedule_all, [task for _, _, task in taken])
            del batch, taken

    def close(self) -> None:
        """End the thread once its batch is done. Idempotent; a later :meth:`run` starts
        another."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread = None


def _inline(jobs: list[_Job]) -> bool:
    """Whether a trip may run on the Trio thread (:data:`INLINE_PLAYERS`)."""
    players = 0
    for job in jobs:
        if job.players < 0:
            return False
        players += job.players
    return players <= INLINE_PLAYERS


def _run_jobs(jobs: list[_Job], token: trio.lowlevel.TrioToken) -> None:
    _run(jobs)
    # The parked callers wake with the trip's carrier, in the same pass of the scheduler,
    # rather than one pass after it.
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(_wake, jobs)


def _wake(jobs: list[_Job]) -> None:
    """Trio thread: the jobs are done; reschedule the callers parked on them."""
    for job in jobs:
        if not job.done:
            job.done = True
            if job.task is not None:
                trio.lowlevel.reschedule(job.task)


class BatchedOffload:
    """``await offload(fn, *args)``: ``fn(*args)`` in a worker thread, like
    ``trio.to_thread.run_sync``, except that the calls made at the same instant (the
    ticks of one group, whose deadlines are equal) share one hand-off and run one after
    the other in that thread: per group, not per hunt, one trip to a thread and back.
    The threads are persistent (:class:`~server.hunt._worker.TickThread`: no limiter
    checkpoint between the hand-off and the thread's start).

    A trip of small hunts (:data:`INLINE_PLAYERS`) runs on the Trio thread instead, in
    the same turn, with no hand-off; the jobs that give a :class:`Staged` (a journaled
    hunt's tick) then go to the :class:`DiskLane`, which writes and syncs their records
    and runs the rest of each (the writes to clients).

    The last call of a group (``together()`` of :meth:`for_hunt` calls in) starts the
    trip at once; if some never come (a hunt behind its schedule), the first starts it
    after one pass of the scheduler.

    One trip to a tick thread at a time: a group due while another's trip is in flight
    waits for it (and the calls that come due meanwhile join its trip), unless that trip
    began more than :data:`STALLED_AFTER` seconds ago; then it takes a thread of its own,
    so a stalled group holds only its own thread.

    Why: each hand-off wakes a thread that contends for the GIL with the Trio thread
    and with the other hunts' workers; 50 hunts at 20 Hz made 1,000 of them a second
    and the hand-offs, not the ticks, took most of the period (perf/README.md). Two
    trips at once share one interpreter lock, so neither ends sooner, and a server that
    falls behind would start ever more of them at once.
    Not cancellable, as ``trio.to_thread.run_sync`` by default: a tick in flight ends.
    """

    def __init__(self) -> None:
        self._pending: list[_Job] = []
        #: Tick threads waiting for a hand-off. One per group in flight at once: a group
        #: whose tick is slow (a stalled disk) holds its thread, never the next group's.
        self._idle: list[TickThread] = []
        #: Where the staged jobs of trips run here are written and synced (:class:`Staged`).
        self._disk = DiskLane()
        self._closed = False
        #: Trips in flight: when each began (``trio.current_time()``), by trip number.
        self._in_flight: dict[int, float] = {}
        self._trip_ended = trio.lowlevel.ParkingLot()
        #: Hand-offs made (trips), calls they carried, the trips run on the Trio thread,
        #: and hand-offs that found another group's trip stalled and went alongside it
        #: (for the metrics and the tests).
        self.handoffs = 0
        self.calls = 0
        self.inline = 0
        self.alongside = 0

    def for_hunt(self, together: Callable[[], int],
                 players: Callable[[], int] = lambda: -1) -> Callable[..., Awaitable[Any]]:
        """The offload of one hunt; ``together()``: the hunts due at the same instant as
        it (1: it ticks alone, so its call goes to the thread at once); ``players()``: its
        players, or -1 if its tick must leave the Trio thread (see :data:`INLINE_PLAYERS`)."""
        async def offload(fn: Callable[..., Any], *args: Any) -> Any:
            return await self._call(fn, args, together(), players())
        return offload

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._call(fn, args, 0, -1)

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], together: int,
                    players: int) -> Any:
        # Every wait here is uncancellable, as a tick in flight must end. Parking with
        # ``wait_task_rescheduled`` does that without a shielded cancel scope and an Event
        # per call, Trio-thread work every small hunt paid on every tick.
        job = _Job(fn, args, players)
        pending = self._pending
        pending.append(job)
        n = len(pending)
        everyone = 0 < together <= n  # every tick due at this instant is in
        if n == 1 or everyone:
            if not everyone:
                # One pass of the scheduler: the other ticks due now add theirs, and the
                # last of them takes this one along at once.
                await trio.lowlevel.cancel_shielded_checkpoint()
            if not job.taken and self._in_flight:
                with trio.CancelScope(shield=True):
                    await self._turn()
            if not job.taken:
                await self._trip()
        if not job.done:
            job.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(_uncancellable)
        if job.error is not None:
            raise job.error
        return job.result

    async def _trip(self) -> None:
        """Take every pending call to a tick thread and back, or run them here if they
        may (:func:`_inline`); wake those who wait."""
        jobs, self._pending = self._pending, []
        for job in jobs:
            job.taken = True
        self.handoffs += 1
        self.calls += len(jobs)
        if _inline(jobs):
            self.inline += 1
            try:
                staged = _first(jobs)
                if staged:  # what may block on the disk, in the disk lane
                    await self._disk.run(staged)
            finally:
                _wake(jobs)
            return
        trip = self.handoffs
        self._in_flight[trip] = trio.current_time()
        thread = self._idle.pop() if self._idle else TickThread("tick-group")
        try:
            await thread.run(_run_jobs, jobs, trio.lowlevel.current_trio_token())
        finally:
            del self._in_flight[trip]
            self._trip_ended.unpark_all()
            if self._closed:  # a tick that ended after close: its thread ends too
                thread.close()
            else:
                self._idle.append(thread)
            _wake(jobs)  # those the thread's wake-up has not reached (it raised)

    async def _turn(self) -> None:
        """Wait until no trip is in flight, or the newest in flight is stalled."""
        while self._in_flight:
            stalled_at = max(self._in_flight.values()) + STALLED_AFTER
            if trio.current_time() >= stalled_at:
                self.alongside += 1
                return
            with trio.move_on_at(stalled_at):
                await self._trip_ended.park()

    def close(self) -> None:
        """End the tick threads: the idle ones now, a busy one when its tick ends.
        Idempotent; a later call still works (in a new thread, ended at its return)."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        self._disk.close()
