"""Trusted CDS clients: the issuers file, their signing keys and the FHIR servers they may name.

Flask-free. Raises (cds_service.errors) TrustConfigError when the trusted issuers file is missing, unreadable
or invalid (the service must not start), and KeyLookupError when no usable key is found for a token's `kid`
(the token is rejected).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from cds_service.errors import KeyLookupError, TrustConfigError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "trusted-issuers.schema.json"
ALLOWED_ALGORITHMS = ("ES384", "RS384")
MIN_RSA_BITS = 2048
JWKS_CACHE_SECONDS = 3600.0  # keys fetched from a jwks_url are refetched after this
JWKS_MIN_REFRESH_SECONDS = 30.0  # an unknown `kid` triggers at most one refetch per issuer in this interval
JWKS_FETCH_TIMEOUT_SECONDS = 3.0
JWKS_MAX_BYTES = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    jwks: Mapping[str, Any] | None = field(repr=False)  # pinned JWK Set; None when the keys live at jwks_url
    jwks_url: str | None
    fhir_servers: tuple[str, ...]

    def allows_jku(self, jku: str) -> bool:
        """Return True when a token's `jku` header names this issuer's registered key URL."""
        return self.jwks_url is not None and jku == self.jwks_url

    def allows_fhir_server(self, url: str) -> bool:
        """Return True when `url` is one of this issuer's registered FHIR base URLs."""
        wanted = normalize_base_url(url)
        return wanted is not None and wanted in {normalize_base_url(s) for s in self.fhir_servers}


def normalize_base_url(url: str) -> tuple[str, str, int, str] | None:
    """Return (scheme, host, port, path) for comparing FHIR base URLs, or None for a URL never to be trusted.

    Exact comparison after normalising case, default port and a trailing slash; user info, query strings and
    fragments make a URL untrusted, so `https://good@evil/` or `https://good/r4?x` never match `https://good/r4`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.password is not None or parts.query or parts.fragment or "\\" in url:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/")


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text("utf-8"))
    return schema


def load_trusted_issuers(path: Path, *, https_only: bool = True) -> dict[str, TrustedIssuer]:
    """Read and validate the trusted issuers file; return issuers by `iss`.

    With `https_only` (all but sandbox mode) a plain-http `fhir_servers` entry is refused here, at start:
    every call naming it would be refused anyway (`fhir-server-not-https`).
    """
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise TrustConfigError(f"cannot read trusted issuers file {path}: {exc}") from exc
    validator = jsonschema.Draft202012Validator(_schema())
    problems = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if problems:
        where = "/".join(str(p) for p in problems[0].absolute_path) or "(top)"
        raise TrustConfigError(f"trusted issuers file {path} is invalid at {where}: {problems[0].message}")
    issuers: dict[str, TrustedIssuer] = {}
    for entry in document["issuers"]:
        if entry["iss"] in issuers:
            raise TrustConfigError(f"trusted issuers file {path}: issuer {entry['iss']!r} is listed twice")
        issuer = TrustedIssuer(
            iss=entry["iss"],
            jwks=entry.get("jwks"),
            jwks_url=entry.get("jwks_url"),
            fhir_servers=tuple(entry.get("fhir_servers", ())),
        )
        if issuer.jwks is not None:
            keys = usable_keys(issuer.jwks)
            if len(keys) != len(issuer.jwks["keys"]):
                raise TrustConfigError(
                    f"trusted issuers file {path}: issuer {issuer.iss!r} has an unusable key"
                )
        plain = [url for url in issuer.fhir_servers if not url.lower().startswith("https://")]
        if https_only and plain:
            raise TrustConfigError(
                f"trusted issuers file {path}: issuer {issuer.iss!r} lists the plain-http fhir_servers entry "
                f"{plain[0]!r}; outside sandbox mode FHIR servers must be https"
            )
        issuers[issuer.iss] = issuer
    return issuers


def _key_fits(algorithm: str, key: Any) -> bool:
    if algorithm == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    if algorithm == "RS384":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    return False


def usable_keys(jwk_set: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Return {kid: (algorithm, public key)} for the keys of a JWK Set we can verify ES384/RS384 with.

    Keys we cannot use (other curves, short RSA keys, symmetric, private or encryption keys) are left out.
    """
    found: dict[str, tuple[str, Any]] = {}
    raw_keys = jwk_set.get("keys") if isinstance(jwk_set, Mapping) else None
    for raw in raw_keys if isinstance(raw_keys, list) else ():
        if (
            not isinstance(raw, Mapping)
            or not isinstance(raw.get("kid"), str)
            or raw.get("use", "sig") != "sig"
        ):
            continue
        if any(private in raw for private in ("d", "p", "q", "k")):
            continue
        algorithm = {"EC": "ES384", "RSA": "RS384"}.get(str(raw.get("kty")))
        if algorithm is None or raw.get("alg", algorithm) != algorithm:
            continue
        try:
            key = PyJWK(dict(raw), algorithm=algorithm).key
        except (PyJWKError, ValueError, TypeError):
            continue
        if _key_fits(algorithm, key):
            found[raw["kid"]] = (algorithm, key)
    return found


def _fetch_jwks(url: str) -> Mapping[str, Any]:
    """Download a JWK Set from an allowlisted URL (no redirects, bounded size and time)."""
    try:
        with requests.get(
            url,
            timeout=JWKS_FETCH_TIMEOUT_SECONDS,
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status_code != 200:
                raise KeyLookupError(f"jwks_fetch_status_{response.status_code}")
            body = response.raw.read(JWKS_MAX_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise KeyLookupError("jwks_fetch_failed") from exc
    if len(body) > JWKS_MAX_BYTES:
        raise KeyLookupError("jwks_too_large")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise KeyLookupError("jwks_not_json") from exc
    if not isinstance(document, Mapping):
        raise KeyLookupError("jwks_not_json")
    return document


class KeyStore:
    """Public keys of the trusted issuers by (iss, kid); remote key sets are cached and refreshed.

    Thread-safe. An unknown `kid` refetches the issuer's jwks_url, at most once per JWKS_MIN_REFRESH_SECONDS,
    so a flood of made-up `kid`s cannot turn the service into a load generator against the EHR.
    """

    def __init__(
        self,
        issuers: Mapping[str, TrustedIssuer],
        fetch: Callable[[str], Mapping[str, Any]] = _fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuers = issuers
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._remote: dict[str, tuple[float, dict[str, tuple[str, Any]]]] = {}  # iss -> (fetched at, keys)
        self._last_attempt: dict[str, float] = {}
        self._pinned = {iss: usable_keys(i.jwks) for iss, i in issuers.items() if i.jwks is not None}

    def pins(self, issuer: TrustedIssuer, kid: str) -> bool:
        """Tell whether `kid` names a key pinned in the file for `issuer` (verifiable without any `jku`)."""
        return kid in self._pinned.get(issuer.iss, {})

    def key_for(self, issuer: TrustedIssuer, kid: str) -> tuple[str, Any]:
        """Return (algorithm, public key) for `kid` of `issuer`, or raise KeyLookupError."""
        if issuer.jwks_url is None:
            try:
                return self._pinned[issuer.iss][kid]
            except KeyError:
                raise KeyLookupError("unknown_kid") from None
        with self._lock:
            now = self._clock()
            fetched_at, keys = self._remote.get(issuer.iss, (None, {}))
            stale = fetched_at is None or now - fetched_at > JWKS_CACHE_SECONDS
            last_attempt = self._last_attempt.get(issuer.iss)
            may_fetch = last_attempt is None or now - last_attempt >= JWKS_MIN_REFRESH_SECONDS
            if (stale or kid not in keys) and may_fetch:
                self._last_attempt[issuer.iss] = now
                try:
                    keys = usable_keys(self._fetch(issuer.jwks_url))
                except KeyLookupError:
                    if kid not in keys:  # keep serving cached keys while the EHR's key URL is down
                        raise
                else:
                    self._remote[issuer.iss] = (now, keys)
            try:
                return keys[kid]
            except KeyError:
                raise KeyLookupError("unknown_kid") from None
