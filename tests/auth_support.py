"""Test EHR identities: signing keys generated per test run, their JWK Sets, and CDS Hooks client JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fake_fhir import service_templates
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PUBLIC_BASE_URL = "https://cds.test.example"
ISSUER = "https://ehr.test.example"
JWKS_URL = "https://ehr.test.example/.well-known/jwks.json"
FHIR_SERVER = "https://fhir.test.example/r4"
SERVICE_ID = "mrcc-trials"
PREFETCH_KEYS = tuple(service_templates())  # the bundled service's, as mappings/services.yaml declares them


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


def bearer_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_issuers(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"issuers": list(entries)}), encoding="utf-8")
    return path


def hmac_token(claims: dict[str, Any], secret: bytes, alg: str, kid: str) -> str:
    """An HMAC-signed JWT built by hand (PyJWT refuses to use a public key as an HMAC secret)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), digest).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def unsigned_token(claims: dict[str, Any], kid: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hook_body(patient_id: str = "pat-1", **fields: Any) -> dict[str, Any]:
    """A valid patient-view request: the patient prefetched, every other key `null` (nothing to fetch)."""
    prefetch = {key: None for key in PREFETCH_KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": patient_id}
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": patient_id},
        "prefetch": prefetch,
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not None}


def feedback_body(card: str | None = None) -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card or str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-21T10:05:31Z",
            }
        ]
    }


def app_config(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """create_app config with its own database and instance folder under tmp_path."""
    return {
        "INSTANCE_PATH": tmp_path / "instance",
        "database_url": f"sqlite:///{tmp_path / 'cds.sqlite3'}",
        "today": "2026-11-21",
        **settings,
    }


def pinned_issuer(*keys: SigningKey, fhir_servers: tuple[str, ...] = (FHIR_SERVER,)) -> dict[str, Any]:
    """The test EHR as a trusted issuer: these keys pinned as its JWK Set, these FHIR servers its own."""
    return {"iss": ISSUER, "jwks": jwk_set(*keys), "fhir_servers": list(fhir_servers)}


def secure_app_config(tmp_path: Path, *issuers: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """app_config with JWT authentication on: `issuers` trusted, tokens addressed to PUBLIC_BASE_URL."""
    trusted_issuers = write_issuers(tmp_path / "issuers.json", *issuers)
    return app_config(
        tmp_path, sandbox=False, trusted_issuers=trusted_issuers, public_base_url=PUBLIC_BASE_URL, **settings
    )


def fhir_authorization(access_token: str = "fhir-token") -> dict[str, Any]:
    """A hook request's fhirAuthorization: the bearer token the EHR grants for the patient's FHIR data."""
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
