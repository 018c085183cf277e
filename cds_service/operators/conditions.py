"""Operators on diagnoses and procedures: recorded conditions, procedures, metastatic disease, pregnancy, and
cancers other than the trial's primary.

A diagnosis or procedure that is not recorded is `false` ("no record of ..."), unless its resource type could
not be read (`PatientFacts.unavailable`): then `unknown`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from cds_service.engine.registry import EvaluationContext, LeafResult, operator
from cds_service.engine.text import clean, fmt_number, on, refs, since
from cds_service.facts import ConditionFact, PatientFacts, needs
from cds_service.facts.conditions import METASTATIC_DISEASE, is_malignancy_code
from cds_service.operators.common import (
    condition_label,
    dated_record_result,
    days_before,
    latest,
    recent,
    unavailable,
)
from cds_service.verdicts import Truth

OTHER_MALIGNANCY = "other-malignancy"  # SNOMED-coded cancers; ICD-10-CM C00-D09 is recognised without a list
PREGNANCY = "pregnancy"
PREGNANCY_TEST_MAX_AGE_DAYS = 30


def _check_absent(params: dict[str, Any]) -> None:
    if params.get("absent", False) not in (False, "unknown"):
        raise ValueError("absent must be false or unknown")


@operator(
    "condition",
    {"valueset": str, "within_days": int, "current_only": bool, "absent": (bool, str)},
    needs=needs("conditions"),
    required=("valueset",),
    prepare=_check_absent,
)
def condition(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset = params["valueset"]
    title = context.labels.valueset(valueset)
    matches = [c for c in facts.conditions if valueset in c.valuesets]
    decided = _recorded_condition(facts, matches, params, title) if matches else None
    if decided is not None:
        return decided
    unreadable = unavailable(facts, "Condition")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    absent = Truth.UNKNOWN if params.get("absent") == "unknown" else Truth.FALSE
    return LeafResult(absent, f"no record of {title}")


def _recorded_condition(
    facts: PatientFacts, matches: list[ConditionFact], params: Mapping[str, Any], title: str
) -> LeafResult | None:
    """Decide from the conditions of the value set on record; None when none of them decides."""
    current_only = params.get("current_only", False)
    within_days = params.get("within_days")
    candidates = [c for c in matches if c.confirmed and (c.current or not current_only)]
    decided = dated_record_result(
        facts, candidates, lambda c: condition_label(c, title), lambda c: c.onset, within_days, since
    )
    if decided is not None:
        return decided
    unconfirmed = [
        c
        for c in matches
        if not c.confirmed
        and (c.current or not current_only)
        and (within_days is None or c.onset is None or days_before(facts, c.onset) <= within_days)
    ]
    if unconfirmed:
        label = condition_label(unconfirmed[0], title)
        return LeafResult(Truth.UNKNOWN, f"{label} recorded but not confirmed", refs(unconfirmed))
    history = [c for c in matches if c.confirmed and not c.current]
    if history:
        label = condition_label(history[0], title)
        return LeafResult(Truth.FALSE, f"{label} resolved or inactive (history only)", refs(history))
    return None


@operator(
    "procedure", {"valueset": str, "within_days": int}, needs=needs("procedures"), required=("valueset",)
)
def procedure(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset = params["valueset"]
    title = context.labels.valueset(valueset)
    matches = [p for p in facts.procedures if valueset in p.valuesets]
    decided = dated_record_result(
        facts, matches, lambda p: clean(p.display) or title, lambda p: p.date, params.get("within_days"), on
    )
    if decided is not None:
        return decided
    unreadable = unavailable(facts, "Procedure")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    return LeafResult(Truth.FALSE, f"no record of {title}")


@operator("metastatic", needs=needs("metastasis", "staging"))
def metastatic(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    label = context.labels.valueset(METASTATIC_DISEASE)
    evidence = facts.metastasis
    if evidence.documented:
        if evidence.conditions:
            first = f"{condition_label(evidence.conditions[0], label)}{since(evidence.conditions[0].onset)}"
        elif evidence.staging:
            m1 = evidence.staging[0]
            first = f"M1 in the stage of {clean(m1.condition)}" if m1.condition else f"M1{on(m1.date)}"
        else:
            first = f"disease status: distant metastasis present{on(evidence.statuses[0].date)}"
        return LeafResult(Truth.TRUE, first, evidence.refs)
    if evidence.unconfirmed:
        label = condition_label(evidence.unconfirmed[0], label)
        return LeafResult(Truth.UNKNOWN, f"{label} recorded but not confirmed", refs(evidence.unconfirmed))
    latest_m = latest(facts.staging)
    unreadable = unavailable(facts, "Condition", "Observation")
    if latest_m is not None and not unreadable:
        return LeafResult(
            Truth.FALSE, f"latest M category M0{on(latest_m.date)}; no metastasis recorded", (latest_m.ref,)
        )
    return LeafResult(Truth.UNKNOWN, unreadable or "no metastasis or M category recorded")


@operator(
    "pregnant", needs=needs("patient_ref", "sex", "conditions", "pregnancy_tests", valuesets=[PREGNANCY])
)
def pregnant(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    patient = (facts.patient_ref,) if facts.patient_ref else ()
    if facts.sex == "male":
        return LeafResult(Truth.FALSE, "sex male", patient)
    label = context.labels.valueset(PREGNANCY)
    active = [c for c in facts.conditions if PREGNANCY in c.valuesets and c.confirmed and c.current]
    if active:
        return LeafResult(
            Truth.TRUE, f"{condition_label(active[0], label)}{since(active[0].onset)}", refs(active)
        )
    tests = [t for t in facts.pregnancy_tests if recent(facts, t, PREGNANCY_TEST_MAX_AGE_DAYS)]
    newest = latest(tests)
    if newest is not None and newest.positive:
        return LeafResult(Truth.TRUE, f"positive pregnancy test{on(newest.date)}", (newest.ref,))
    unreadable = unavailable(facts, "Condition", "Observation")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    if newest is not None:
        return LeafResult(Truth.FALSE, f"negative pregnancy test{on(newest.date)}", (newest.ref,))
    return LeafResult(Truth.FALSE, f"no record of {label}")


def _years_before(day: date, years: float) -> date:
    """`day` minus a number of years (whole years by calendar, fractions by days)."""
    whole = int(years)
    try:
        shifted = day.replace(year=day.year - whole)
    except ValueError:  # 29 February
        shifted = day.replace(year=day.year - whole, day=28)
    return shifted - timedelta(days=round((years - whole) * 365.25))


@operator(
    "other_malignancy",
    {"within_years": (int, float), "except": str, "primary": str},
    needs=needs("conditions", valuesets=[OTHER_MALIGNANCY, METASTATIC_DISEASE]),
)
def other_malignancy(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    excepted_set, primary = params.get("except"), params.get("primary")
    cancers: list[ConditionFact] = []
    excepted: list[ConditionFact] = []
    for c in facts.conditions:
        if (primary is not None and primary in c.valuesets) or METASTATIC_DISEASE in c.valuesets:
            continue
        if OTHER_MALIGNANCY in c.valuesets or any(is_malignancy_code(*code) for code in c.codes):
            (excepted if excepted_set and excepted_set in c.valuesets else cancers).append(c)
    years = params.get("within_years")
    window = f" in the last {fmt_number(years)} years" if years is not None else ""
    first_day = _years_before(facts.today, years) if years is not None else None

    def in_window(c: ConditionFact) -> bool:
        return c.current or first_day is None or (c.onset is not None and c.onset >= first_day)

    confirmed = [c for c in cancers if c.confirmed]
    inside = [c for c in confirmed if in_window(c)]
    if inside:
        first = inside[0]
        state = "current" if first.current else f"onset {first.onset}"
        return LeafResult(Truth.TRUE, f"{condition_label(first, 'another cancer')} ({state})", refs(inside))
    undated = [c for c in confirmed if c.onset is None]
    if undated:
        label = condition_label(undated[0], "another cancer")
        return LeafResult(Truth.UNKNOWN, f"{label} recorded without a date", refs(undated))
    unconfirmed = [c for c in cancers if not c.confirmed and (c.onset is None or in_window(c))]
    if unconfirmed:
        label = condition_label(unconfirmed[0], "another cancer")
        return LeafResult(Truth.UNKNOWN, f"{label} recorded but not confirmed", refs(unconfirmed))
    unreadable = unavailable(facts, "Condition")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    notes = []
    if confirmed:
        notes.append("older: " + ", ".join(f"{condition_label(c, 'cancer')}{on(c.onset)}" for c in confirmed))
    if excepted:
        notes.append("excepted: " + ", ".join(condition_label(c, "cancer") for c in excepted))
    detail = f" ({'; '.join(notes)})" if notes else ""
    return LeafResult(
        Truth.FALSE, f"no record of another cancer{window}{detail}", refs([*confirmed, *excepted])
    )
