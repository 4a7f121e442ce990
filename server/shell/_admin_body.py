"""The admin API's request bodies: JSON in, checked field by field, errors naming the field.

Pure (no I/O): :func:`parse_create` turns the body of ``POST /api/admin/hunts``
into the hunt's parameters, or raises :class:`AdminError` with the HTTP status
(400: not a JSON object; 422: a field is missing, unknown or out of range, named
in ``field``) and a message that says what is allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tickengine import ConfigError, HuntParams


class AdminError(Exception):
    """An admin call refused: ``status`` (HTTP), ``message`` (what to do), and the body's
    ``field`` at fault (dotted: ``params.width``), if any."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


#: Keys of the body of ``POST /api/admin/hunts``.
CREATE_KEYS = ("name", "params", "rounds")


@dataclass(frozen=True)
class CreateHunt:
    """A checked request to create a hunt."""

    params: HuntParams


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``); 400 otherwise."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(400, f"the body is not valid JSON ({exc}): send a JSON object with "
                         "Content-Type: application/json") from None
    if not isinstance(data, dict):
        raise AdminError(400, f"the body must be a JSON object, got {type(data).__name__}")
    return data


def parse_create(body: bytes, defaults: dict[str, Any]) -> CreateHunt:
    """``{"name": "cup", "params": {...}, "rounds": {...}}``: the hunt's name, its
    parameters (each ``HuntParams`` field, tickengine/_config.py, over the config's
    ``[defaults]``) and its round plan (``RoundPlan``, tickengine/_roundplan.py; also
    accepted as ``params.rounds``; none: the hunt plays without rounds)."""
    data = json_object(body)
    unknown = sorted(set(data) - set(CREATE_KEYS))
    if unknown:
        raise AdminError(422, f"unknown key {unknown[0]!r}; the body takes "
                         f"{', '.join(CREATE_KEYS)}", unknown[0])
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise AdminError(422, "name is required: the hunt's name, 1-64 printable characters",
                         "name")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise AdminError(422, "params must be an object of hunt parameters "
                         "(width, height, treasures, ...)", "params")
    if "name" in params:
        raise AdminError(422, "give the hunt's name at the top of the body, not in params",
                         "params.name")
    fields = {**defaults, **params, "name": name}
    if "rounds" in data:
        if "rounds" in params:
            raise AdminError(422, "give the round plan once: rounds or params.rounds",
                             "rounds")
        fields["rounds"] = data["rounds"]
    if fields.get("rounds") is not None and not isinstance(fields["rounds"], dict):
        raise AdminError(422, "rounds must be an object (count, lobby_ticks, running_ticks, "
                         "results_ticks, round: [...]) or null", "rounds")
    try:
        hunt = HuntParams.from_dict(fields, where="params")
    except ConfigError as exc:
        raise AdminError(422, str(exc), _field_of(str(exc))) from None
    except (TypeError, ValueError) as exc:
        raise AdminError(422, f"params: {exc}", "params") from None
    return CreateHunt(hunt)


def _field_of(message: str) -> str:
    """The body's field a ConfigError names: "hunt.width must ..." -> "params.width",
    "rounds.round.end must ..." -> "rounds.round.end", "params rounds: unknown key(s)
    x" -> "rounds.x"."""
    m = re.match(r"(?:hunt\.)?(rounds(?:\.\w+)*)", message)
    if m:
        return m.group(1)
    m = re.match(r"params (rounds(?:\.round)?)[^:]*: unknown key\(s\) ([^,;]+)", message)
    if m:
        return f"{m.group(1)}.{m.group(2).strip()}"
    m = re.match(r"hunt\.(\w+)", message)
    if m:
        return "name" if m.group(1) == "name" else f"params.{m.group(1)}"
    m = re.match(r"params: unknown key\(s\) ([^,;]+)", message)
    if m:
        return f"params.{m.group(1).strip()}"
    return "params"
