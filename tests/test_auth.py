"""Join tickets (server/auth): the verifier on its own, then a real server in ticket mode
over real sockets, every bad ticket refused with its code and close code, the ticket CLI.

The verifier cases use real keys (a shared secret, RSA and Ed25519 pairs, a JWKS file)
and tickets signed by PyJWT as a platform would, plus hand-made ones that a platform never
signs (``alg: none``, a key-confusion HS256 ticket signed with the RSA public key).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import trio
from auth_support import AUDIENCE, SECRET, jwt_server, key_pair
from structlog.testing import capture_logs

from server.auth import (
    AuthConfigError,
    TicketError,
    TicketVerifier,
    load_keys,
    mint_ticket,
    verify_admin_ticket,
)
from server.client import JoinRefused, connect
from server.protocol import ErrorCode

pytestmark = pytest.mark.usefixtures("collect_garbage")
CODES = ErrorCode


def hs_verifier(tmp_path: Path, **kw) -> TicketVerifier:
    (tmp_path / "s").write_text(SECRET)
    return TicketVerifier(load_keys(secret_file=str(tmp_path / "s")), audience=AUDIENCE, **kw)


def ticket(key=SECRET, **kw) -> str:
    kw.setdefault("user", "u-1")
    kw.setdefault("name", "Ada")
    kw.setdefault("audience", AUDIENCE)
    return mint_ticket(key, **kw)


def refused(verifier: TicketVerifier, t: str, hunt: str | None = "demo") -> int:
    with pytest.raises(TicketError) as info:
        verifier.verify(t, hunt)
    assert not t or t not in info.value.message
    return info.value.code


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ------------------------------------------------------------------ the verifier

def test_a_good_ticket_gives_the_user_name_role_and_hunts(tmp_path):
    v = hs_verifier(tmp_path)
    who = v.verify(ticket(name="  Ada Lovelace ", hunts=["demo", "forest"]), "demo")
    assert (who.user, who.name, who.role, who.hunts) == ("u-1", "Ada Lovelace", "player",
                                                        frozenset({"demo", "forest"}))
    assert time.time() < who.expires <= time.time() + 301
    # A display name longer than a player name is cut at a character boundary.
    assert v.verify(ticket(name="Ä" * 40), "demo").name == "Ä" * 16


def test_every_bad_ticket_has_its_code(tmp_path):
    v = hs_verifier(tmp_path)
    now = time.time()
    assert refused(v, "") == CODES.TICKET_REQUIRED
    assert refused(v, "not-a-jwt") == CODES.TICKET_INVALID
    assert refused(v, ticket(key="another-secret-of-forty-bytes-0123456789")) == \
        CODES.TICKET_INVALID
    assert refused(v, ticket(audience="other-game")) == CODES.TICKET_INVALID
    assert refused(v, ticket(now=now - 400, ttl=300)) == CODES.TICKET_EXPIRED
    assert refused(v, ticket(not_before=now + 120)) == CODES.TICKET_NOT_YET_VALID
    assert refused(v, ticket(now=now + 120)) == CODES.TICKET_NOT_YET_VALID  # iat ahead
    assert refused(v, ticket(hunts=["forest"])) == CODES.TICKET_FORBIDDEN
    assert refused(v, ticket(role="god")) == CODES.TICKET_INVALID
    assert refused(v, ticket(name="\n")) == CODES.TICKET_INVALID
    assert refused(v, "x" * 717) == CODES.TICKET_INVALID
    no_name = jwt.encode({"sub": "u", "aud": AUDIENCE, "exp": now + 60}, SECRET)
    assert refused(v, no_name) == CODES.TICKET_INVALID
    no_exp = jwt.encode({"sub": "u", "name": "A", "aud": AUDIENCE}, SECRET)
    assert refused(v, no_exp) == CODES.TICKET_INVALID


def test_alg_none_and_foreign_algorithms_are_refused_before_any_signature(tmp_path):
    v = hs_verifier(tmp_path)
    claims = {"sub": "u-1", "name": "Ada", "aud": AUDIENCE, "exp": int(time.time()) + 60}
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{b64(json.dumps(claims).encode())}."
    assert refused(v, unsigned) == CODES.TICKET_INVALID
    assert refused(v, jwt.encode(claims, SECRET * 2, algorithm="HS512")) == CODES.TICKET_INVALID


def test_clock_skew_leeway_is_the_servers(tmp_path):
    now = time.time()
    late = ticket(now=now - 310, ttl=300)  # expired 10 s ago
    assert refused(hs_verifier(tmp_path, leeway=0), late) == CODES.TICKET_EXPIRED
    assert hs_verifier(tmp_path, leeway=30).verify(late, "demo").user == "u-1"


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_public_key_tickets(tmp_path, kind):
    pair = key_pair(tmp_path, kind)
    v = TicketVerifier(load_keys(public_key_file=str(pair.public_file)), audience=AUDIENCE)
    assert v.verify(ticket(pair.private_pem), "demo").name == "Ada"
    other = key_pair(tmp_path / "..", kind, kid="x")
    assert refused(v, ticket(other.private_pem)) == CODES.TICKET_INVALID
    # Key confusion: an HS256 ticket whose "secret" is the server's public key.
    confused = jwt.encode({"sub": "u", "name": "A", "aud": AUDIENCE,
                           "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    assert refused(v, confused) == CODES.TICKET_INVALID
    assert len(ticket(pair.private_pem, hunts=["demo", "forest"], role="player")) < 716


def test_jwks_picks_the_key_by_kid(tmp_path):
    a, b = key_pair(tmp_path, "rsa", kid="2026-a"), key_pair(tmp_path, "ed25519", kid="2026-b")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [a.jwk, b.jwk]}))
    v = TicketVerifier(load_keys(jwks_file=str(path)), audience=AUDIENCE)
    assert v.verify(ticket(a.private_pem, kid="2026-a"), "demo").user == "u-1"
    assert v.verify(ticket(b.private_pem, kid="2026-b"), "demo").user == "u-1"
    assert refused(v, ticket(a.private_pem, kid="2026-b")) == CODES.TICKET_INVALID
    assert refused(v, ticket(a.private_pem, kid="gone")) == CODES.TICKET_INVALID
    assert refused(v, ticket(a.private_pem)) == CODES.TICKET_INVALID  # no kid, two keys


def test_unusable_key_settings_say_what_to_give(tmp_path, monkeypatch):
    pair = key_pair(tmp_path, "rsa")
    (tmp_path / "priv.pem").write_bytes(pair.private_pem)
    with pytest.raises(AuthConfigError, match="public key"):
        load_keys(public_key_file=str(tmp_path / "priv.pem"))
    (tmp_path / "short").write_text("s3cret")
    with pytest.raises(AuthConfigError, match="at least 32"):
        load_keys(secret_file=str(tmp_path / "short"))
    monkeypatch.delenv("TREASURE_HUNT_AUTH_SECRET", raising=False)
    with pytest.raises(AuthConfigError, match="TREASURE_HUNT_AUTH_SECRET"):
        load_keys()
    with pytest.raises(AuthConfigError, match="one source"):
        load_keys(secret_file="a", jwks_file="b")
    monkeypatch.setenv("TREASURE_HUNT_AUTH_SECRET", SECRET)
    assert load_keys().algorithms == ["HS256"]


def test_admin_tickets(tmp_path):
    v = hs_verifier(tmp_path)
    assert verify_admin_ticket(v, ticket(role="admin")).role == "admin"
    with pytest.raises(TicketError) as info:
        verify_admin_ticket(v, ticket())
    assert info.value.code == CODES.TICKET_FORBIDDEN
    with pytest.raises(TicketError) as info:
        verify_admin_ticket(None, ticket(role="admin"))
    assert info.value.code == CODES.TICKET_REQUIRED


# ------------------------------------------------------------------ a real server

async def test_a_server_in_ticket_mode_refuses_every_bad_ticket_with_its_code(serve, tmp_path):
    srv = await serve(**jwt_server(tmp_path))
    now = time.time()
    cases = {
        "": CODES.TICKET_REQUIRED,
        "garbage.garbage.garbage": CODES.TICKET_INVALID,
        ticket(key="another-secret-of-forty-bytes-0123456789"): CODES.TICKET_INVALID,
        ticket(audience="other"): CODES.TICKET_INVALID,
        ticket(now=now - 400): CODES.TICKET_EXPIRED,
        ticket(not_before=now + 300): CODES.TICKET_NOT_YET_VALID,
        ticket(hunts=["forest"]): CODES.TICKET_FORBIDDEN,
        "x" * 716: CODES.TICKET_INVALID,
    }
    with capture_logs() as logs:
        for bad, code in cases.items():
            with trio.fail_after(10), pytest.raises(JoinRefused) as info:
                async with connect(srv.url, "anon", "demo", ticket=bad):
                    pass
            assert (info.value.code, info.value.close_code) == (code, code), bad[:40]
    for code in set(cases.values()):
        assert srv.metric("hunt_tickets_total", result=code.name) >= 1, code
    assert not srv.hub.sessions
    # No ticket ever reaches a log line, whole or in part.
    text = json.dumps(logs, default=str)
    assert not [t for t in cases if len(t) > 20 and t[:20] in text]


async def test_a_good_ticket_joins_under_its_display_name(serve, tmp_path):
    srv = await serve(**jwt_server(tmp_path))
    with capture_logs() as logs:
        async with connect(srv.url, "whatever", "demo", ticket=ticket(name="Ada L")) as hunt:
            with trio.fail_after(10):
                await hunt.next_tick()
            assert hunt.names[hunt.slot] == "Ada L"
    assert srv.metric("hunt_tickets_total", result="ok") == 1
    assert "eyJ" not in json.dumps(logs, default=str)


async def test_anonymous_mode_ignores_tickets(serve):
    srv = await serve()
    async with connect(srv.url, "Bob", "demo", ticket="any.visible.ascii") as hunt:
        with trio.fail_after(10):
            await hunt.next_tick()
        assert hunt.names[hunt.slot] == "Bob"
    assert srv.metric("hunt_tickets_total", result="ok") == 0


async def test_the_tickets_of_one_user_have_a_join_budget(serve, tmp_path):
    srv = await serve(**jwt_server(tmp_path, hellos_per_second_per_user=0.01,
                                   hello_burst_per_user=2))
    t = ticket()
    for _ in range(2):
        with trio.fail_after(10):
            async with connect(srv.url, "a", "demo", ticket=t):
                pass
    with trio.fail_after(10), pytest.raises(JoinRefused) as info:
        async with connect(srv.url, "a", "demo", ticket=t):
            pass
    assert info.value.code == CODES.TOO_MANY_JOINS and "u-1" in info.value.message
    with trio.fail_after(10):  # another user is not held back
        async with connect(srv.url, "a", "demo", ticket=ticket(user="u-2")):
            pass


# ------------------------------------------------------------------ the ticket CLI

def test_the_ticket_command_prints_a_ticket_the_server_accepts(tmp_path):
    env = {**os.environ, "TREASURE_HUNT_AUTH_SECRET": SECRET}
    out = subprocess.run([sys.executable, "-m", "server", "ticket", "--user", "u-9", "--name",
                          "Zoë", "--ttl", "60", "--audience", AUDIENCE, "--hunt", "demo"],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    who = hs_verifier(tmp_path).verify(out.stdout.strip(), "demo")
    assert (who.user, who.name, who.hunts) == ("u-9", "Zoë", frozenset({"demo"}))
    pair = key_pair(tmp_path, "ed25519")
    (tmp_path / "platform.pem").write_bytes(pair.private_pem)
    out = subprocess.run([sys.executable, "-m", "server", "ticket", "--key-file",
                          str(tmp_path / "platform.pem"), "--user", "ops", "--name", "Ops",
                          "--role", "admin", "--audience", AUDIENCE],
                         capture_output=True, text=True, timeout=60, check=True)
    v = TicketVerifier(load_keys(public_key_file=str(pair.public_file)), audience=AUDIENCE)
    assert verify_admin_ticket(v, out.stdout.strip()).user == "ops"
    env.pop("TREASURE_HUNT_AUTH_SECRET")
    bad = subprocess.run([sys.executable, "-m", "server", "ticket", "--user", "u", "--name",
                          "n"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "TREASURE_HUNT_AUTH_SECRET" in bad.stderr


async def test_the_watch_view_takes_an_admin_ticket_beside_the_admin_token(serve, tmp_path):
    import urllib.error
    import urllib.request

    srv = await serve(**jwt_server(tmp_path, admin_token="tok"))
    base = f"http://127.0.0.1:{srv.ports.http}"

    def status(credential: str, hunt: str = "demo") -> int:
        req = urllib.request.Request(f"{base}/api/watch?hunt={hunt}",
                                     headers={"Authorization": f"Bearer {credential}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                assert json.loads(answer.read())["hunt"] == hunt
                return answer.status
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code

    async def check(credential: str) -> int:
        return await trio.to_thread.run_sync(status, credential)

    assert await check("tok") == 200
    assert await check(ticket(role="admin")) == 200
    assert await check(ticket(role="admin", hunts=["demo"])) == 200
    assert await check(ticket(role="admin", hunts=["forest"])) == 401
    assert await check(ticket()) == 401  # a player's ticket
    assert await check(ticket(role="admin", now=time.time() - 400)) == 401
    assert await check("wrong") == 401
