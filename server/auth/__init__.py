"""server.auth: join tickets, the platform's word on who plays.

A platform that logs its users in signs a short-lived JSON Web Token (a *join ticket*)
for a user; the client sends it in HELLO (docs/protocol.md, "Join tickets"); a server in
ticket mode (``auth = "jwt"``) checks it here and takes the user id and display name
from it. PyJWT does the cryptography: HS256 with a shared secret, RS256 or EdDSA with a
public key (PEM) or a JWKS file, so a platform need not share its signing key.

- ``_keys``: loading the verification key(s) of the server's config (secret, PEM, JWKS).
- ``_tickets``: :class:`TicketVerifier` (ticket -> :class:`Identity`, or
  :class:`TicketError` with the REFUSED code), :func:`mint_ticket` (the platform's side,
  for ``treasure-hunt ticket``, the bots and the tests) and :func:`verify_admin_ticket`.

Tickets and secrets are never logged nor journaled: an :class:`Identity` holds what the
ticket says (user, name, role, hunts), never the ticket.
"""

from ._keys import AuthConfigError as AuthConfigError
from ._keys import VerificationKeys as VerificationKeys
from ._keys import load_keys as load_keys
from ._keys import read_secret as read_secret
from ._tickets import ROLES as ROLES
from ._tickets import Identity as Identity
from ._tickets import TicketError as TicketError
from ._tickets import TicketVerifier as TicketVerifier
from ._tickets import mint_ticket as mint_ticket
from ._tickets import verifier_from_config as verifier_from_config
from ._tickets import verify_admin_ticket as verify_admin_ticket
