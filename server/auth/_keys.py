"""The keys that verify join tickets: a shared secret (HS256), a public key in PEM
(RS256 or EdDSA, told apart by the key), or a JWKS file (keys chosen by the ticket's
``kid``). Loaded once at start; a bad file is a :class:`AuthConfigError` that says
what to give instead."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from tickengine import ConfigError

#: The environment variable a shared secret may come from instead of a file.
SECRET_ENV = "TREASURE_HUNT_AUTH_SECRET"
#: Shortest shared secret accepted (bytes): RFC 7518 wants a key as long as the hash.
MIN_SECRET_BYTES = 32
#: Algorithms the server accepts, whatever a ticket's header asks for (never "none").
ALGORITHMS = ("HS256", "RS256", "EdDSA")


class AuthConfigError(ConfigError):
    """The server's auth settings do not give a usable key (the message says what to fix)."""


@dataclass(frozen=True, slots=True)
class VerificationKeys:
    """Verification keys by key id (``""``: the key for tickets without ``kid``), each
    with the one algorithm it verifies. ``source`` says where they came from (for logs:
    a path or the environment variable's name, never a key)."""

    by_kid: dict[str, tuple[Any, str]]
    source: str

    def lookup(self, kid: str) -> tuple[Any, str] | None:
        """The key and algorithm for a ticket whose header names ``kid`` ("" for none): the
        key with that id, or the only key when there is one and the ticket names none."""
        found = self.by_kid.get(kid)
        if found is None and not kid and len(self.by_kid) == 1:
            found = next(iter(self.by_kid.values()))
        return found

    @property
    def algorithms(self) -> list[str]:
        return sorted({alg for _key, alg in self.by_kid.values()})


def read_secret(path: str = "", env: str = SECRET_ENV) -> bytes:
    """A shared secret from the file ``path`` (one trailing newline ignored), else from the
    environment variable ``env``; at least :data:`MIN_SECRET_BYTES` bytes."""
    if path:
        try:
            secret = Path(path).read_bytes()
        except OSError as exc:
            raise AuthConfigError(f"cannot read the auth secret file {path}: "
                                  f"{exc.strerror}") from exc
        secret = secret.removesuffix(b"\n").removesuffix(b"\r")
        where = path
    else:
        secret = os.environb.get(env.encode(), b"")
        where = f"${env}"
        if not secret:
            raise AuthConfigError(f"no shared secret: set {env}, or give a file that holds "
                                  "it")
    if len(secret) < MIN_SECRET_BYTES:
        raise AuthConfigError(f"the shared secret in {where} has {len(secret)} bytes; use at "
                              f"least {MIN_SECRET_BYTES} random ones (e.g. "
                              "`openssl rand -base64 48`)")
    return secret


def pem_key(pem: bytes | str, *, private: bool, where: str = "the key") -> tuple[Any, str]:
    """An RSA or Ed25519 key from PEM and its algorithm (RS256 or EdDSA). ``private``: a
    signing key is wanted (a platform's), else a verification key (the server's)."""
    data = pem.encode() if isinstance(pem, str) else pem
    for algorithm, name in ((RSAAlgorithm(RSAAlgorithm.SHA256), "RS256"),
                            (OKPAlgorithm(), "EdDSA")):
        try:
            key = algorithm.prepare_key(data)
        except (jwt.InvalidKeyError, ValueError, TypeError):
            continue
        is_private = hasattr(key, "public_key")
        if is_private and not private:
            raise AuthConfigError(f"{where} is a private key: give the server the public key "
                                  "(the private one stays with the platform that signs)")
        if private and not is_private:
            raise AuthConfigError(f"{where} is a public key: signing needs the private key")
        return key, name
    raise AuthConfigError(f"{where} is not an RSA or Ed25519 key in PEM "
                          "(-----BEGIN PUBLIC KEY-----)")


def load_keys(*, secret_file: str = "", public_key_file: str = "", jwks_file: str = "",
              secret_env: str = SECRET_ENV) -> VerificationKeys:
    """The verification keys of ticket mode, from one source: ``public_key_file`` (PEM),
    ``jwks_file`` (a JWKS document: ``{"keys": [...]}``), or else a shared secret from
    ``secret_file`` or the environment variable ``secret_env``."""
    given = [name for name, value in (("auth_secret_file", secret_file),
                                      ("auth_public_key_file", public_key_file),
                                      ("auth_jwks_file", jwks_file)) if value]
    if len(given) > 1:
        raise AuthConfigError(f"give one source of ticket keys, not {' and '.join(given)}")
    if public_key_file:
        try:
            pem = Path(public_key_file).read_bytes()
        except OSError as exc:
            raise AuthConfigError(f"cannot read the public key file {public_key_file}: "
                                  f"{exc.strerror}") from exc
        return VerificationKeys({"": pem_key(pem, private=False, where=public_key_file)},
                                public_key_file)
    if jwks_file:
        return VerificationKeys(_jwks(jwks_file), jwks_file)
    return VerificationKeys({"": (read_secret(secret_file, secret_env), "HS256")},
                            secret_file or f"${secret_env}")


def _jwks(path: str) -> dict[str, tuple[Any, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"cannot read the JWKS file {path}: {exc}") from exc
    try:
        jwks = jwt.PyJWKSet.from_json(text)
    except (jwt.PyJWKSetError, jwt.PyJWKError, ValueError) as exc:
        raise AuthConfigError(f"{path} is not a usable JWKS document ({{\"keys\": [...]}}): "
                              f"{exc}") from exc
    keys: dict[str, tuple[Any, str]] = {}
    for jwk in jwks.keys:
        alg = jwk.algorithm_name
        if alg not in ("RS256", "EdDSA"):
            raise AuthConfigError(f"{path}: key {jwk.key_id!r} is for {alg}; tickets are "
                                  "verified with RS256 or EdDSA public keys")
        if hasattr(jwk.key, "public_key"):
            raise AuthConfigError(f"{path}: key {jwk.key_id!r} is a private key: publish only "
                                  "public keys")
        kid = jwk.key_id or ""
        if kid in keys:
            raise AuthConfigError(f"{path}: two keys have the id {kid!r}: give each its "
                                  "own kid")
        keys[kid] = (jwk.key, alg)
    return keys
