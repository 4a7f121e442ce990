"""``GET /api/hunts/<hunt>/rounds`` and ``/rounds/<n>``: the results of a hunt's rounds.

Read from the hunt's results files in the data dir (server/hunt/_rounds.py), so
any node sharing the data dir answers for any hunt, wherever it runs, and a
restarted server still lists rounds played before; a server without a data dir
answers from the hub's memory (the last 100 rounds of the hunts it runs).
docs/server.md ("Rounds") describes the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ._http import HttpServer, Request, Response, json_response

if TYPE_CHECKING:
    from ._app import HuntServer

PREFIX = "/api/hunts/"


def install(http: HttpServer, app: HuntServer) -> None:
    """Route ``/api/hunts/...`` to the round results of ``app``'s hunts."""

    def handle(request: Request) -> Response:
        try:
            parts = [unquote(p, errors="strict") for p in request.path[len(PREFIX):].split("/")]
        except UnicodeDecodeError:
            return _error(400, "the hunt name in the path is not UTF-8")
        if len(parts) not in (2, 3) or parts[1] != "rounds" or not parts[0]:
            return _error(404, f"no such route: try GET {PREFIX}<hunt>/rounds or "
                               f"{PREFIX}<hunt>/rounds/<n>")
        name = parts[0]
        records = _records(app, name)
        if records is None:
            return _error(404, f"no hunt named {name!r} here, and no results of one in the "
                               "data dir (GET /hunts lists the hunts)")
        if len(parts) == 2:
            body: dict[str, Any] = {"hunt": name, "rounds": [_summary(r) for r in records]}
            hub = app.placement.hub_named(name)
            if hub is not None and hub.world.round_state(name) is not None:
                state = hub.world.round_state(name)
                body["current"] = {"round": state.number, "phase": state.phase,
                                   "phase_start": state.phase_start,
                                   "phase_end": state.phase_end, "rounds": state.count,
                                   "tick": hub.world.tick_number}
            return json_response(body)
        if not parts[2].isdigit():
            return _error(400, f"a round number is an integer >= 1, got {parts[2]!r}")
        number = int(parts[2])
        for r in records:
            if r.get("round") == number:
                return json_response(r)
        return _error(404, f"hunt {name!r} has no results of round {number} (yet): "
                           f"GET {PREFIX}{parts[0]}/rounds lists the rounds that ended")

    http.route_prefix(PREFIX, handle)


def _records(app: HuntServer, name: str) -> list[dict[str, Any]] | None:
    from ..hunt._rounds import RESULTS_DIR, read_results

    data_dir = app.server.data_dir
    hub = app.placement.hub_named(name)
    if data_dir:
        from ..hunt._admin_state import hunt_dir

        directory = hunt_dir(data_dir, name) / RESULTS_DIR
        if directory.is_dir():
            return read_results(directory)
    if hub is not None and name in {p.name for p in hub.world.hunt_params}:
        return hub.round_results(name)
    return None


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    top = record["standings"][0] if record.get("standings") else None
    return {"round": record["round"], "ended_tick": record["ended_tick"],
            "players": record["players"], "key": record["key"],
            "winner": None if top is None else {k: top[k] for k in
                                                ("player_id", "user", "name", "score")}}


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)
