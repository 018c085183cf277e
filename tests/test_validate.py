"""Validation (cds_service.fhir.validate): elements validated once per distinct JSON text give exactly what
fhir.resources gives for the whole (pruned) resource, and a patient's own values are never shared."""

from __future__ import annotations

from typing import Any

import pytest
from conftest_facts import SNOMED_URI, concept, condition, lab
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from cds_service.fhir import records, validate

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
    "a subject of the wrong shape": {"subject": {"reference": 5}},
}
LAB_ELEMENTS = records.with_extensions((*records.OBSERVATION_VALUE, "referenceRange"))  # as a lab is read


def pruned(resource: dict[str, Any], elements: frozenset[str]) -> dict[str, Any]:
    return {name: value for name, value in resource.items() if name in elements}


def fhir_resources_accepts(model: Any, resource: dict[str, Any]) -> bool:
    try:
        model.model_validate(resource)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("change", SHARED_ELEMENT_CASES.values(), ids=SHARED_ELEMENT_CASES.keys())
def test_elements_validated_once_give_what_fhir_resources_gives_for_the_whole_resource(change):
    resource = pruned(lab("once", "2160-0", 1.3, "mg/dL") | change, LAB_ELEMENTS)
    expected = fhir_resources_accepts(Observation, resource)
    for _ in range(2):  # validated, then remembered
        assert validate.is_valid(resource, "Observation/once") is expected


def test_equal_codes_and_ranges_are_validated_once_and_a_value_every_time(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    original = validate._validated_element.__wrapped__

    def counted(rtype: str, name: str, key: str) -> Any:
        calls.append(name)
        return original(rtype, name, key)

    monkeypatch.setattr(validate, "_validated_element", validate.lru_cache(maxsize=2048)(counted))
    for oid, value in (("first", 1.3), ("second", 1.4)):  # as in two calls
        assert validate.is_valid(
            pruned(lab(oid, "2160-0", value, "mg/dL", referenceRange=RANGE), LAB_ELEMENTS), oid
        )
    assert sorted(calls) == ["code", "referenceRange"]  # the second Observation's were remembered


def test_condition_status_codes_are_validated_once_and_give_what_fhir_resources_gives():
    statuses = {
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "verificationStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
        ),
    }
    bad = {"clinicalStatus": {"coding": {"code": "active"}}}
    elements = records.VALIDATED["Condition"]
    for cid, change in (("one", statuses), ("two", statuses), ("bad", bad)):
        resource = pruned(condition(cid, SNOMED_URI, "254915003") | change, elements)
        assert validate.is_valid(resource, cid) is fhir_resources_accepts(Condition, resource)


def test_every_type_read_has_a_model_and_its_elements_exist_in_it():
    for rtype, elements in records.ELEMENTS.items():
        fields = {field.alias or name for name, field in validate.MODELS[rtype].model_fields.items()}
        assert set(elements) - {"resourceType"} <= fields | {"id"}, rtype
