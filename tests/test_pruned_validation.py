"""Only the elements the conversion reads are validated: an error elsewhere no longer skips a resource."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pytest
from conftest_facts import SNOMED_URI, concept, condition, lab
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from cds_service import fhir_records
from cds_service.fhir_records import RecencyWindows, read_records, read_records_lazily
from cds_service.terminology import LOINC

CREATININE = (LOINC, "2160-0")
WANTED = frozenset({CREATININE})
MALFORMED_IDENTIFIER = {"identifier": [{"system": 42, "value": ["not", "a", "string"]}], "performer": "x"}


def test_an_invalid_unread_element_does_not_skip_the_resource(caplog):
    unread_bad = lab("unread", "2160-0", 1.3, "mg/dL") | MALFORMED_IDENTIFIER
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        records = read_records([unread_bad], WANTED)
    assert records.skipped == ()
    [record] = records.observations
    assert record.ref == "Observation/unread"
    assert record.quantity is not None and record.quantity.value == 1.3
    assert caplog.text == ""


def test_an_invalid_read_element_still_skips_the_resource_and_logs_its_reference(caplog):
    read_bad = lab("read", "2160-0", 1.3, "mg/dL") | {"valueQuantity": {"value": "high", "unit": "mg/dL"}}
    two_values = lab("two", "2160-0", 1.3, "mg/dL") | {"valueString": "1.3 mg/dL"}
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        records = read_records([read_bad, two_values], WANTED)
    assert records.observations == ()
    assert records.skipped == ("Observation/read", "Observation/two")
    assert "Observation/read" in caplog.text and "Observation/two" in caplog.text
    assert "high" not in caplog.text


def test_lazily_read_observations_are_pruned_alike():
    windows = RecencyWindows(date(2026, 11, 21), {CREATININE: 30}, frozenset({"final"}))
    unread_bad = lab("unread", "2160-0", 1.3, "mg/dL") | MALFORMED_IDENTIFIER
    read_bad = lab("read", "2160-0", 1.3, "mg/dL") | {"valueQuantity": {"value": "high"}}
    _, candidates = read_records_lazily([unread_bad, read_bad], WANTED, None, windows)
    assert [c.ref for c in candidates] == ["Observation/unread", "Observation/read"]
    unread_record, read_record = (c.record() for c in candidates)
    assert unread_record is not None and unread_record.ref == "Observation/unread"
    assert read_record is None


ECOG = (LOINC, "89247-1")
BAD_INTERPRETATION = {"interpretation": [{"coding": [{"system": 42, "code": ["H"]}]}]}
GOOD_INTERPRETATION = {"interpretation": [{"coding": [{"system": "urn:x", "code": "H"}]}]}


def test_an_observation_wanted_for_lab_codes_only_is_validated_as_a_lab_value(caplog):
    bad = lab("bad-flag", "2160-0", 1.3, "mg/dL") | BAD_INTERPRETATION
    flagged = lab("flagged", "2160-0", 1.4, "mg/dL") | GOOD_INTERPRETATION
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        records = read_records([bad, flagged], WANTED, lab_codes=WANTED)
    assert records.skipped == ()
    assert [(r.ref, r.quantity.value if r.quantity else None) for r in records.observations] == [
        ("Observation/bad-flag", 1.3),
        ("Observation/flagged", 1.4),
    ]
    assert all(r.interpretation == frozenset() for r in records.observations)  # not read for a lab value
    assert caplog.text == ""


def test_an_observation_wanted_for_another_code_too_is_validated_whole():
    both = lab("both", "2160-0", 1.3, "mg/dL") | BAD_INTERPRETATION
    both["code"]["coding"].append({"system": "http://loinc.org", "code": "89247-1"})
    flagged = lab("flagged", "2160-0", 1.4, "mg/dL") | GOOD_INTERPRETATION
    assert read_records([both, flagged], WANTED, lab_codes=WANTED).skipped == ()  # ECOG is not wanted here
    records = read_records([both, flagged], WANTED | {ECOG}, lab_codes=WANTED)
    assert records.skipped == ("Observation/both",)  # wanted as a score too: its interpretation is read
    records = read_records([flagged], WANTED)
    assert records.observations[0].interpretation == frozenset({("urn:x", "H")})  # no lab codes: whole


def test_lazily_read_lab_values_are_pruned_alike():
    windows = RecencyWindows(date(2026, 11, 21), {CREATININE: 30}, frozenset({"final"}))
    bad = lab("bad-flag", "2160-0", 1.3, "mg/dL") | BAD_INTERPRETATION
    _, [candidate] = read_records_lazily([bad], WANTED, None, windows, lab_codes=WANTED)
    record = candidate.record()
    assert record is not None and record.quantity is not None and record.quantity.value == 1.3
    _, [candidate] = read_records_lazily([bad], WANTED, None, windows)
    assert candidate.record() is None


RANGE = [{"low": {"value": 0.7, "unit": "mg/dL"}, "high": {"value": 1.3, "unit": "mg/dL"}, "text": "0.7-1.3"}]
SHARED_ELEMENT_CASES = {
    "usual code and range": {"referenceRange": RANGE},
    "range not a list": {"referenceRange": RANGE[0]},
    "a null range": {"referenceRange": [None]},
    "a range with a bad value": {"referenceRange": [{"low": {"value": "low"}}]},
    "a range with an unknown element": {"referenceRange": [{"lowest": {"value": 1}}]},
    "a range as JSON text": {"referenceRange": ['{"high": {"value": 1.3}}']},
    "code with a bad coding": {"code": {"coding": {"system": "http://loinc.org", "code": "2160-0"}}},
    "code as JSON text": {"code": '{"coding": [{"system": "http://loinc.org", "code": "2160-0"}]}'},
    "code with an integer where text goes": {"code": {"text": 5}},
}


def test_equal_codes_and_ranges_of_two_observations_are_validated_once():
    first, second = (lab(oid, "2160-0", 1.3, "mg/dL", referenceRange=RANGE) for oid in ("first", "second"))
    models = [
        fhir_records._validated(
            fhir_records._Raw(r, "Observation", r["id"], None), fhir_records.LAB_VALUE_ELEMENTS, {}
        )
        for r in (first, second)  # as in two calls
    ]
    assert models[0].code is models[1].code
    assert models[0].referenceRange[0] is models[1].referenceRange[0]
    assert models[0].valueQuantity is not models[1].valueQuantity  # a patient's value is never shared


SUBJECT_CASES = {
    "a reference": {"subject": {"reference": "Patient/p1"}},
    "a reference with a display": {"subject": {"reference": "Patient/p1", "display": "someone"}},
    "a reference with an identifier": {"subject": {"identifier": {"value": "p1"}}},
    "an empty reference": {"subject": {"reference": ""}},
    "an unknown element": {"subject": {"ref": "Patient/p1"}},
    "a number as reference": {"subject": {"reference": 5}},
    "a reference as a string": {"subject": "Patient/p1"},
    "no subject": {"subject": None},
}


def as_fhir_resources_validates_it(model: Any, resource: dict[str, Any], elements: frozenset[str]) -> Any:
    """The resource pruned to `elements`, validated whole by fhir.resources and dumped; None if invalid."""
    try:
        return model.model_validate({k: v for k, v in resource.items() if k in elements}).model_dump()
    except ValidationError:
        return None


ONCE_VALIDATED_CASES = SHARED_ELEMENT_CASES | SUBJECT_CASES


@pytest.mark.parametrize("change", ONCE_VALIDATED_CASES.values(), ids=ONCE_VALIDATED_CASES.keys())
def test_elements_validated_once_give_what_fhir_resources_gives_for_the_whole_resource(change):
    resource = lab("once", "2160-0", 1.3, "mg/dL") | change
    elements = fhir_records.LAB_VALUE_ELEMENTS
    expected = as_fhir_resources_validates_it(Observation, resource, elements)
    raw = fhir_records._Raw(resource, "Observation", "Observation/once", None)
    subjects: dict = {}
    for _ in range(2):  # validated, then remembered (codes, ranges) or taken from the call's subjects
        model = fhir_records._validated(raw, elements, subjects)
        assert (None if model is None else model.model_dump()) == expected


def test_the_subject_is_validated_once_a_call_and_never_kept_for_the_next():
    windows = RecencyWindows(date(2026, 11, 21), {CREATININE: 30}, frozenset({"final"}))
    chart = [lab("first", "2160-0", 1.3, "mg/dL"), lab("second", "2160-0", 1.4, "mg/dL", when="2026-11-17")]
    subjects_of_each_call = []
    for _ in range(2):
        _, candidates = read_records_lazily(chart, WANTED, None, windows)
        first, second = (candidate.record() for candidate in candidates)
        assert first is not None and second is not None
        models = [fhir_records._validated(c._raw, c._elements, c._subjects) for c in candidates]
        assert models[0].subject is models[1].subject  # one Reference model for the whole call
        subjects_of_each_call.append(models[0].subject)
    assert subjects_of_each_call[0] is not subjects_of_each_call[1]  # the next call validates it again


def test_condition_status_codes_are_validated_once_and_give_what_fhir_resources_gives():
    statuses = {
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "verificationStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
        ),
    }
    bad = {"clinicalStatus": {"coding": {"code": "active"}}}
    elements = fhir_records.READ_ELEMENTS["Condition"]
    models = []
    for cid, change in (("one", statuses), ("two", statuses), ("bad", bad)):
        resource = condition(cid, SNOMED_URI, "254915003") | change
        expected = as_fhir_resources_validates_it(Condition, resource, elements)
        model = fhir_records._validated(fhir_records._Raw(resource, "Condition", cid, None), elements, {})
        assert (None if model is None else model.model_dump()) == expected
        models.append(model)
    assert models[0].clinicalStatus is models[1].clinicalStatus
    assert models[0].verificationStatus is models[1].verificationStatus
    assert models[2] is None
