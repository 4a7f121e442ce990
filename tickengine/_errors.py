"""Errors raised by the engine; each says whose fault it is and what to do."""

from __future__ import annotations


class TickEngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(TickEngineError, ValueError):
    """A parameter is missing, unknown or out of range. The message names the field."""


class CapacityError(TickEngineError):
    """A buffer allocated at start-up is full (players, treasures or hunts).

    Raised by :meth:`World.join` and :meth:`World.add_hunt`; raise the matching
    :class:`EngineConfig` capacity to make room.
    """


class HuntFullError(CapacityError):
    """The hunt already holds ``max_players`` players (pending joins included)."""


class UnknownHuntError(TickEngineError, LookupError):
    """No hunt has that index or name."""


class StalePlayerError(TickEngineError, LookupError):
    """The player id does not address a live player.

    Either the player left (its slot may since have been reused under a new
    generation) or the id was never issued. Ids carry a generation precisely so
    that a stale one can never act on somebody else's slot.
    """


class SnapshotError(TickEngineError, ValueError):
    """A snapshot's bytes are not a snapshot of this engine version, or are corrupt."""


class RoundError(TickEngineError):
    """A round request that the hunt's plan or phase does not allow (no plan, ending a round
    that is not running, starting one while one runs or after the last). The message says
    which; nothing was queued."""
