"""FHIR R4 validation with the `fhir.resources` R4B models: the only module that imports them.

A resource is validated with only the elements its conversion reads (`records.ELEMENTS`, plus the
Observation elements its codes need) and those its model requires: validation is the largest cost of a hook
call (~0.14 ms a resource, nested models checked one by one in Python), and most of a resource (narrative,
identifiers, performers, notes, meta) is never read. An error in an element nothing reads no longer skips the
resource; an error in one that is read still does.

Written once and tested against validating the whole element (tests/test_validate.py): an Observation's
`code` and `referenceRange` and a Condition's status codes are validated once per distinct JSON text and
remembered (at most 2,048): charts repeat the same few, and none says anything about a patient.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure

logger = logging.getLogger("cds_service.fhir")

MODELS: Mapping[str, Any] = {
    "Patient": Patient,
    "Condition": Condition,
    "Observation": Observation,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "MedicationAdministration": MedicationAdministration,
    "Medication": Medication,
    "Procedure": Procedure,
}


def _validated_ranges(ranges: Any) -> list[ObservationReferenceRange]:
    if not isinstance(ranges, list):
        raise TypeError("referenceRange is not a list")
    return [ObservationReferenceRange.model_validate(item) for item in ranges]


# Per resource type, the elements validated once per distinct JSON text, each as its field validates it:
# every item a model, which the resource then takes as it is.
SHARED_ELEMENTS: Mapping[str, Mapping[str, Callable[[Any], Any]]] = {
    "Observation": {"code": CodeableConcept.model_validate, "referenceRange": _validated_ranges},
    "Condition": {
        "clinicalStatus": CodeableConcept.model_validate,
        "verificationStatus": CodeableConcept.model_validate,
    },
}
_KEY_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=False)  # made once: json.dumps makes one a call


def is_valid(resource: Mapping[str, Any], ref: str) -> bool:
    """Whether a (pruned) resource validates with its R4B model; a failure is logged by reference only."""
    rtype = resource["resourceType"]
    try:
        shared = SHARED_ELEMENTS.get(rtype)
        if shared:
            resource = {
                name: _shared_element(rtype, name, value) if name in shared else value
                for name, value in resource.items()
            }
        MODELS[rtype].model_validate(resource)
    except Exception:  # any failure of one resource only skips that resource
        logger.warning("skipped invalid resource %s", ref)
        return False
    return True


def _shared_element(rtype: str, name: str, value: Any) -> Any:
    """An element of SHARED_ELEMENTS validated, remembered by its JSON text; the raw value when it cannot be
    remembered or does not validate alone (the resource's validation then decides)."""
    try:
        key = _KEY_ENCODER.encode(value)
    except (TypeError, ValueError):
        return value
    validated = _validated_element(rtype, name, key)
    return value if validated is None else validated


@lru_cache(maxsize=2048)
def _validated_element(rtype: str, name: str, key: str) -> Any | None:
    try:
        return SHARED_ELEMENTS[rtype][name](json.loads(key))
    except Exception:  # the resource's own validation reports it
        return None
