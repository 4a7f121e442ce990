"""server.cluster: the Redis side of scale-out (issue 6), as a library.

Several ``treasure-hunt serve`` nodes share one Redis (coredis, on Trio through
anyio). This package is what they store there and how; the node's own loop
(placement, failover, routing) is ``server.hunt._node``. Every key, its type, writer and
TTL: docs/cluster.md.

Layout (private modules, public names re-exported here):

- ``_model``: :class:`NodeInfo`, :class:`Lease`, :class:`DefineResult`,
  :func:`least_loaded`, :class:`ClusterUnavailable` (plain values, no I/O).
- ``_keys``: :class:`Keys`, every key name under a prefix (default "th").
- ``_scripts``: the Lua scripts; every check-and-set runs atomically in Redis.
- ``_store``: :class:`ClusterStore`, one per node: heartbeats, the hunt catalogue,
  leases with fencing tokens, the global leaderboard and the discovery stream;
  every call bounded in time, :class:`ClusterUnavailable` when Redis is away.
- ``_sink``: :class:`EventSink`, the bounded queue between the tick and Redis.

``treasure-hunt events`` (server/tools/events.py) is an example consumer of the stream.
"""

from ._keys import Keys as Keys
from ._keys import member as member
from ._keys import split_member as split_member
from ._model import ClusterUnavailable as ClusterUnavailable
from ._model import DefineResult as DefineResult
from ._model import Lease as Lease
from ._model import NodeInfo as NodeInfo
from ._model import least_loaded as least_loaded
from ._sink import EventSink as EventSink
from ._store import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._store import ClusterStore as ClusterStore
from ._store import parse_discovery as parse_discovery
