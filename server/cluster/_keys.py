"""Every Redis key of the cluster, under one prefix (docs/cluster.md has the table)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for ``prefix`` (default "th"). Hunt and node names are used as they are:
    Redis keys are binary-safe, so a ":" or "/" in a name is harmless."""

    prefix: str = "th"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def node_prefix(self) -> str:
        return f"{self.prefix}:node:"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def hunts(self) -> str:
        return f"{self.prefix}:hunts"

    @property
    def stopped(self) -> str:
        """Hunts an operator stopped: name -> JSON of when and who (they never run again)."""
        return f"{self.prefix}:stopped"

    def lease(self, hunt: str) -> str:
        return f"{self.prefix}:lease:{hunt}"

    def fence(self, hunt: str) -> str:
        return f"{self.prefix}:fence:{hunt}"

    @property
    def leaderboard(self) -> str:
        return f"{self.prefix}:leaderboard"

    @property
    def names(self) -> str:
        return f"{self.prefix}:names"

    @property
    def user_leaderboard(self) -> str:
        """Users (ticket mode) by their best score in any hunt (sorted set, member: user id)."""
        return f"{self.prefix}:users:leaderboard"

    @property
    def user_names(self) -> str:
        """Each user's display name from their latest ticket (hash, field: user id)."""
        return f"{self.prefix}:users:names"

    @property
    def discoveries(self) -> str:
        return f"{self.prefix}:discoveries"

    @property
    def results(self) -> str:
        """The stream of round results (one entry per ended round, field ``key``)."""
        return f"{self.prefix}:results"

    @property
    def results_published(self) -> str:
        """The keys (``<hunt>#<round>``) of the rounds already in the results stream."""
        return f"{self.prefix}:results:published"

    @property
    def exported(self) -> str:
        return f"{self.prefix}:exported"

    def sink(self, node_id: str, session: str) -> str:
        """The last batch an event sink wrote (its de-duplication mark; expires after a day)."""
        return f"{self.prefix}:sink:{node_id}:{session}"


def member(hunt: str, player_id: int) -> str:
    """A leaderboard member: ``"<hunt>/<player_id>"`` (split it with :func:`split_member`)."""
    return f"{hunt}/{player_id}"


def split_member(m: str) -> tuple[str, int]:
    """``(hunt, player_id)`` of a leaderboard member; the hunt name may hold "/" itself."""
    hunt, _, pid = m.rpartition("/")
    return hunt, int(pid)
