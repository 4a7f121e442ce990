"""The admin API: operators and the platform run hunts over HTTP (docs/server.md, "Admin API").

Routes, on the HTTP port, JSON in and out::

    GET  /api/admin/hunts                      every hunt: status, phase, owner, players
    POST /api/admin/hunts                      create a hunt {"name", "params"}      -> 201
    GET  /api/admin/hunts/<name>               one hunt
    POST /api/admin/hunts/<name>/stop          stop it for good                      -> 200
    POST /api/admin/hunts/<name>/rounds/next   start the next round now              -> 200
    POST /api/admin/hunts/<name>/rounds/end    end the running round now             -> 200

``<name>`` is the hunt's name, percent-encoded (a "/" in it is ``%2F``). Every
call needs ``Authorization: Bearer <credential>``: the server's ``admin_token``,
or, in ticket mode (``auth = "jwt"``, server/auth), a ticket whose role is
``admin`` (its ``hunts`` claim, if any, limits it to those hunts). None (or not
Bearer) is 401, a wrong, expired or player's one 403 (so is every call while the
server has neither an admin token nor ticket mode). A body
is a JSON object of at most :data:`MAX_BODY` bytes (413 beyond); a bad body is
400 (not JSON) or 422 (a field, named in ``field``); an unknown hunt is 404; a
change that conflicts with the hunt's state is 409. Errors are
``{"error": "what happened and what to do", "field": ...}``.

Every change is logged (``admin``: action, hunt, who, status) and, with a data
dir, appended to the hunt's ``admin.jsonl`` after it took effect; what the
change is kept by (``hunt.json``, ``stopped.json``, the Redis catalogue) is
written before the answer, so a restart keeps it (server/hunt/_admin_state.py).

**Cluster** (``--redis``): any node answers. A call about a hunt another node
runs is forwarded to that node (server/shell/_admin_forward.py) and its answer
returned; a stop is marked in Redis first, so no node runs the hunt again even
when its owner cannot be reached (its own loop stops it within a lease).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import trio

from ._admin_auth import Caller, authenticate
from ._admin_body import AdminError, json_object, parse_create
from ._admin_forward import FORWARDED_BY, ForwardError, forward
from ._http import HttpServer, Request, Response, json_response

if TYPE_CHECKING:
    from ..hunt._hub import Hub
    from ..hunt._placement import Location
    from ._app import HuntServer

PREFIX = "/api/admin/"
#: Bytes of a request body taken at most (413 beyond).
MAX_BODY = 65_536
#: Seconds an admin call may take once read (a hunt's start recovers its journal).
RUN_TIMEOUT = 30.0
#: Seconds a forwarded call may wait for the owner's answer.
FORWARD_TIMEOUT = 20.0
#: The same for the call that makes the owner stop a hunt now: the stop is marked in
#: Redis already, and an owner that does not answer stops it at its next loop.
STOP_FORWARD_TIMEOUT = 3.0
_ROUTES = ("GET /api/admin/hunts, POST /api/admin/hunts, GET /api/admin/hunts/<name>, "
           "POST /api/admin/hunts/<name>/stop, POST /api/admin/hunts/<name>/rounds/next, "
           "POST /api/admin/hunts/<name>/rounds/end")
#: The round controls: route word -> World.request_round's action.
ROUND_ACTIONS = {"next": "start", "end": "end"}
#: Seconds a round control waits for the tick that applies it.
ROUND_TIMEOUT = 10.0


class AdminApi:
    """The admin routes of one server; :meth:`install` puts them on its HTTP server."""

    def __init__(self, app: HuntServer) -> None:
        self.app = app
        self.log = app.log

    def install(self, http: HttpServer) -> None:
        http.route_prefix(PREFIX, self.handle, methods=("GET", "HEAD", "POST"),
                          max_body=MAX_BODY, run_timeout=RUN_TIMEOUT)

    async def handle(self, request: Request) -> Response:
        try:
            who = authenticate(request, self.app.server.admin_token,
                               getattr(self.app, "verifier", None))
            return await self._route(request, who)
        except AdminError as exc:
            if request.method == "POST":
                self.log.info("admin_refused", method=request.method, path=request.path,
                              status=exc.status, error=exc.message)
            answer = json_response(exc.body(), exc.status)
            answer.headers.extend(exc.headers)
            return answer

    # ------------------------------------------------------------------ routing

    async def _route(self, request: Request, who: Caller) -> Response:
        try:
            parts = [unquote(p, errors="strict") for p in request.path[len(PREFIX):].split("/")]
        except UnicodeDecodeError:
            raise AdminError(400, "the hunt name in the path is not percent-encoded UTF-8") \
                from None
        method = "GET" if request.method == "HEAD" else request.method
        if parts and parts[-1] == "" and len(parts) > 1:
            parts.pop()  # a trailing slash
        if parts[0] != "hunts" or len(parts) > 4:
            raise AdminError(404, f"no admin route {request.path}; routes: {_ROUTES}")
        if len(parts) == 1:
            if method == "GET":
                return await self._list(request, who)
            return await self._create(request, who)
        name = parts[1]
        who.check(name)
        if len(parts) == 2:
            _allow(method, "GET")
            return await self._show(request, name)
        if parts[2] == "stop" and len(parts) == 3:
            _allow(method, "POST")
            return await self._stop(request, name, who)
        if parts[2] == "rounds" and len(parts) == 4 and parts[3] in ROUND_ACTIONS:
            _allow(method, "POST")
            return await self._round(request, name, parts[3], who)
        raise AdminError(404, f"no admin route {request.path}; routes: {_ROUTES}")

    # ------------------------------------------------------------------ reads

    async def _list(self, request: Request, who: Caller) -> Response:
        """Every hunt (those of an admin ticket's ``hunts`` claim). On a cluster node, with
        the phase of each from the node that runs it (one forwarded ``?here=1`` call per
        such node); ``?here=1``: only this node's."""
        rows = [r for r in await self._rows() if who.hunts is None or r["name"] in who.hunts]
        if request.query.get("here") == "1":
            rows = [r for r in rows if r["here"]]
        elif self.app.placement.node_id is not None and FORWARDED_BY not in request.headers:
            await self._fill_remote(request, rows)
        for r in rows:
            del r["here"]
        return json_response({"hunts": rows})

    async def _show(self, request: Request, name: str) -> Response:
        loc = await self._locate(name)
        routed = await self._to_owner(request, name, loc)
        if routed is not None:
            return routed
        return json_response(self._row(name, loc))

    async def _rows(self) -> list[dict[str, Any]]:
        from ..cluster import ClusterUnavailable

        placement = self.app.placement
        try:
            view = await placement.hunts_view()
        except ClusterUnavailable as exc:
            raise AdminError(503, f"{exc}; retry when Redis answers") from None
        rows = []
        for v in view:
            name = v["name"]
            r = placement.running.get(name)
            hub = r.hub if r is not None and r.hub is not None and r.hub.running else None
            row = _status_row(name, hub, v.get("stopped"), name in placement.failed)
            row.update(owner=v.get("owner"), owner_live=v.get("owner_live"),
                       here=r is not None)
            if hub is None:
                row.update(players=v.get("players"), tick=v.get("tick"))
            rows.append(row)
        return rows

    async def _fill_remote(self, request: Request, rows: list[dict[str, Any]]) -> None:
        """The status and phase of hunts other nodes run, from those nodes."""
        from ..cluster import ClusterUnavailable

        placement = self.app.placement
        owners = {r["owner"] for r in rows if not r["here"] and r["owner"] and r["owner_live"]}
        if not owners:
            return
        try:
            nodes = {n.node_id: n for n in await placement.store.live_nodes()}
        except ClusterUnavailable as exc:
            raise AdminError(503, f"{exc}; retry when Redis answers") from None
        answers: dict[str, dict[str, Any]] = {}

        async def ask(node: Any) -> None:
            try:
                got = await forward(node.http_url, request, placement.node_id,
                                    FORWARD_TIMEOUT, path=PREFIX + "hunts?here=1")
                for row in json.loads(got.body).get("hunts", []):
                    answers[row["name"]] = row
            except (ForwardError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.log.warning("admin_forward_failed", node=node.node_id, error=str(exc))

        async with trio.open_nursery() as nursery:
            for owner in sorted(owners):
                if owner in nodes:
                    nursery.start_soon(ask, nodes[owner])
        for r in rows:
            got = answers.get(r["name"])
            if got is not None and not r["here"]:
                r.update({k: got[k] for k in ("status", "phase", "round", "clock", "players",
                                              "tick") if k in got})

    def _row(self, name: str, loc: Location) -> dict[str, Any]:
        placement = self.app.placement
        row = _status_row(name, loc.hub, loc.stopped, name in placement.failed)
        row["owner"] = placement.node_id if loc.hub is not None else (
            loc.node.node_id if loc.node is not None else None)
        row["params"] = loc.params
        if loc.stopped:
            row["stopped"] = loc.stopped
        return row

    # ------------------------------------------------------------------ changes

    async def _create(self, request: Request, who: Caller) -> Response:
        from ..cluster import ClusterUnavailable

        checked = parse_create(request.body, self.app.config.hunt_defaults)
        params = checked.params
        who.check(params.name)
        try:
            outcome = await self.app.placement.create_hunt(params)
        except ClusterUnavailable as exc:
            raise AdminError(503, f"{exc}; retry when Redis answers") from None
        if outcome == "exists":
            raise AdminError(409, f"a hunt named {params.name!r} exists (see GET "
                             f"{PREFIX}hunts): pick another name", "name")
        if outcome == "full":
            raise AdminError(409, "this server holds the most created hunts it allows "
                             f"({self.app.server.max_created_hunts}): raise max_created_hunts "
                             "in [server], or stop hunts first")
        await self._changed("create", params.name, who, {"params": params.to_dict()})
        loc = await self._locate(params.name)
        return json_response(self._row(params.name, loc), 201)

    async def _stop(self, request: Request, name: str, who: Caller) -> Response:
        from ..cluster import ClusterUnavailable

        loc = await self._locate(name)
        if loc.stopped is not None and loc.hub is None:
            return json_response(self._row(name, loc))  # already stopped: nothing to do
        body = json_object(request.body)
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise AdminError(422, "reason must be a string of at most 500 characters",
                             "reason")
        info = {"at": round(time.time(), 3), "by": who.who, "reason": reason}
        try:
            await self.app.placement.stop_hunt(name, info)
        except ValueError as exc:
            raise AdminError(409, str(exc)) from None
        except ClusterUnavailable as exc:
            raise AdminError(503, f"{exc}; retry when Redis answers") from None
        if loc.node is not None and FORWARDED_BY not in request.headers:
            # Marked in Redis above: the owner's loop stops it within a lease even if this
            # call does not reach it; the call makes it stop now.
            try:
                await forward(loc.node.http_url, request, self.app.placement.node_id,
                              STOP_FORWARD_TIMEOUT)
            except ForwardError as exc:
                self.log.warning("admin_forward_failed", node=loc.node.node_id, hunt=name,
                                 error=str(exc))
        await self._changed("stop", name, who, {"reason": reason})
        return json_response(self._row(name, await self._locate(name)))

    async def _round(self, request: Request, name: str, word: str, who: Caller) -> Response:
        """Start the next round now, or end the running one: queued for the hunt's next
        tick, journaled with it, answered once that tick is journaled."""
        loc = await self._locate(name)
        if loc.stopped is not None:
            raise AdminError(409, f"hunt {name!r} was stopped: it plays no more rounds")
        if (loc.params or {}).get("rounds") is None:
            raise AdminError(409, f"hunt {name!r} has no round plan: create a hunt with "
                             "\"rounds\" to run it in rounds")
        routed = await self._to_owner(request, name, loc)
        if routed is not None:
            return routed
        hub = loc.hub
        if hub is None:
            status = "failed" if name in self.app.placement.failed else "starting"
            raise AdminError(409, f"hunt {name!r} is not ticking now ({status}): retry once "
                             "it ticks (GET /api/admin/hunts/<name> says when)")
        action = ROUND_ACTIONS[word]
        try:
            req = await hub.control_round(name, action, timeout=ROUND_TIMEOUT)
        except trio.TooSlowError:
            raise AdminError(503, f"hunt {name!r} did not tick within {ROUND_TIMEOUT:g} s "
                             "(stopping, or overloaded): retry") from None
        if req.error is not None:
            raise AdminError(409, f"hunt {name!r} refused \"{word}\": {req.error}")
        state = req.state
        await self._changed(f"round_{word}", name, who,
                            {"tick": req.tick, "round": state.number if state else None,
                             "phase": state.phase if state else None})
        return json_response({**self._row(name, loc), "applied_tick": req.tick})

    # ------------------------------------------------------------------ helpers

    async def _locate(self, name: str) -> Location:
        from ..cluster import ClusterUnavailable

        try:
            loc = await self.app.placement.locate(name)
        except ClusterUnavailable as exc:
            raise AdminError(503, f"{exc}; retry when Redis answers") from None
        if loc.params is None:
            raise AdminError(404, f"no hunt named {name!r} (GET {PREFIX}hunts lists them)")
        return loc

    async def _to_owner(self, request: Request, name: str, loc: Location) -> Response | None:
        """The owner's answer when another node runs ``name`` (None: answer here)."""
        if loc.node is None:
            return None
        if FORWARDED_BY in request.headers:
            raise AdminError(503, f"hunt {name!r} is moving between nodes: retry in a second")
        try:
            return await forward(loc.node.http_url, request, self.app.placement.node_id,
                                 FORWARD_TIMEOUT)
        except ForwardError as exc:
            raise AdminError(503, f"node {loc.node.node_id!r}, which runs hunt {name!r}, "
                             f"did not answer ({exc}): retry in a few seconds") from None

    async def _changed(self, action: str, hunt: str, caller: Caller,
                       details: dict[str, Any]) -> None:
        """Log a change and append it to the hunt's audit trail (with a data dir)."""
        node = self.app.placement.node_id
        who = caller.who
        self.log.info("admin", action=action, hunt=hunt, by=who, node=node)
        data_dir = self.app.server.data_dir
        if not data_dir:
            return
        from ..hunt._admin_state import append_audit

        record = {"at": round(time.time(), 3), "action": action, "by": who, "node": node,
                  **details}
        try:
            await trio.to_thread.run_sync(append_audit, data_dir, hunt, record)
        except OSError as exc:  # the change itself is kept; only its trail line is lost
            self.log.warning("admin_audit_failed", hunt=hunt, action=action, error=str(exc))


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise AdminError(405, f"this route takes {allowed}", headers=[("Allow", allowed)])


def _status_row(name: str, hub: Hub | None, stopped: Any, failed: bool) -> dict[str, Any]:
    """A hunt's ``status`` (ticking, starting, failed, stopped) and, where it ticks here,
    its players and tick."""
    status = ("stopped" if stopped else "ticking" if hub is not None
              else "failed" if failed else "starting")
    row: dict[str, Any] = {"name": name, "status": status, "phase": None, "round": None,
                           "players": None, "tick": None}
    if hub is not None:
        from ._watch import round_view

        world = hub.world
        row["players"] = int(world.hunts.players[world.hunt_index(name)])
        row["tick"] = world.tick_number
        clock = round_view(world, name)
        if clock is not None:
            row.update(phase=clock["phase"], round=clock["number"], clock=clock)
    return row
