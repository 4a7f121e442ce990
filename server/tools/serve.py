"""``treasure-hunt serve``: the real-time server (WebSocket play, HTTP page and metrics).

With no arguments it serves one demo hunt on localhost: play at
http://127.0.0.1:8080/, WebSocket clients on ws://127.0.0.1:8765/.
"""

from __future__ import annotations

import argparse
import signal
import sys

EXAMPLES = """\
examples:
  # the demo hunt on localhost (page on http://127.0.0.1:8080/)
  treasure-hunt serve

  # hunts, capacities and limits from a config file, on all interfaces
  treasure-hunt serve --config examples/server.toml --host 0.0.0.0

  # let clients create hunts by name; a watch view for operators
  treasure-hunt serve --allow-create-hunts --admin-token s3cret

  # only players with a join ticket (docs/server.md, Authentication)
  TREASURE_HUNT_AUTH_SECRET=... treasure-hunt serve --auth jwt --auth-audience my-game

  # any free ports (printed in the 'serving' log line); JSON logs
  treasure-hunt serve --port 0 --http-port 0 --log-format json

  # one node of a cluster: hunts placed through Redis, data dir shared (docs/cluster.md)
  treasure-hunt serve --redis redis://127.0.0.1:6379/0 --node-id a --port 8765 \
      --http-port 8080 --data-dir /srv/hunt-data --allow-create-hunts

Signals: SIGINT or SIGTERM shut down cleanly (clients get close 1001).
exit status: 0 after a clean shutdown, 2 bad option or config, a port in use, or
a data dir the hunts cannot start from (the message says which and what to do).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the real-time server: WebSocket clients, web page, /metrics",
        description=(
            "Serve hunts to WebSocket clients on a fixed tick. Settings come from the\n"
            "[server] table of --config (with [engine], [defaults] and [[hunt]] for the\n"
            "world), and flags override them. Without --config: one hunt named 'demo'."
        ),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE.toml", help="TOML config: [server], [engine], "
                   "[defaults], [[hunt]] (see examples/server.toml)")
    net = p.add_argument_group("network")
    net.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=int, help="WebSocket port, 0 for any free one (default 8765)")
    net.add_argument("--http-port", type=int,
                     help="HTTP port for the page, /metrics, /healthz; 0 any free one, -1 none "
                          "(default 8080)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-connections", type=int, help="open connections (default 10000)")
    lim.add_argument("--max-connections-per-address", type=int,
                     help="open connections from one IP address (default 256)")
    lim.add_argument("--max-players-per-address", type=int,
                     help="players one IP address may have in a hunt, connected or within "
                          "their resume grace (default 64)")
    lim.add_argument("--connections-per-second-per-address", type=float,
                     help="new WebSocket connections one IP address may open per second, after "
                          "a burst of connection_burst_per_address (default 10)")
    lim.add_argument("--hellos-per-second-per-address", type=float,
                     help="HELLOs one IP address may send per second, after a burst of "
                          "hello_burst_per_address (default 5)")
    lim.add_argument("--moves-per-second", type=float,
                     help="moves one client may send per second; the excess is dropped "
                          "(default 60)")
    lim.add_argument("--evict-after-ticks", type=int,
                     help="consecutive ticks a client may miss (its outbox full) before it is "
                          "evicted with close 4008 (default 40)")
    lim.add_argument("--resume-grace", type=float,
                     help="seconds a disconnected player stays, resumable (default 30)")
    lim.add_argument("--idle-timeout", type=float,
                     help="seconds without a message before a client is closed (default 300)")
    hunts = p.add_argument_group("hunts")
    hunts.add_argument("--allow-create-hunts", action="store_true", default=None,
                       help="a HELLO naming an unknown hunt creates it")
    hunts.add_argument("--tick-rate", type=int,
                       help="ticks per second of every hunt (overrides the config)")
    hunts.add_argument("--max-players", type=int, help="player slots of the engine")
    dur = p.add_argument_group("durability (docs/durability.md)")
    dur.add_argument("--data-dir", help="journal and snapshots; an existing one is recovered "
                     "at start (default ./data; '' for none)")
    dur.add_argument("--fresh", action="store_true",
                     help="move an existing journal in --data-dir aside and start a new world")
    dur.add_argument("--fsync", help="tick (default: each tick on disk before it is sent), off, "
                     "or a number of milliseconds")
    dur.add_argument("--snapshot-every", type=int, help="ticks between snapshots (default 1200)")
    sc = p.add_argument_group("scale-out (docs/cluster.md)")
    sc.add_argument("--redis", metavar="URL",
                    help="Redis that coordinates the nodes, e.g. redis://127.0.0.1:6379/0 "
                         "(default: none, one node)")
    sc.add_argument("--node-id", help="this node's name in the cluster (default host:port)")
    sc.add_argument("--public-url", metavar="WS_URL",
                    help="the ws:// URL clients are redirected to for hunts this node runs "
                         "(default: ws://HOST:PORT/)")
    sc.add_argument("--lease", type=float, metavar="SECONDS",
                    help="hunt lease: a dead node's hunts move after at most this (default 3)")
    sc.add_argument("--redis-prefix", metavar="PREFIX",
                    help="prefix of every Redis key, to share a Redis (default th)")
    au = p.add_argument_group("authentication (docs/server.md, Authentication)")
    au.add_argument("--auth", choices=("none", "jwt"),
                    help="none: anyone plays under any name (default); jwt: only players "
                         "with a join ticket signed by the platform")
    au.add_argument("--auth-secret-file", metavar="FILE",
                    help="the HS256 shared secret (default: $TREASURE_HUNT_AUTH_SECRET)")
    au.add_argument("--auth-public-key-file", metavar="FILE.pem",
                    help="the platform's public key (RS256 or EdDSA), instead of a secret")
    au.add_argument("--auth-jwks-file", metavar="FILE.json",
                    help="the platform's public keys as a JWKS document (chosen by kid)")
    au.add_argument("--auth-audience", metavar="AUD",
                    help="the aud tickets must carry (default treasure-hunt)")
    au.add_argument("--auth-issuer", metavar="ISS",
                    help="the iss tickets must carry (default: not checked)")
    au.add_argument("--auth-leeway", type=float, metavar="SECONDS",
                    help="clock skew allowed on exp, nbf and iat (default 30)")
    au.add_argument("--hellos-per-second-per-user", type=float,
                    help="HELLOs with tickets of one user per second, after a burst of "
                         "hello_burst_per_user (default 1)")
    ops = p.add_argument_group("operations")
    ops.add_argument("--admin-token", help="token of the watch view (/watch, /api/watch) and of "
                     "the admin API (/api/admin/...: create, stop and list hunts)")
    ops.add_argument("--tick-threads", type=int,
                     help="Numba threads of the tick (default 1: the other core serves sockets)")
    ops.add_argument("--send-threads", type=int, choices=(1, 2),
                     help="threads writing each tick's frames to the sockets (default 2)")
    ops.add_argument("--tick-groups", type=int, metavar="N",
                     help="hunts tick in N groups spread over the tick period, balanced by "
                          "players (default 0: automatic, one per 50 players, 20 without a "
                          "data dir; see docs/server.md)")
    ops.add_argument("--log-format", choices=("auto", "json", "console"),
                     help="log lines: readable on a terminal, JSON otherwise (default auto)")
    p.set_defaults(run=run, prog=p.prog)


def build_config(args: argparse.Namespace):  # -> ServeConfig
    import dataclasses

    from tickengine import WorldConfig

    from .._config import load_serve_config

    cfg = load_serve_config(args.config)
    server = cfg.server.replace(
        host=args.host, port=args.port, http_port=args.http_port,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        max_players_per_address=args.max_players_per_address,
        hellos_per_second_per_address=args.hellos_per_second_per_address,
        connections_per_second_per_address=args.connections_per_second_per_address,
        moves_per_second=args.moves_per_second, evict_after_ticks=args.evict_after_ticks,
        resume_grace=args.resume_grace, idle_timeout=args.idle_timeout,
        allow_create_hunts=args.allow_create_hunts, admin_token=args.admin_token,
        tick_threads=args.tick_threads, send_threads=args.send_threads,
        tick_groups=args.tick_groups,
        log_format=args.log_format,
        data_dir=args.data_dir if args.data_dir is not None else (cfg.server.data_dir or "data"),
        fsync=args.fsync, snapshot_every=args.snapshot_every, redis=args.redis,
        node_id=args.node_id, public_url=args.public_url, lease_seconds=args.lease,
        redis_prefix=args.redis_prefix, auth=args.auth,
        auth_secret_file=args.auth_secret_file, auth_public_key_file=args.auth_public_key_file,
        auth_jwks_file=args.auth_jwks_file, auth_audience=args.auth_audience,
        auth_issuer=args.auth_issuer, auth_leeway=args.auth_leeway,
        hellos_per_second_per_user=args.hellos_per_second_per_user)
    world = cfg.world
    if args.tick_rate is not None:
        world = WorldConfig(world.engine, tuple(h.replace(tick_rate=args.tick_rate)
                                                for h in world.hunts))
        cfg = dataclasses.replace(cfg, hunt_defaults={**cfg.hunt_defaults,
                                                      "tick_rate": args.tick_rate})
    if args.max_players is not None:
        world = WorldConfig(dataclasses.replace(world.engine, max_players=args.max_players),
                            world.hunts)
    return dataclasses.replace(cfg, world=world, server=server)


def run(args: argparse.Namespace) -> int:
    import trio

    from tickengine import ConfigError

    from .. import _log

    try:
        cfg = build_config(args)
    except (ConfigError, TypeError, ValueError) as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2
    _log.configure(cfg.server.log_format)
    from ..durability import DurabilityError
    from ..hunt._placement import StartError
    from ..shell._app import HuntServer, ListenError, ThreadingLayerError

    try:
        server = HuntServer(cfg, fresh=args.fresh)
    except ConfigError as exc:  # the ticket keys (server/auth)
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                nursery.start_soon(_stop_on_signal, signals, server)
                await server.run()
                nursery.cancel_scope.cancel()

    from ..cluster import ClusterUnavailable

    known = (ListenError, StartError, DurabilityError, ConfigError, ClusterUnavailable,
             ThreadingLayerError)
    try:
        trio.run(main)
    except (*known, BaseExceptionGroup) as caught:  # nurseries wrap what the server raised
        exc = caught
        if isinstance(caught, BaseExceptionGroup):
            found = caught.subgroup(lambda e: isinstance(e, known))
            if found is None:
                raise
            exc = _first(found)
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _stop_on_signal(signals, server) -> None:
    async for signum in signals:
        server.log.info("signal", signal=signal.Signals(signum).name)
        server.shutdown()
        return
