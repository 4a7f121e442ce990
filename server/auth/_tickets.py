"""Join tickets: verified into an :class:`Identity`, or refused with a protocol code.

A ticket is a JWT. Claims read:

- ``sub`` (required): the user id, 1..:data:`MAX_USER_BYTES` bytes of printable text;
- ``name`` (required): the display name; outer spaces stripped, cut to the protocol's
  32 bytes of a player name;
- ``aud`` (required): must be the server's ``auth_audience``; ``iss`` is checked when the
  server sets ``auth_issuer``;
- ``exp`` (required), ``nbf`` and ``iat`` (checked when present), each with the server's
  ``auth_leeway`` seconds of clock skew either way;
- ``hunts`` (optional): the hunt names this ticket admits to (absent: any hunt);
- ``role`` (optional): ``player`` (the default) or ``admin`` (the watch view, the admin API).

The algorithm is the key's, never the header's choice: a ticket whose ``alg`` is not the
key's (``none`` among them) is refused before any signature check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from ..protocol import MAX_NAME_BYTES, MAX_TICKET_BYTES, ErrorCode
from ._keys import ALGORITHMS, AuthConfigError, VerificationKeys, load_keys, pem_key

#: Roles a ticket may carry.
ROLES = ("player", "admin")
#: Bytes of a user id (``sub``).
MAX_USER_BYTES = 128


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified ticket says: ``user`` (its ``sub``), the display ``name``, the
    ``role``, the ``hunts`` it admits to (None: any) and when it expires (``expires``,
    Unix seconds). Holds no ticket: an Identity may be logged."""

    user: str
    name: str
    role: str = "player"
    hunts: frozenset[str] | None = None
    expires: float = 0.0


class TicketError(Exception):
    """A ticket refused: ``code`` is the REFUSED code (``TICKET_*``), ``message`` says why
    and what to do (it never quotes the ticket)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _display_name(value: Any) -> str:
    """The ticket's ``name`` as a protocol player name: stripped, cut to MAX_NAME_BYTES at
    a character boundary; "" when nothing printable is left."""
    if not isinstance(value, str):
        return ""
    name = value.strip().encode()[:MAX_NAME_BYTES].decode("utf-8", "ignore").strip()
    return name if name.isprintable() else ""


class TicketVerifier:
    """Checks tickets against the server's keys and claims (docs/server.md, "Authentication").

    ``audience``: the ``aud`` a ticket must carry (this server or cluster); ``issuer``: the
    ``iss`` it must carry ("" : not checked); ``leeway``: seconds of clock skew allowed on
    ``exp``, ``nbf`` and ``iat``.
    """

    def __init__(self, keys: VerificationKeys, *, audience: str, issuer: str = "",
                 leeway: float = 30.0) -> None:
        if not audience:
            raise AuthConfigError("auth_audience must name this server or cluster (the 'aud' "
                                  "the platform puts in its tickets)")
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    def verify(self, ticket: str, hunt: str | None = None) -> Identity:
        """The identity of a valid ticket for ``hunt`` (None: any hunt, for admin tickets).
        Raises :class:`TicketError`."""
        if not ticket:
            raise TicketError(ErrorCode.TICKET_REQUIRED, "this server admits players with a "
                              "join ticket only: get one from the platform that sent you here")
        if len(ticket) > MAX_TICKET_BYTES:
            raise TicketError(ErrorCode.TICKET_INVALID, f"the ticket has {len(ticket)} "
                              f"bytes, more than {MAX_TICKET_BYTES}")
        invalid = ErrorCode.TICKET_INVALID
        try:
            header = jwt.get_unverified_header(ticket)
        except jwt.PyJWTError:
            raise TicketError(invalid, "the ticket is not a JWT") from None
        alg, kid = header.get("alg"), header.get("kid") or ""
        found = self.keys.lookup(kid) if isinstance(kid, str) else None
        if found is None:
            raise TicketError(invalid, f"no key of this server has the id {kid!r} (the "
                              "ticket's kid)" if kid else "the ticket names no key id (kid) "
                              "and this server has several keys")
        key, expected = found
        if alg != expected:
            raise TicketError(invalid, f"the ticket's algorithm {alg!r} is not allowed: this "
                              f"key verifies {expected} only")
        try:
            claims = jwt.decode(
                ticket, key, algorithms=[expected], audience=self.audience,
                issuer=self.issuer or None, leeway=self.leeway,
                options={"require": ["exp", "sub", "aud", "name"]})
        except jwt.ExpiredSignatureError:
            raise TicketError(ErrorCode.TICKET_EXPIRED, "the ticket has expired (exp): get a "
                              "fresh one from the platform and join again") from None
        except jwt.ImmatureSignatureError:
            raise TicketError(ErrorCode.TICKET_NOT_YET_VALID, "the ticket is not valid yet "
                              "(nbf or iat in the future): the platform's or the server's "
                              "clock is wrong") from None
        except jwt.InvalidAudienceError:
            raise TicketError(invalid, "the ticket is for another audience (aud): this server "
                              f"accepts {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TicketError(invalid, "the ticket's issuer (iss) is not the one this server "
                              "trusts") from None
        except jwt.InvalidSignatureError:
            raise TicketError(invalid, "the ticket's signature does not verify: not signed "
                              "by the platform this server trusts") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TicketError(invalid, f"the ticket lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise TicketError(invalid, f"the ticket is not valid: {exc}") from None
        return self._identity(claims, hunt)

    def _identity(self, claims: dict[str, Any], hunt: str | None) -> Identity:
        invalid = ErrorCode.TICKET_INVALID
        user = claims["sub"]
        if not (isinstance(user, str) and user.isprintable()
                and 1 <= len(user.encode()) <= MAX_USER_BYTES):
            raise TicketError(invalid, f"the ticket's sub must be 1-{MAX_USER_BYTES} bytes of "
                              "printable text")
        name = _display_name(claims["name"])
        if not name:
            raise TicketError(invalid, "the ticket's name must be printable text")
        role = claims.get("role", "player")
        if role not in ROLES:
            raise TicketError(invalid, f"the ticket's role must be one of {', '.join(ROLES)}")
        hunts = claims.get("hunts")
        if hunts is not None:
            if not (isinstance(hunts, list) and all(isinstance(h, str) for h in hunts)):
                raise TicketError(invalid, "the ticket's hunts must be a list of hunt names")
            hunts = frozenset(hunts)
            if hunt is not None and hunt not in hunts:
                raise TicketError(ErrorCode.TICKET_FORBIDDEN, f"this ticket does not admit "
                                  f"to hunt {hunt!r} (its hunts claim)")
        return Identity(user, name, role, hunts, float(claims["exp"]))


def verify_admin_ticket(verifier: TicketVerifier | None, ticket: str) -> Identity:
    """The identity of a valid ticket whose role is ``admin``: the check the watch view and
    the admin HTTP API make of a ticket (``Authorization: Bearer <ticket>``). Raises
    :class:`TicketError`: ``TICKET_REQUIRED`` when the server is not in ticket mode
    (``verifier`` None) or no ticket is given, ``TICKET_FORBIDDEN`` for a player's ticket,
    the other ``TICKET_*`` codes as for a join."""
    if verifier is None:
        raise TicketError(ErrorCode.TICKET_REQUIRED, "this server is not in ticket mode "
                          "(auth = \"jwt\"): use the admin token")
    identity = verifier.verify(ticket)
    if identity.role != "admin":
        raise TicketError(ErrorCode.TICKET_FORBIDDEN, f"this ticket's role is {identity.role}; "
                          "this needs a ticket with role admin")
    return identity


def verifier_from_config(server: Any) -> TicketVerifier | None:
    """The verifier of a ``ServerConfig`` in ticket mode (keys loaded now), None in
    anonymous mode. Raises :class:`AuthConfigError` for unusable settings."""
    if server.auth == "none":
        return None
    keys = load_keys(secret_file=server.auth_secret_file,
                     public_key_file=server.auth_public_key_file,
                     jwks_file=server.auth_jwks_file)
    return TicketVerifier(keys, audience=server.auth_audience, issuer=server.auth_issuer,
                          leeway=server.auth_leeway)


def mint_ticket(key: bytes | str, *, user: str, name: str, audience: str = "treasure-hunt",
                ttl: float = 300.0, hunts: list[str] | None = None, role: str | None = None,
                issuer: str = "", kid: str = "", algorithm: str | None = None,
                now: float | None = None, not_before: float | None = None) -> str:
    """A ticket, as a platform signs one: ``key`` is a shared secret (HS256) or a private
    key in PEM (RS256 or EdDSA, from the key); valid from ``now`` (Unix seconds, default the
    clock) for ``ttl`` seconds. For ``treasure-hunt ticket``, bots and tests; a platform
    does the same in a few lines (docs/server.md)."""
    if algorithm is None:
        is_pem = (key.encode() if isinstance(key, str) else key).lstrip().startswith(b"-----")
        algorithm = pem_key(key, private=True)[1] if is_pem else "HS256"
    if algorithm not in ALGORITHMS:
        raise AuthConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    if algorithm != "HS256":
        key = pem_key(key, private=True)[0]
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": user, "name": name, "aud": audience,
                              "iat": int(issued), "exp": int(issued + ttl)}
    if not_before is not None:
        claims["nbf"] = int(not_before)
    if issuer:
        claims["iss"] = issuer
    if hunts is not None:
        claims["hunts"] = list(hunts)
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
