"""``treasure-hunt bots``: N bots that play a hunt over the network, in one process.

Each bot is one :func:`server.client.connect` connection and one player. On
every TICK it steers with the engine's own rules (``tickengine`` bots:
``hunter`` follows the hint, ``random`` walks straight and turns now and then)
and sends its heading ``--moves-per-second`` times a second. Bots connect
staggered (``--connect-rate`` per second), resume with their token when the
connection drops or the hunt moves to another node (``HUNT_MOVED``, scale-out),
always through ``--url`` (the entry URL: any node redirects to the hunt's owner),
and say BYE when the run ends (``--duration`` or Ctrl-C). Against a server in ticket mode
(docs/server.md, "Authentication") each bot signs its own join ticket with ``--ticket-key``
(user ``<name-prefix>-<i>``, its name as display name), as the platform would; one bot may
instead be given a ticket (``--ticket``).
A live line on stderr shows bots connected, ticks per second received, total
score and errors; a summary table goes to stdout at the end.

Round-based hunts (docs/rules.md, "Rounds"): bots play on across rounds (moves work in
every phase); the summary counts the rounds that ended and who won most.

Errors and reconnects are told apart: a drop, ``HUNT_MOVED``, ``GOING_AWAY`` or a
failed connect that a later attempt of the same bot repairs (it resumed) is an
expected reconnect attempt, what a failover or a node's restart costs; it counts
as an error only if the bot gives up or the run ends before it is back.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio
    from rich.console import Console

    from ..client import HuntClient

EXAMPLES = """\
examples:
  # 100 hunters in the demo hunt of a local server, until Ctrl-C
  treasure-hunt bots --url ws://127.0.0.1:8765/ --count 100 --policy hunter

  # 200 bots against a server in ticket mode, each with its own user and ticket
  treasure-hunt bots --url ws://127.0.0.1:8765/ --count 200 --ticket-key secret.txt \
      --ticket-audience my-game

  # 500 wanderers for one minute, 10 moves per second each
  treasure-hunt bots --url ws://127.0.0.1:8765/ --count 500 --policy random \\
      --duration 60 --moves-per-second 10 --hunt forest

exit status: 0 the run ended (--duration), 1 no bot could join, 2 bad option,
130 interrupted (Ctrl-C or SIGTERM: the summary is still printed).
"""

#: Seconds the bots get to say BYE when the run ends, before they are cut off.
BYE_GRACE_S = 3.0
#: Attempts to get a bot back (resume) after its connection failed, one after the other,
#: before it gives up; the delays double from RETRY_FIRST_S up to RETRY_MAX_S (jittered
#: down by up to a quarter), so 10 tries span about 10 s: a node's failover fits in it.
MAX_RETRIES = 10
#: What to do when one address may not hold that many players (all bots share one address).
ADDRESS_HINT = (" (every bot comes from this machine's address: run fewer bots per hunt, or "
                "start your server with a larger --max-players-per-address, and "
                "--hellos-per-second-per-address and --connections-per-second-per-address "
                "for a faster start)")
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 1.25
#: Seconds between two refreshes of the live line.
REFRESH_S = 0.25


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bots`` and its options."""
    p = subparsers.add_parser(
        "bots", help="bots that play a hunt over the network (load, demos)",
        description=(
            "Connect N bots to a running server (treasure-hunt serve) and play: each bot\n"
            "is one WebSocket connection and one player, steering by the same rules as the\n"
            "simulator's bots. Runs until --duration or Ctrl-C, then the bots say BYE and\n"
            "a summary is printed."),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, metavar="WS_URL",
                   help="the server's WebSocket URL, e.g. ws://127.0.0.1:8765/ (with several "
                        "nodes, any of them: redirects are followed, resumes start there)")
    p.add_argument("--count", type=int, default=10, metavar="N",
                   help="bots to run, 1-10000 (default 10)")
    p.add_argument("--policy", choices=("hunter", "random"), default="hunter",
                   help="hunter: follow the hint (keep going while warmer, turn back when "
                        "colder, wander when there is none); random: walk straight and turn "
                        "now and then (default hunter)")
    p.add_argument("--hunt", default="demo", help="the hunt to join (default demo)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--moves-per-second", type=float, default=5.0, metavar="R",
                   help="moves each bot sends per second, its current heading, at most one "
                        "per tick; a new heading waits for the next slot (default 5)")
    p.add_argument("--connect-rate", type=float, default=50.0, metavar="N",
                   help="bots connecting per second at the start (default 50). All bots come "
                        "from one address, and a server's defaults admit from one address 64 "
                        "players per hunt, 5 joins and 10 connections a second after a burst "
                        "of 50 and 60: bots refused for pace retry; for more bots, raise the "
                        "server's --max-players-per-address (docs/server.md, Limits)")
    p.add_argument("--name-prefix", default="bot", metavar="TEXT",
                   help="bot names are TEXT-0, TEXT-1, ... (default bot)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bots' steering (default 0)")
    p.add_argument("--ticket-key", metavar="FILE",
                   help="ticket mode: sign each bot's join ticket with this key (the shared "
                        "secret, or the platform's private key in PEM); user ids are the bot "
                        "names")
    p.add_argument("--ticket-audience", default="treasure-hunt", metavar="AUD",
                   help="the aud of the bots' tickets: the server's auth_audience (default "
                        "treasure-hunt)")
    p.add_argument("--ticket", metavar="TICKET",
                   help="ticket mode: the join ticket of the one bot (--count 1)")
    p.add_argument("--quiet", action="store_true", help="no live line (the summary is printed)")
    p.set_defaults(run=run, prog=p.prog)


class UsageError(Exception):
    """An option value out of range: one line on stderr, exit status 2."""


def check_options(args: argparse.Namespace) -> None:
    """Raise UsageError naming the first bad option and what is allowed."""
    from ..protocol import Hello, LocalProtocolError

    if not args.url.startswith(("ws://", "wss://")):
        raise UsageError(f"--url must be a ws:// or wss:// URL, got {args.url!r}")
    if not 1 <= args.count <= 10_000:
        raise UsageError(f"--count must be 1-10000, got {args.count}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise UsageError(f"--duration must be a number of seconds > 0, got {args.duration}")
    if not (math.isfinite(args.moves_per_second) and 0 < args.moves_per_second <= 240):
        raise UsageError(f"--moves-per-second must be > 0 and <= 240, got "
                         f"{args.moves_per_second}")
    if not (math.isfinite(args.connect_rate) and args.connect_rate > 0):
        raise UsageError(f"--connect-rate must be > 0, got {args.connect_rate}")
    if args.ticket and (args.count != 1 or args.ticket_key):
        raise UsageError("--ticket is one user's ticket: give it with --count 1 and no "
                         "--ticket-key (with --ticket-key each bot signs its own)")
    try:
        Hello(bot_name(args.name_prefix, args.count - 1), args.hunt, ticket=args.ticket or "")
    except LocalProtocolError as exc:
        what = "--hunt" if "hunt" in exc.message.split(" must")[0] else "--name-prefix"
        raise UsageError(f"{what}: names are 1-32 bytes of printable UTF-8 (hunts 1-256) "
                         f"without outer spaces; {exc.message}") from None


def bot_name(prefix: str, i: int) -> str:
    return f"{prefix}-{i}"


def ticket_maker(args: argparse.Namespace) -> Callable[[int], str] | None:
    """What gives bot ``i`` its ticket: signed with ``--ticket-key`` (user and display name
    the bot's name, valid 5 minutes), the one ``--ticket``, or None (anonymous bots)."""
    if args.ticket:
        return lambda i: args.ticket
    if not args.ticket_key:
        return None
    from pathlib import Path

    from tickengine import ConfigError

    from ..auth import mint_ticket, read_secret

    try:
        key = Path(args.ticket_key).read_bytes()
        if not key.lstrip().startswith(b"-----"):
            key = read_secret(args.ticket_key)
        mint_ticket(key, user="probe", name="probe", audience=args.ticket_audience)
    except (OSError, ConfigError) as exc:
        raise UsageError(f"--ticket-key {args.ticket_key}: {exc}") from None

    def make(i: int) -> str:
        name = bot_name(args.name_prefix, i)
        return mint_ticket(key, user=name, name=name, audience=args.ticket_audience)
    return make


# ---------------------------------------------------------------------- steering


class Steering:
    """One bot's heading, decided once per TICK from what the client knows.

    The rules and constants of ``tickengine``'s bots (``decide_moves``), in
    Python: turn at walls; ``hunter`` with a hint keeps going while it gets
    warmer, heads back (give or take a jitter) when colder, and drifts now and
    then on the same level; otherwise it turns with ``TURN_CHANCE`` per tick.
    """

    def __init__(self, hunter: bool, rng: random.Random) -> None:
        from tickengine._bots import HUNTER_DRIFT, HUNTER_JITTER, TURN_CHANCE

        self.hunter = hunter
        self.rng = rng
        self.dx = self.dy = 0.0
        self.last_hint = 0
        #: Round-based hunts: the rounds whose results this bot counted.
        self.rounds_seen: set[int] = set()
        self._drift, self._jitter, self._turn = HUNTER_DRIFT, HUNTER_JITTER, TURN_CHANCE

    def decide(self, x: float, y: float, hint: int, width: float, height: float) -> bool:
        """Update the heading from the bot's position (world units) and hint; True if it
        changed."""
        dx, dy, rng = self.dx, self.dy, self.rng
        turn = dx == 0.0 and dy == 0.0
        if (x <= 0.0 and dx < 0.0) or (x >= width and dx > 0.0):
            turn = True
        if (y <= 0.0 and dy < 0.0) or (y >= height and dy > 0.0):
            turn = True
        last, self.last_hint = self.last_hint, hint
        if self.hunter and hint > 0 and not turn:
            if hint < last:  # colder: back the way we came, give or take a jitter
                a = math.atan2(-dy, -dx) + self._jitter * (2.0 * rng.random() - 1.0)
                return self._head(math.cos(a), math.sin(a))
            if hint == last and rng.random() < self._drift:
                turn = True
        elif rng.random() < self._turn:
            turn = True
        if turn:
            a = 2.0 * math.pi * rng.random()
            return self._head(math.cos(a), math.sin(a))
        return False

    def _head(self, dx: float, dy: float) -> bool:
        changed = (dx, dy) != (self.dx, self.dy)
        self.dx, self.dy = dx, dy
        return changed


# ---------------------------------------------------------------------- the run


@dataclass
class Stats:
    """What the bots did, shared by all of them (one Trio thread: no locks)."""

    count: int
    started: float = field(default_factory=time.perf_counter)
    connected: int = 0
    joined: int = 0  # bots that got a WELCOME at least once
    running: int = 0
    ticks: int = 0
    moves: int = 0
    rate_limited: int = 0
    resumes: int = 0
    redirects: int = 0  # REDIRECTs followed (scale-out)
    gave_up: int = 0  # bots that stopped after MAX_RETRIES failed attempts in a row
    found: int = 0  # treasures found by the bots
    scores: dict[int, int] = field(default_factory=dict)
    #: Round-based hunts: the rounds whose results a bot received, and each bot's rounds
    #: won (rank 1) and its points summed over the rounds that ended (scores reset per round).
    rounds: set[int] = field(default_factory=set)
    wins: Counter[int] = field(default_factory=Counter)
    round_points: Counter[int] = field(default_factory=Counter)
    #: Failures that ended a bot's run or were never repaired, by kind.
    errors: Counter[str] = field(default_factory=Counter)
    #: Failures that a later attempt of the same bot repaired (it resumed), by kind.
    reconnects: Counter[str] = field(default_factory=Counter)
    #: Bots between a failure and their next successful connect.
    reconnecting: int = 0
    last_error: str = ""
    interrupted: bool = False

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.last_error = message

    @property
    def score(self) -> int:
        return sum(self.scores.values())


@dataclass(frozen=True)
class Options:
    url: str
    count: int
    hunter: bool
    hunt: str
    duration: float | None
    move_interval: float
    connect_interval: float
    prefix: str
    seed: int
    #: Bot number -> a fresh join ticket (ticket mode), or None: anonymous bots.
    tickets: Callable[[int], str] | None = None


async def play(c: HuntClient, i: int, opts: Options, steer: Steering, stats: Stats,
               stop: trio.Event) -> None:
    """Steer on every TICK until ``stop``; send the heading every ``move_interval`` s."""
    import trio

    w = c.welcome
    next_move = trio.current_time()
    while not stop.is_set():
        update = await c.next_tick()
        stats.ticks += 1
        stats.scores[i] = c.score
        results = c.results
        # A round ended (a resume during the results phase repeats the RESULTS: once each):
        # the bot keeps playing into the next round.
        if results is not None and results.round not in steer.rounds_seen:
            steer.rounds_seen.add(results.round)
            stats.rounds.add(results.round)
            stats.wins[i] += results.your_rank == 1
            stats.round_points[i] += results.your_score
        if len(update.discoveries):
            mine = update.discoveries
            stats.found += int(((mine["slot"] == c.slot) & (mine["gen"] == c.player_id >> 32))
                               .sum())
        steer.decide(c.x, c.y, c.hint, w.width, w.height)
        now = trio.current_time()
        if now >= next_move and (steer.dx or steer.dy):
            await c.move(steer.dx, steer.dy)
            stats.moves += 1
            next_move = max(next_move + opts.move_interval, now)
    await c.bye(timeout=BYE_GRACE_S)


async def run_bot(i: int, opts: Options, stats: Stats, stop: trio.Event,
                  all_done: trio.Event) -> None:
    """One bot: join (staggered), play, resume after a lost connection, BYE at the end."""

    from ..client import (
        ConnectFailed,
        ConnectionLost,
        HuntError,
        JoinRefused,
        ServerError,
        TickGap,
        connect,
    )
    from ..protocol import ErrorCode, RemoteProtocolError

    # Worth another try: evicted, a server hiccup, the hunt moved or failed (it restarts from
    # its journal) or the node is going away (the entry URL sends the next attempt to
    # whichever node runs the hunt then).
    retry_codes = {ErrorCode.TOO_SLOW, ErrorCode.INTERNAL, ErrorCode.HUNT_MOVED,
                   ErrorCode.HUNT_FAILED, ErrorCode.GOING_AWAY}
    # What a failover or a node's restart sends: not an error once the bot is back.
    expected_codes = {ErrorCode.HUNT_MOVED, ErrorCode.GOING_AWAY}

    stats.running += 1
    name = bot_name(opts.prefix, i)
    steer = Steering(opts.hunter, random.Random(opts.seed * 1_000_003 + i))
    jitter = random.Random(i)  # its own: retries do not change the steering's draws
    token: bytes | None = None
    failures = 0
    # Failures since this bot last connected: expected reconnect attempts if it gets back,
    # errors if it does not. The message of the last one, for "Last error".
    pending: Counter[str] = Counter()
    pending_message = ""

    def fail(kind: str, message: str) -> None:
        nonlocal pending_message
        if not pending:
            stats.reconnecting += 1
        pending[kind] += 1
        pending_message = message

    def settle(repaired: bool) -> None:
        if not pending:
            return
        stats.reconnecting -= 1
        if repaired:
            stats.reconnects.update(pending)
        else:
            stats.errors.update(pending)
            stats.last_error = pending_message
        pending.clear()

    try:
        await _sleep_or_stop(i * opts.connect_interval, stop)
        while not stop.is_set():
            try:
                # A join takes a fresh ticket (a ticket admits once); a resume needs none.
                ticket = opts.tickets(i) if opts.tickets is not None and token is None else ""
                async with connect(opts.url, name, opts.hunt, resume_token=token,
                                   ticket=ticket) as c:
                    settle(repaired=True)
                    if token is None:
                        stats.joined += 1
                    else:
                        stats.resumes += 1
                    token, failures = c.resume_token, 0
                    stats.redirects += len(c.redirects)
                    stats.connected += 1
                    try:
                        await play(c, i, opts, steer, stats, stop)
                    finally:
                        stats.connected -= 1
                        stats.rate_limited += c.rate_limited
                return
            except JoinRefused as exc:
                if token is not None and exc.code == ErrorCode.RESUME_INVALID:
                    token = None  # the grace period is over: join anew
                    continue
                if exc.code == ErrorCode.TOO_MANY_JOINS:
                    # The address's join budget: wait and try again, like a refused connect.
                    fail(exc.name, f"{name}: {exc}")
                else:
                    settle(repaired=False)
                    hint = ADDRESS_HINT if exc.code == ErrorCode.ADDRESS_FULL else ""
                    stats.error(exc.name, f"{name}: {exc}{hint}")
                    return
            except ServerError as exc:
                if exc.code in expected_codes:
                    fail(exc.name, f"{name}: {exc}")
                else:
                    settle(repaired=False)
                    stats.error(exc.name, f"{name}: {exc}")
                    if exc.code not in retry_codes:
                        return  # replaced, or our own protocol bug: stop
            except (ConnectionLost, ConnectFailed) as exc:
                fail(type(exc).__name__, f"{name}: {exc}")
            except TickGap as exc:
                # Worth a retry, but never expected: a lost message or a server bug.
                settle(repaired=False)
                stats.error(type(exc).__name__, f"{name}: {exc}")
            except (HuntError, RemoteProtocolError) as exc:
                settle(repaired=False)
                stats.error(type(exc).__name__, f"{name}: {exc}")
                return
            failures += 1
            if failures > MAX_RETRIES:
                stats.gave_up += 1
                settle(repaired=False)
                # (last_error is this bot's: no await since it was set)
                stats.last_error += f" (gave up after {MAX_RETRIES} retries)"
                return
            await _sleep_or_stop(retry_delay(failures, jitter), stop)
    finally:
        settle(repaired=False)  # the run ended before this bot got back
        stats.running -= 1
        if stats.running == 0:
            all_done.set()


def retry_delay(failures: int, rng: random.Random) -> float:
    """Seconds before retry number ``failures`` (1, 2, ...): doubling from RETRY_FIRST_S up
    to RETRY_MAX_S, minus up to a quarter at random so that bots dropped together (a node
    died) do not all come back in the same instant."""
    ceiling = min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S)
    return ceiling * (0.75 + 0.25 * rng.random())


async def _sleep_or_stop(seconds: float, stop: trio.Event) -> None:
    import trio

    with trio.move_on_after(seconds):
        await stop.wait()


async def run_all(opts: Options, stats: Stats, err: Console | None) -> None:
    """Every bot, the live line, the signals and the clock, until the run ends."""
    import trio

    stop, all_done = trio.Event(), trio.Event()

    async def on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stats.interrupted = True
                stop.set()
                return

    async def cut_off(bots: trio.Nursery) -> None:
        await stop.wait()
        with trio.move_on_after(BYE_GRACE_S + 1.0):
            await all_done.wait()
        bots.cancel_scope.cancel()

    async with trio.open_nursery() as outer:
        outer.start_soon(on_signal)
        if opts.duration is not None:
            outer.start_soon(_stop_after, opts.duration, stop)
        if err is not None:
            outer.start_soon(live_line, stats, err)
        async with trio.open_nursery() as bots:
            for i in range(opts.count):
                bots.start_soon(run_bot, i, opts, stats, stop, all_done)
            bots.start_soon(cut_off, bots)
            await all_done.wait()
            stop.set()
        outer.cancel_scope.cancel()


async def _stop_after(seconds: float, stop: trio.Event) -> None:
    import trio

    await trio.sleep(seconds)
    stop.set()


async def live_line(stats: Stats, err: Console) -> None:
    import trio
    from rich.live import Live

    last_ticks, last_t = 0, time.perf_counter()
    rate = 0.0
    with Live(console=err, auto_refresh=False, transient=True) as live:
        while True:
            await trio.sleep(REFRESH_S)
            now = time.perf_counter()
            rate = 0.5 * rate + 0.5 * (stats.ticks - last_ticks) / (now - last_t)
            last_ticks, last_t = stats.ticks, now
            errors = sum(stats.errors.values())
            red = "red" if errors else "default"
            back = f"reconnecting {stats.reconnecting}  " if stats.reconnecting else ""
            live.update(f"bots [bold]{stats.connected}[/]/{stats.count}  {rate:,.0f} ticks/s  "
                        f"score [bold]{stats.score:,}[/]  found {stats.found:,}  {back}"
                        f"[{red}]errors {errors}[/]  {now - stats.started:,.0f} s",
                        refresh=True)


def summary(stats: Stats, opts: Options, out: Console) -> None:
    from rich.table import Table

    elapsed = time.perf_counter() - stats.started
    table = Table(title=f"{opts.count} {'hunter' if opts.hunter else 'random'} bots in "
                        f"{opts.hunt!r} at {opts.url}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    per_bot = stats.ticks / max(stats.joined, 1) / max(elapsed, 1e-9)
    best = max(stats.scores.items(), key=lambda kv: kv[1], default=None)
    rows = [
        ("Bots joined", f"{stats.joined:,} of {opts.count:,}"),
        ("Run time", f"{elapsed:,.1f} s" + (" (interrupted)" if stats.interrupted else "")),
        ("Ticks received", f"{stats.ticks:,} ({per_bot:,.1f} per bot per second)"),
        ("Moves sent", f"{stats.moves:,}"),
        ("Rate-limit warnings", f"{stats.rate_limited:,}"),
        ("Resumes", f"{stats.resumes:,}"),
        ("Redirects followed", f"{stats.redirects:,}"),
        ("Reconnect attempts", ", ".join(f"{k} {v}" for k, v in stats.reconnects.most_common())
         or "0"),
        ("Gave up", f"{stats.gave_up:,}"),
        ("Treasures found", f"{stats.found:,}"),
        ("Total score", f"{stats.score:,}"),
        ("Best bot", f"{bot_name(opts.prefix, best[0])}: {best[1]:,}" if best else "-"),
        *([("Rounds ended", f"{len(stats.rounds):,} (round {min(stats.rounds)} to "
                            f"{max(stats.rounds)})"),
           ("Most rounds won", f"{bot_name(opts.prefix, top[0])}: {top[1]:,}" if (
               top := max(stats.wins.items(), key=lambda kv: kv[1], default=None)) and top[1]
            else "-")] if stats.rounds else []),
        ("Errors", ", ".join(f"{k} {v}" for k, v in stats.errors.most_common()) or "0"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)
    if stats.reconnects:
        out.print("Reconnect attempts: drops, HUNT_MOVED, GOING_AWAY and failed connects that "
                  "the same bot's next tries repaired (it resumed): what a failover costs, not "
                  "errors.")
    if stats.last_error:
        out.print(f"Last error: {stats.last_error}")


def run(args: argparse.Namespace) -> int:
    """Run ``bots`` from parsed arguments; returns the exit status."""
    try:
        check_options(args)
    except UsageError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2
    import trio
    from rich.console import Console

    try:
        tickets = ticket_maker(args)
    except UsageError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2
    opts = Options(args.url, args.count, args.policy == "hunter", args.hunt, args.duration,
                   1.0 / args.moves_per_second, 1.0 / args.connect_rate, args.name_prefix,
                   args.seed, tickets)
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    stats = Stats(args.count)
    trio.run(run_all, opts, stats, None if args.quiet or not err.is_terminal else err)
    summary(stats, opts, out)
    if stats.joined == 0:
        print(f"{args.prog}: error: no bot could join: {stats.last_error or 'no reason given'}",
              file=sys.stderr)
        return 1
    return 130 if stats.interrupted else 0
