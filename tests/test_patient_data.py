"""Patient data: the CDS Hooks 2.0 prefetch table, fetching of what is missing, 412, notes, de-duplication."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import responses
from fake_fhir import BASE, TOKEN, bearer_headers, bundled_service, load_request, serve, service_templates

from cds_service.config import load_settings
from cds_service.hook_request import parse_hook_request
from cds_service.patient_data import (
    PatientMismatch,
    PreconditionFailed,
    TooManyResources,
    expand_template,
    gather_patient_data,
)

CONTEXT = {"patientId": "pt-rcc-1", "userId": "Practitioner/dr-1"}
ALL_KEYS = tuple(service_templates())
OPTIONAL_KEYS = tuple(key for key in ALL_KEYS if key not in bundled_service().required_prefetch)
FULL = load_request("full-prefetch")["prefetch"]


def settings(**overrides):
    return load_settings({"today": "2026-11-21", **overrides}, environ={})


def gather(document: dict, **setting_overrides):
    request = parse_hook_request(json.dumps(document).encode(), {"patient-view"}, max_depth=64)
    return gather_patient_data(request, bundled_service(), settings(**setting_overrides))


def references(data) -> list[str]:
    return [f"{r['resourceType']}/{r.get('id')}" for r in data.resources]


def full_references() -> list[str]:
    return references(gather(load_request("full-prefetch")))


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """A fake FHIR server; a request it has no answer for fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def test_full_prefetch_is_used_without_fetching(rsps):
    data = gather(load_request("full-prefetch"))
    assert references(data)[:3] == ["Patient/pt-rcc-1", "Condition/cond-rcc", "Condition/cond-lung-mets"]
    assert len(data.resources) == 12
    assert (data.notes, data.unavailable, len(rsps.calls)) == ((), frozenset(), 0)


def test_missing_keys_are_fetched_with_the_bearer_token(rsps):
    for key in OPTIONAL_KEYS:
        serve(rsps, key, CONTEXT)
    data = gather(load_request("partial-prefetch"))
    assert sorted(references(data)) == sorted(full_references())
    assert data.notes == ()
    assert bearer_headers(rsps) == [f"Bearer {TOKEN}"] * 5  # the optional keys


def test_null_and_empty_bundles_mean_no_data_and_are_not_fetched(rsps):
    document = load_request("null-prefetch")
    document["prefetch"]["procedures"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    data = gather(document)
    assert (data.resources, data.notes, len(rsps.calls)) == ((), (), 0)


def test_operation_outcomes_mean_the_ehr_failed_and_are_fetched_again(rsps):
    serve(rsps, "conditions", CONTEXT)
    serve(rsps, "procedures", CONTEXT)
    data = gather(load_request("operation-outcome-prefetch"))
    assert sorted(references(data)) == sorted(full_references())
    assert "OperationOutcome" not in {r["resourceType"] for r in data.resources}
    assert len(rsps.calls) == 2


def test_prefetch_that_is_not_fhir_is_fetched_again(rsps):
    serve(rsps, "procedures", CONTEXT)
    document = load_request("full-prefetch") | {"fhirServer": BASE}
    document["prefetch"]["procedures"] = {"error": "<html>Tomcat</html>"}
    data = gather(document, sandbox=True)
    assert sorted(references(data)) == sorted(full_references())


def test_operation_outcome_entries_beside_matches_are_dropped():
    document = load_request("full-prefetch")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "info"}]}
    document["prefetch"]["conditions"]["entry"].append({"resource": outcome, "search": {"mode": "outcome"}})
    assert references(gather(document)) == full_references()


def test_a_resource_under_two_keys_counts_once_and_entries_without_id_are_kept():
    document = load_request("overlapping-prefetch")
    no_id = {"resourceType": "Observation", "status": "final", "code": {"text": "note"}}
    document["prefetch"]["observations"]["entry"] += [{"resource": no_id}, {"resource": no_id}]
    refs = references(gather(document))
    assert refs.count("Patient/pt-rcc-1") == 1
    assert refs.count("Medication/med-pembro") == 1
    assert refs.count("Observation/None") == 2
    assert sorted(r for r in refs if r != "Observation/None") == sorted(full_references())


def test_next_link_of_a_prefetched_searchset_is_followed(rsps):
    second_page = {"resourceType": "Bundle", "type": "searchset", "entry": FULL["conditions"]["entry"][1:]}
    rsps.get(f"{BASE}/Condition?patient=pt-rcc-1&_page=2", json=second_page)
    data = gather(load_request("paginated-prefetch"))
    assert sorted(references(data)) == sorted(full_references())
    assert bearer_headers(rsps) == [f"Bearer {TOKEN}"]


def test_next_link_to_another_host_is_not_followed(rsps):
    document = load_request("paginated-prefetch")
    document["prefetch"]["conditions"]["link"][1]["url"] = "https://elsewhere.example.com/r4/Condition?page=2"
    data = gather(document)
    assert "Condition/cond-lung-mets" not in references(data)
    assert data.notes == (
        "Not all conditions could be read from the FHIR server (a link pointing outside the FHIR server "
        "was not followed)",
    )
    assert data.unavailable == frozenset({"Condition"})
    assert len(rsps.calls) == 0


def test_no_fhir_server_and_a_required_key_missing_is_a_precondition_failure():
    expected = r"Conditions could not be read \(missing from the prefetch, and no FHIR server was given\)"
    with pytest.raises(PreconditionFailed, match=expected):
        gather(load_request("no-fhir-server"))


def test_no_fhir_server_and_optional_keys_missing_gives_notes():
    document = load_request("full-prefetch")
    del document["prefetch"]["procedures"], document["prefetch"]["medicationStatements"]
    data = gather(document)
    assert data.notes == (
        "Medication statements could not be read (missing from the prefetch, and no FHIR server was given)",
        "Procedures could not be read (missing from the prefetch, and no FHIR server was given)",
    )
    assert data.unavailable == frozenset({"MedicationStatement", "Procedure"})


def test_without_fhir_authorization_fetching_needs_sandbox_mode(rsps):
    document = load_request("no-prefetch")
    del document["fhirAuthorization"]
    with pytest.raises(PreconditionFailed, match="no FHIR access token was given"):
        gather(document, sandbox=False)
    for key in ALL_KEYS:
        serve(rsps, key, CONTEXT)
    data = gather(document, sandbox=True)
    assert sorted(references(data)) == sorted(full_references())
    assert set(bearer_headers(rsps)) == {None}


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_a_required_key_that_cannot_be_fetched_is_a_precondition_failure(rsps, status):
    serve(rsps, "patient", CONTEXT)
    serve(rsps, "conditions", CONTEXT, status=status)
    for key in OPTIONAL_KEYS:
        serve(rsps, key, CONTEXT)
    expected = f"Conditions could not be read from the FHIR server \\(HTTP {status}"
    with pytest.raises(PreconditionFailed, match=expected):
        gather(load_request("no-prefetch"))


def test_an_optional_key_that_fails_gives_a_note_and_the_rest_is_used(rsps):
    for key in ALL_KEYS:
        serve(rsps, key, CONTEXT, **({"status": 500} if key == "procedures" else {}))
    data = gather(load_request("no-prefetch"))
    assert data.notes == ("Procedures could not be read from the FHIR server (HTTP 500)",)
    assert data.unavailable == frozenset({"Procedure"})
    assert sorted(references(data)) == sorted(r for r in full_references() if not r.startswith("Procedure/"))


def test_a_prefetched_patient_other_than_the_context_patient_is_refused():
    document = load_request("full-prefetch")
    document["prefetch"]["patient"]["id"] = "someone-else"
    with pytest.raises(PatientMismatch):
        gather(document)


def test_more_resources_than_allowed_is_refused():
    with pytest.raises(TooManyResources):
        gather(load_request("full-prefetch"), max_resources=5)


@pytest.mark.parametrize(
    ("template", "expanded"),
    [
        ("Patient/{{context.patientId}}", "Patient/pt-rcc-1"),
        ("{{context.userId}}", "Practitioner/dr-1"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/dr-1"),
        ("Condition?patient={{ context.patientId }}&_count=200", "Condition?patient=pt-rcc-1&_count=200"),
        ("Encounter/{{context.encounterId}}", None),
        ("PractitionerRole/{{userPractitionerRoleId}}", None),
    ],
)
def test_prefetch_tokens(template, expanded):
    assert expand_template(template, CONTEXT) == expanded


def epic_no_results(severity: str = "warning") -> dict:
    """Epic's answer to a search with no results (an Epic capture, /work/research/staging-and-fhir.md)."""
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": "processing",
                "details": {
                    "coding": [
                        {
                            "system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369",
                            "code": "4101",
                            "display": "Resource request returns no results.",
                        }
                    ],
                    "text": "Resource request returns no results.",
                },
            }
        ],
    }
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "entry": [{"fullUrl": "urn:uuid:1", "resource": outcome, "search": {"mode": "outcome"}}],
    }


@pytest.mark.parametrize("severity", ["warning", "information"])
def test_an_empty_search_as_epic_answers_it_is_no_data_not_a_failure(severity, rsps):
    document = load_request("full-prefetch")
    document["prefetch"]["procedures"] = epic_no_results(severity)
    document["prefetch"]["conditions"] = epic_no_results(severity)  # required, yet empty: no 412
    data = gather(document)
    assert (data.notes, data.unavailable, len(rsps.calls)) == ((), frozenset(), 0)
    assert not any(
        r["resourceType"] in ("Procedure", "Condition", "OperationOutcome") for r in data.resources
    )


@pytest.mark.parametrize("severity", ["error", "fatal"])
def test_a_search_with_an_error_outcome_is_fetched_again(severity, rsps):
    document = load_request("partial-prefetch")  # it names a FHIR server and a token
    document["prefetch"]["procedures"] = epic_no_results(severity)
    for key in ("observations", "medicationStatements", "medicationRequests", "medicationAdministrations"):
        serve(rsps, key, CONTEXT)
    serve(rsps, "procedures", CONTEXT)
    data = gather(document)
    assert data.notes == () and len(rsps.calls) == 5
    assert "Procedure" in {r["resourceType"] for r in data.resources}


def test_a_fetched_search_with_an_error_outcome_is_unavailable_with_a_note(rsps):
    document = load_request("partial-prefetch")
    for key in ("observations", "medicationStatements", "medicationRequests", "medicationAdministrations"):
        serve(rsps, key, CONTEXT)
    serve(rsps, "procedures", CONTEXT, json=epic_no_results("error"))
    data = gather(document)
    assert data.unavailable == frozenset({"Procedure"})
    assert data.notes == ("Procedures could not be read from the FHIR server (the server reported an error)",)
