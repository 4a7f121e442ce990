"""``treasure-hunt ticket``: sign a join ticket, as the platform does (for tests and set-up).

The key comes from ``--key-file`` (a shared secret, or a private key in PEM for RS256 or
EdDSA) or else from $TREASURE_HUNT_AUTH_SECRET; the ticket is printed on stdout, nothing
else. docs/server.md ("Authentication") shows the same in a few lines of Python and of
JavaScript for the platform's own code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  # a shared secret in the environment (the server has the same one)
  export TREASURE_HUNT_AUTH_SECRET="$(openssl rand -base64 48)"
  treasure-hunt ticket --user u-42 --name Ada

  # signed with the platform's private key (the server has the public one)
  treasure-hunt ticket --key-file platform.pem --user u-42 --name Ada --ttl 60 --hunt demo

  # an operator's ticket for the watch view
  treasure-hunt ticket --user ops-1 --name Ops --role admin

exit status: 0 printed, 2 bad option or unusable key (the message says which).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ticket", help="sign a join ticket for a user (what the platform does)",
        description="Print a join ticket (a JWT) for one user: what a platform signs for "
                    "the server in ticket mode (serve --auth jwt).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--user", required=True, help="the user id (the ticket's sub)")
    p.add_argument("--name", required=True, help="the display name players see")
    p.add_argument("--ttl", type=float, default=300.0, metavar="SECONDS",
                   help="seconds the ticket admits for (default 300)")
    p.add_argument("--key-file", metavar="FILE",
                   help="a shared secret (HS256) or a private key in PEM (RS256 or EdDSA); "
                        "default: the secret in $TREASURE_HUNT_AUTH_SECRET")
    p.add_argument("--audience", default="treasure-hunt",
                   help="the aud: the server's auth_audience (default treasure-hunt)")
    p.add_argument("--issuer", default="", help="the iss, if the server checks one")
    p.add_argument("--hunt", action="append", metavar="NAME",
                   help="a hunt the ticket admits to (repeat; default: any hunt)")
    p.add_argument("--role", choices=("player", "admin"),
                   help="admin: the watch view and the admin API (default player)")
    p.add_argument("--kid", default="", help="the key id, when the server has a JWKS")
    p.set_defaults(run=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from tickengine import ConfigError

    from ..auth import mint_ticket, read_secret

    if not args.ttl > 0:
        print(f"{args.prog}: error: --ttl must be > 0 seconds", file=sys.stderr)
        return 2
    try:
        if args.key_file:
            try:
                key = Path(args.key_file).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {args.key_file}: {exc.strerror}") from exc
            if not key.lstrip().startswith(b"-----"):
                key = read_secret(args.key_file)
        else:
            key = read_secret()
        ticket = mint_ticket(key, user=args.user, name=args.name, audience=args.audience,
                             ttl=args.ttl, hunts=args.hunt, role=args.role,
                             issuer=args.issuer, kid=args.kid)
    except ConfigError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(ticket)
    return 0
