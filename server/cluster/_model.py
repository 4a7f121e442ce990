"""The values the cluster store hands out: nodes, leases, catalogue outcomes, its error."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class ClusterUnavailable(Exception):
    """Redis cannot be reached, or did not answer within the store's timeout.

    An outside cause (Redis down, restarting, paused, a network problem), never a
    misuse: the original error is in ``__cause__``. Retry later; the store itself
    reconnects on the next call once Redis answers again.
    """


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says of itself in its heartbeat (hash ``<prefix>:node:<node_id>``).

    ``public_url``: the WebSocket URL clients are redirected to (``ws://host:port/``);
    ``http_url``: its HTTP base URL; ``players`` and ``hunts``: its load now;
    ``started_ms``: when it joined, in Redis TIME milliseconds.
    """

    node_id: str
    public_url: str
    http_url: str = ""
    players: int = 0
    hunts: int = 0
    started_ms: int = 0

    def fields(self) -> list[str]:
        """Flat field/value strings, as HSET takes them."""
        return ["node_id", self.node_id, "public_url", self.public_url,
                "http_url", self.http_url, "players", str(self.players),
                "hunts", str(self.hunts), "started_ms", str(self.started_ms)]

    @classmethod
    def from_fields(cls, flat: list[str]) -> NodeInfo:
        """From HGETALL's flat field/value list (unknown fields ignored, missing ones default)."""
        d = dict(zip(flat[::2], flat[1::2], strict=True))
        return cls(node_id=d.get("node_id", ""), public_url=d.get("public_url", ""),
                   http_url=d.get("http_url", ""), players=int(d.get("players", 0)),
                   hunts=int(d.get("hunts", 0)), started_ms=int(d.get("started_ms", 0)))


def least_loaded(nodes: Iterable[NodeInfo]) -> NodeInfo:
    """The node a new hunt goes to: fewest players, then fewest hunts, then lowest node_id.

    Deterministic, so two nodes placing the same hunt pick the same target.
    Raises ValueError when ``nodes`` is empty (no live node: retry after a heartbeat).
    """
    best = min(nodes, key=lambda n: (n.players, n.hunts, n.node_id), default=None)
    if best is None:
        raise ValueError("least_loaded() needs at least one live node (none has heartbeated "
                         "within its TTL: start a node or wait for one)")
    return best


@dataclass(frozen=True, slots=True)
class Lease:
    """The right of ``node_id`` to run ``hunt``, with its fencing token.

    Tokens come from ``INCR <prefix>:fence:<hunt>``: each new lease of a hunt has a
    larger token than every earlier one, across Redis restarts (the counter never
    expires and is in the AOF), so anything written under an older token can be told
    apart and ignored.
    """

    hunt: str
    node_id: str
    token: int

    @property
    def value(self) -> str:
        """The lease key's value: ``"<node_id> <token>"``."""
        return f"{self.node_id} {self.token}"

    @classmethod
    def parse(cls, hunt: str, value: str) -> Lease:
        node_id, _, token = value.rpartition(" ")
        return cls(hunt, node_id, int(token))


class DefineResult(enum.Enum):
    """What :meth:`ClusterStore.define_hunt` did. Only ``CREATED`` is truthy."""

    CREATED = "created"
    #: A hunt of that name was already in the catalogue (its parameters are unchanged).
    EXISTS = "exists"
    #: The catalogue holds ``limit`` hunts already; nothing was written.
    FULL = "full"

    def __bool__(self) -> bool:
        return self is DefineResult.CREATED
