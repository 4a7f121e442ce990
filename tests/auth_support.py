"""Keys and tickets for the tests of ticket mode: a shared secret, RSA and Ed25519 key
pairs in PEM files, a JWKS document, and the server settings that use each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

#: A shared secret of the length the server asks for (32 bytes and more).
SECRET = "test-secret-of-forty-bytes-0123456789ab"
AUDIENCE = "hunt-tests"


@dataclass(frozen=True)
class KeyPair:
    """A private key in PEM (what the platform signs with) and its public key's file."""

    private_pem: bytes
    public_pem: bytes
    public_file: Path
    algorithm: str
    jwk: dict[str, Any]


def key_pair(tmp_path: Path, kind: str, kid: str = "") -> KeyPair:
    """``kind``: "rsa" (RS256, 2048 bits) or "ed25519" (EdDSA)."""
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
           else ed25519.Ed25519PrivateKey.generate())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / f"{kind}{kid}.pub.pem"
    path.write_bytes(public)
    algorithm = "RS256" if kind == "rsa" else "EdDSA"
    algo = jwt.algorithms.RSAAlgorithm if kind == "rsa" else jwt.algorithms.OKPAlgorithm
    jwk = json.loads(algo.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"} if kid else {"alg": algorithm})
    return KeyPair(private, public, path, algorithm, jwk)


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth-secret"
    path.write_text(SECRET + "\n")
    return path


def jwt_server(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """[server] keys of ticket mode with the shared secret."""
    return {"auth": "jwt", "auth_secret_file": str(secret_file(tmp_path)),
            "auth_audience": AUDIENCE, **extra}
