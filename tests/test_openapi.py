"""The served OpenAPI 3.1 description is valid and true: a bounded schemathesis run against the app in-process
finds no 5xx and only documented, schema-conforming answers, in sandbox mode and with JWT authentication."""

from __future__ import annotations

import pytest
import responses
import schemathesis
from auth_support import (
    ISSUER,
    PUBLIC_BASE_URL,
    SERVICE_ID,
    app_config,
    bearer_header,
    claims_for,
    jwk_set,
    new_ec_key,
    pinned_issuer,
    secure_app_config,
    sign,
)
from hypothesis import HealthCheck, event, settings
from jsonschema import Draft202012Validator
from schemathesis.config import PositiveDataAcceptanceConfig

from cds_service.web import create_app
from cds_service.web.openapi import openapi_document

pytestmark = pytest.mark.usefixtures("clean_cds_env")

KEY = new_ec_key("ec-1")
SERVICES = (
    (SERVICE_ID, "patient-view"),
    (f"{SERVICE_ID}-order-select", "order-select"),
    (f"{SERVICE_ID}-order-sign", "order-sign"),
)
# Schema-valid data the service still refuses for reasons no JSON Schema can express: a prefetched Patient
# that is not context.patientId (400), a fhirServer not registered for the caller (403), patient data that can
# be neither prefetched nor fetched (412, CDS Hooks 2.0).
ACCEPTED_VALID_DATA = PositiveDataAcceptanceConfig(expected_statuses=["2xx", "400", "403", "412"])
BOUNDED = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


def test_openapi_document_is_served_without_a_token_and_embeds_the_validation_schemas(tmp_path):
    app = create_app(secure_app_config(tmp_path, {"iss": ISSUER, "jwks": jwk_set(KEY)}))
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document == openapi_document(SERVICES)
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    for name in ("HookRequest", "Feedback", "Cards"):
        Draft202012Validator.check_schema(schemas[name])
        assert "$comment" not in schemas[name] and "$defs" not in schemas[name]
    assert "#/$defs/" not in response.get_data(as_text=True)
    assert document["security"] == [{"cdsHooksJwt": []}]
    assert schemas["HookRequest"]["properties"]["fhirServer"]["pattern"].startswith("^https://")
    assert document["paths"]["/cds-services/{id}"]["parameters"][0]["schema"] == {
        "enum": [service_id for service_id, _ in SERVICES]
    }


def test_sandbox_description_makes_the_jwt_optional(tmp_path):
    app = create_app(app_config(tmp_path, sandbox=True))
    document = app.test_client().get("/openapi.json").get_json()
    assert document == openapi_document(SERVICES, sandbox=True)
    assert document["security"] == [{"cdsHooksJwt": []}, {}]


# The documents the app serves (checked above), loaded once at collection; each test sends to its own app.
# /sandbox (a static page, tested in test_sandbox_page.py) is left out: schemathesis' WSGI transport does not
# close a streamed file response, which pytest reports as a ResourceWarning.
SECURE_SCHEMA = schemathesis.openapi.from_dict(openapi_document(SERVICES)).exclude(path="/sandbox")
SANDBOX_SCHEMA = schemathesis.openapi.from_dict(openapi_document(SERVICES, sandbox=True)).exclude(
    path="/sandbox"
)

for _schema in (SECURE_SCHEMA, SANDBOX_SCHEMA):
    _schema.config.checks.positive_data_acceptance = ACCEPTED_VALID_DATA


@pytest.fixture
def sandbox_app(tmp_path):
    app = create_app(app_config(tmp_path, sandbox=True, fetch_deadline_seconds=0.5))
    with responses.RequestsMock(
        assert_all_requests_are_fired=False
    ):  # no generated fhirServer is ever called
        yield app


@pytest.fixture
def secure_app(tmp_path):
    app = create_app(secure_app_config(tmp_path, pinned_issuer(KEY), fetch_deadline_seconds=0.5))
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        yield app


def send_to(case, app) -> None:
    """Send the case, and the extra requests of schemathesis' checks (auth, methods), to this test's app."""
    case.operation.app = app
    case.operation.schema.app = app


@SANDBOX_SCHEMA.parametrize()
@BOUNDED
def test_sandbox_answers_conform_to_the_description(case, sandbox_app):
    send_to(case, sandbox_app)
    event(f"HTTP {case.call_and_validate().status_code}")


@SECURE_SCHEMA.parametrize()
@BOUNDED
def test_authenticated_answers_conform_to_the_description(case, secure_app):
    token = sign(claims_for(PUBLIC_BASE_URL + case.formatted_path), KEY)
    send_to(case, secure_app)
    event(f"HTTP {case.call_and_validate(headers=bearer_header(token)).status_code}")
