"""The server's settings: the ``[server]`` table of a TOML config, then command-line flags.

Every field has a default that serves a demo on localhost. Units are in the
names' docs: seconds, ticks, messages, moves per second.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickengine import ConfigError, WorldConfig, parse_config


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How ``treasure-hunt serve`` listens, limits clients and runs the tick."""

    #: Address to listen on (WebSocket and HTTP).
    host: str = "127.0.0.1"
    #: WebSocket port (0: any free port, logged at start).
    port: int = 8765
    #: HTTP port for the page, /metrics, /healthz and /api (0: any free port; -1: none).
    http_port: int = 8080
    #: Whether a HELLO naming an unknown hunt creates it (with [defaults] parameters).
    allow_create_hunts: bool = False
    #: Hunts clients may create this way.
    max_created_hunts: int = 16
    #: WebSocket connections open at once, and from one IP address (over: HTTP 503 and
    #: the socket closed at once, without waiting for the handshake).
    max_connections: int = 10_000
    max_connections_per_address: int = 256
    #: New WebSocket connections per second from one IP address, after a burst of
    #: ``connection_burst_per_address`` (over: the same 503 at once): a client that
    #: reconnects in a loop costs accepts, never handshakes.
    connections_per_second_per_address: float = 10.0
    connection_burst_per_address: int = 60
    #: Joins from one IP address: HELLOs per second (resumes included) with a burst of
    #: ``hello_burst_per_address`` (over: REFUSED TOO_MANY_JOINS), and players per hunt,
    #: connected or within their resume grace (over: REFUSED ADDRESS_FULL). Sized for an
    #: office or a carrier's NAT: tens of players behind one address.
    hellos_per_second_per_address: float = 5.0
    hello_burst_per_address: int = 50
    max_players_per_address: int = 64
    #: Budgets of one connection (over: ERROR OVER_BUDGET, then close 1008): control
    #: frames (ping, pong) per second and raw bytes per second, each with a burst of one
    #: second's worth (bytes: at least four of the largest client frames).
    control_frames_per_second: float = 10.0
    bytes_per_second: float = 65_536.0
    #: Fragments of one WebSocket message, empty continuations included (over: TOO_BIG,
    #: close 1009; the message's bytes are capped by MAX_CLIENT_FRAME_BYTES).
    max_message_fragments: int = 16
    #: HTTP port: connections open at once (over: 503 and closed at once), and seconds a
    #: connection has to send its request and take the answer.
    http_max_connections: int = 64
    http_timeout: float = 3.0
    #: HTTP requests per second from one IP address, after a burst (over: 429 at once).
    http_requests_per_second_per_address: float = 20.0
    http_request_burst_per_address: int = 40
    #: Ticks of timings /api/stats returns at most (``?ticks=N`` is capped to it).
    stats_max_ticks: int = 1_200
    #: Seconds a client has to finish the WebSocket handshake and send HELLO.
    handshake_timeout: float = 5.0
    #: Seconds without any message from a client before it is closed.
    idle_timeout: float = 300.0
    #: Moves a client may send per second (a burst of one second's worth is allowed).
    moves_per_second: float = 60.0
    #: Messages that may wait for one slow client's socket before ticks are skipped for it.
    outbox_messages: int = 8
    #: Consecutive skipped ticks after which a slow client is evicted (close 4008).
    evict_after_ticks: int = 40
    #: Seconds a disconnected player stays in its hunt, resumable with its token.
    resume_grace: float = 30.0
    #: Token for the operator's watch view and /api/watch ("" : watch view disabled).
    admin_token: str = ""
    #: Who may play (docs/server.md, "Authentication"): "none", anyone under any name (the
    #: demo, and every client that sends no ticket); "jwt", only players whose HELLO carries
    #: a join ticket signed by the platform the server trusts.
    auth: str = "none"
    #: Where the ticket keys come from, one of: a file holding the shared secret (HS256;
    #: with none of the three, the secret comes from $TREASURE_HUNT_AUTH_SECRET), the
    #: platform's public key in PEM (RS256 or EdDSA), or a JWKS file (keys chosen by kid).
    auth_secret_file: str = ""
    auth_public_key_file: str = ""
    auth_jwks_file: str = ""
    #: The ``aud`` every ticket must carry (names this server or cluster), the ``iss`` it
    #: must carry ("": not checked), and the clock skew allowed on exp/nbf/iat (seconds).
    auth_audience: str = "treasure-hunt"
    auth_issuer: str = ""
    auth_leeway: float = 30.0
    #: Ticket mode: HELLOs per second with tickets of one user, after a burst of
    #: ``hello_burst_per_user`` (over: REFUSED TOO_MANY_JOINS), whatever their addresses.
    hellos_per_second_per_user: float = 1.0
    hello_burst_per_user: int = 10
    #: Numba threads of the tick's worker thread (1 leaves the other core to the sockets).
    tick_threads: int = 1
    #: Threads writing the tick's frames to the sockets (2: half the clients each).
    send_threads: int = 2
    #: ``sys.setswitchinterval`` while the server runs (seconds; 0: leave Python's, 5 ms):
    #: the longest a thread that wants the GIL waits for the thread holding it. The tick's
    #: threads take the GIL back after each kernel while the Trio thread reads sockets;
    #: at Python's 5 ms that wait is most of a tick's hand-off and writes tail.
    switch_interval: float = 0.0005
    #: Tick groups: the hunts tick in this many groups, each at its own phase of the
    #: period, balanced by players (server/hunt/_groups.py). 0: automatic, one group
    #: per 50 players with phases at least 2.5 ms apart (20 groups at most at 20 Hz);
    #: without a data dir one per 20 players, at least 1 ms apart (50 at 20 Hz).
    tick_groups: int = 0
    #: Log format: "auto" (readable on a terminal, JSON lines otherwise), "json" or "console".
    log_format: str = "auto"
    #: Moves one tick can take from all clients together.
    max_moves_per_tick: int = 65_536
    #: Directory of the journal and snapshots ("": no journal; ``serve`` defaults to "data").
    data_dir: str = ""
    #: When the journal is fsynced: "tick" (before a tick's messages leave), "off", or ms.
    fsync: str = "tick"
    #: Ticks between snapshots, and between state hashes recorded in the journal.
    snapshot_every: int = 1200
    hash_every: int = 20
    #: Scale-out (docs/cluster.md): Redis URL ("": one node, no Redis), this node's id
    #: (default: host:port), the WebSocket URL clients are redirected to, the hunt lease
    #: (seconds), and the prefix of every Redis key.
    redis: str = ""
    node_id: str = ""
    public_url: str = ""
    lease_seconds: float = 3.0
    redis_prefix: str = "th"

    def __post_init__(self) -> None:
        checks = {
            "port": (0, 65535), "http_port": (-1, 65535), "max_created_hunts": (0, 10_000),
            "max_connections": (1, 1_000_000), "max_connections_per_address": (1, 1_000_000),
            "hellos_per_second_per_address": (0.01, 1_000_000),
            "connections_per_second_per_address": (0.01, 1_000_000),
            "connection_burst_per_address": (1, 1_000_000),
            "hello_burst_per_address": (1, 1_000_000),
            "max_players_per_address": (1, 10_000_000),
            "control_frames_per_second": (0.1, 1_000_000),
            "bytes_per_second": (4096, 1e12), "max_message_fragments": (1, 1_000_000),
            "http_max_connections": (1, 1_000_000), "http_timeout": (0.1, 3600),
            "http_requests_per_second_per_address": (0.01, 1_000_000),
            "http_request_burst_per_address": (1, 1_000_000),
            "stats_max_ticks": (1, 8192),
            "handshake_timeout": (0.01, 3600), "idle_timeout": (0.1, 86_400),
            "moves_per_second": (0.1, 10_000), "outbox_messages": (1, 10_000),
            "evict_after_ticks": (1, 1_000_000), "resume_grace": (0, 86_400),
            "tick_threads": (1, 256), "send_threads": (1, 2), "switch_interval": (0, 1),
            "tick_groups": (0, 1000),
            "max_moves_per_tick": (64, 10_000_000),
            "snapshot_every": (0, 100_000_000), "hash_every": (0, 100_000_000),
            "lease_seconds": (0.3, 3600), "auth_leeway": (0, 3600),
            "hellos_per_second_per_user": (0.01, 1_000_000),
            "hello_burst_per_user": (1, 1_000_000),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and lo <= value <= hi):
                raise ConfigError(f"server.{name} must be a number in [{lo}, {hi}], got {value!r}")
        if not (self.fsync in ("tick", "off") or str(self.fsync).isdigit()):
            raise ConfigError(f"server.fsync must be tick, off or a number of milliseconds, "
                              f"got {self.fsync!r}")
        if self.redis and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"server.redis must be a redis://host:port URL, got {self.redis!r}")
        if self.public_url and not self.public_url.startswith(("ws://", "wss://")):
            raise ConfigError("server.public_url must be the ws:// or wss:// URL clients reach "
                              f"this node at, got {self.public_url!r}")
        if self.auth not in ("none", "jwt"):
            raise ConfigError(f"server.auth must be none or jwt, got {self.auth!r}")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"server.log_format must be auto, json or console, "
                              f"got {self.log_format!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "[server]") -> ServerConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``serve`` needs: the world to create and the server's settings."""

    world: WorldConfig = field(default_factory=WorldConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    #: [defaults] of the config, for hunts that clients create by name.
    hunt_defaults: dict[str, Any] = field(default_factory=dict)


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """Read a TOML config ([engine], [defaults], [[hunt]], [server]); None: the demo."""
    if path is None:
        return ServeConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_serve_config(data, where=str(path))


def parse_serve_config(data: dict[str, Any] | str, *, where: str = "config") -> ServeConfig:
    if isinstance(data, str):
        try:
            data = tomllib.loads(data)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    world = parse_config(data, where=where)
    server = ServerConfig.from_dict(data.get("server", {}), where=f"{where} [server]")
    return ServeConfig(world, server, dict(data.get("defaults", {})))
