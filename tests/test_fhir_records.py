"""Reading raw FHIR JSON: selection before validation, per-resource validation, references, medications."""

from __future__ import annotations

import logging
from datetime import date

import pytest
from conftest_facts import LOINC_URI, RXNORM_URI, concept, condition, lab, observation, patient

from cds_service.fhir_records import as_date, read_records
from cds_service.terminology import ICD10CM, LOINC, RXNORM

WANTED = frozenset({(LOINC, "2160-0"), (LOINC, "89247-1")})


def test_bundles_are_unwrapped_and_unwanted_observations_are_not_read():
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": patient()},
            {"resource": lab("cr", "2160-0", 1.0, "mg/dL")},
            {"resource": lab("glucose", "2345-7", 99, "mg/dL")},
            {"resource": {"resourceType": "Encounter", "id": "e1", "status": "finished"}},
            {
                "resource": {
                    "resourceType": "Bundle",
                    "entry": [{"resource": lab("cr2", "2160-0", 1.1, "mg/dL")}],
                }
            },
        ],
    }
    records = read_records([bundle], WANTED, "p1")
    assert [p.ref for p in records.patients] == ["Patient/p1"]
    assert sorted(o.ref for o in records.observations) == ["Observation/cr", "Observation/cr2"]


def test_invalid_resource_is_skipped_and_logged_by_reference_only(caplog):
    bad = lab("bad", "2160-0", 1.0, "mg/dL") | {
        "valueQuantity": {"value": "lots"},
        "note": [{"text": "secret"}],
    }
    good = lab("good", "2160-0", 1.0, "mg/dL")
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        records = read_records([bad, good, "garbage", 42, None, {"no": "type"}], WANTED)
    assert records.skipped == ("Observation/bad",)
    assert [o.ref for o in records.observations] == ["Observation/good"]
    assert "Observation/bad" in caplog.text
    assert "secret" not in caplog.text and "lots" not in caplog.text
    assert {r.name for r in caplog.records} == {"cds_service.fhir"}


def test_resources_about_another_patient_are_ignored():
    mine = lab("a", "2160-0", 1.0, "mg/dL")
    theirs = lab("b", "2160-0", 2.0, "mg/dL", subject="Patient/p2")
    absolute = lab("c", "2160-0", 1.2, "mg/dL", subject="https://ehr.example/fhir/Patient/p1")
    records = read_records([patient("p1"), patient("p2"), mine, theirs, absolute], WANTED, "p1")
    assert sorted(o.ref for o in records.observations) == ["Observation/a", "Observation/c"]
    assert [p.ref for p in records.patients] == ["Patient/p1"]


def test_patient_full_url_is_an_alias_of_the_patient():
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": "urn:uuid:1234", "resource": patient("p1")},
            {"resource": lab("a", "2160-0", 1.0, "mg/dL", subject="urn:uuid:1234")},
            {"resource": lab("b", "2160-0", 1.0, "mg/dL", subject="urn:uuid:9999")},
        ],
    }
    assert [o.ref for o in read_records([bundle], WANTED, "p1").observations] == ["Observation/a"]


def test_icd10_oid_form_is_normalised():
    res = condition("c1", "urn:oid:2.16.840.1.113883.6.90", "C64.1")
    assert read_records([res], WANTED).conditions[0].code.codes == frozenset({(ICD10CM, "C641")})


def test_condition_onset_from_period_and_recorded_date():
    res = condition(
        "c1", ICD10CM, "C64.1", onset=None, onsetPeriod={"start": "2024-03-05"}, recordedDate="2024-04-01"
    )
    rec = read_records([res], WANTED).conditions[0]
    assert (rec.onset, rec.recorded) == (date(2024, 3, 5), date(2024, 4, 1))


def test_histology_extension_is_read():
    ext = {
        "url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
        "valueCodeableConcept": concept("http://snomed.info/sct", "30546008"),
    }
    rec = read_records([condition("c1", ICD10CM, "C64.9", extension=[ext])], WANTED).conditions[0]
    assert rec.histology == frozenset({("http://snomed.info/sct", "30546008")})


def _statement(**medication):
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
    use = read_records([res], WANTED).medication_uses[0]
    assert use.medication.codes == frozenset({(RXNORM, "1657191")})
    assert use.medication.text == "Opdivo"
    assert use.start == date(2026, 9, 1)


def test_bundled_medication_is_resolved_by_reference_and_full_url():
    med = {"resourceType": "Medication", "id": "m9", "code": {"text": "Inlyta 5 mg tablet"}}
    by_ref = _statement(medicationReference={"reference": "Medication/m9"})
    by_url = _statement(medicationReference={"reference": "urn:uuid:abc"}) | {"id": "ms2"}
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"fullUrl": "urn:uuid:abc", "resource": med}, {"resource": by_ref}, {"resource": by_url}],
    }
    uses = read_records([bundle], WANTED).medication_uses
    assert [u.medication.text for u in uses] == ["Inlyta 5 mg tablet", "Inlyta 5 mg tablet"]


def test_unresolvable_medication_reference_keeps_only_its_display():
    res = _statement(medicationReference={"reference": "Medication/missing", "display": "sunitinib"})
    use = read_records([res], WANTED).medication_uses[0]
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
    uses = read_records([request, plain], WANTED).medication_uses
    assert [(u.start, u.end) for u in uses] == [
        (date(2026, 1, 5), date(2026, 6, 30)),
        (date(2026, 1, 2), None),
    ]


def test_observation_dates_fall_back_in_order():
    period = observation("a", "2160-0", valueInteger=1) | {"effectivePeriod": {"start": "2026-10-01"}}
    del period["effectiveDateTime"]
    issued = observation("b", "2160-0", valueInteger=1) | {"issued": "2026-10-02T08:00:00Z"}
    del issued["effectiveDateTime"]
    dated = {o.ref: o.when for o in read_records([period, issued], WANTED).observations}
    assert dated == {"Observation/a": date(2026, 10, 1), "Observation/b": date(2026, 10, 2)}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024", date(2024, 1, 1)),
        ("2024-05", date(2024, 5, 1)),
        ("2024-05-06", date(2024, 5, 6)),
        ("garbage", None),
        (None, None),
    ],
)
def test_partial_dates_read_as_their_first_day(raw, expected):
    assert as_date(raw) == expected


def test_observation_selected_by_any_coding():
    res = observation("o1", "2160-0", valueQuantity={"value": 1, "unit": "mg/dL"})
    res["code"]["coding"].insert(0, {"system": "http://acme.example/lab", "code": "CREAT"})
    assert len(read_records([res], WANTED).observations) == 1
    res["code"] = {"coding": [{"system": LOINC_URI + "/", "code": "89247-1"}]}
    assert len(read_records([res], WANTED).observations) == 1
