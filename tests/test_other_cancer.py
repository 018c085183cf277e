"""A trial for another cancer is added by writing mapping files, not Python: the catalog of
tests/data/other-cancer (metastatic breast cancer, generic operators only), on top of the shared vocabulary
with every kidney-specific value set removed, loads, compiles and matches through the real service."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest_facts import RXNORM_URI, SNOMED_URI, concept, lab, observation, patient, quantity
from flask import Flask

from cds_service.catalog import load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.domains import kidney
from cds_service.engine.evaluate import Engine
from cds_service.hooks import check_services
from cds_service.verdicts import NO_TREATMENT_HISTORY

HERE = Path(__file__).resolve().parent / "data" / "other-cancer"
TODAY = date(2026, 11, 21)
KIDNEY_WORDS = ("kidney", "rcc", "nephrectomy")


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    """Shared vocabulary (analytes, ingredients, value sets without any kidney-specific one) + the breast
    cancer trial, value set and service."""
    folder = tmp_path / "catalog"
    (folder / "valuesets").mkdir(parents=True)
    for name in ("analytes.yaml", "medications.yaml"):
        shutil.copy(DEFAULT_MAPPINGS_DIR / name, folder / name)
    for path in (DEFAULT_MAPPINGS_DIR / "valuesets").glob("*.yaml"):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        document["valuesets"] = [
            vs for vs in document["valuesets"] if not any(word in vs["id"] for word in KIDNEY_WORDS)
        ]
        (folder / "valuesets" / path.name).write_text(yaml.safe_dump(document), encoding="utf-8")
    shutil.copy(HERE / "valuesets" / "breast.yaml", folder / "valuesets" / "breast.yaml")
    shutil.copytree(HERE / "trials", folder / "trials")
    shutil.copy(HERE / "services.yaml", folder / "services.yaml")
    return folder


def breast_cancer_chart(ecog: int = 0, treated: bool = True) -> list[dict[str, Any]]:
    """A woman with metastatic breast cancer, on pembrolizumab since her lung metastases when `treated`."""

    def condition(cid: str, code: str) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "id": cid,
            "code": concept(SNOMED_URI, code),
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2025-06-01",
        }

    normal = {"low": quantity(0.6, "mg/dL"), "high": quantity(1.2, "mg/dL")}
    pembrolizumab = {
        "resourceType": "MedicationStatement",
        "id": "pembro",
        "status": "active",
        "medicationCodeableConcept": concept(RXNORM_URI, "1657750"),  # pembrolizumab 25 MG/ML injection
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2025-07-01"},
    }
    return [
        patient("p1", birth="1970-03-01", gender="female"),
        condition("breast", "254837009"),  # Malignant neoplasm of breast
        condition("lung-mets", "94391008"),  # Secondary malignant neoplasm of lung
        observation("ecog", "89247-1", "2026-11-10", valueInteger=ecog),
        lab("cr", "2160-0", 0.9, "mg/dL", referenceRange=[normal]),
        lab("bili", "1975-2", 0.7, "mg/dL", referenceRange=[{"high": quantity(1.2, "mg/dL")}]),
        lab("plt", "777-3", 250, "10*3/uL"),
        *([pembrolizumab] if treated else []),
    ]


def test_the_catalog_has_no_kidney_value_set_and_uses_no_kidney_operator(catalog_dir: Path) -> None:
    catalog = load_catalog(catalog_dir)
    check_services(catalog.services)
    engine = Engine(catalog)
    assert not any(word in vs for vs in catalog.terminology.valuesets for word in KIDNEY_WORDS)
    assert not engine.read_plan.needs.valuesets & {kidney.KIDNEY_CANCER, kidney.NEPHRECTOMY}
    assert engine.read_plan.resource_types == {
        "Patient",
        "Condition",
        "Observation",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "Medication",
    }  # no rule reads a Procedure


def hook(app: Flask, chart: list[dict[str, Any]]) -> list[dict[str, Any]]:
    searchset = {"resourceType": "Bundle", "type": "searchset"}
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in chart:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    prefetch: dict[str, Any] = {"patient": by_type["Patient"][0]}
    for key, rtype in (
        ("conditions", "Condition"),
        ("observations", "Observation"),
        ("medicationStatements", "MedicationStatement"),
        ("medicationRequests", "MedicationRequest"),
        ("medicationAdministrations", "MedicationAdministration"),
        ("procedures", "Procedure"),
    ):
        prefetch[key] = {**searchset, "entry": [{"resource": r} for r in by_type.get(rtype, [])]}
    body = {
        "hook": "patient-view",
        "hookInstance": "5b0a3e52-33a0-4c36-9e0b-6c5f2f8a7d01",
        "context": {"userId": "Practitioner/onc-1", "patientId": "p1"},
        "prefetch": prefetch,
    }
    response = app.test_client().post("/cds-services/breast-trials", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def test_a_breast_cancer_patient_gets_the_card_through_the_real_service(make_sandbox_app, catalog_dir: Path):
    app = make_sandbox_app(MAPPINGS_DIR=str(catalog_dir), TODAY=TODAY.isoformat())
    (card,) = hook(app, breast_cancer_chart())
    eligibility = card["extension"]["org.trialmatch.eligibility"]
    assert (eligibility["nctId"], eligibility["verdict"]) == ("NCT99000001", "likely-eligible")
    outcomes = {c["id"]: c["outcome"] for c in eligibility["criteria"]}
    assert outcomes == {
        "age": "met",
        "ecog": "met",
        "labs": "met",
        "prior-lines": "met",
        "consent": "clinician",
        "brain-metastases": "met",
        "other-cancer": "met",
    }
    assert hook(app, breast_cancer_chart(ecog=2)) == []  # ECOG 2: not met, no card


def test_with_no_systemic_therapy_recorded_the_lines_are_to_check(make_sandbox_app, catalog_dir: Path):
    app = make_sandbox_app(MAPPINGS_DIR=str(catalog_dir), TODAY=TODAY.isoformat())
    (card,) = hook(app, breast_cancer_chart(treated=False))
    eligibility = card["extension"]["org.trialmatch.eligibility"]
    assert eligibility["verdict"] == "possibly-eligible"
    (lines,) = [c for c in eligibility["criteria"] if c["id"] == "prior-lines"]
    assert (lines["outcome"], lines["reason"]) == ("unknown", NO_TREATMENT_HISTORY)
    assert "No systemic therapy is recorded" in card["detail"]


def test_a_kidney_cancer_patient_gets_no_card_from_it(make_sandbox_app, catalog_dir: Path):
    app = make_sandbox_app(MAPPINGS_DIR=str(catalog_dir), TODAY=TODAY.isoformat())
    kidney_chart = [r for r in breast_cancer_chart() if r["id"] != "breast"]
    kidney_chart.append(
        {
            "resourceType": "Condition",
            "id": "rcc",
            "code": concept("http://hl7.org/fhir/sid/icd-10-cm", "C64.1"),
            "subject": {"reference": "Patient/p1"},
        }
    )
    assert hook(app, kidney_chart) == []
