"""``treasure-hunt replay``: re-simulate a data dir's snapshot and journal, offline.

Read-only: it never writes into the data dir, so it can run next to a live
server. It restores the earliest intact snapshot (``--latest``: the newest, as
recovery does) and re-runs every journaled tick after it through the engine,
then prints each hunt's standings and the final state hash. The standings rank
the players still in the hunt with those who left during the replayed ticks, at
the score they had when they left: a finished hunt everyone has left still shows
who won it. ``--verify``
recomputes the state hash at every tick the journal recorded one and stops at
the first difference (exit status 1). Round-based hunts: the results of every round
that ended in the replayed ticks, as the server's results files hold them (the
winner in the tables, every standing in ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from ..durability import Recovered

SCHEMA = "treasure-hunt/replay/1"
#: Rows shown per leaderboard and hunts whose leaderboard is shown (all are in --json).
TOP = 10
LEADERBOARDS_SHOWN = 10
REPORT_WIDTH = 120
PROGRESS_EVERY_S = 0.1

EXAMPLES = """\
examples:
  treasure-hunt replay ./data                      # standings and state hash now
  treasure-hunt replay ./data --verify             # and check every recorded state hash
  treasure-hunt replay ./data --until 1200 --json replay.json
  treasure-hunt replay ./data --hunt cave          # one hunt of a server with several

exit status: 0 done, 1 a recorded state hash differs (--verify) or --json could
not be written, 2 bad option or nothing provable to replay, 130 interrupted.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``replay`` and its options."""
    p = subparsers.add_parser(
        "replay",
        help="re-simulate a server's data dir (snapshot + journal); standings, state hash",
        description=(
            "Re-simulate a data dir written by 'treasure-hunt serve': restore a snapshot,\n"
            "re-run every journaled tick after it through the engine, and print each\n"
            "hunt's standings (players who left included, at the score they left with)\n"
            "and the final state hash. Read-only: safe next to a live server. A torn or\n"
            "corrupt journal tail is reported and not replayed."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data_dir", metavar="DATA_DIR",
                   help="the server's --data-dir (journal-*.log and snapshot-*.snap files)")
    p.add_argument("--hunt", metavar="NAME",
                   help="the hunt to replay when DATA_DIR holds several (each hunt has its "
                        "journal under DATA_DIR/hunts/)")
    p.add_argument("--until", metavar="TICK",
                   help="stop after this tick (default: the last journaled tick)")
    p.add_argument("--verify", action="store_true",
                   help="recompute the state hash wherever the journal recorded one and stop "
                        "at the first difference (exit status 1); slower")
    p.add_argument("--latest", action="store_true",
                   help="start from the newest intact snapshot, as recovery does (default: "
                        "the earliest, to re-run as much of the journal as is kept)")
    p.add_argument("--threads", metavar="N",
                   help="Numba threads for the engine, 1 to NUMBA_NUM_THREADS (default: all); "
                        "the state hashes do not depend on it. On a busy machine 1 is faster")
    p.add_argument("--json", metavar="FILE", help="also write the report to FILE as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-color", action="store_true",
                   help="plain text, no colours (also: the NO_COLOR environment variable)")
    p.set_defaults(run=run_command, prog=p.prog)


def _fail(args: argparse.Namespace, message: str, status: int = 2) -> int:
    print(f"{args.prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def run_command(args: argparse.Namespace) -> int:
    """Run ``replay`` from parsed arguments; returns the exit status."""
    until = None
    if args.until is not None:
        try:
            until = int(args.until)
        except ValueError:
            until = -1
        if until < 0:
            return _fail(args, f"--until must be a tick number >= 0, got {args.until!r}")
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        return _fail(args, f"no data dir {str(data_dir)!r} (give the server's --data-dir)")

    from ..hunt._placement import hunt_journals

    journals = hunt_journals(data_dir)
    if args.hunt is not None or (journals and not any(data_dir.glob("journal-*.log"))):
        if args.hunt is None and len(journals) > 1:
            return _fail(args, f"{str(data_dir)!r} holds the journals of several hunts: give "
                               f"--hunt NAME, one of {', '.join(sorted(journals))}")
        name = args.hunt if args.hunt is not None else next(iter(journals), "")
        if name not in journals:
            return _fail(args, f"no hunt {name!r} in {str(data_dir)!r}; hunts: "
                               f"{', '.join(sorted(journals)) or 'none'}")
        data_dir = journals[name]

    import numba

    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = max_threads
    if args.threads is not None:
        try:
            threads = int(args.threads)
        except ValueError:
            threads = 0
        if not 1 <= threads <= max_threads:
            return _fail(args, f"--threads must be an integer from 1 to {max_threads}, "
                               f"got {args.threads!r}")
    numba.set_num_threads(threads)

    from rich.console import Console

    from tickengine import warm_up

    from ..durability import HashMismatchError, RecoveryError, recover

    color = not args.no_color and "NO_COLOR" not in os.environ
    out = Console(no_color=not color, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = max(out.width, REPORT_WIDTH)
    err = Console(stderr=True, no_color=not color, highlight=False)
    with err.status("JIT warm-up..."):
        warm_up()
    progress, on_tick = _progress(err, disable=args.quiet or not err.is_terminal)
    from ..hunt._rounds import ended_rounds

    ended: list[tuple[int, Any]] = []  # (tick, ended_rounds) of the rounds that ended

    def on_result(result: Any) -> None:
        if len(result.rounds_ended):
            ended.append((result.tick, ended_rounds(result)))

    try:
        with progress:
            rec = recover(data_dir, verify=args.verify, until=until, earliest=not args.latest,
                          on_tick=on_tick, on_result=on_result)
    except HashMismatchError as exc:
        return _fail(args, f"verification failed: {exc}", status=1)
    except RecoveryError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        err.print("Interrupted.")
        return 130
    if rec is None:
        return _fail(args, f"{str(data_dir)!r} holds no journal and no snapshot: nothing "
                           "to replay")
    report = summarize(rec, verified=args.verify, ended=ended)
    report["threads"] = threads
    status = 0
    if args.json is not None:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            status = _fail(args, f"cannot write {args.json!r}: {exc.strerror}", status=1)
    print_report(out, report)
    return status


def _progress(err: Console, *, disable: bool) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        BarColumn(bar_width=20), MofNCompleteColumn(),
        TextColumn("ticks  {task.fields[tps]:,.0f} ticks/s"),
        console=err, transient=True, auto_refresh=False, disable=disable,
    )
    task = progress.add_task("replay", total=None, tps=0.0)
    start = last = time.perf_counter()

    def on_tick(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if disable or (now - last < PROGRESS_EVERY_S and done < total):
            return
        last = now
        progress.update(task, completed=done, total=total, tps=done / max(now - start, 1e-9))
        progress.refresh()

    return progress, on_tick


def summarize(rec: Recovered, *, verified: bool,
              ended: list[tuple[int, Any]] = ()) -> dict[str, Any]:
    """Every number of the report, JSON-ready. ``ended``: ``(tick, ended_rounds(result))``
    of the replayed ticks where rounds ended (their records go under each hunt's
    ``rounds``, as the server's results files hold them)."""
    from ..hunt._rounds import round_record

    world, r = rec.world, rec.report
    names, users = _names(rec), _users(rec)
    rounds: dict[int, list[dict[str, Any]]] = {}
    for tick, ended_here in ended:
        for h, number, rows in ended_here:
            rounds.setdefault(h, []).append(
                round_record(world, h, number, rows, tick, names=names, users=users))
    tick_rate = world.tick_rate
    tps = r.ticks_replayed / r.replay_seconds if r.replay_seconds > 0 else None
    hunts = []
    for h, params in enumerate(world.hunt_params):
        board = world.leaderboard(h)
        leaders = []
        for rank, row in enumerate(board.tolist(), 1):
            slot, gen, score = (int(v) for v in row)
            pid = (gen << 32) | slot
            leaders.append({"rank": rank, "player_id": pid, "name": names.get(pid),
                            "user": users.get(pid), "score": score})
        hunts.append({"index": h, "name": params.name, "players": int(world.hunts.players[h]),
                      "leaderboard": leaders,
                      "standings": _standings(rec, h, names, users),
                      "rounds": rounds.get(h, [])})
    return {
        "schema": SCHEMA,
        "data_dir": r.data_dir,
        "tick": rec.tick,
        "state_hash": rec.state_hash,
        "verified": verified,
        "tick_rate": tick_rate,
        "ticks_per_s": tps,
        "realtime_factor": tps / tick_rate if tps is not None and tick_rate else None,
        "recovery": r.to_dict(),
        "hunts": hunts,
    }


def _standings(rec: Recovered, h: int, names: dict[int, str],
               users: dict[int, str]) -> list[dict[str, Any]]:
    """Hunt ``h``'s players, best first (score, then who reached it first, as the
    leaderboard ranks): those in it now, and those who left during the replayed ticks
    with the score they had as they left (``left_tick``). Top :data:`TOP` only."""
    P = rec.world.players
    rows = [(int(P.score[s]), int(P.score_tick[s]), rec.world.player_id(int(s)), None)
            for s in rec.world.active_slots(h).tolist()]
    rows += [(x.score, x.score_tick, x.player_id, x.tick) for x in rec.leaves if x.hunt == h]
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return [{"rank": rank, "player_id": pid, "name": names.get(pid), "user": users.get(pid),
             "score": score, "left_tick": left}
            for rank, (score, _, pid, left) in enumerate(rows[:TOP], 1)]


def _names(rec: Recovered) -> dict[int, str]:
    """Player names from the snapshot's meta, then from the journal's joins.

    The meta is the server's: ``players`` as ``[player id, hunt, name, ...]``
    rows (what ``treasure-hunt serve`` writes), or ``names`` as ``{id: name}``.
    """
    names: dict[int, str] = {}
    meta = rec.meta if isinstance(rec.meta, dict) else {}
    rows = meta.get("players")
    pairs = ([(row[0], row[2]) for row in rows if isinstance(row, list) and len(row) > 2]
             if isinstance(rows, list) else [])
    if isinstance(meta.get("names"), dict):
        pairs += list(meta["names"].items())
    for pid, name in pairs:
        try:
            names[int(pid)] = str(name)
        except (TypeError, ValueError):
            continue
    names.update((j.player_id, j.name) for j in rec.joins)
    return names


def _users(rec: Recovered) -> dict[int, str]:
    """The user ids of ticket-mode players (the others have none): from the snapshot's meta
    (``players`` rows ``[player id, hunt, name, token hash, user]``), then from the joins."""
    users: dict[int, str] = {}
    rows = (rec.meta if isinstance(rec.meta, dict) else {}).get("players")
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, list) and len(row) > 4 and row[4]:
            users[int(row[0])] = str(row[4])
    users.update((j.player_id, j.user) for j in rec.joins if j.user)
    return users


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The report as rich tables: the replay, then each hunt's standings."""
    from rich.table import Table

    r = report["recovery"]
    run = Table(title="Replay", show_header=False, title_justify="left")
    run.add_column("what", style="bold")
    run.add_column("value")
    run.add_row("Data dir", r["data_dir"])
    run.add_row("Snapshot", f"{r['snapshot']} (tick {r['snapshot_tick']:,}, restored in "
                            f"{r['snapshot_seconds']:.2f} s)")
    run.add_row("Ticks", f"{r['snapshot_tick'] + 1:,} to {report['tick']:,}: "
                         f"{r['ticks_replayed']:,} replayed in {r['replay_seconds']:.2f} s")
    tps, rtf = report["ticks_per_s"], report["realtime_factor"]
    run.add_row("Ticks per second", "-" if tps is None else f"{tps:,.0f}")
    run.add_row("Real-time factor", "-" if rtf is None else f"{rtf:,.1f}x")
    if "threads" in report:
        run.add_row("Threads", str(report["threads"]))
    run.add_row("State hashes", f"{r['hashes_verified']:,} verified" if report["verified"]
                else "not checked (use --verify)")
    run.add_row("Stopped", r["stop_reason"])
    for path, why in r["snapshots_skipped"]:
        run.add_row("Skipped snapshot", f"{path}: {why}", style="yellow")
    for cut in r["cuts"]:
        run.add_row("Not replayed", f"{cut['bytes']:,} bytes of {cut['path']} from offset "
                                    f"{cut['offset']:,}: {cut['reason']}", style="yellow")
    run.add_row("State hash", report["state_hash"])
    console.print(run)
    hunts = report["hunts"]
    for h in hunts[:LEADERBOARDS_SHOWN]:
        board = Table(title=f"Top {TOP}: hunt {h['index']} {h['name']!r} "
                            f"({h['players']:,} players in it now)", title_justify="left",
                      min_width=60)
        board.add_column("#", justify="right")
        board.add_column("player")
        board.add_column("score", justify="right")
        board.add_column("left at tick", justify="right")
        for row in h["standings"]:
            who = row["name"] or f"id {row['player_id']}"
            if row.get("user"):
                who += f" (user {row['user']})"
            left = "-" if row["left_tick"] is None else f"{row['left_tick']:,}"
            board.add_row(str(row["rank"]), who, f"{row['score']:,}", left)
        if not h["standings"]:
            board.add_row("-", "(nobody played in the replayed ticks)", "-", "-")
        console.print(board)
        if h.get("rounds"):
            _print_rounds(console, h)
    if len(hunts) > LEADERBOARDS_SHOWN:
        console.print(f"({len(hunts) - LEADERBOARDS_SHOWN} more hunts in --json)")


def _print_rounds(console: Console, hunt: dict[str, Any]) -> None:
    """The rounds that ended in the replayed ticks: each one's winner."""
    from rich.table import Table

    table = Table(title=f"Rounds ended in the replayed ticks: hunt {hunt['name']!r}",
                  title_justify="left", min_width=60)
    for col in ("round", "ended at tick", "players", "winner", "score"):
        table.add_column(col, justify="left" if col == "winner" else "right")
    for r in hunt["rounds"]:
        top = r["standings"][0] if r["standings"] else None
        who = "-" if top is None else (top["name"] or f"id {top['player_id']}")
        table.add_row(str(r["round"]), f"{r['ended_tick']:,}", str(r["players"]), who,
                      "-" if top is None else f"{top['score']:,}")
    console.print(table)
