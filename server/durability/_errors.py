"""Errors of the durability layer; each says whose fault it is and what to do."""

from __future__ import annotations


class DurabilityError(Exception):
    """Base class of every error the journal and recovery raise on purpose."""


class JournalError(DurabilityError):
    """The journal was misused or cannot be written as asked.

    Raised for bad options (the message names the option and what is allowed),
    ticks appended out of order, a data dir that already holds a run when a
    fresh one starts, a data dir locked by another process, and a snapshot that
    failed to write in the background (the ``OSError`` is in ``__cause__``).
    Disk errors while appending a tick propagate as ``OSError``: the server
    must stop, as it can no longer promise durability.
    """


class RecoveryError(DurabilityError):
    """Nothing provable is left, or the journal contradicts the state it replays.

    The server refuses to start on it; the operator either repairs the data dir
    or starts over deliberately (``--fresh``, which moves the old files aside).
    """


class HashMismatchError(RecoveryError):
    """A state hash recorded in the journal differs from the replayed state's.

    The replay is not deterministic, or the journal does not belong to the
    snapshot it follows. ``tick``, ``recorded`` and ``replayed`` say where and what.
    """

    def __init__(self, message: str, *, tick: int, recorded: str, replayed: str) -> None:
        super().__init__(message)
        self.tick = tick
        self.recorded = recorded
        self.replayed = replayed
