"""Property tests: whatever a client sends, the parser raises only its own errors and the endpoints never
answer 500 and always answer JSON."""

from __future__ import annotations

import json
import uuid

import pytest
import responses
from auth_support import SERVICE_ID, app_config, hook_body
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cds_service.errors import RequestError
from cds_service.hook_request import parse_feedback, parse_hook_request
from cds_service.web import create_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")

SERVICE = f"/cds-services/{SERVICE_ID}"
MAX_DEPTH = 64
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
KEYS = ("hook", "hookInstance", "context", "fhirServer", "fhirAuthorization", "prefetch", "extension")
hostile_text = st.sampled_from(
    ["", "patient-view", "https://fhir.invalid/r4", "http://127.0.0.1:9/x", "../..", "\x00"]
)
field_values = json_values | hostile_text


@st.composite
def near_valid_hook_bodies(draw) -> dict:
    """A valid request with fields replaced, removed or added: reaches deep into validation."""
    body = hook_body()
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(field_values)
    if isinstance(body.get("context"), dict) and draw(st.booleans()):
        body["context"][draw(st.sampled_from(["patientId", "userId", "encounterId"]))] = draw(field_values)
    if isinstance(body.get("prefetch"), dict) and draw(st.booleans()):
        body["prefetch"][draw(st.sampled_from(["patient", "conditions", "observations"]))] = draw(json_values)
    return body


RESOURCE_TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "Procedure",
    "Medication",
    "OperationOutcome",
    "Bundle",
)
fhirish_values = st.recursive(
    scalars
    | st.sampled_from(["2026-11-20", "mg/dL", "http://loinc.org", "2160-0", "active", "Patient/pat-1"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "code",
                    "coding",
                    "system",
                    "value",
                    "valueQuantity",
                    "unit",
                    "status",
                    "subject",
                    "reference",
                    "effectiveDateTime",
                    "onsetDateTime",
                    "clinicalStatus",
                    "id",
                    "entry",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
resources = st.builds(
    lambda resource_type, fields: {**fields, "resourceType": resource_type},
    st.sampled_from(RESOURCE_TYPES),
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "status",
                "code",
                "subject",
                "valueQuantity",
                "effectiveDateTime",
                "onsetDateTime",
                "clinicalStatus",
                "gender",
                "birthDate",
                "medication",
            ]
        ),
        fhirish_values,
        max_size=6,
    ),
)
bundles = st.builds(
    lambda entries: {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in entries],
    },
    st.lists(resources, max_size=4),
)


@st.composite
def arbitrary_prefetch_bodies(draw) -> bytes:
    """A valid request whose prefetch holds arbitrary FHIR-looking resources: reaches the pipeline."""
    body = hook_body()
    for key in body["prefetch"]:
        if key != "patient" and draw(st.booleans()):
            body["prefetch"][key] = draw(st.none() | resources | bundles)
    if draw(st.booleans()):
        body["prefetch"]["patient"] = {**draw(resources), "resourceType": "Patient", "id": "pat-1"}
    return json.dumps(body).encode()


raw_bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda value: json.dumps(value).encode())
    | near_valid_hook_bodies().map(lambda value: json.dumps(value).encode())
)


@PROPERTY_SETTINGS
@given(raw_bodies)
def test_hook_parser_raises_only_request_errors(body):
    try:
        parsed = parse_hook_request(body, {"patient-view"}, max_depth=MAX_DEPTH)
    except RequestError as exc:
        assert exc.code and exc.message
    else:
        assert parsed.hook == "patient-view"
        assert isinstance(parsed.context, dict)


@PROPERTY_SETTINGS
@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_feedback_parser_raises_only_request_errors(body):
    try:
        parse_feedback(body, max_depth=MAX_DEPTH)
    except RequestError as exc:
        assert exc.code and exc.message


@pytest.fixture
def client(tmp_path):
    app = create_app(app_config(tmp_path, sandbox=True, fetch_deadline_seconds=0.5))
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # no FHIR call ever leaves the test
        yield app.test_client()


def _assert_json_answer(response) -> None:
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.get_data()[:300]
    assert response.is_json
    document = response.get_json()
    assert isinstance(document, dict)
    if response.status_code >= 400:
        assert set(document) == {"error", "message"}


@PROPERTY_SETTINGS
@given(
    body=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain", "application/fhir+json"])
)
def test_service_endpoint_never_fails_with_500(client, body, content_type):
    _assert_json_answer(client.post(SERVICE, data=body, content_type=content_type))


@PROPERTY_SETTINGS
@given(arbitrary_prefetch_bodies())
def test_service_endpoint_with_arbitrary_prefetch_never_fails_with_500(client, body):
    _assert_json_answer(client.post(SERVICE, data=body, content_type="application/json"))


@PROPERTY_SETTINGS
@given(raw_bodies)
def test_feedback_endpoint_never_fails_with_500(client, body):
    _assert_json_answer(client.post(SERVICE + "/feedback", data=body, content_type="application/json"))


@PROPERTY_SETTINGS
@given(service_id=st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s and s not in (".", "..")))
def test_any_service_id_answers_json(client, service_id):
    body = json.dumps(hook_body(hookInstance=str(uuid.uuid4()))).encode()
    _assert_json_answer(
        client.post(f"/cds-services/{service_id}", data=body, content_type="application/json")
    )
