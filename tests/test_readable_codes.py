"""With `readable_only` (the pipeline's setting), Conditions, Procedures and medications whose codes nothing
can read are not validated; every kind of readable one still is."""

from __future__ import annotations

from datetime import date

import pytest
from conftest_facts import (
    RXNORM_URI,
    SNOMED_URI,
    concept,
    condition,
    load_terminology,
    med_statement,
    patient,
)

from cds_service import fhir_records
from cds_service.facts import build_facts, is_malignancy_code
from cds_service.terminology import CPT, ICD10CM

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()


def procedure(pid: str, code: str, system: str = SNOMED_URI) -> dict:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "code": concept(system, code),
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2025-03-01",
    }


def med_request(mid: str, **medication: object) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-10-01",
        **medication,
    }


def medication(mid: str, rxnorm: str, text: str) -> dict:
    return {"resourceType": "Medication", "id": mid, "code": concept(RXNORM_URI, rxnorm, text)}


HISTOLOGY = {
    "url": fhir_records.HISTOLOGY_EXTENSION,
    "valueCodeableConcept": concept("http://terminology.hl7.org/CodeSystem/icd-o-3", "8310/3"),
}

IRRELEVANT = [
    condition("bleeding", SNOMED_URI, "6072007"),
    condition("hypertension", SNOMED_URI, "38341003"),
    procedure("ct", "77477000"),
    procedure("prostatectomy", "55866", CPT),  # laparoscopic radical prostatectomy: in no value set
    med_statement("ondansetron", "26225", "2026-01-01", text="ondansetron"),
    med_request("amlodipine-order", medicationReference={"reference": "Medication/amlodipine"}),
    medication("amlodipine", "17767", "amlodipine"),
    medication("unreferenced-pembro", "1657746", "Pembrolizumab 50 MG Injection"),
]

RELEVANT = [
    patient("p1"),
    condition("rcc", ICD10CM, "C64.9"),  # in a value set
    condition("colon", ICD10CM, "C18.9"),  # no value set, but ICD-10-CM C00-D09: another cancer
    condition("in-situ", ICD10CM, "D03.9"),
    condition("histology-only", SNOMED_URI, "6072007", extension=[HISTOLOGY]),
    procedure("nephrectomy", "116033007"),
    procedure("nephrectomy-cpt", "50545", CPT),
    procedure("nephrectomy-icd10pcs", "0TT10ZZ", "urn:oid:2.16.840.1.113883.6.4"),  # the ICD-10-PCS OID
    med_statement("sunitinib", "357977", "2026-01-01"),  # RxNorm code -> ingredient
    med_statement("sutent-by-name", None, "2026-01-01", text="Sutent 50 mg"),  # name -> ingredient
    med_request(
        "contained",
        contained=[medication("m1", "1657746", "Pembrolizumab 50 MG Injection")],
        medicationReference={"reference": "#m1"},
    ),
    med_request("bundled", medicationReference={"reference": "Medication/pembro"}),
    medication("pembro", "1657746", "Pembrolizumab 50 MG Injection"),
    med_request("display-only", medicationReference={"reference": "Medication/absent", "display": "Sutent"}),
    # a code of an unusual shape: validation decides (and reports it as skipped)
    {**condition("odd", ICD10CM, "C64.9"), "code": "not a concept"},
]


def ref(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


@pytest.fixture
def validated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """References of the resources `fhir_records` validates."""
    seen: list[str] = []
    original = fhir_records._validated

    def spy(raw, *args):  # type: ignore[no-untyped-def]
        seen.append(raw.ref)
        return original(raw, *args)

    monkeypatch.setattr(fhir_records, "_validated", spy)
    return seen


def test_the_chosen_codes_are_what_the_tests_say():
    assert not TERMINOLOGY.memberships([(ICD10CM, "C189"), (ICD10CM, "D039"), (SNOMED_URI, "6072007")])
    assert not TERMINOLOGY.memberships([(SNOMED_URI, "77477000"), (CPT, "55866")])
    assert not TERMINOLOGY.ingredients_for([(RXNORM_URI, "26225"), (RXNORM_URI, "17767")], "amlodipine")


def test_only_readable_resources_are_validated(validated: list[str]):
    facts = build_facts(IRRELEVANT + RELEVANT, TERMINOLOGY, TODAY, "p1", readable_only=True)
    assert sorted(validated) == sorted(ref(r) for r in RELEVANT)
    assert facts.skipped == ("Condition/odd",)
    assert {c.ref for c in facts.conditions} == {
        "Condition/rcc",
        "Condition/colon",
        "Condition/in-situ",
        "Condition/histology-only",
    }
    assert sorted(p.ref for p in facts.procedures) == [
        "Procedure/nephrectomy",
        "Procedure/nephrectomy-cpt",
        "Procedure/nephrectomy-icd10pcs",
    ]
    ingredients = {m.ref: m.ingredients for m in facts.medications}
    assert ingredients == {
        "MedicationStatement/sunitinib": {"sunitinib"},
        "MedicationStatement/sutent-by-name": {"sunitinib"},
        "MedicationRequest/contained": {"pembrolizumab"},
        "MedicationRequest/bundled": {"pembrolizumab"},
        "MedicationRequest/display-only": {"sunitinib"},
    }


def test_an_invalid_irrelevant_resource_is_not_even_reported(validated: list[str]):
    bad = condition("bad-irrelevant", SNOMED_URI, "6072007", onsetDateTime="not a date")
    facts = build_facts([patient("p1"), bad], TERMINOLOGY, TODAY, "p1", readable_only=True)
    assert (validated, facts.skipped, facts.conditions) == (["Patient/p1"], (), ())


def test_without_readable_only_everything_is_validated(validated: list[str]):
    build_facts(IRRELEVANT + RELEVANT, TERMINOLOGY, TODAY, "p1")
    assert sorted(validated) == sorted(ref(r) for r in IRRELEVANT + RELEVANT)


def test_the_rules_see_the_same_facts_either_way():
    """What any rule reads (value sets, ingredients, malignancy codes) is the same with and without."""
    full = build_facts(IRRELEVANT + RELEVANT, TERMINOLOGY, TODAY, "p1")
    read = build_facts(IRRELEVANT + RELEVANT, TERMINOLOGY, TODAY, "p1", readable_only=True)
    readable = [
        c
        for c in full.conditions
        if c.valuesets or c.histology or any(is_malignancy_code(*code) for code in c.codes)
    ]
    assert readable == list(read.conditions) and len(full.conditions) == len(readable) + 2
    assert read.therapy_lines == full.therapy_lines
    assert [m for m in full.medications if m.valuesets or m.ingredients] == list(read.medications)
    assert [p for p in full.procedures if p.valuesets] == list(read.procedures)
