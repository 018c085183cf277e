"""Only trusted EHRs get in: CDS Hooks 2.0 JWT checks on discovery, service and feedback calls, and where the
FHIR token may go. Every rejection is a bare 401 (no body, no detail)."""

from __future__ import annotations

import logging
import re
import time

import jwt
import pytest
import responses
from auth_support import (
    FHIR_SERVER,
    ISSUER,
    JWKS_URL,
    PUBLIC_BASE_URL,
    SERVICE_ID,
    app_config,
    bearer_header,
    claims_for,
    feedback_body,
    fhir_authorization,
    hmac_token,
    hook_body,
    jwk_set,
    new_ec_key,
    new_rsa_key,
    pinned_issuer,
    secure_app_config,
    sign,
    unsigned_token,
    write_issuers,
)

from cds_service import trust
from cds_service.errors import ConfigError
from cds_service.web import create_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")

EC_KEY = new_ec_key("ec-1")
RSA_KEY = new_rsa_key("rsa-1")
ROTATED_KEY = new_ec_key("ec-2")  # published at JWKS_URL only after a rotation
ATTACKER_EC = new_ec_key("ec-1")  # same kid as the EHR's key, different key
ATTACKER_OTHER = new_ec_key("attacker")
REMOTE_ISSUER = "https://remote-ehr.test.example"
DISCOVERY = "/cds-services"
DISCOVERY_AUD = PUBLIC_BASE_URL + DISCOVERY
NOW = int(time.time())


# the EHR with pinned keys, and a remote issuer whose keys are fetched from JWKS_URL
TRUSTED_ISSUERS = (pinned_issuer(EC_KEY, RSA_KEY), {"iss": REMOTE_ISSUER, "jwks_url": JWKS_URL})


@pytest.fixture
def issuers_file(tmp_path):
    return write_issuers(tmp_path / "issuers.json", *TRUSTED_ISSUERS)


@pytest.fixture
def secure_app(tmp_path):
    return create_app(secure_app_config(tmp_path, *TRUSTED_ISSUERS))


@pytest.fixture
def client(secure_app):
    return secure_app.test_client()


@pytest.fixture
def jwks_server():
    """The remote issuer's key URL, answered by `responses`; any other outgoing HTTP fails the call."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(JWKS_URL, json=jwk_set(EC_KEY))
        yield mock


def assert_bare_401(response) -> None:
    assert response.status_code == 401
    assert response.get_data() == b""
    assert response.headers["WWW-Authenticate"] == "Bearer"


PEM_SECRET = EC_KEY.public_pem()
# name -> headers of a discovery call that must be refused
ATTACKS = {
    "alg-none": lambda: bearer_header(unsigned_token(claims_for(DISCOVERY_AUD), "ec-1")),
    "hs256-with-public-key-as-secret": lambda: bearer_header(
        hmac_token(claims_for(DISCOVERY_AUD), PEM_SECRET, "HS256", "ec-1")
    ),
    "hs384-with-public-key-as-secret": lambda: bearer_header(
        hmac_token(claims_for(DISCOVERY_AUD), PEM_SECRET, "HS384", "ec-1")
    ),
    "rs256-valid-rsa-key": lambda: bearer_header(_rs256(claims_for(DISCOVERY_AUD))),
    "unknown-kid": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD), ATTACKER_OTHER)),
    "kid-missing": lambda: bearer_header(_without_kid(claims_for(DISCOVERY_AUD))),
    "wrong-iss": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, iss="https://evil.test"), EC_KEY)),
    "missing-iss": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, iss=None), EC_KEY)),
    "jku-not-allowlisted": lambda: bearer_header(
        sign(claims_for(DISCOVERY_AUD, iss=REMOTE_ISSUER), ATTACKER_OTHER, jku="https://evil.test/jwks.json")
    ),
    "jku-on-pinned-issuer": lambda: bearer_header(
        sign(claims_for(DISCOVERY_AUD), EC_KEY, jku="https://evil.test/j.json")
    ),
    "bad-signature-same-kid": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD), ATTACKER_EC)),
    "signature-tampered": lambda: bearer_header(_tampered(sign(claims_for(DISCOVERY_AUD), EC_KEY))),
    "es384-header-on-rsa-kid": lambda: bearer_header(_es384_with_rsa_kid(claims_for(DISCOVERY_AUD))),
    "aud-other-endpoint": lambda: bearer_header(
        sign(claims_for(f"{PUBLIC_BASE_URL}/cds-services/{SERVICE_ID}"), EC_KEY)
    ),
    "aud-other-host": lambda: bearer_header(sign(claims_for("https://other.example/cds-services"), EC_KEY)),
    "aud-missing": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, aud=None), EC_KEY)),
    "exp-past": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, iat=NOW - 900, exp=NOW - 300), EC_KEY)),
    "exp-missing": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, exp=None), EC_KEY)),
    "exp-not-a-number": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, exp=str(NOW + 300)), EC_KEY)),
    "iat-future-beyond-leeway": lambda: bearer_header(
        sign(claims_for(DISCOVERY_AUD, iat=NOW + 600, exp=NOW + 900), EC_KEY)
    ),
    "iat-missing": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, iat=None), EC_KEY)),
    "lifetime-over-one-hour": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, lifetime=3601), EC_KEY)),
    "jti-missing": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, jti=None), EC_KEY)),
    "jti-empty": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD, jti=""), EC_KEY)),
    "typ-not-jwt": lambda: bearer_header(sign(claims_for(DISCOVERY_AUD), EC_KEY, typ="at+jwt")),
    "no-authorization": lambda: {},
    "empty-authorization": lambda: {"Authorization": ""},
    "bearer-without-token": lambda: {"Authorization": "Bearer"},
    "bearer-garbage": lambda: {"Authorization": "Bearer not.a.jwt"},
    "bearer-two-parts": lambda: {"Authorization": "Bearer abc.def"},
    "bearer-huge": lambda: bearer_header("a" * 20_000),
    "token-without-scheme": lambda: {"Authorization": sign(claims_for(DISCOVERY_AUD), EC_KEY)},
    "basic-auth": lambda: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
}


def _rs256(claims):
    return jwt.encode(claims, RSA_KEY.private_key, algorithm="RS256", headers={"kid": "rsa-1"})


def _without_kid(claims):
    return jwt.encode(claims, EC_KEY.private_key, algorithm="ES384")


def _es384_with_rsa_kid(claims):
    return jwt.encode(claims, ATTACKER_EC.private_key, algorithm="ES384", headers={"kid": "rsa-1"})


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B") + signature[11:]
    return f"{header}.{payload}.{signature[:10]}{flipped}"


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_rejected_with_bare_401(client, jwks_server, attack):
    response = client.get(DISCOVERY, headers=ATTACKS[attack]())
    assert_bare_401(response)
    assert not any("evil.test" in call.request.url for call in jwks_server.calls)


def test_replayed_jti_is_rejected(client):
    headers = bearer_header(sign(claims_for(DISCOVERY_AUD), EC_KEY))
    assert client.get(DISCOVERY, headers=headers).status_code == 200
    assert_bare_401(client.get(DISCOVERY, headers=headers))


def test_a_token_is_accepted_once_on_each_database(tmp_path, database_url):
    app = create_app(secure_app_config(tmp_path, *TRUSTED_ISSUERS, database_url=database_url))
    feedback = f"/cds-services/{SERVICE_ID}/feedback"
    headers = bearer_header(sign(claims_for(PUBLIC_BASE_URL + feedback), EC_KEY))
    try:
        client = app.test_client()
        assert client.post(feedback, json=feedback_body(), headers=headers).status_code == 200
        assert_bare_401(client.post(feedback, json=feedback_body(), headers=headers))
    finally:
        app.extensions["cds"].storage.close()


def test_same_jti_from_another_issuer_is_not_a_replay(client, jwks_server):
    shared_jti = "same-nonce"
    first = bearer_header(sign(claims_for(DISCOVERY_AUD, jti=shared_jti), EC_KEY))
    second = bearer_header(sign(claims_for(DISCOVERY_AUD, iss=REMOTE_ISSUER, jti=shared_jti), EC_KEY))
    assert client.get(DISCOVERY, headers=first).status_code == 200
    assert client.get(DISCOVERY, headers=second).status_code == 200


@pytest.mark.parametrize("key", [EC_KEY, RSA_KEY], ids=["ES384", "RS384"])
def test_valid_token_is_accepted_on_every_endpoint(client, key):
    service = f"/cds-services/{SERVICE_ID}"
    discovery = client.get(DISCOVERY, headers=bearer_header(sign(claims_for(DISCOVERY_AUD), key)))
    assert discovery.status_code == 200
    assert discovery.get_json()["services"]
    call = client.post(
        service, json=hook_body(), headers=bearer_header(sign(claims_for(PUBLIC_BASE_URL + service), key))
    )
    assert call.status_code == 200, call.get_data()
    assert "cards" in call.get_json()
    feedback_aud = PUBLIC_BASE_URL + service + "/feedback"
    fed = client.post(
        service + "/feedback",
        json=feedback_body(),
        headers=bearer_header(sign(claims_for(feedback_aud), key)),
    )
    assert fed.status_code == 200


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"aud": ["https://other.example/x", DISCOVERY_AUD]}, id="aud-array"),
        pytest.param({"iat": NOW + 30, "exp": NOW + 330}, id="iat-ahead-within-leeway"),
        pytest.param({"lifetime": 3600}, id="lifetime-exactly-one-hour"),
        pytest.param({"tenant": "org-1", "sub": "client-1", "nbf": NOW - 300}, id="extra-claims"),
    ],
)
def test_valid_variants_are_accepted(client, changes):
    assert (
        client.get(
            DISCOVERY, headers=bearer_header(sign(claims_for(DISCOVERY_AUD, **changes), EC_KEY))
        ).status_code
        == 200
    )


def test_aud_is_built_from_public_base_url_not_the_request_host(client):
    local_aud = "http://localhost/cds-services"  # what request.url would say inside the test client
    assert_bare_401(client.get(DISCOVERY, headers=bearer_header(sign(claims_for(local_aud), EC_KEY))))


def test_jwks_url_is_fetched_cached_and_refreshed_on_unknown_kid(client, jwks_server, monkeypatch):
    monkeypatch.setattr(trust, "JWKS_MIN_REFRESH_SECONDS", 0.0)  # the limit itself is tested in test_trust.py

    def call(key):
        return client.get(
            DISCOVERY, headers=bearer_header(sign(claims_for(DISCOVERY_AUD, iss=REMOTE_ISSUER), key))
        )

    assert call(EC_KEY).status_code == 200
    assert call(EC_KEY).status_code == 200
    assert len(jwks_server.calls) == 1  # cached
    jwks_server.replace(responses.GET, JWKS_URL, json=jwk_set(EC_KEY, ROTATED_KEY))
    assert call(ROTATED_KEY).status_code == 200  # unknown kid: one refresh finds the rotated key
    assert len(jwks_server.calls) == 2


def test_jku_equal_to_the_registered_jwks_url_is_honoured(client, jwks_server):
    token = sign(claims_for(DISCOVERY_AUD, iss=REMOTE_ISSUER), EC_KEY, jku=JWKS_URL)
    assert client.get(DISCOVERY, headers=bearer_header(token)).status_code == 200


def test_rejection_log_names_reason_iss_and_jti_but_never_the_token(client, caplog):
    token = sign(claims_for(DISCOVERY_AUD, jti="nonce-123", exp=NOW - 300, iat=NOW - 600), EC_KEY)
    with caplog.at_level(logging.INFO):
        assert_bare_401(client.get(DISCOVERY, headers=bearer_header(token)))
    rejected = [r for r in caplog.records if getattr(r, "reason", None) == "expired"]
    assert [(r.iss, r.jti) for r in rejected] == [(ISSUER, "nonce-123")]
    assert all(
        token not in r.getMessage() and token.split(".")[2] not in str(r.__dict__) for r in caplog.records
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("OPTIONS", DISCOVERY),
        ("OPTIONS", f"/cds-services/{SERVICE_ID}"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("GET", "/sandbox"),
        ("GET", "/static/sandbox.js"),
        ("HEAD", "/healthz"),
    ],
)
def test_public_endpoints_need_no_token(client, method, path):
    response = client.open(path, method=method)
    response.close()
    assert response.status_code in (200, 204)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/cds-services/{SERVICE_ID}"),
        ("POST", f"/cds-services/{SERVICE_ID}/feedback"),
        ("GET", "/no-such-page"),
        ("GET", "/sandbox/patients"),
        ("GET", "/static/../cds-services"),
        ("POST", "/healthz"),
        ("POST", "/openapi.json"),
    ],
)
def test_everything_else_needs_a_token(client, method, path):
    assert_bare_401(client.open(path, method=method, json={}))


def test_without_sandbox_and_trusted_issuers_the_service_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="CDS_TRUSTED_ISSUERS"):
        create_app(app_config(tmp_path, sandbox=False, public_base_url=PUBLIC_BASE_URL))


def test_without_public_base_url_the_service_refuses_to_start(tmp_path, issuers_file):
    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL"):
        create_app(app_config(tmp_path, sandbox=False, trusted_issuers=issuers_file))


def test_sandbox_mode_turns_authentication_off_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        app = create_app(app_config(tmp_path, sandbox=True))
    assert any(
        "authentication is OFF" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )
    client = app.test_client()
    assert client.get(DISCOVERY).status_code == 200
    assert client.get(DISCOVERY, headers={"Authorization": "Bearer garbage"}).status_code == 200


def test_sandbox_with_trusted_issuers_still_checks_a_token_that_is_sent(tmp_path, issuers_file):
    app = create_app(
        app_config(tmp_path, sandbox=True, trusted_issuers=issuers_file, public_base_url=PUBLIC_BASE_URL)
    )
    client = app.test_client()
    assert client.get(DISCOVERY).status_code == 200
    assert_bare_401(client.get(DISCOVERY, headers={"Authorization": "Bearer garbage"}))
    assert (
        client.get(DISCOVERY, headers=bearer_header(sign(claims_for(DISCOVERY_AUD), EC_KEY))).status_code
        == 200
    )


# --- where the FHIR token may go ---

SERVICE = f"/cds-services/{SERVICE_ID}"
SERVICE_AUD = PUBLIC_BASE_URL + SERVICE
FHIR_AUTH = fhir_authorization("secret-fhir-token")


def _fetching_body(fhir_server: str) -> dict:
    """A request without prefetch: everything would be fetched from `fhir_server` with the FHIR token."""
    return hook_body(prefetch=None, fhirServer=fhir_server, fhirAuthorization=FHIR_AUTH)


@pytest.mark.parametrize(
    ("fhir_server", "status", "error"),
    [
        ("https://evil.test/r4", 403, "fhir-server-not-allowed"),
        ("https://fhir.test.example/r4-other", 403, "fhir-server-not-allowed"),
        ("https://fhir.test.example@evil.test/r4", 403, "fhir-server-not-allowed"),
        ("http://fhir.test.example/r4", 400, None),
    ],
)
def test_fhir_server_not_registered_for_the_issuer_gets_nothing(client, fhir_server, status, error):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        response = client.post(
            SERVICE,
            json=_fetching_body(fhir_server),
            headers=bearer_header(sign(claims_for(SERVICE_AUD), EC_KEY)),
        )
        assert len(mock.calls) == 0  # nothing, and so no token, went anywhere
    assert response.status_code == status
    assert response.is_json
    if error:
        assert response.get_json()["error"] == error


def test_issuer_without_fhir_servers_may_name_none(client, jwks_server):
    token = sign(claims_for(SERVICE_AUD, iss=REMOTE_ISSUER), EC_KEY)
    response = client.post(SERVICE, json=_fetching_body(FHIR_SERVER), headers=bearer_header(token))
    assert response.status_code == 403
    assert [call.request.url for call in jwks_server.calls] == [JWKS_URL]


def _fhir_answers(mock: responses.RequestsMock, base: str) -> None:
    """Answer the patient read and every search on `base` (empty searchsets)."""
    mock.get(f"{base}/Patient/pat-1", json={"resourceType": "Patient", "id": "pat-1"})
    search = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    mock.get(re.compile(re.escape(base) + r"/[A-Za-z]+\?.*"), json=search)


def test_registered_fhir_server_is_used_with_the_token(client):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _fhir_answers(mock, FHIR_SERVER)
        token = sign(claims_for(SERVICE_AUD), EC_KEY)
        response = client.post(SERVICE, json=_fetching_body(FHIR_SERVER + "/"), headers=bearer_header(token))
        urls = [call.request.url for call in mock.calls]
        tokens = {call.request.headers.get("Authorization") for call in mock.calls}
    assert response.status_code == 200, response.get_data()
    assert f"{FHIR_SERVER}/Patient/pat-1" in urls
    assert all(url.startswith(FHIR_SERVER + "/") for url in urls)
    assert tokens == {"Bearer secret-fhir-token"}


def test_sandbox_without_token_may_name_any_fhir_server(tmp_path):
    app = create_app(app_config(tmp_path, sandbox=True))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _fhir_answers(mock, "http://localhost:9999/fhir")
        response = app.test_client().post(SERVICE, json=_fetching_body("http://localhost:9999/fhir"))
        assert any(call.request.url.endswith("/Patient/pat-1") for call in mock.calls)
    assert response.status_code == 200, response.get_data()
