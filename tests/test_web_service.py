"""POST /cds-services/{id}: every prefetch path, fetching from a fake FHIR server, 412, 400s, 404.

Every answer is checked against the CDS Hooks 2.0 response schema and for empty values.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from fake_fhir import BASE, TOKEN, bearer_headers, load_request, serve
from hook_checks import assert_valid_hook_response

from cds_service.logs import JsonLineFormatter

SERVICE = "/cds-services/mrcc-trials"
CONTEXT = load_request("no-prefetch")["context"]
OPTIONAL_KEYS = (
    "observations",
    "medicationStatements",
    "medicationRequests",
    "medicationAdministrations",
    "procedures",
)
ALL_KEYS = ("patient", "conditions", *OPTIONAL_KEYS)
ELIGIBILITY = "org.trialmatch.eligibility"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """The fake FHIR server; a request it has no answer for fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def post(client, body: Any, path: str = SERVICE):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, content_type="application/json")


def cards_of(response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.get_json()
    return assert_valid_hook_response(response.get_json())


def without_uuids(value: Any) -> Any:
    """Cards compared across calls: uuids differ by design, everything else must not."""
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


def prefetched_cards(client) -> list[dict[str, Any]]:
    return without_uuids(cards_of(post(client, load_request("full-prefetch"))))


def test_full_prefetch_gives_trial_cards(client, rsps):
    cards = cards_of(post(client, load_request("full-prefetch")))
    assert cards, "a patient with metastatic RCC documented gets at least one trial card"
    assert cards[0]["uuid"] == "00000000-0000-4000-8000-000000000001"
    for card in cards:
        nct_id = card["extension"][ELIGIBILITY]["nctId"]
        assert nct_id in card["summary"]
        trial_page = f"https://clinicaltrials.gov/study/{nct_id}"
        assert trial_page in [link["url"] for link in card["links"] if link["type"] == "absolute"]
    assert len(rsps.calls) == 0


def test_fetched_data_gives_the_same_cards_as_prefetched_data(client, rsps):
    """No prefetch: every key is fetched with the bearer token; conditions arrive in two pages."""
    expected = prefetched_cards(client)
    conditions = load_request("full-prefetch")["prefetch"]["conditions"]
    page_2 = f"{BASE}/Condition?patient=pt-rcc-1&_page=2"
    first = {**conditions, "entry": conditions["entry"][:1], "link": [{"relation": "next", "url": page_2}]}
    serve(rsps, "conditions", CONTEXT, json=first)
    rsps.get(page_2, json={**conditions, "entry": conditions["entry"][1:]})
    for key in ("patient", *OPTIONAL_KEYS):
        serve(rsps, key, CONTEXT)
    assert without_uuids(cards_of(post(client, load_request("no-prefetch")))) == expected
    assert bearer_headers(rsps) == [f"Bearer {TOKEN}"] * 8


def test_partial_prefetch_fetches_only_the_missing_keys(client, rsps):
    expected = prefetched_cards(client)
    for key in OPTIONAL_KEYS:
        serve(rsps, key, CONTEXT)
    assert without_uuids(cards_of(post(client, load_request("partial-prefetch")))) == expected
    assert len(rsps.calls) == len(OPTIONAL_KEYS)


def test_null_prefetch_means_no_data_and_nothing_is_fetched(client, rsps):
    assert post(client, load_request("null-prefetch")).get_json() == {"cards": []}
    assert len(rsps.calls) == 0


def test_operation_outcome_prefetch_is_fetched_again(client, rsps):
    expected = prefetched_cards(client)
    serve(rsps, "conditions", CONTEXT)
    serve(rsps, "procedures", CONTEXT)
    assert without_uuids(cards_of(post(client, load_request("operation-outcome-prefetch")))) == expected


def test_a_resource_under_two_keys_counts_once(client, caplog):
    expected = prefetched_cards(client)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cds_service"):
        cards = cards_of(post(client, load_request("overlapping-prefetch")))
    assert without_uuids(cards) == expected
    [line] = [r for r in caplog.records if r.getMessage().startswith("hook answered")]
    assert line.resources == 12  # as many as the full prefetch, which has no duplicates


def test_next_link_to_another_host_is_not_followed(client, rsps):
    document = load_request("paginated-prefetch")
    document["prefetch"]["conditions"]["link"][1]["url"] = "https://elsewhere.example.com/r4/Condition"
    cards_of(post(client, document))
    assert len(rsps.calls) == 0


def test_an_optional_key_that_fails_is_named_on_every_card(client, rsps):
    for key in ALL_KEYS:
        serve(rsps, key, CONTEXT, **({"status": 500} if key == "procedures" else {}))
    cards = cards_of(post(client, load_request("no-prefetch")))
    assert cards
    for card in cards:
        assert "Procedures could not be read from the FHIR server (HTTP 500)" in card["detail"]


def test_no_fhir_server_and_required_data_missing_is_412(client):
    response = post(client, load_request("no-fhir-server"))
    assert response.status_code == 412
    assert response.get_json() == {
        "error": "precondition-failed",
        "message": "Conditions could not be read (missing from the prefetch, and no FHIR server was given)",
    }


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_required_data_the_fhir_server_refuses_is_412(client, rsps, status):
    for key in ALL_KEYS:
        serve(rsps, key, CONTEXT, **({"status": status} if key == "conditions" else {}))
    response = post(client, load_request("no-prefetch"))
    assert response.status_code == 412
    assert response.get_json()["error"] == "precondition-failed"
    assert f"HTTP {status}" in response.get_json()["message"]


def changed(stub: str, *path: str, value: Any = None, delete: bool = False) -> bytes:
    """A stored request with the field at `path` replaced by `value` (or deleted)."""
    document = load_request(stub)
    target = document
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document).encode()


OTHER_PATIENT = {"resourceType": "Patient", "id": "other"}
BAD_REQUESTS = [
    pytest.param(b'{"hook": "patient-view",', "malformed-json", "not valid JSON", id="malformed JSON"),
    pytest.param(
        b'["patient-view"]', "invalid-request", "$: the body must be a JSON object", id="not an object"
    ),
    pytest.param(b'{"hook": NaN}', "malformed-json", "NaN is not allowed", id="NaN"),
    pytest.param(
        b'{"hook": ' + b"[" * 100 + b"]" * 100 + b"}",
        "malformed-json",
        "nested deeper than 64",
        id="nested too deep",
    ),
    pytest.param(
        changed("full-prefetch", "hookInstance", delete=True),
        "invalid-request",
        "'hookInstance' is a required property",
        id="missing hookInstance",
    ),
    pytest.param(
        changed("full-prefetch", "hook", value="order-sign"),
        "wrong-hook",
        "$.hook: this service answers patient-view",
        id="wrong hook",
    ),
    pytest.param(
        changed("no-prefetch", "fhirServer", delete=True),
        "invalid-request",
        "'fhirServer' is a dependency of 'fhirAuthorization'",
        id="token without fhirServer",
    ),
    pytest.param(
        changed("full-prefetch", "prefetch", value=[]),
        "invalid-request",
        "$.prefetch: must be of type object",
        id="prefetch not an object",
    ),
    pytest.param(
        changed("full-prefetch", "prefetch", "patient", value="Patient/1"),
        "invalid-request",
        "$.prefetch.patient: must be of type object or null",
        id="prefetch value not an object",
    ),
    pytest.param(
        changed("full-prefetch", "context", "patientId", delete=True),
        "invalid-request",
        "'patientId' is a required property",
        id="missing patientId",
    ),
    pytest.param(
        changed("full-prefetch", "context", "patientId", value="../Patient/x"),
        "invalid-request",
        "$.context.patientId: has an invalid format",
        id="patientId not a FHIR id",
    ),
    pytest.param(
        changed("no-prefetch", "fhirAuthorization", "token_type", value="MAC"),
        "invalid-request",
        '$.fhirAuthorization.token_type: must be "Bearer"',
        id="token type not Bearer",
    ),
    pytest.param(
        changed("no-prefetch", "fhirServer", value="fhir.example.org/r4"),
        "invalid-request",
        "$.fhirServer",
        id="fhirServer not a URL",
    ),
    pytest.param(
        changed("no-prefetch", "fhirServer", value="http://[fhir.example.org/r4"),
        "invalid-request",
        "$.fhirServer: must be an http(s) URL",
        id="fhirServer with a broken IPv6 host",
    ),
    pytest.param(
        changed("no-prefetch", "fhirServer", value="https://fhir.example.org:99999/r4"),
        "invalid-request",
        "$.fhirServer: must be an http(s) URL",
        id="fhirServer with a port out of range",
    ),
    pytest.param(
        changed("full-prefetch", "prefetch", "patient", value=OTHER_PATIENT),
        "patient-mismatch",
        "$.prefetch.patient.id",
        id="another patient prefetched",
    ),
]


@pytest.mark.parametrize(("body", "code", "names"), BAD_REQUESTS)
def test_bad_requests_are_400_naming_what_is_wrong(client, rsps, body, code, names):
    response = post(client, body)
    assert response.status_code == 400
    answer = response.get_json()
    assert set(answer) == {"error", "message"}
    assert answer["error"] == code
    assert names in answer["message"]
    assert len(rsps.calls) == 0


def test_unknown_service_is_404(client):
    response = post(client, load_request("full-prefetch"), "/cds-services/no-such-service")
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown-service"


def test_a_body_over_the_limit_is_413(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = post(client, load_request("full-prefetch"))
    assert response.status_code == 413
    assert response.get_json()["error"] == "request-entity-too-large"


def test_one_log_line_per_call_with_ids_only(client, rsps):
    for key in OPTIONAL_KEYS:
        serve(rsps, key, CONTEXT)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())  # formats while the request runs, as the service's handler does
    logging.getLogger().addHandler(handler)
    try:
        cards = cards_of(post(client, load_request("partial-prefetch")))
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [line] = [line for line in lines if line["message"].startswith("hook answered")]
    assert line["message"] == f"hook answered with {len(cards)} card(s)"
    assert line["request_id"] == load_request("partial-prefetch")["hookInstance"]
    assert (line["service"], line["hook"], line["patient_id"]) == ("mrcc-trials", "patient-view", "pt-rcc-1")
    assert isinstance(line["duration_ms"], int)
    for secret in (TOKEN, "1961-04-12", "Renal cell carcinoma", "mg/dL"):
        assert secret not in stream.getvalue()


def audit_rows(app) -> list[Any]:
    with app.extensions["cds"].storage.engine.connect() as connection:
        return list(connection.exec_driver_sql("SELECT hook_instance, cards FROM audit"))


def test_the_audit_trail_records_the_cards_shown_before_the_response_is_sent(app, client):
    response = post(client, load_request("full-prefetch"))
    cards = cards_of(response)
    [(hook_instance, shown)] = audit_rows(app)  # written before the answer: nothing is left for after it
    assert hook_instance == load_request("full-prefetch")["hookInstance"]
    assert [card["uuid"] for card in json.loads(shown)] == [card["uuid"] for card in cards]
    storage = app.extensions["cds"].storage
    item = {"card": cards[0]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z"}
    storage.record_feedback("mrcc-trials", [item])
    [exported] = list(storage.iter_feedback())
    assert exported["nctId"] == cards[0]["extension"][ELIGIBILITY]["nctId"]


def test_an_audit_row_that_cannot_be_written_is_logged_and_the_cards_still_answered(app, client, monkeypatch):
    storage = app.extensions["cds"].storage

    def fail(**row: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage, "record_audit", fail)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logging.getLogger("cds_service").addHandler(handler)
    try:
        response = post(client, load_request("full-prefetch"))
        assert response.status_code == 200 and cards_of(response)
    finally:
        logging.getLogger("cds_service").removeHandler(handler)
    [line] = [json.loads(text) for text in stream.getvalue().splitlines() if "audit row" in text]
    assert line["level"] == "ERROR" and line["exc_type"] == "OSError"
    assert line["service"] == "mrcc-trials" and "disk full" not in stream.getvalue()
    assert line["request_id"] == load_request("full-prefetch")["hookInstance"]


HOSTILE_PREFETCH = [
    pytest.param(
        {"conditions": {"resourceType": "Bundle", "entry": 5, "link": 7}}, id="entry and link not lists"
    ),
    pytest.param(
        {"conditions": {"resourceType": "Bundle", "entry": ["x", {"resource": "y"}, {}]}}, id="bad entries"
    ),
    pytest.param({"conditions": {"resourceType": 12}}, id="resourceType not a string"),
    pytest.param(
        {"observations": {"resourceType": "Observation", "valueQuantity": {"value": "high"}}}, id="bad value"
    ),
    pytest.param(
        {"conditions": {"resourceType": "Condition", "id": ["x"], "code": "renal cancer"}}, id="bad shapes"
    ),
    pytest.param(
        {"patient": {"resourceType": "Patient", "id": "pt-rcc-1", "birthDate": "yesterday"}}, id="bad date"
    ),
]


@pytest.mark.parametrize("replacement", HOSTILE_PREFETCH)
def test_hostile_prefetch_never_breaks_the_service(client, replacement):
    document = load_request("full-prefetch")
    document["prefetch"].update(replacement)
    response = post(client, document)
    assert response.status_code in (200, 400, 412), response.get_json()
    if response.status_code == 200:
        assert_valid_hook_response(response.get_json())
