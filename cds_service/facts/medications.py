"""Medication statements, requests and administrations -> facts, and lines of systemic anticancer therapy.

Cancelled, entered-in-error, not-taken and draft medications do not count, nor a proposal or a plan (counting
it would invent an exposure or a line), nor one stopped before it started. Of administrations (infusions, as
an infusion centre records immunotherapy) only completed and in-progress ones count; the doses of one drug
given at most INFUSION_GAP_DAYS apart are one continuous exposure, dated by its first and last dose, and still
going when its last dose is that recent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date

from cds_service.facts.model import MedicationFact, TherapyLine
from cds_service.fhir.records import MedicationUseRecord
from cds_service.terminology import INGREDIENT, Terminology

# The resource types medications are read from (absence proves nothing when one could not be read).
MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")
IGNORED_MEDICATION_STATUSES = frozenset({"entered-in-error", "cancelled", "not-taken", "draft"})
GIVEN_ADMINISTRATION_STATUSES = frozenset({"completed", "in-progress"})
# Immunotherapy and other infusions are given every 2 to 6 weeks: doses this close are one exposure.
INFUSION_GAP_DAYS = 42
IGNORED_REQUEST_INTENTS = frozenset({"proposal", "plan"})
ACTIVE_MEDICATION_STATUSES = frozenset({"active", "on-hold", "intended"})
SYSTEMIC_ANTICANCER = "systemic-anticancer"
LINE_JOIN_DAYS = 28  # a drug started within this many days of a line's start belongs to that line
# A line started up to this long before the first metastasis date is a line for metastatic disease.
METASTATIC_LINE_MARGIN_DAYS = 30


def medication_fact(rec: MedicationUseRecord, terminology: Terminology, today: date) -> MedicationFact | None:
    """A statement or request as a fact; an administration as the fact of one dose (see `exposures`)."""
    if rec.kind == "MedicationAdministration" and rec.status not in GIVEN_ADMINISTRATION_STATUSES:
        return None
    if rec.status in IGNORED_MEDICATION_STATUSES or rec.intent in IGNORED_REQUEST_INTENTS:
        return None
    if rec.status == "stopped" and rec.start is None:  # stopped before it started
        return None
    ingredients = terminology.ingredients_for(rec.medication.codes, rec.medication.text)
    ingredient_codes = {(INGREDIENT, ingredient) for ingredient in ingredients}
    return MedicationFact(
        ref=rec.ref,
        ingredients=ingredients,
        valuesets=terminology.memberships(rec.medication.codes | ingredient_codes),
        display=rec.medication.text,
        start=rec.start,
        end=rec.end,
        active=rec.status in ACTIVE_MEDICATION_STATUSES and (rec.end is None or rec.end >= today),
    )


def exposures(doses: Iterable[MedicationFact], today: date) -> list[MedicationFact]:
    """The administrations of each drug (same ingredients) as exposures: doses at most INFUSION_GAP_DAYS apart
    are one exposure from its first to its last dose, going on when its last dose is that recent; it cites its
    first and last dose. Undated doses cannot be placed and are left out."""
    by_drug: dict[frozenset[str], list[MedicationFact]] = {}
    for dose in sorted((d for d in doses if d.start), key=lambda d: (d.start, d.ref)):
        by_drug.setdefault(dose.ingredients or frozenset({dose.ref}), []).append(dose)
    found: list[MedicationFact] = []
    for given in by_drug.values():
        runs: list[list[MedicationFact]] = []
        for dose in given:
            if runs and (dose.start - runs[-1][-1].start).days <= INFUSION_GAP_DAYS:  # type: ignore[operator]
                runs[-1].append(dose)
            else:
                runs.append([dose])
        for run in runs:
            first, last = run[0], run[-1]
            ended = last.end or last.start
            going_on = ended is not None and 0 <= (today - ended).days <= INFUSION_GAP_DAYS
            found.append(
                replace(
                    last,
                    start=first.start,
                    end=ended,
                    active=going_on,
                    refs=tuple(dict.fromkeys((first.ref, last.ref))),
                )
            )
    return found


def therapy_lines(
    medications: Iterable[MedicationFact], metastasis_date: date | None
) -> tuple[TherapyLine, ...]:
    """Group systemic anticancer drugs into lines, oldest first (see `TherapyLine`).

    Drugs started within LINE_JOIN_DAYS of a line's start join it; a later drug already in the line (a new
    order, or the drug kept after a partner was dropped) stays in it; a later drug not in the line opens the
    next line.
    Drugs without a start date or without a known ingredient cannot be placed and are left out.
    """
    drugs = sorted(
        (m for m in medications if SYSTEMIC_ANTICANCER in m.valuesets and m.start and m.ingredients),
        key=lambda m: (m.start, m.ref),
    )
    groups: list[list[MedicationFact]] = []
    for drug in drugs:
        current = groups[-1] if groups else None
        if current is not None:
            line_start = current[0].start
            line_ingredients = frozenset().union(*(m.ingredients for m in current))
            joins = (drug.start - line_start).days <= LINE_JOIN_DAYS  # type: ignore[operator]
            if joins or drug.ingredients <= line_ingredients:
                current.append(drug)
                continue
        groups.append([drug])
    lines = []
    for number, group in enumerate(groups, start=1):
        start: date = group[0].start  # type: ignore[assignment]
        ongoing = any(m.active for m in group)
        # A finished drug without an end date counts as ending on its start (the last date known to be given).
        end = None if ongoing else max(m.end or m.start for m in group)  # type: ignore[type-var]
        # Day differences, not date arithmetic: dates near year 1 or 9999 must not overflow.
        metastatic = (
            None
            if metastasis_date is None
            else (start - metastasis_date).days >= -METASTATIC_LINE_MARGIN_DAYS
        )
        lines.append(
            TherapyLine(
                number=number,
                ingredients=frozenset().union(*(m.ingredients for m in group)),
                start=start,
                end=end,
                ongoing=ongoing,
                refs=tuple(dict.fromkeys(ref for m in group for ref in m.refs)),
                metastatic_setting=metastatic,
            )
        )
    return tuple(lines)
