"""Charts as EHRs write them, through the real service (issue: read the chart as EHRs really write it):
metastatic disease documented only by staging, a stage group alone, a deceased patient."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SBRT = json.loads((EXAMPLES / "requests" / "patient-view-fit-sbrt.json").read_text(encoding="utf-8"))
TRIAL = "NCT04299646"
LUNG_METASTASES = "eqxKk4pSCOeWSJzyNRZM6qp3"  # the chart's only metastatic-disease Condition
KIDNEY_CANCER = "e8LlkN5-RwtIgvnwhG8xixL3"
SNOMED, LOINC, AJCC = "http://snomed.info/sct", "http://loinc.org", "http://cancerstaging.org"
CM1 = {"system": SNOMED, "code": "1229903009", "display": "American Joint Committee on Cancer cM1"}


def without_metastasis_conditions() -> dict[str, Any]:
    request = copy.deepcopy(SBRT)
    conditions = request["prefetch"]["conditions"]
    conditions["entry"] = [e for e in conditions["entry"] if e["resource"]["id"] != LUNG_METASTASES]
    return request


def cards(client: FlaskClient, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    response = client.post("/cds-services/mrcc-trials", json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {c["extension"]["org.trialmatch.eligibility"]["nctId"]: c for c in response.get_json()["cards"]}


def criterion(card: dict[str, Any], criterion_id: str) -> dict[str, Any]:
    (found,) = (
        c for c in card["extension"]["org.trialmatch.eligibility"]["criteria"] if c["id"] == criterion_id
    )
    return found


def m_category(oid: str, value: dict[str, str]) -> dict[str, Any]:
    """An mCODE TNM distant metastases category Observation."""
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "21907-1"}]},
        "subject": {"reference": f"Patient/{SBRT['context']['patientId']}"},
        "effectiveDateTime": "2024-02-14",
        "valueCodeableConcept": {"coding": [value]},
    }


def test_the_reference_chart_gets_the_card(client: FlaskClient) -> None:
    assert TRIAL in cards(client, SBRT)
    assert TRIAL not in cards(
        client, without_metastasis_conditions()
    )  # no metastasis documented: not considered


def test_an_m1_observation_alone_documents_metastatic_disease(client: FlaskClient) -> None:
    request = without_metastasis_conditions()
    request["prefetch"]["observations"]["entry"].append({"resource": m_category("m1", CM1)})
    card = cards(client, request)[TRIAL]
    metastatic = [
        c
        for c in card["extension"]["org.trialmatch.eligibility"]["criteria"]
        if "Observation/m1" in c.get("evidence", ())
    ]
    assert metastatic and all(c["outcome"] == "met" for c in metastatic)


def test_an_m1_in_the_cancer_s_stage_documents_metastatic_disease(client: FlaskClient) -> None:
    request = without_metastasis_conditions()
    for entry in request["prefetch"]["conditions"]["entry"]:
        if entry["resource"]["id"] == KIDNEY_CANCER:
            entry["resource"]["stage"] = [{"summary": {"coding": [CM1]}}]
    card = cards(client, request)[TRIAL]
    cited = [
        c
        for c in card["extension"]["org.trialmatch.eligibility"]["criteria"]
        if c.get("reason", "").startswith("M1 in the stage of")
    ]
    assert cited and all(f"Condition/{KIDNEY_CANCER}" in c["evidence"] for c in cited)


def test_a_stage_group_iv_alone_is_not_metastatic_disease(client: FlaskClient) -> None:
    """AJCC kidney stage IV includes T4 any N M0: a stage group (as mCODE writes it) documents nothing."""
    request = without_metastasis_conditions()
    stage_iv = {"system": AJCC, "code": "4", "display": "Stage IV"}
    for entry in request["prefetch"]["conditions"]["entry"]:
        if entry["resource"]["id"] == KIDNEY_CANCER:
            entry["resource"]["stage"] = [{"summary": {"coding": [stage_iv]}}]
    m0 = {"system": SNOMED, "code": "1229901006", "display": "American Joint Committee on Cancer cM0"}
    request["prefetch"]["observations"]["entry"].append({"resource": m_category("m0", m0)})
    assert cards(client, request) == {}


@pytest.mark.parametrize(
    "deceased", [{"deceasedBoolean": True}, {"deceasedDateTime": "2026-11-02T08:00:00Z"}]
)
def test_a_deceased_patient_gets_no_trial_card(client: FlaskClient, deceased: dict[str, Any]) -> None:
    request = copy.deepcopy(SBRT)
    request["prefetch"]["patient"].update(deceased)
    assert cards(client, request) == {}
    request["prefetch"]["patient"]["deceasedBoolean"] = False
    request["prefetch"]["patient"].pop("deceasedDateTime", None)
    assert TRIAL in cards(client, request)
