"""Only the elements the conversion reads are validated: an error elsewhere no longer skips a resource."""

from __future__ import annotations

import logging
from datetime import date

from conftest_facts import lab

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
