"""Durability (issue 4): a write-ahead journal, snapshots, crash recovery and replay.

The server journals each tick's inputs right after ``world.tick()`` and before
it sends anything, so no client is ever told of a tick the journal lacks; every
``snapshot_every`` ticks it snapshots the whole engine. After a crash,
:func:`recover` restores the newest intact snapshot and re-runs the journal
after it, which gives exactly the state of the last journaled tick (same state
hash). docs/durability.md is the operators' page and draws the byte format.

The contract with the server: between two ticks it does, in this order, what
replay repeats (:func:`apply_record`)::

    world.add_hunt(params)                     # hunts created since the last tick
    world.join_many(hunt, n) / world.join(hunt)  # joins, in order (ids recorded)
    world.leave(player_id)                     # leaves, in order
    world.moves.put_many(ids, seqs, dx, dy)    # once, every move of the tick
    result = world.tick()
    journal.append_tick(result.tick, hunts=[...], joins=[(id, hunt, name, token)...],
                        leaves=[...], moves=(ids, seqs, dx, dy),
                        state_hash=world.state_hash() if journal.wants_hash(result.tick)
                        else None)
    journal.maybe_snapshot(world, meta)        # meta: JSON-able dict (or a callable)

A caller that must not wait for the disk where it ticks passes ``defer=True`` to
``append_tick`` (the record is only encoded) and calls ``journal.settle()``, or
:func:`settle_together` for many journals (one ``syncfs`` per filesystem), where it may
wait, before ``maybe_snapshot`` and before sending.

Nothing else may touch the world between ticks (no other ``moves.put``, no
join outside this list): whatever the journal does not hold, replay cannot
repeat. Start-up::

    rec = recover(data_dir)                     # None: nothing there, a fresh start
    world = rec.world if rec else World(...)    # + rec.meta, rec.joins, rec.leaves
    journal = Journal(data_dir, fsync="tick", snapshot_every=1200, hash_every=20)
    journal.start(world, meta, recovered=rec)   # --fresh: discard(data_dir) first

Layout: private modules, public names re-exported here. ``_format`` (record
bytes), ``_files`` (data dir, snapshot container), ``_journal`` (writer),
``_snapshots`` (background snapshot writes, pruning), ``_together`` (many journals
written and synced at once), ``_recover`` (recovery and replay), ``_stats``, ``_errors``.
"""

from ._errors import DurabilityError as DurabilityError
from ._errors import HashMismatchError as HashMismatchError
from ._errors import JournalError as JournalError
from ._errors import RecoveryError as RecoveryError
from ._files import discard as discard
from ._format import TickRecord as TickRecord
from ._format import token_hash as token_hash
from ._journal import Journal as Journal
from ._recover import Cut as Cut
from ._recover import Join as Join
from ._recover import Leave as Leave
from ._recover import Recovered as Recovered
from ._recover import RecoveryReport as RecoveryReport
from ._recover import apply_record as apply_record
from ._recover import recover as recover
from ._stats import JournalStats as JournalStats
from ._together import settle_together as settle_together
from ._together import warm_up as warm_up

__all__ = [
    "Cut",
    "DurabilityError",
    "HashMismatchError",
    "Join",
    "Journal",
    "JournalError",
    "JournalStats",
    "Leave",
    "Recovered",
    "RecoveryError",
    "RecoveryReport",
    "TickRecord",
    "apply_record",
    "discard",
    "recover",
    "settle_together",
    "token_hash",
    "warm_up",
]
