"""The placement of a single server: every hunt runs here (a cluster of one).

The configured hunts, the hunts clients or operators created in an earlier run
(their ``hunt.json`` under ``<data_dir>/hunts/``) and those created now
(``allow_create_hunts``, the admin API) each get a hub, except the hunts an
operator stopped (their ``stopped.json``: server/hunt/_admin_state.py); a data
dir of the older layout (one journal for all hunts) is recovered as one hub for
its hunts. A hunt that fails is restarted here from its journal after a backoff
(server/hunt/_placement.py says what a failure does).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from tickengine import ConfigError, HuntParams, WorldConfig

from ..protocol import ErrorCode, ErrorMessage, Redirect, Refused
from ._placement import (
    HEALTHY_AFTER,
    LOCAL_TOKEN,
    Location,
    Placement,
    Running,
    StartError,
    _describe,
    _fit,
    _start_hint,
    hunt_dir_name,
    hunt_world_config,
    stopped_message,
)
from ._rounds import ended_rounds

if TYPE_CHECKING:
    from ..shell._app import HuntServer
    from ._hub import Hub

#: Seconds before the first restart of a failed hunt; doubled after each failure in a row.
RESTART_BACKOFF = 1.0
#: Longest wait between two restarts (seconds).
RESTART_BACKOFF_MAX = 60.0
#: The lock file a single server holds in its data dir (one server per data dir).
SERVER_LOCK = "server.lock"


class LocalPlacement(Placement):
    """Every hunt runs on this server: the configured ones, those of the data dir, and those
    clients create by name (``allow_create_hunts``). A failed hunt restarts here."""

    def __init__(self, app: HuntServer, *, fresh: bool = False) -> None:
        super().__init__(app)
        self.fresh = fresh
        #: Every hunt this server runs, by name: the configured ones first, then created ones.
        self.catalogue: dict[str, HuntParams] = {p.name: p for p in app.config.world.hunts}
        self.created = 0
        self._lock_fd: int | None = None
        self._starting = True
        self._creating: dict[str, trio.Event] = {}

    async def run(self, public_url: str, http_url: str,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            legacy = await trio.to_thread.run_sync(self._prepare_data_dir)
        except OSError as exc:
            raise StartError(f"the data dir {self.cfg.data_dir!r} cannot be used: "
                             f"{_describe(exc)}; {_start_hint(exc)}") from exc
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.groups.run, self.log)
            runs = []
            if legacy is not None:
                runs.append(self._start_legacy(legacy))
            for name, params in self.catalogue.items():
                if name not in self.running and name not in self.stopped:
                    runs.append(self._start(name, params))
            for r in runs:
                await r.ready.wait()
            for r in runs:
                if r.exc is not None:
                    raise StartError(f"hunt {r.name!r} cannot start: {_describe(r.exc)}; "
                                     f"{_start_hint(r.exc)}") from r.exc
            self._starting = False
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.offload.close()
                self._release_lock()

    def _prepare_data_dir(self) -> Path | None:
        """Lock the data dir, move it aside with ``fresh``, list the hunts created in an
        earlier run; returns the data dir when it holds an older single journal."""
        from ..durability import discard
        from ..durability._files import list_segments, list_snapshots

        if not self.cfg.data_dir:
            return None
        from ..durability._files import DIR_MODE

        data_dir = Path(self.cfg.data_dir)
        hunts = data_dir / "hunts"
        data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(data_dir, DIR_MODE)  # owner only, an older server's 0755 dir too
        hunts.mkdir(exist_ok=True, mode=DIR_MODE)
        self._take_lock(data_dir)
        if self.fresh:
            moved = discard(data_dir)
            if any(hunts.iterdir()):
                from ..durability._files import DISCARDED_PREFIX, unique_dir, utc_stamp

                moved = moved or unique_dir(data_dir, DISCARDED_PREFIX + utc_stamp())
                os.replace(hunts, moved / "hunts")
                hunts.mkdir()
            if moved is not None:
                self.log.warning("fresh_start", moved_aside=str(moved))
        for p in sorted(hunts.glob("*/hunt.json")):
            params = HuntParams.from_dict(json.loads(p.read_text(encoding="utf-8")))
            if params.name not in self.catalogue:
                self.catalogue[params.name] = params
                self.created += 1
        from ._admin_state import read_stopped

        self.stopped.update(read_stopped(data_dir))
        if list_segments(data_dir) or list_snapshots(data_dir):
            self.log.info("data_dir_layout", layout="single journal", data_dir=str(data_dir),
                          hint="one hub ticks every hunt of this journal; hunts created from "
                          "now on get journals of their own under hunts/")
            return data_dir
        return None

    def _take_lock(self, data_dir: Path) -> None:
        from ..durability._files import hold_lock

        self._lock_fd = hold_lock(data_dir / SERVER_LOCK,
                                  f"{data_dir} is in use by another server (its {SERVER_LOCK} "
                                  "is held): one server per data dir, or give --data-dir")

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _start_legacy(self, data_dir: Path) -> Running:
        # The configured hunts are in it (the hub adds those its journal lacks); the hunts
        # clients created are known once it is recovered (see _on_started).
        r = Running("+".join(self.app.config.world.hunts[i].name
                             for i in range(len(self.app.config.world.hunts))) or "legacy",
                    data_dir=data_dir, legacy=True,
                    hunts=tuple(p.name for p in self.app.config.world.hunts))
        for name in r.hunts:
            self.running[name] = r
        self.nursery.start_soon(self._serve_hunt, r, {"legacy": True})
        return r

    def _start(self, name: str, params: HuntParams) -> Running:
        r = Running(name, hunts=(name,))
        if self.cfg.data_dir:
            r.data_dir = (Path(self.cfg.data_dir) / "hunts" / hunt_dir_name(name)
                          / f"{LOCAL_TOKEN:012d}")
        self.running[name] = r
        self.nursery.start_soon(self._serve_hunt, r, params.to_dict())
        return r

    async def _open_hub(self, r: Running, params: dict[str, Any]) -> Hub:
        world = self.app.config.world
        if not r.legacy:
            hunt = HuntParams.from_dict(params)
            world = hunt_world_config(world.engine, hunt)
        hub, recovered = await trio.to_thread.run_sync(self._open_sync, r, world)
        if recovered is not None:
            self.log.info("recovered", hunt=r.name, tick=recovered.tick,
                          state_hash=recovered.state_hash, players=len(hub.sessions))
        return hub

    def _open_sync(self, r: Running, world: WorldConfig) -> tuple[Hub, Any]:
        """Worker thread: recover ``r.data_dir`` and continue its journal there."""
        import numba

        from ..durability import recover

        # Replay on the tick's thread budget: all threads on a busy host stall each other.
        numba.set_num_threads(self.cfg.tick_threads)
        if r.data_dir is not None and not r.legacy:
            _write_params(r.data_dir.parent, world.hunts[0])
        ended: list[tuple[int, Any]] = []  # rounds that ended in the replayed ticks
        recovered = (recover(r.data_dir, on_result=lambda res: _keep_results(ended, res))
                     if r.data_dir is not None else None)
        hub = self._new_hub(r, world, recovered)
        hub.rounds.replayed(ended)  # their results files, where a crash left them unwritten
        if hub.journal is not None:
            hub.journal.start(hub.world, hub.journal_meta(), recovered=recovered)
        return hub, recovered

    def _on_started(self, r: Running, hub: Hub) -> None:
        if r.legacy:  # every hunt the older single journal holds is routed to its hub
            r.hunts = tuple(p.name for p in hub.world.hunt_params)
            for p in hub.world.hunt_params:
                self.running[p.name] = r
                if p.name not in self.catalogue:
                    self.catalogue[p.name] = p
                    self.created += 1

    async def _after_failure(self, r: Running, count: int, starting: bool) -> None:
        if self._starting:
            return  # a start-up failure: run() reports it and the server does not start
        delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF * 2 ** (count - 1))
        failure = self.failed[r.name]
        failure.retry_at = trio.current_time() + delay
        self.log.warning("hunt_restart_scheduled", hunt=r.name, in_seconds=delay,
                         failures_in_a_row=count)
        self.nursery.start_soon(self._restart, r, delay)

    async def _restart(self, old: Running, delay: float) -> None:
        await trio.sleep(delay)
        if old.name in self.stopped:
            return
        if old.legacy:
            r = self._start_legacy(old.data_dir)
        else:
            r = self._start(old.name, self.catalogue[old.name])
        await r.ready.wait()
        if r.hub is None:
            return  # failed again: _failed scheduled the next attempt
        self.log.info("hunt_restarted", hunt=r.name, tick=r.hub.world.tick_number)
        with trio.move_on_after(HEALTHY_AFTER):
            await r.stopped.wait()
        if not r.stopped.is_set():
            self.strikes.pop(r.name, None)

    async def route(self, hunt: str, token: bytes | None = None
                    ) -> Hub | Redirect | ErrorMessage:
        if token is not None:  # the token names the hunt (the HELLO's hunt is ignored)
            for hub in self.hubs():
                if hub.running and hub.holds(token):
                    return hub
            if hunt not in self.catalogue:
                return Refused(ErrorCode.RESUME_INVALID, "this resume token is unknown, "
                               "expired or its player left; join again without it")
        for _ in range(3):
            if hunt in self.stopped:
                return Refused(ErrorCode.UNKNOWN_HUNT, stopped_message(hunt))
            r = self.running.get(hunt)
            if r is not None and not r.stopped.is_set():
                await r.ready.wait()
                if r.hub is not None and r.hub.running:
                    return r.hub
            failure = self.failed.get(hunt)
            if failure is not None:
                wait = max(1.0, failure.retry_at - trio.current_time())
                when = f"retry in {wait:.0f} s" if math.isfinite(wait) else "retry later"
                return ErrorMessage(ErrorCode.HUNT_FAILED, _fit(
                    f"hunt {hunt!r} failed; {when} with your resume token ({failure.error})"))
            if r is None:
                if hunt in self.catalogue:
                    await trio.sleep(0.05)  # stopping or restarting: look again
                    continue
                created = await self._create(hunt)
                if isinstance(created, ErrorMessage):
                    return created
        return ErrorMessage(ErrorCode.GOING_AWAY, f"hunt {hunt!r} is restarting: retry in a "
                            "second")

    async def _create(self, hunt: str) -> ErrorMessage | None:
        """Start a hub for a hunt a client names (``allow_create_hunts``), or refuse."""
        cfg = self.cfg
        pending = self._creating.get(hunt)
        if pending is not None:  # another HELLO is creating it
            await pending.wait()
            return None
        if not cfg.allow_create_hunts:
            names = ", ".join(self.catalogue) or "none"
            return Refused(ErrorCode.UNKNOWN_HUNT, f"no hunt named {hunt!r}; hunts: {names}")
        if self.created >= cfg.max_created_hunts:
            return Refused(ErrorCode.UNKNOWN_HUNT, f"no hunt named {hunt!r}, and clients have "
                           f"created the most allowed ({cfg.max_created_hunts})")
        try:
            params = HuntParams.from_dict({**self.app.config.hunt_defaults, "name": hunt})
        except (ConfigError, TypeError, ValueError) as exc:
            return Refused(ErrorCode.UNKNOWN_HUNT, f"cannot create hunt {hunt!r}: {exc}")
        done = self._creating[hunt] = trio.Event()
        try:
            self.created += 1
            self.catalogue[hunt] = params
            self.log.info("hunt_created", hunt=hunt)
            r = self._start(hunt, params)
            await r.ready.wait()
        finally:
            del self._creating[hunt]
            done.set()
        return None

    async def create_hunt(self, params: HuntParams) -> str:
        name = params.name
        if name in self.catalogue or name in self._creating:
            return "exists"
        if self.created >= self.cfg.max_created_hunts:
            return "full"
        done = self._creating[name] = trio.Event()
        try:
            self.created += 1
            self.catalogue[name] = params
            self.log.info("hunt_created", hunt=name, by="admin")
            r = self._start(name, params)
            await r.ready.wait()
        finally:
            del self._creating[name]
            done.set()
        return "created"

    async def locate(self, hunt: str) -> Location:
        params = self.catalogue.get(hunt)
        if params is None:
            return Location(None)
        r = self.running.get(hunt)
        hub = r.hub if r is not None and r.hub is not None and r.hub.running else None
        return Location(params.to_dict(), hub=hub, stopped=self.stopped.get(hunt))

    async def stop_hunt(self, hunt: str, info: dict[str, Any]) -> None:
        r = self.running.get(hunt)
        if r is not None and r.legacy and len(r.hunts) > 1:
            raise ValueError(f"hunt {hunt!r} shares the older single journal of the data dir "
                             f"with {', '.join(n for n in r.hunts if n != hunt)}: it cannot "
                             "stop alone (move the data dir aside with --fresh to split them)")
        if self.cfg.data_dir:
            from ._admin_state import mark_stopped

            await trio.to_thread.run_sync(mark_stopped, self.cfg.data_dir, hunt, info)
        self.stopped[hunt] = info
        self.failed.pop(hunt, None)
        r = self.running.get(hunt)
        if r is not None:
            await self._stop(r, "stopped by an operator", release=False,
                             code=ErrorCode.UNKNOWN_HUNT, message=stopped_message(hunt))

    async def leave(self) -> None:
        for r in list(dict.fromkeys(self.running.values())):
            await self._stop(r, "server shutting down", release=False, code=None)

    async def hunts_view(self) -> list[dict[str, Any]]:
        url = self.app.ports.ws_url if self.app.ports else None
        rows = []
        for name, params in self.catalogue.items():
            r = self.running.get(name)
            hub = r.hub if r is not None else None
            h = hub.world.hunt_index(name) if hub is not None else None
            rows.append({"name": name, "owner": None, "owner_url": url,
                         "owner_live": name not in self.failed and name not in self.stopped,
                         "stopped": name in self.stopped, "token": None,
                         "players": int(hub.world.hunts.players[h]) if hub else 0,
                         "tick": hub.world.tick_number if hub else None,
                         "max_players": params.max_players})
        return rows

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        if self.app.server.auth != "none":
            return self._user_leaderboard(limit)
        rows = []
        for hub in self.hubs():
            world = hub.world
            for s in hub.sessions.values():
                rows.append({"hunt": world.hunt_params[s.hunt].name, "player_id": s.player_id,
                             "name": s.name, "score": int(world.players.score[s.slot])})
        rows.sort(key=lambda r: (-r["score"], r["hunt"], r["player_id"]))
        return rows[:limit]

    def _user_leaderboard(self, limit: int) -> list[dict[str, Any]]:
        """Ticket mode: users, each with the best score of their players in any hunt here
        (one node keeps no history: players who left are gone; a scale-out node's
        leaderboard keeps users' bests in Redis)."""
        best: dict[str, dict[str, Any]] = {}
        for hub in self.hubs():
            scores = hub.world.players.score
            for s in hub.sessions.values():
                if not s.user:
                    continue
                score = int(scores[s.slot])
                row = best.get(s.user)
                if row is None or score > row["score"]:
                    best[s.user] = {"user": s.user, "name": s.name, "score": score}
        return sorted(best.values(), key=lambda r: (-r["score"], r["user"]))[:limit]


def _keep_results(ended: list[tuple[int, Any]], result: Any) -> None:
    """Recovery's ``on_result``: the results of the rounds a replayed tick ended."""
    if len(result.rounds_ended):
        ended.append((result.tick, ended_rounds(result)))


def _write_params(base: Path, params: HuntParams) -> None:
    """``<hunt dir>/hunt.json``: the hunt's parameters, so a restart knows created hunts."""
    from ..durability._files import DIR_MODE, FILE_MODE

    base.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    path = base / "hunt.json"
    text = json.dumps(params.to_dict(), sort_keys=True)
    with contextlib.suppress(FileNotFoundError):
        if path.read_text(encoding="utf-8") == text:
            return
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
