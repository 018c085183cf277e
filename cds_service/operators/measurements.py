"""Operators on measurements: lab values (absolute or against the limits of normal), creatinine clearance,
performance status, blood pressure and disease status.

A measurement that is missing, or whose newest value is older than its recency window, is `unknown`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from cds_service.engine.derived import creatinine_clearance as cockcroft_gault
from cds_service.engine.derived import latest_lab, limit_of_normal
from cds_service.engine.registry import (
    COMPARATORS,
    LAB_BOUNDS,
    SCORE_BOUNDS,
    Bounds,
    EvaluationContext,
    LeafResult,
    operator,
)
from cds_service.engine.text import amount_text, fmt_multiple, fmt_number, on
from cds_service.facts import PatientFacts, ScoreFact, needs
from cds_service.facts.observations import DISEASE_STATUSES
from cds_service.operators.common import latest, recent, stale_or_missing
from cds_service.verdicts import Truth

DISEASE_STATUS_MAX_AGE_DAYS = 90


def _prepare_lab(params: dict[str, Any]) -> None:
    families = {key.partition("_")[2] for key in params if key in LAB_BOUNDS}
    if len(families) > 1:
        raise ValueError("use one kind of bound: absolute, *_uln or *_lln")
    params["limit"] = families.pop().upper() if families else ""


@operator(
    "lab",
    {"analyte": str, "max_age_days": int},
    needs=lambda params: needs("sex", analytes=[params["analyte"]]),
    required=("analyte",),
    bounds=LAB_BOUNDS,
    prepare=_prepare_lab,
)
def lab(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    analyte_id = params["analyte"]
    analyte = context.terminology.analytes.get(analyte_id)
    name = context.labels.analyte(analyte_id)
    max_age = params.get("max_age_days", context.lab_max_age_days)
    newest = latest(facts.labs.get(analyte_id, ()))
    unconverted = latest(facts.unconverted_labs.get(analyte_id, ()))
    if (
        unconverted is not None
        and recent(facts, unconverted, max_age)
        and (newest is None or (unconverted.date or date.min) > (newest.date or date.min))
    ):
        canonical = analyte.unit if analyte else "the analyte's unit"
        return LeafResult(
            Truth.UNKNOWN,
            f"{name} {unconverted.as_sent}{on(unconverted.date)}: unit cannot be converted to {canonical}",
            (unconverted.ref,),
        )

    def shown(value: Any) -> str:
        return (value.comparator or "") + amount_text(value.value, value.unit)

    stale = stale_or_missing(facts, name, newest, shown, max_age, "Observation")
    if stale is not None or newest is None:
        return stale or LeafResult(Truth.UNKNOWN, f"no {name}")
    measured = (
        f"{name} {shown(newest)}{f' (sent as {newest.as_sent})' if newest.as_sent else ''}{on(newest.date)}"
    )
    bounds: Bounds = params["bounds"]
    limit_name = params["limit"]
    if not limit_name:
        truth = _decide(bounds, newest.comparator, newest.value)
        return LeafResult(truth, f"{measured} ({bounds.text()})", (newest.ref,))
    found = None
    if analyte is not None:
        found = limit_of_normal(newest, analyte, facts.sex, "high" if limit_name == "ULN" else "low")
    if found is None:
        return LeafResult(
            Truth.UNKNOWN,
            f"{measured}: no {limit_name} (no range from the lab, no default range)",
            (newest.ref,),
        )
    limit, where = found
    multiple = newest.value / limit
    source = "lab's range" if where == "observation" else "default range"
    truth = _decide(bounds, newest.comparator, multiple)
    return LeafResult(
        truth,
        f"{measured} = {newest.comparator or ''}{fmt_multiple(multiple)} x {limit_name} {fmt_number(limit)} "
        f"({source}; "
        f"{bounds.text(f' x {limit_name}')})",
        (newest.ref,),
    )


def _decide(bounds: Bounds, comparator: str | None, value: float) -> Truth:
    """A measured value decides; a bound (a comparator) only when every value it allows is on one side."""
    if comparator:
        return bounds.decide_bound(comparator, value)
    return Truth.TRUE if bounds.holds(value) else Truth.FALSE


@operator(
    "creatinine_clearance",
    needs=needs("birth_date", "sex", analytes=["creatinine", "weight"]),
    bounds=SCORE_BOUNDS,
)
def creatinine_clearance(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    since = facts.today - timedelta(days=context.lab_max_age_days)
    found = context.derive(facts, cockcroft_gault, since)
    if found is None:
        inputs = (
            ("age", facts.age is not None),
            ("sex", facts.sex in ("male", "female")),
            ("weight", latest_lab(facts, "weight") is not None),
            (
                f"creatinine in the last {context.lab_max_age_days} days",
                latest_lab(facts, "creatinine", since) is not None,
            ),
        )
        missing = ", ".join(name for name, known in inputs if not known) or "a usable creatinine or weight"
        return LeafResult(Truth.UNKNOWN, f"Cockcroft-Gault clearance not computable: no {missing}")
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(found.value) else Truth.FALSE
    return LeafResult(truth, f"{found.text} ({bounds.text(' mL/min')})", found.refs)


# Karnofsky -> possible ECOG grades: the union of the two published conversions (ECOG-ACRIN: KPS 100-90 =
# ECOG 0, 80-70 = 1, 60-50 = 2, 40-30 = 3, 20-10 = 4; the other common table: 100 = 0, 90-80 = 1, 70-60 = 2,
# 50-40 = 3, 30-10 = 4; both: 0 = 5). A bound is decided from the other scale only when every possible value
# agrees.
_KARNOFSKY_TO_ECOG: Mapping[int, frozenset[int]] = {
    100: frozenset({0}),
    90: frozenset({0, 1}),
    80: frozenset({1}),
    70: frozenset({1, 2}),
    60: frozenset({2}),
    50: frozenset({2, 3}),
    40: frozenset({3}),
    30: frozenset({3, 4}),
    20: frozenset({4}),
    10: frozenset({4}),
    0: frozenset({5}),
}
_ECOG_TO_KARNOFSKY: Mapping[int, frozenset[int]] = {
    grade: frozenset(k for k, grades in _KARNOFSKY_TO_ECOG.items() if grade in grades) for grade in range(6)
}
_SCORE_LABEL = {"ecog": "ECOG", "karnofsky": "Karnofsky"}


def _performance(
    kind: str, facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    other = "karnofsky" if kind == "ecog" else "ecog"
    mapping = _KARNOFSKY_TO_ECOG if kind == "ecog" else _ECOG_TO_KARNOFSKY
    label, other_label = _SCORE_LABEL[kind], _SCORE_LABEL[other]
    max_age = params.get("max_age_days", context.performance_max_age_days)
    bounds: Bounds = params["bounds"]
    newest: ScoreFact | None = latest(getattr(facts, kind))
    if newest is not None and recent(facts, newest, max_age):
        truth = Truth.TRUE if bounds.holds(newest.value) else Truth.FALSE
        return LeafResult(truth, f"{label} {newest.value}{on(newest.date)} ({bounds.text()})", (newest.ref,))
    latest_other: ScoreFact | None = latest(getattr(facts, other))
    if latest_other is not None and recent(facts, latest_other, max_age):
        possible = sorted(mapping.get(latest_other.value, ()))
        if possible:
            read = " or ".join(str(v) for v in possible)
            return LeafResult(
                bounds.decide(possible),
                f"{other_label} {latest_other.value}{on(latest_other.date)} = {label} {read} "
                f"({bounds.text()})",
                (latest_other.ref,),
            )
    missing = stale_or_missing(facts, label, newest, lambda s: str(s.value), max_age, "Observation")
    return missing or LeafResult(Truth.UNKNOWN, f"no {label}")


@operator("ecog", {"max_age_days": int}, needs=needs("ecog", "karnofsky"), bounds=SCORE_BOUNDS)
def ecog(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    return _performance("ecog", facts, params, context)


@operator("karnofsky", {"max_age_days": int}, needs=needs("ecog", "karnofsky"), bounds=SCORE_BOUNDS)
def karnofsky(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    return _performance("karnofsky", facts, params, context)


def _prepare_blood_pressure(params: dict[str, Any]) -> None:
    if "systolic_gt" not in params and "diastolic_gt" not in params:
        raise ValueError("give systolic_gt or diastolic_gt")


@operator(
    "blood_pressure",
    {"systolic_gt": (int, float), "diastolic_gt": (int, float), "max_age_days": int},
    needs=needs("blood_pressure"),
    prepare=_prepare_blood_pressure,
)
def blood_pressure(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    max_age = params.get("max_age_days", context.lab_max_age_days)
    newest = latest(facts.blood_pressure)

    def shown(reading: Any) -> str:
        return (
            f"{fmt_number(reading.systolic) if reading.systolic is not None else '?'}/"
            f"{fmt_number(reading.diastolic) if reading.diastolic is not None else '?'} mmHg"
        )

    stale = stale_or_missing(facts, "blood pressure", newest, shown, max_age, "Observation")
    if stale is not None or newest is None:
        return stale or LeafResult(Truth.UNKNOWN, "no blood pressure")
    limits = [
        (value, params[key])
        for key, value in (("systolic_gt", newest.systolic), ("diastolic_gt", newest.diastolic))
        if key in params
    ]
    limit_text = "/".join(
        fmt_number(params[key]) if key in params else "-" for key in ("systolic_gt", "diastolic_gt")
    )
    if any(value is not None and COMPARATORS["gt"][1](value, limit) for value, limit in limits):
        truth = Truth.TRUE
    elif any(value is None for value, _ in limits):
        truth = Truth.UNKNOWN
    else:
        truth = Truth.FALSE
    return LeafResult(
        truth, f"blood pressure {shown(newest)}{on(newest.date)} (limit > {limit_text})", (newest.ref,)
    )


def _prepare_statuses(params: dict[str, Any]) -> None:
    for key in ("true_if", "false_if"):
        unknown = set(params.get(key, ())) - set(DISEASE_STATUSES)
        if unknown:
            raise ValueError(f"{key}: unknown status {sorted(unknown)}")
        params[key] = frozenset(params.get(key, ()))
    if not params["true_if"] and not params["false_if"]:
        raise ValueError("give true_if or false_if")
    if params["true_if"] & params["false_if"]:
        raise ValueError("a status cannot be in both true_if and false_if")


@operator(
    "disease_status",
    {"true_if": (list, tuple), "false_if": (list, tuple), "max_age_days": int},
    needs=needs("disease_status"),
    prepare=_prepare_statuses,
)
def disease_status(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    max_age = params.get("max_age_days", DISEASE_STATUS_MAX_AGE_DAYS)
    newest = latest(facts.disease_status)
    stale = stale_or_missing(facts, "disease status", newest, lambda d: d.status, max_age, "Observation")
    if stale is not None or newest is None:
        return stale or LeafResult(Truth.UNKNOWN, "no disease status")
    if newest.status in params["true_if"]:
        truth = Truth.TRUE
    elif newest.status in params["false_if"]:
        truth = Truth.FALSE
    else:
        truth = Truth.UNKNOWN
    return LeafResult(truth, f"disease status {newest.status}{on(newest.date)}", (newest.ref,))
