"""Who may call the service: CDS Hooks 2.0 JWT authentication and the FHIR servers a caller may name.

Every request needs `Authorization: Bearer <JWT>` except OPTIONS preflights and GET/HEAD of PUBLIC_PATHS,
unless the service runs in sandbox mode (`CDS_SANDBOX=1`). A rejected token raises `AuthError` (a bare 401
from web/errors.py; the reason code, `iss` and `jti` go to the log, never the token); a FHIR server the caller
may not name raises a `FhirServerError` (cds_service.errors).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
from flask import Flask, current_app, g, request

from cds_service.config import Settings
from cds_service.errors import (
    AuthError,
    ConfigError,
    FhirServerNotAllowed,
    FhirServerNotHttps,
    KeyLookupError,
    TrustConfigError,
)
from cds_service.trust import (
    ALLOWED_ALGORITHMS,
    KeyStore,
    TrustedIssuer,
    load_trusted_issuers,
    normalize_base_url,
)

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/sandbox", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
EXTENSION_KEY = "cds_auth"
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True)
class Caller:
    """An authenticated CDS client."""

    issuer: TrustedIssuer
    jti: str


class Authenticator:
    """Verify CDS Hooks 2.0 client JWTs against the trusted issuers (Flask-free: `verify` does it all)."""

    def __init__(
        self,
        settings: Settings,
        issuers: Mapping[str, TrustedIssuer],
        remember_jti: Callable[[str, datetime], bool],
        keys: KeyStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._issuers = issuers
        self._remember_jti = remember_jti
        self._keys = keys or KeyStore(issuers)
        self._clock = clock

    def verify(self, authorization: str | None, audience: str) -> Caller:
        """Return the caller of a request with this Authorization header, or raise AuthError."""
        token = _bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("malformed_token") from None
        iss = unverified.get("iss") if isinstance(unverified.get("iss"), str) else None
        jti = unverified.get("jti") if isinstance(unverified.get("jti"), str) else None
        # The algorithm is pinned before anything else: `none` and HMAC never reach a key lookup.
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise AuthError("alg_not_allowed", iss, jti)
        if "typ" in header and str(header["typ"]).upper() != "JWT":
            raise AuthError("typ_not_jwt", iss, jti)
        if iss is None:
            raise AuthError("iss_missing", iss, jti)
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise AuthError("iss_not_trusted", iss, jti)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("kid_missing", iss, jti)
        # A `jku` is never fetched: a pinned key verifies the token whatever it says (the public CDS Hooks
        # sandbox always sends one); otherwise it must name the issuer's registered key URL.
        if "jku" in header and not (self._keys.pins(issuer, kid) or issuer.allows_jku(header["jku"])):
            raise AuthError("jku_not_allowed", iss, jti)
        try:
            key_algorithm, key = self._keys.key_for(issuer, kid)
        except KeyLookupError as exc:
            raise AuthError(exc.code, iss, jti) from None
        if key_algorithm != header["alg"]:
            raise AuthError("alg_key_mismatch", iss, jti)
        claims = self._decode(token, key, header["alg"], audience, iss, jti)
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise AuthError("jti_missing", iss, jti)
        if claims["exp"] - claims["iat"] > self._settings.jwt_max_lifetime_seconds:
            raise AuthError("lifetime_too_long", iss, jti)
        expires_at = datetime.fromtimestamp(claims["exp"] + self._settings.jwt_leeway_seconds, UTC)
        if not self._remember_jti(_replay_key(iss, claims["jti"]), expires_at):
            raise AuthError("jti_replayed", iss, jti)
        return Caller(issuer=issuer, jti=claims["jti"])

    def _decode(
        self, token: str, key: Any, alg: str, audience: str, iss: str, jti: str | None
    ) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=iss,
                leeway=self._settings.jwt_leeway_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", iss, jti) from None
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", iss, jti) from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", iss, jti) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"{exc.claim}_missing", iss, jti) from None
        except jwt.InvalidAudienceError:
            raise AuthError("aud_mismatch", iss, jti) from None
        except jwt.PyJWTError:
            raise AuthError("invalid_claims", iss, jti) from None
        if not all(
            isinstance(claims[c], int | float) and not isinstance(claims[c], bool) for c in ("exp", "iat")
        ):
            raise AuthError("invalid_claims", iss, jti)
        return claims


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("no_authorization")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_TOKEN_CHARS:
        raise AuthError("not_bearer")
    return token


def _replay_key(iss: str, jti: str) -> str:
    """`jti`s are unique per issuer; hashing bounds the key length whatever the client sends."""
    return hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()


def _needs_token() -> bool:
    if request.method == "OPTIONS":
        return False
    if request.method in ("GET", "HEAD"):
        if request.path in PUBLIC_PATHS:
            return False
        # A dot segment would let a normalising proxy or router see another path than this check.
        return not request.path.startswith(PUBLIC_PREFIXES) or "/." in request.path
    return True


def _authenticate() -> None:
    """before_request: set `g.cds_caller` (None when unauthenticated in sandbox mode) or raise AuthError."""
    g.cds_caller = None
    authenticator: Authenticator | None = current_app.extensions[EXTENSION_KEY]
    if not _needs_token():
        return
    header = request.headers.get("Authorization")
    if authenticator is None or (current_app.extensions["cds_settings_sandbox"] and header is None):
        return  # sandbox mode: a JWT is optional (and ignored without trusted issuers)
    audience = current_app.extensions["cds_public_base_url"] + request.path
    g.cds_caller = authenticator.verify(header, audience)


def authentication_required() -> bool:
    """Tell whether every non-public request of the current app needs a JWT (False in sandbox mode)."""
    return not current_app.extensions["cds_settings_sandbox"]


def authorize_fhir_server(fhir_server: str | None) -> None:
    """Raise FhirServerError unless this request may send its FHIR token to `fhir_server`.

    Call it before anything is sent to the FHIR server. A caller authenticated by JWT may name only the
    FHIR servers registered for its issuer; without a JWT (sandbox mode) there is no issuer: any server goes.
    """
    if fhir_server is None:
        return
    sandbox = current_app.extensions["cds_settings_sandbox"]
    if not sandbox and not fhir_server.lower().startswith("https://"):
        raise FhirServerNotHttps("fhirServer must be an https URL")
    caller: Caller | None = g.get("cds_caller")
    if caller is None:
        if not sandbox:  # unreachable while _authenticate guards every POST; kept as a second lock
            raise FhirServerNotAllowed("fhirServer is not registered for this client")
        return
    if normalize_base_url(fhir_server) is None or not caller.issuer.allows_fhir_server(fhir_server):
        raise FhirServerNotAllowed("fhirServer is not registered for this client")


def _is_base_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.query or parts.fragment)


def init_auth(app: Flask, settings: Settings, remember_jti: Callable[[str, datetime], bool]) -> None:
    """Install authentication on `app`; raise ConfigError (or TrustConfigError) when it cannot be secured.

    Outside sandbox mode the service refuses to start without CDS_TRUSTED_ISSUERS and CDS_PUBLIC_BASE_URL.
    """
    authenticator: Authenticator | None = None
    if settings.sandbox:
        log.warning(
            "SANDBOX MODE: client authentication is OFF - requests without a JWT are accepted and any "
            "fhirServer (also plain http) may be named; never run it like this with real patient data"
        )
    elif settings.trusted_issuers is None or not settings.public_base_url:
        missing = "CDS_TRUSTED_ISSUERS" if settings.trusted_issuers is None else "CDS_PUBLIC_BASE_URL"
        raise ConfigError(
            f"{missing}: not set; outside sandbox mode set CDS_TRUSTED_ISSUERS (trusted EHRs and their keys) "
            "and CDS_PUBLIC_BASE_URL (the external URL checked against the JWT aud), or CDS_SANDBOX=1 for a "
            "local sandbox without authentication"
        )
    if settings.public_base_url and not _is_base_url(settings.public_base_url):
        raise ConfigError(
            f"CDS_PUBLIC_BASE_URL: {settings.public_base_url!r} is not an absolute http(s) URL without query "
            "or fragment (the JWT aud is this URL plus the path called)"
        )
    if settings.trusted_issuers is not None and settings.public_base_url:
        try:
            issuers = load_trusted_issuers(settings.trusted_issuers, https_only=not settings.sandbox)
        except TrustConfigError as exc:
            raise TrustConfigError(f"CDS_TRUSTED_ISSUERS: {exc.message}") from exc
        authenticator = Authenticator(settings, issuers, remember_jti)
    app.extensions[EXTENSION_KEY] = authenticator
    app.extensions["cds_settings_sandbox"] = settings.sandbox
    app.extensions["cds_public_base_url"] = (settings.public_base_url or "").rstrip("/")
    app.before_request(_authenticate)
