"""Who may call the admin API: the server's admin token, or an admin ticket in ticket mode.

``authenticate(request, admin_token, verifier)`` reads ``Authorization: Bearer
<credential>`` and returns the :class:`Caller`, or raises :class:`AdminError`:
401 without a Bearer credential (with ``WWW-Authenticate``), 403 for a wrong
token, a refused ticket (a player's, expired, badly signed: server/auth says
why), or a server with neither an admin token nor ticket mode. The token is
compared in constant time; a ticket is never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from ._admin_body import AdminError
from ._http import Request


@dataclass(frozen=True)
class Caller:
    """Who makes an admin call: ``who`` ("admin_token", or "user:<id>" for an admin
    ticket) and the hunts it may act on (None: all; an admin ticket's ``hunts`` claim)."""

    who: str
    hunts: frozenset[str] | None = None

    def check(self, hunt: str) -> None:
        """403 unless this caller may act on ``hunt``."""
        if self.hunts is not None and hunt not in self.hunts:
            raise AdminError(403, f"this admin ticket does not cover hunt {hunt!r} (its "
                             "hunts claim): use a ticket for it, or the admin token")


def authenticate(request: Request, admin_token: str, verifier: Any) -> Caller:
    """The caller of ``request``; ``verifier``: ticket mode's (server.auth), or None."""
    header = request.headers.get("authorization", "").strip()
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AdminError(401, "an admin credential is needed: send the header "
                         "'Authorization: Bearer TOKEN' with the server's admin_token "
                         "(or, in ticket mode, an admin ticket)",
                         headers=[("WWW-Authenticate", 'Bearer realm="admin"')])
    if admin_token and hmac.compare_digest(credential.encode(), admin_token.encode()):
        return Caller("admin_token")
    if verifier is not None and credential.count(".") == 2:
        from ..auth import TicketError, verify_admin_ticket

        try:
            identity = verify_admin_ticket(verifier, credential)
        except TicketError as exc:
            raise AdminError(403, f"this admin ticket is refused: {exc.message}") from None
        return Caller(f"user:{identity.user}", identity.hunts)
    if not admin_token and verifier is None:
        raise AdminError(403, "the admin API is disabled on this server: start it with "
                         "--admin-token TOKEN (or admin_token in [server]), or in ticket "
                         "mode for admin tickets")
    raise AdminError(403, "this admin credential is not valid: use the server's "
                     "admin_token" + (" or an admin ticket" if verifier is not None else ""))
