"""Reading raw FHIR JSON (cds_service.fhir): selection before validation, validation of what is read only,
references, dates and medications, each datatype read by one function."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pytest
from conftest_facts import (
    LOINC_URI,
    RXNORM_URI,
    SNOMED_URI,
    concept,
    condition,
    facts_of,
    lab,
    load_terminology,
    med_statement,
    observation,
    patient,
    read_everything,
)

from cds_service.fhir import reader, records
from cds_service.fhir.concepts import day
from cds_service.fhir.reader import Chart, read_chart
from cds_service.terminology import CPT, ICD10CM, RXNORM

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
SELECTION = read_everything(TERMINOLOGY).selection


def read(resources: list[Any], patient_id: str | None = None) -> Chart:
    return read_chart(resources, SELECTION, patient_id)


def refs(chart: Chart, resource_type: str) -> list[str]:
    return [record.ref for record in chart.records(resource_type)]


@pytest.fixture
def validated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """References of the resources the reader validates, in order."""
    seen: list[str] = []
    original = reader.is_valid

    def spy(resource: Any, ref: str) -> bool:
        seen.append(ref)
        return original(resource, ref)

    monkeypatch.setattr(reader, "is_valid", spy)
    return seen


# --- selection ----------------------------------------------------------------------------------------------


def test_bundles_are_unwrapped_and_unwanted_observations_and_types_are_not_read(validated: list[str]):
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": patient()},
            {"resource": lab("cr", "2160-0", 1.0, "mg/dL")},
            {"resource": lab("not-read", "1234-5", 99, "mg/dL")},  # a LOINC code no analyte has
            {"resource": {"resourceType": "Encounter", "id": "e1", "status": "finished"}},
            {
                "resource": {
                    "resourceType": "Bundle",
                    "entry": [{"resource": lab("cr2", "2160-0", 1.1, "mg/dL")}],
                }
            },
        ],
    }
    chart = read([bundle], "p1")
    assert refs(chart, "Patient") == ["Patient/p1"]
    assert refs(chart, "Observation") == ["Observation/cr", "Observation/cr2"]
    assert validated == ["Patient/p1", "Observation/cr", "Observation/cr2"]


def test_invalid_resource_is_skipped_and_logged_by_reference_only(caplog):
    bad = lab("bad", "2160-0", 1.0, "mg/dL") | {
        "valueQuantity": {"value": "lots"},
        "note": [{"text": "secret"}],
    }
    good = lab("good", "2160-0", 1.0, "mg/dL")
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        chart = read([bad, good, "garbage", 42, None, {"no": "type"}])
        assert refs(chart, "Observation") == ["Observation/good"]
    assert chart.skipped() == ("Observation/bad",)
    assert "Observation/bad" in caplog.text
    assert "secret" not in caplog.text and "lots" not in caplog.text
    assert {r.name for r in caplog.records} == {"cds_service.fhir"}


def test_resources_about_another_patient_are_ignored():
    mine = lab("a", "2160-0", 1.0, "mg/dL")
    theirs = lab("b", "2160-0", 2.0, "mg/dL", subject="Patient/p2")
    absolute = lab("c", "2160-0", 1.2, "mg/dL", subject="https://ehr.example/fhir/Patient/p1")
    chart = read([patient("p1"), patient("p2"), mine, theirs, absolute], "p1")
    assert refs(chart, "Observation") == ["Observation/a", "Observation/c"]
    assert refs(chart, "Patient") == ["Patient/p1"]


def test_patient_full_url_is_an_alias_of_the_patient():
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": "urn:uuid:1234", "resource": patient("p1")},
            {"resource": lab("a", "2160-0", 1.0, "mg/dL", subject="urn:uuid:1234")},
            {"resource": lab("b", "2160-0", 1.0, "mg/dL", subject="urn:uuid:9999")},
        ],
    }
    assert refs(read([bundle], "p1"), "Observation") == ["Observation/a"]


def test_observation_selected_by_any_coding():
    res = observation("o1", "2160-0", valueQuantity={"value": 1, "unit": "mg/dL"})
    res["code"]["coding"].insert(0, {"system": "http://acme.example/lab", "code": "CREAT"})
    assert len(read([res]).of("Observation")) == 1
    res["code"] = {"coding": [{"system": LOINC_URI + "/", "code": "89247-1"}]}
    assert len(read([res]).of("Observation")) == 1


# --- records ------------------------------------------------------------------------------------------------


def test_icd10_oid_form_is_normalised():
    res = condition("c1", "urn:oid:2.16.840.1.113883.6.90", "C64.1")
    assert read([res]).records("Condition")[0].code.codes == frozenset({(ICD10CM, "C641")})


def test_condition_onset_from_period_and_recorded_date():
    res = condition(
        "c1", ICD10CM, "C64.1", onset=None, onsetPeriod={"start": "2024-03-05"}, recordedDate="2024-04-01"
    )
    rec = read([res]).records("Condition")[0]
    assert (rec.onset, rec.recorded) == (date(2024, 3, 5), date(2024, 4, 1))


def test_histology_extension_is_read():
    ext = {"url": records.HISTOLOGY_EXTENSION, "valueCodeableConcept": concept(SNOMED_URI, "30546008")}
    rec = read([condition("c1", ICD10CM, "C64.9", extension=[ext])]).records("Condition")[0]
    assert rec.histology == frozenset({(SNOMED_URI, "30546008")})


def _statement(**medication: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-09-01",
        **medication,
    }


def test_contained_medication_is_resolved():
    res = _statement(
        medicationReference={"reference": "#m1"},
        contained=[
            {"resourceType": "Medication", "id": "m1", "code": concept(RXNORM_URI, "1657191", "Opdivo")}
        ],
    )
    use = read([res]).records("MedicationStatement")[0]
    assert use.medication.codes == frozenset({(RXNORM, "1657191")})
    assert use.medication.text == "Opdivo"
    assert use.start == date(2026, 9, 1)


def test_bundled_medication_is_resolved_by_reference_and_full_url_and_validated_once(validated: list[str]):
    med = {"resourceType": "Medication", "id": "m9", "code": {"text": "Inlyta 5 mg tablet"}}
    by_ref = _statement(medicationReference={"reference": "Medication/m9"})
    by_url = _statement(medicationReference={"reference": "urn:uuid:abc"}) | {"id": "ms2"}
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"fullUrl": "urn:uuid:abc", "resource": med}, {"resource": by_ref}, {"resource": by_url}],
    }
    uses = read([bundle]).records("MedicationStatement")
    assert [u.medication.text for u in uses] == ["Inlyta 5 mg tablet", "Inlyta 5 mg tablet"]
    assert validated.count("Medication/m9") == 1


def test_an_invalid_bundled_medication_leaves_the_reference_display():
    med = {"resourceType": "Medication", "id": "m9", "code": {"text": 5}}
    use = _statement(medicationReference={"reference": "Medication/m9", "display": "Inlyta"})
    chart = read([med, use])
    assert chart.records("MedicationStatement")[0].medication.text == "Inlyta"
    assert chart.skipped() == ("Medication/m9",)


def test_unresolvable_medication_reference_keeps_only_its_display():
    res = _statement(medicationReference={"reference": "Medication/missing", "display": "sunitinib"})
    use = read([res]).records("MedicationStatement")[0]
    assert use.medication.codes == frozenset() and use.medication.text == "sunitinib"


def test_request_dates_from_dosage_bounds_then_authored_on():
    request = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": concept(RXNORM_URI, "1242999"),
        "authoredOn": "2026-01-02",
        "dosageInstruction": [
            {"timing": {"repeat": {"boundsPeriod": {"start": "2026-01-05", "end": "2026-06-30"}}}}
        ],
    }
    plain = request | {"id": "mr2", "dosageInstruction": []}
    uses = read([request, plain]).records("MedicationRequest")
    assert [(u.start, u.end) for u in uses] == [
        (date(2026, 1, 5), date(2026, 6, 30)),
        (date(2026, 1, 2), None),
    ]


def test_observation_dates_fall_back_in_order():
    period = observation("a", "2160-0", valueInteger=1) | {"effectivePeriod": {"start": "2026-10-01"}}
    del period["effectiveDateTime"]
    issued = observation("b", "2160-0", valueInteger=1) | {"issued": "2026-10-02T08:00:00Z"}
    del issued["effectiveDateTime"]
    chart = read([period, issued])
    assert {o.ref: o.when for o in chart.records("Observation")} == {
        "Observation/a": date(2026, 10, 1),
        "Observation/b": date(2026, 10, 2),
    }
    assert [c.day for c in chart.of("Observation")] == [date(2026, 10, 1), date(2026, 10, 2)]  # raw, the same


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024", date(2024, 1, 1)),
        ("2024-05", date(2024, 5, 1)),
        ("2024-05-06", date(2024, 5, 6)),
        ("2024-05-06T23:30:00+02:00", date(2024, 5, 6)),
        ("garbage", None),
        (None, None),
        (20240506, None),
    ],
)
def test_partial_dates_read_as_their_first_day(raw, expected):
    assert day(raw) == expected


def test_a_deceased_patient_is_read_from_either_element():
    assert read([patient("p1") | {"deceasedBoolean": True}]).records("Patient")[0].deceased
    assert read([patient("p1") | {"deceasedDateTime": "2026-10-01"}]).records("Patient")[0].deceased
    assert not read([patient("p1") | {"deceasedBoolean": False}]).records("Patient")[0].deceased


# --- only the elements read are validated -------------------------------------------------------------------

MALFORMED_IDENTIFIER = {"identifier": [{"system": 42, "value": ["not", "a", "string"]}], "performer": "x"}
BAD_INTERPRETATION = {"interpretation": [{"coding": [{"system": 42, "code": ["H"]}]}]}
GOOD_INTERPRETATION = {"interpretation": [{"coding": [{"system": "urn:x", "code": "H"}]}]}


def test_an_invalid_unread_element_does_not_skip_the_resource(caplog):
    unread_bad = lab("unread", "2160-0", 1.3, "mg/dL") | MALFORMED_IDENTIFIER
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        [record] = read([unread_bad]).records("Observation")
    assert record.quantity is not None and record.quantity.value == 1.3
    assert caplog.text == ""


def test_an_invalid_read_element_still_skips_the_resource():
    read_bad = lab("read", "2160-0", 1.3, "mg/dL") | {"valueQuantity": {"value": "high", "unit": "mg/dL"}}
    two_values = lab("two", "2160-0", 1.3, "mg/dL") | {"valueString": "1.3 mg/dL"}
    chart = read([read_bad, two_values])
    assert chart.records("Observation") == []
    assert chart.skipped() == ("Observation/read", "Observation/two")


def test_a_lab_value_is_validated_with_its_value_and_range_only():
    bad = lab("bad-flag", "2160-0", 1.3, "mg/dL") | BAD_INTERPRETATION
    flagged = lab("flagged", "2160-0", 1.4, "mg/dL") | GOOD_INTERPRETATION
    chart = read([bad, flagged])
    assert [(r.ref, r.quantity.value) for r in chart.records("Observation")] == [
        ("Observation/bad-flag", 1.3),
        ("Observation/flagged", 1.4),
    ]
    assert all(r.interpretation == frozenset() for r in chart.records("Observation"))  # not read, not kept
    assert chart.skipped() == ()


def test_an_observation_whose_code_another_kind_reads_is_validated_with_that_kind_s_elements_too():
    both = lab("both", "2160-0", 1.3, "mg/dL") | BAD_INTERPRETATION
    both["code"]["coding"].append({"system": LOINC_URI, "code": "89247-1"})  # ECOG reads the interpretation
    flagged = observation("ecog", "89247-1", valueInteger=1) | GOOD_INTERPRETATION
    chart = read([both, flagged])
    assert chart.records("Observation")[0].interpretation == frozenset({("urn:x", "H")})
    assert chart.skipped() == ("Observation/both",)


# --- only coded resources something can read are validated -------------------------------------------------


def procedure(pid: str, code: str, system: str = SNOMED_URI) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "code": concept(system, code),
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2025-03-01",
    }


def med_request(mid: str, **medication: object) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-10-01",
        **medication,
    }


def medication(mid: str, rxnorm: str, text: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": concept(RXNORM_URI, rxnorm, text)}


HISTOLOGY = {
    "url": records.HISTOLOGY_EXTENSION,
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


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def test_the_chosen_codes_are_what_the_tests_say():
    assert not TERMINOLOGY.memberships([(ICD10CM, "C189"), (ICD10CM, "D039"), (SNOMED_URI, "6072007")])
    assert not TERMINOLOGY.memberships([(SNOMED_URI, "77477000"), (CPT, "55866")])
    assert not TERMINOLOGY.ingredients_for([(RXNORM_URI, "26225"), (RXNORM_URI, "17767")], "amlodipine")


def test_only_readable_resources_are_validated(validated: list[str]):
    facts = facts_of(IRRELEVANT + RELEVANT, TERMINOLOGY, TODAY, "p1")
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
    assert {m.ref: m.ingredients for m in facts.medications} == {
        "MedicationStatement/sunitinib": {"sunitinib"},
        "MedicationStatement/sutent-by-name": {"sunitinib"},
        "MedicationRequest/contained": {"pembrolizumab"},
        "MedicationRequest/bundled": {"pembrolizumab"},
        "MedicationRequest/display-only": {"sunitinib"},
    }


def test_an_invalid_irrelevant_resource_is_not_even_reported(validated: list[str]):
    bad = condition("bad-irrelevant", SNOMED_URI, "6072007", onsetDateTime="not a date")
    facts = facts_of([patient("p1"), bad], TERMINOLOGY, TODAY, "p1")
    assert (validated, facts.skipped, facts.conditions) == (["Patient/p1"], (), ())


def test_a_type_no_rule_reads_is_not_even_selected(validated: list[str]):
    plan = read_everything(TERMINOLOGY)
    only_conditions = plan.selection.__class__(
        frozenset({"Patient", "Condition"}), plan.selection.observation_elements, plan.selection.readable
    )
    chart = read_chart(IRRELEVANT + RELEVANT + [lab("cr", "2160-0", 1.0, "mg/dL")], only_conditions, "p1")
    assert set(chart.candidates) == {"Patient", "Condition"}


@pytest.mark.parametrize(
    ("subject", "read_as_the_patient_s"),
    [
        ({"reference": "Patient/p1", "display": "someone"}, True),
        ({"identifier": {"value": "p1"}}, True),  # by identifier only: cannot be told, kept as before
        ({"reference": 5}, False),
        ("Patient/p1", False),
        ({"reference": "Patient/p2"}, False),
    ],
)
def test_a_subject_that_is_not_a_reference_to_the_patient_is_not_the_patient_s(
    subject, read_as_the_patient_s
):
    value = lab("cr", "2160-0", 1.0, "mg/dL") | {"subject": subject}
    assert bool(read([patient("p1"), value], "p1").records("Observation")) is read_as_the_patient_s
