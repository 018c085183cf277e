"""Trusted issuers file validation, key selection and the jwks_url cache (no web app involved)."""

from __future__ import annotations

import json

import pytest
import responses
from auth_support import ISSUER, JWKS_URL, jwk_set, new_ec_key, new_rsa_key, write_issuers
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service import trust
from cds_service.errors import KeyLookupError, TrustConfigError
from cds_service.trust import KeyStore, load_trusted_issuers, usable_keys

EC_KEY = new_ec_key("ec-1")
RSA_KEY = new_rsa_key("rsa-1")


def test_valid_file_loads_issuers_with_their_fhir_servers(tmp_path):
    path = write_issuers(
        tmp_path / "issuers.json",
        {"iss": ISSUER, "jwks": jwk_set(EC_KEY, RSA_KEY), "fhir_servers": ["https://fhir.example.org/r4"]},
        {"iss": "https://other.example", "jwks_url": JWKS_URL},
    )
    issuers = load_trusted_issuers(path)
    assert set(issuers) == {ISSUER, "https://other.example"}
    assert issuers[ISSUER].fhir_servers == ("https://fhir.example.org/r4",)
    assert issuers["https://other.example"].fhir_servers == ()


def _private_jwk() -> dict:
    return {**json.loads(ECAlgorithm.to_jwk(EC_KEY.private_key)), "kid": "leaked"}


def _p256_jwk() -> dict:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**json.loads(ECAlgorithm.to_jwk(key)), "kid": "p256"}


def _short_rsa_jwk() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    return {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": "short"}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({}, id="no-issuers"),
        pytest.param({"issuers": []}, id="empty-issuers"),
        pytest.param({"issuers": [{"iss": ISSUER}]}, id="no-keys"),
        pytest.param(
            {"issuers": [{"iss": ISSUER, "jwks": jwk_set(EC_KEY), "jwks_url": JWKS_URL}]}, id="both-keys"
        ),
        pytest.param(
            {"issuers": [{"iss": ISSUER, "jwks_url": "http://ehr.example/jwks"}]}, id="jwks-url-http"
        ),
        pytest.param(
            {"issuers": [{"iss": ISSUER, "jwks": {"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}}]},
            id="symmetric-key",
        ),
        pytest.param({"issuers": [{"iss": ISSUER, "jwks": {"keys": [_private_jwk()]}}]}, id="private-key"),
        pytest.param({"issuers": [{"iss": ISSUER, "jwks": {"keys": [_p256_jwk()]}}]}, id="p256-key"),
        pytest.param({"issuers": [{"iss": ISSUER, "jwks": {"keys": [_short_rsa_jwk()]}}]}, id="rsa-1024"),
        pytest.param(
            {"issuers": [{"iss": ISSUER, "jwks_url": JWKS_URL, "fhir_servers": ["fhir.example.org"]}]},
            id="fhir-server-not-url",
        ),
        pytest.param(
            {"issuers": [{"iss": ISSUER, "jwks_url": JWKS_URL}, {"iss": ISSUER, "jwks_url": JWKS_URL}]},
            id="duplicate-iss",
        ),
        pytest.param({"issuers": [{"iss": ISSUER, "jwks_url": JWKS_URL, "secret": "x"}]}, id="unknown-field"),
    ],
)
def test_invalid_file_is_refused(tmp_path, document):
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TrustConfigError):
        load_trusted_issuers(path)


def test_unreadable_file_is_refused(tmp_path):
    with pytest.raises(TrustConfigError):
        load_trusted_issuers(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TrustConfigError):
        load_trusted_issuers(tmp_path / "bad.json")


def test_usable_keys_keeps_only_es384_and_rs384_signing_keys():
    mixed = {
        "keys": [
            EC_KEY.public_jwk(),
            RSA_KEY.public_jwk(),
            _p256_jwk(),
            _short_rsa_jwk(),
            _private_jwk(),
            {**new_ec_key("enc").public_jwk(), "use": "enc"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {**new_ec_key("claims-rs").public_jwk(), "alg": "RS384"},
            "not a key",
        ]
    }
    keys = usable_keys(mixed)
    assert {kid: alg for kid, (alg, _) in keys.items()} == {"ec-1": "ES384", "rsa-1": "RS384"}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fhir.example.org/r4", True),
        ("https://fhir.example.org/r4/", True),
        ("HTTPS://FHIR.example.org:443/r4", True),
        ("https://fhir.example.org/r4evil", False),
        ("https://fhir.example.org/r4/../admin", False),
        ("https://fhir.example.org.evil.test/r4", False),
        ("https://fhir.example.org@evil.test/r4", False),
        ("https://evil.test/r4?https://fhir.example.org/r4", False),
        ("https://fhir.example.org/r4#x", False),
        ("http://fhir.example.org/r4", False),
        ("https://fhir.example.org:8443/r4", False),
        ("https://fhir.example.org\\@evil.test/r4", False),
        ("not a url", False),
    ],
)
def test_fhir_server_allowlist_compares_exact_base_urls(tmp_path, url, allowed):
    path = write_issuers(
        tmp_path / "i.json",
        {"iss": ISSUER, "jwks_url": JWKS_URL, "fhir_servers": ["https://fhir.example.org/r4"]},
    )
    assert load_trusted_issuers(path)[ISSUER].allows_fhir_server(url) is allowed


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _remote_store(tmp_path, clock: FakeClock) -> tuple[KeyStore, trust.TrustedIssuer]:
    issuers = load_trusted_issuers(write_issuers(tmp_path / "i.json", {"iss": ISSUER, "jwks_url": JWKS_URL}))
    return KeyStore(issuers, clock=clock), issuers[ISSUER]


@responses.activate
def test_jwks_url_is_fetched_once_and_cached(tmp_path):
    responses.get(JWKS_URL, json=jwk_set(EC_KEY))
    store, issuer = _remote_store(tmp_path, FakeClock())
    assert store.key_for(issuer, "ec-1")[0] == "ES384"
    assert store.key_for(issuer, "ec-1")[0] == "ES384"
    assert len(responses.calls) == 1


@responses.activate
def test_unknown_kid_refreshes_the_jwks_at_most_once_per_interval(tmp_path):
    clock = FakeClock()
    first = responses.get(JWKS_URL, json=jwk_set(EC_KEY))
    store, issuer = _remote_store(tmp_path, clock)
    store.key_for(issuer, "ec-1")
    clock.now += trust.JWKS_MIN_REFRESH_SECONDS
    responses.replace(responses.GET, JWKS_URL, json=jwk_set(EC_KEY, RSA_KEY))  # the EHR rotated in a new key
    assert store.key_for(issuer, "rsa-1")[0] == "RS384"
    assert len(responses.calls) == 2
    for _ in range(5):  # made-up kids right after a refresh: no new fetch
        with pytest.raises(KeyLookupError):
            store.key_for(issuer, "made-up")
    assert len(responses.calls) == 2
    clock.now += trust.JWKS_MIN_REFRESH_SECONDS
    with pytest.raises(KeyLookupError):
        store.key_for(issuer, "made-up")
    assert len(responses.calls) == 3
    assert first.call_count == 1


@responses.activate
def test_cached_keys_survive_a_failing_refresh(tmp_path):
    clock = FakeClock()
    responses.get(JWKS_URL, json=jwk_set(EC_KEY))
    store, issuer = _remote_store(tmp_path, clock)
    store.key_for(issuer, "ec-1")
    clock.now += trust.JWKS_CACHE_SECONDS + 1
    responses.replace(responses.GET, JWKS_URL, status=503)
    assert store.key_for(issuer, "ec-1")[0] == "ES384"
    assert len(responses.calls) == 2


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param({"status": 404}, id="404"),
        pytest.param({"body": "<html>"}, id="not-json"),
        pytest.param({"status": 302, "headers": {"Location": "https://evil.test/jwks"}}, id="redirect"),
        pytest.param({"body": b"{" + b" " * (trust.JWKS_MAX_BYTES + 10) + b"}"}, id="too-large"),
    ],
)
@responses.activate
def test_failing_jwks_url_means_no_key(tmp_path, reply):
    responses.get(JWKS_URL, **reply)
    store, issuer = _remote_store(tmp_path, FakeClock())
    with pytest.raises(KeyLookupError):
        store.key_for(issuer, "ec-1")
    assert [call.request.url for call in responses.calls] == [JWKS_URL]


def test_plain_http_fhir_servers_are_refused_unless_allowed(tmp_path):
    path = write_issuers(
        tmp_path / "i.json",
        {
            "iss": ISSUER,
            "jwks_url": JWKS_URL,
            "fhir_servers": ["https://a.example/r4", "http://b.example/r4"],
        },
    )
    with pytest.raises(TrustConfigError, match=f"issuer '{ISSUER}' lists the plain-http fhir_servers entry"):
        load_trusted_issuers(path)
    assert load_trusted_issuers(path, https_only=False)[ISSUER].fhir_servers[1] == "http://b.example/r4"


def test_key_store_tells_which_kids_are_pinned(tmp_path):
    path = write_issuers(
        tmp_path / "i.json",
        {"iss": ISSUER, "jwks": jwk_set(EC_KEY)},
        {"iss": "https://remote.example", "jwks_url": JWKS_URL},
    )
    issuers = load_trusted_issuers(path)
    store = KeyStore(issuers, fetch=lambda url: pytest.fail(f"fetched {url}"))
    assert store.pins(issuers[ISSUER], "ec-1")
    assert not store.pins(issuers[ISSUER], "rsa-1")
    assert not store.pins(issuers["https://remote.example"], "ec-1")  # keys at a URL are never pinned
