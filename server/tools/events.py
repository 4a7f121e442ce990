"""``treasure-hunt events``: read the cluster's discovery stream (an example consumer).

Every discovery of every hunt on every node is an entry of the Redis stream
``<prefix>:discoveries`` (written by the nodes' event sinks, capped near 100,000
entries). Without ``--follow`` this prints the last ``--count`` entries, newest
last. With ``--follow`` it is a consumer of a *consumer group*: Redis hands each
entry to one consumer of the group, the consumer prints it then acknowledges it
(XACK); entries handed out and never acknowledged (a crash between the two) are
read again by the same consumer name at its next start. At-least-once delivery:
run several with the same ``--group`` to share the work, with another group to get
every entry again.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any, NoReturn

ENV_REDIS = "TREASURE_HUNT_REDIS"
#: Entries read per XREADGROUP, and how long one waits for new entries (ms).
READ_COUNT = 100
BLOCK_MS = 1000
#: Seconds between two attempts while Redis is unreachable in --follow mode.
RETRY_S = 1.0

DESCRIPTION = (__doc__ or "").split("\n\n", 1)[-1].replace("``", "'")

EXAMPLES = f"""\
examples:
  treasure-hunt events --redis redis://127.0.0.1:6379 --count 20
  treasure-hunt events --redis redis://127.0.0.1:6379 --follow            # new ones, live
  treasure-hunt events --follow --group audit --from-start --json > all.jsonl

--redis defaults to ${ENV_REDIS}. Output: one line per discovery (--json: one JSON
object per line with id, time_ms, hunt, tick, player_id, name, value, x, y, user, node).
Give --consumer a stable name to get back, after a crash, what was read and not
acknowledged. Exit status: 0 done (or Ctrl-C), 1 Redis unreachable, 2 bad option.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``events`` and its options."""
    p = subparsers.add_parser(
        "events", help="print the cluster's discoveries from Redis (last N, or --follow)",
        description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _options(p)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", default=os.environ.get(ENV_REDIS),
                   help=f"the cluster's Redis, redis://HOST:PORT[/DB] (default: ${ENV_REDIS})")
    p.add_argument("--prefix", default="th",
                   help="key prefix of the cluster, as the nodes' --redis-prefix (default: th)")
    p.add_argument("--count", type=_positive, default=10, metavar="N",
                   help="without --follow: how many of the latest discoveries (default: 10)")
    p.add_argument("--follow", action="store_true",
                   help="read new discoveries as they come, as a consumer group member; "
                        "Ctrl-C to stop")
    p.add_argument("--group", default="events-cli",
                   help="--follow: the consumer group (default: events-cli)")
    p.add_argument("--consumer", default=f"{socket.gethostname()}-{os.getpid()}",
                   help="--follow: this consumer's name in the group (default: HOST-PID)")
    p.add_argument("--from-start", action="store_true",
                   help="--follow: a group created now starts at the oldest entry kept "
                        "(default: at new entries only)")
    p.add_argument("--max-events", type=_positive, metavar="N",
                   help="--follow: stop after N discoveries")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                   help="seconds a Redis call may take before it counts as a failure "
                        "(default: 2)")
    p.set_defaults(run=run_command, prog=p.prog)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not at least 1")
    return n


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    """``treasure-hunt events`` on its own (``python -m server.tools.events``)."""
    p = _Parser(prog="treasure-hunt events", description=DESCRIPTION, epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    _options(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run_command(args: argparse.Namespace) -> int:
    if not args.redis:
        print(f"{args.prog}: error: no Redis: give --redis redis://HOST:PORT or set "
              f"{ENV_REDIS}", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print(f"{args.prog}: error: --timeout must be more than 0 seconds", file=sys.stderr)
        return 2
    import trio

    from ..cluster import ClusterUnavailable

    try:
        return trio.run(_run, args)
    except KeyboardInterrupt:
        return 0
    except ClusterUnavailable as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    from ..cluster import ClusterStore

    show = _printer(args.json)
    async with ClusterStore.open(args.redis, prefix=args.prefix, timeout=args.timeout) as store:
        if not args.follow:
            for d in reversed(await store.recent_discoveries(args.count)):
                show(d)
            sys.stdout.flush()
            return 0
        return await _until_interrupted(_follow(store, args, show))


async def _until_interrupted(work: Any) -> int:
    """Run ``work`` (a coroutine returning the exit status) until it ends or SIGINT /
    SIGTERM arrives (then 0). Why: a KeyboardInterrupt raised wherever the Redis client's
    tasks happen to be running can surface as an exception group with a traceback; a
    signal receiver turns Ctrl-C into a plain cancellation."""
    import signal

    import trio

    status = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            async def main() -> None:
                nonlocal status
                status = await work
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(main)
    return status


async def _follow(store: Any, args: argparse.Namespace, show: Any) -> int:
    import trio
    from coredis.exceptions import StreamConsumerGroupError

    from ..cluster import ClusterUnavailable

    left = args.max_events
    pending = True  # first what this consumer read earlier and did not acknowledge
    ready = False
    down = False
    while left is None or left > 0:
        try:
            if not ready:
                await store.create_group(args.group, from_start=args.from_start)
                ready = True
            count = READ_COUNT if left is None else min(READ_COUNT, left)
            batch = await store.read_group(args.group, args.consumer, pending=pending,
                                           count=count, block_ms=BLOCK_MS)
            if pending and not batch:
                pending = False
            for d in batch:
                if not d.get("trimmed"):
                    show(d)
            sys.stdout.flush()
            await store.ack(args.group, [d["id"] for d in batch])
            if left is not None:
                left -= sum(1 for d in batch if not d.get("trimmed"))
            if down:
                down = False
                print(f"{args.prog}: Redis answers again", file=sys.stderr)
        except ClusterUnavailable as exc:
            if not down:
                down = True
                print(f"{args.prog}: {exc}; retrying every {RETRY_S:g} s", file=sys.stderr)
            ready = False  # a Redis that lost its data lost the group too
            await trio.sleep(RETRY_S)
        except StreamConsumerGroupError:  # NOGROUP
            ready = False  # the stream or group was deleted meanwhile: create it again
    return 0


def _printer(as_json: bool) -> Any:
    if as_json:
        def show_json(d: dict[str, Any]) -> None:
            sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
        return show_json
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)

        def show_rich(d: dict[str, Any]) -> None:
            console.print(f"[dim]{_clock(d)}[/dim] [bold]{escape(d['hunt'])}[/bold] "
                          f"tick {d['tick']}: [cyan]{escape(d['name'])}[/cyan] found "
                          f"[yellow]{d['value']}[/yellow] at ({d['x']:.1f}, {d['y']:.1f}) "
                          f"[dim]player {d['player_id']}{_user(d)}, node "
                          f"{escape(d['node'])}[/dim]")
        return show_rich

    def show_line(d: dict[str, Any]) -> None:
        sys.stdout.write(f"{_clock(d)} {d['hunt']} tick {d['tick']}: {d['name']} found "
                         f"{d['value']} at ({d['x']:.1f}, {d['y']:.1f}) player "
                         f"{d['player_id']}{_user(d)}, node {d['node']}\n")
    return show_line


def _user(d: dict[str, Any]) -> str:
    """", user ID" for a ticket player's discovery, "" for an anonymous one."""
    return f", user {d['user']}" if d.get("user") else ""


def _clock(d: dict[str, Any]) -> str:
    import time

    ms = d["time_ms"]
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


if __name__ == "__main__":
    sys.exit(main())
