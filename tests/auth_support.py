"""Test EHR identities: signing keys generated per test run, their JWK Sets, and CDS Hooks client JWTs."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PUBLIC_BASE_URL = "https://cds.test.example"
ISSUER = "https://ehr.test.example"
JWKS_URL = "https://ehr.test.example/.well-known/jwks.json"
FHIR_SERVER = "https://fhir.test.example/r4"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg == "ES384" else RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))


def new_rsa_key(kid: str = "rsa-1") -> SigningKey:
    return SigningKey(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def jwk_set(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def claims_for(audience: str | list[str], *, iss: str = ISSUER, lifetime: int = 300, **changes: Any) -> dict:
    """Valid CDS Hooks client claims; `changes` replace claims (a value of None removes the claim)."""
    now = int(time.time())
    claims = {"iss": iss, "aud": audience, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def sign(claims: dict[str, Any], key: SigningKey, **header: Any) -> str:
    headers = {"kid": key.kid, "typ": "JWT", **header}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=headers)


def write_issuers(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"issuers": list(entries)}), encoding="utf-8")
    return path
