"""Operators on the patient: who decides (`clinician`), age and administrative sex."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.engine.registry import MIN_MAX, Bounds, EvaluationContext, LeafResult, operator
from cds_service.facts import PatientFacts, needs
from cds_service.verdicts import Truth


@operator("clinician", {"text": str}, needs=needs(), required=("text",), scalar="text")
def clinician(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    return LeafResult(Truth.CLINICIAN, params["text"])


@operator("age", needs=needs("patient_ref", "birth_date"), bounds=MIN_MAX)
def age(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    patient = (facts.patient_ref,) if facts.patient_ref else ()
    years = facts.age
    if years is None:
        return LeafResult(Truth.UNKNOWN, "no birth date recorded", patient)
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(years) else Truth.FALSE
    return LeafResult(truth, f"age {years} ({bounds.text()})", patient)


def _check_sex(params: dict[str, Any]) -> None:
    if params["sex"] not in ("female", "male"):
        raise ValueError(f"sex must be female or male, not {params['sex']!r}")


@operator(
    "sex",
    {"sex": str},
    needs=needs("patient_ref", "sex"),
    required=("sex",),
    scalar="sex",
    prepare=_check_sex,
)
def sex(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    patient = (facts.patient_ref,) if facts.patient_ref else ()
    if facts.sex in (None, "unknown"):
        return LeafResult(Truth.UNKNOWN, "administrative sex not recorded", patient)
    truth = Truth.TRUE if facts.sex == params["sex"] else Truth.FALSE
    return LeafResult(truth, f"sex {facts.sex}", patient)
