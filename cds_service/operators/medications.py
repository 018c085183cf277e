"""Operators on medications and lines of systemic therapy: a drug taken, a drug class received in a line, the
current regimen and how long it has run, and the number of lines.

A medication that is not recorded is `false` ("no record of ..."), unless medications could not be read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cds_service.engine.derived import current_line, weeks_on_current_regimen
from cds_service.engine.registry import MIN_MAX, Bounds, EvaluationContext, LeafResult, operator
from cds_service.engine.text import clean, refs, since
from cds_service.facts import PatientFacts, needs
from cds_service.facts.medications import MEDICATION_TYPES
from cds_service.operators.common import days_before, line_text, no_therapy, refs_of_lines, unavailable
from cds_service.terminology import INGREDIENT
from cds_service.verdicts import Truth


@operator(
    "medication",
    {"valueset": str, "current": bool, "within_days": int},
    needs=needs("medications"),
    required=("valueset",),
)
def medication(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset = params["valueset"]
    title = context.labels.valueset(valueset)
    matches = [m for m in facts.medications if valueset in m.valuesets]
    within_days = params.get("within_days")  # when given, `current` does not apply
    current = params.get("current", True) and within_days is None
    taken: list[Any] = []
    undecided: list[Any] = []  # stopped at a date not recorded: maybe within the window
    for m in matches:
        if m.start is not None and m.start > facts.today:
            continue  # not started yet
        if m.active and (m.end is None or m.end >= facts.today):
            taken.append(m)
        elif within_days is None:
            if not current:
                taken.append(m)
        else:
            last = m.end or m.start
            if last is not None and days_before(facts, last) <= within_days:
                taken.append(m)
            elif m.end is None:
                undecided.append(m)
    window = f" in the last {within_days} days" if within_days is not None else ""

    def shown(m: Any) -> str:
        period = since(m.start) + (f" until {m.end.isoformat()}" if m.end else "")
        return f"{clean(m.display) or title}{period}"

    if taken:
        return LeafResult(Truth.TRUE, shown(taken[0]), refs(taken))
    if undecided:
        return LeafResult(
            Truth.UNKNOWN, f"{shown(undecided[0])}: not known whether taken{window}", refs(undecided)
        )
    unreadable = unavailable(facts, *MEDICATION_TYPES)
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    if matches:
        qualifier = "current" if current else f"taken{window}"
        return LeafResult(Truth.FALSE, f"no {qualifier} {title} ({shown(matches[0])})", refs(matches))
    return LeafResult(Truth.FALSE, f"no record of {title}")


@operator(
    "received", {"valueset": str, "combination": bool}, needs=needs("therapy_lines"), required=("valueset",)
)
def received(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset_id = params["valueset"]
    valueset = context.terminology.valuesets.get(valueset_id)
    combination = params.get("combination", False)
    title = context.labels.valueset(valueset_id)
    hits = [
        line
        for line in facts.therapy_lines
        if valueset is not None
        and any(valueset.contains((INGREDIENT, ingredient)) for ingredient in line.ingredients)
        and (not combination or len(line.ingredients) > 1)
    ]
    if hits:
        return LeafResult(Truth.TRUE, "; ".join(line_text(line) for line in hits), refs_of_lines(hits))
    what = f"{title} in combination" if combination else title
    return no_therapy(facts, f"no therapy line with {what}")


def _prepare_regimens(params: dict[str, Any]) -> None:
    options = params["one_of"]
    if not all(isinstance(o, (list, tuple)) and o and all(isinstance(i, str) for i in o) for o in options):
        raise ValueError("one_of must be a list of non-empty ingredient lists")
    params["one_of"] = tuple(frozenset(option) for option in options)


@operator(
    "current_regimen",
    {"one_of": (list, tuple)},
    needs=needs("therapy_lines"),
    required=("one_of",),
    prepare=_prepare_regimens,
)
def current_regimen(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    line = context.derive(facts, current_line)
    if line is None:
        return no_therapy(facts, "no ongoing systemic therapy recorded")
    if line.ingredients in params["one_of"]:
        return LeafResult(Truth.TRUE, line_text(line), line.refs)
    unreadable = unavailable(facts, *MEDICATION_TYPES)
    if unreadable:  # a partner drug may be among the unread medications
        return LeafResult(Truth.UNKNOWN, f"{line_text(line)}; {unreadable}", line.refs)
    return LeafResult(Truth.FALSE, line_text(line), line.refs)


@operator("regimen_weeks", needs=needs("therapy_lines"), bounds=MIN_MAX)
def regimen_weeks(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    weeks = context.derive(facts, weeks_on_current_regimen)
    if weeks is None:
        return no_therapy(facts, "no ongoing systemic therapy recorded")
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(weeks.value) else Truth.FALSE
    return LeafResult(truth, f"{weeks.text} ({bounds.text(' weeks')})", weeks.refs)


@operator(
    "therapy_lines", {"ongoing": bool, "metastatic_only": bool}, needs=needs("therapy_lines"), bounds=MIN_MAX
)
def therapy_lines(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    """Count lines; a line whose setting is unknown (no metastasis date) may or may not count, and with
    medications that could not be read any higher count is possible."""
    lines = facts.therapy_lines
    unreadable = unavailable(facts, *MEDICATION_TYPES)
    metastatic_only = params.get("metastatic_only", True)
    counted = [line for line in lines if line.metastatic_setting or not metastatic_only]
    uncertain = [line for line in lines if line.metastatic_setting is None and metastatic_only]
    current = context.derive(facts, current_line)
    wanted_ongoing = params.get("ongoing")
    if wanted_ongoing is True and current is None:
        return no_therapy(facts, "no ongoing systemic therapy recorded")
    if wanted_ongoing is False and current is not None:
        return LeafResult(Truth.FALSE, f"ongoing {line_text(current)}", current.refs)
    bounds: Bounds = params["bounds"]
    possible: list[float] = list(range(len(counted), len(counted) + len(uncertain) + 1))
    truth = bounds.decide([*possible, math.inf] if unreadable else possible)
    what = "for metastatic disease" if metastatic_only else "of systemic therapy"
    reason = f"{len(counted)} line(s) {what} ({bounds.text()})"
    if uncertain:
        reason += f", {len(uncertain)} more of unknown setting"
    if unreadable:
        reason += f", {unreadable}"
    details = "; ".join(line_text(line) for line in [*counted, *uncertain])
    return LeafResult(
        truth, f"{reason}: {details}" if details else reason, refs_of_lines([*counted, *uncertain])
    )
