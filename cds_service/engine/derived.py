"""Values derived from PatientFacts that any disease may use: pure functions, no FHIR, no settings.

Each result carries the references of the facts it used and a short text for the verdict's reason. Missing
inputs give `None` (or a result whose value is `None`), never a made-up number. Recency is the caller's
business: the `since` parameters drop measurements dated before that day (undated ones are then dropped too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from cds_service.facts import LabValue, PatientFacts, ScoreFact, TherapyLine
from cds_service.terminology import Analyte

CORRECTED_CALCIUM_PAIRING_DAYS = 7  # albumin used to correct a calcium must be measured this close to it


@dataclass(frozen=True)
class Derived:
    """A computed number with the references used and the date of its oldest input."""

    value: float
    unit: str
    refs: tuple[str, ...]
    text: str
    oldest: date | None = None


@dataclass(frozen=True)
class LimitMultiple:
    """A lab value as a multiple of its upper (or lower) limit of normal, and where the limit came from."""

    multiple: float
    limit: float
    source: Literal["observation", "default"]
    lab: LabValue
    text: str


@dataclass(frozen=True)
class Flag:
    """A derived yes / no / unknown with its evidence."""

    value: bool | None
    refs: tuple[str, ...]
    text: str


# --- small helpers ------------------------------------------------------------------------------------------


def _dated_since(items: Sequence[LabValue] | Sequence[ScoreFact], since: date | None) -> list:
    return [i for i in items if since is None or (i.date is not None and i.date >= since)]


def latest_lab(facts: PatientFacts, analyte: str, since: date | None = None) -> LabValue | None:
    """Newest measured value of an analyte (dated on or after `since` when given); None when the newest is a
    bound (`<0.5`), which no computation can use."""
    values = _dated_since(facts.labs.get(analyte, ()), since)
    return values[0] if values and values[0].comparator is None else None


def latest_score(scores: Sequence[ScoreFact], since: date | None) -> ScoreFact | None:
    recent = _dated_since(scores, since)
    return recent[0] if recent else None


def fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _oldest(dates: Iterable[date | None]) -> date | None:
    known = [d for d in dates if d is not None]
    return min(known) if known else None


# --- renal function, limits of normal, calcium --------------------------------------------------------------


def creatinine_clearance(facts: PatientFacts, since: date | None = None) -> Derived | None:
    """Cockcroft-Gault: ((140 - age) x weight kg) / (72 x creatinine mg/dL), x 0.85 for a woman (mL/min)."""
    creatinine = latest_lab(facts, "creatinine", since)
    weight = latest_lab(facts, "weight")
    age = facts.age
    if creatinine is None or weight is None or age is None or facts.sex not in ("male", "female"):
        return None
    if creatinine.value <= 0 or weight.value <= 0:
        return None
    clearance = (140 - age) * weight.value / (72 * creatinine.value)
    if facts.sex == "female":
        clearance *= 0.85
    text = (
        f"Cockcroft-Gault {clearance:.0f} mL/min (age {age}, {facts.sex}, weight {fmt(weight.value)} kg on "
        f"{weight.date}, creatinine {fmt(creatinine.value)} mg/dL on {creatinine.date})"
    )
    return Derived(clearance, "mL/min", (creatinine.ref, weight.ref), text, _oldest([creatinine.date]))


def limit_of_normal(
    lab: LabValue, analyte: Analyte, sex: str | None, which: Literal["high", "low"] = "high"
) -> tuple[float, Literal["observation", "default"]] | None:
    """The upper (or lower) limit of normal of a value and where it came from: the Observation's own range
    first, else the analyte's documented default; None when neither gives a positive limit."""
    limit = lab.high if which == "high" else lab.low
    if limit is not None:
        return (limit, "observation") if limit > 0 else None
    default = analyte.default_limits(sex)
    limit = None if default is None else (default.high if which == "high" else default.low)
    return (limit, "default") if limit is not None and limit > 0 else None


def limit_multiple(
    lab: LabValue, analyte: Analyte, sex: str | None, which: Literal["high", "low"] = "high"
) -> LimitMultiple | None:
    """Value / limit of normal (see `limit_of_normal`), with a text naming both."""
    found = limit_of_normal(lab, analyte, sex, which)
    if found is None:
        return None
    limit, source = found
    name = "ULN" if which == "high" else "LLN"
    where = "the lab's range" if source == "observation" else "default range"
    text = (
        f"{analyte.title} {fmt(lab.value)} {analyte.unit} on {lab.date} = {lab.value / limit:.2f} x {name} "
        f"({fmt(limit)} {analyte.unit}, {where})"
    )
    return LimitMultiple(lab.value / limit, limit, source, lab, text)


def corrected_calcium(facts: PatientFacts, since: date | None = None) -> Derived | None:
    """Albumin-corrected calcium: Ca + 0.8 x (4 - albumin g/dL), albumin within 7 days of the calcium."""
    calcium = latest_lab(facts, "calcium", since)
    if calcium is None or calcium.date is None:
        return None
    window = timedelta(days=CORRECTED_CALCIUM_PAIRING_DAYS)
    albumins = [
        a
        for a in facts.labs.get("albumin", ())
        if a.date is not None and a.comparator is None and abs(a.date - calcium.date) <= window
    ]
    if not albumins:
        return None
    albumin = min(albumins, key=lambda a: (abs(a.date - calcium.date), a.ref))  # type: ignore[operator]
    value = calcium.value + 0.8 * (4.0 - albumin.value)
    text = (
        f"corrected calcium {value:.2f} mg/dL (calcium {fmt(calcium.value)} mg/dL on {calcium.date}, "
        f"albumin {fmt(albumin.value)} g/dL on {albumin.date})"
    )
    return Derived(value, "mg/dL", (calcium.ref, albumin.ref), text, _oldest([calcium.date, albumin.date]))


# --- treatment history --------------------------------------------------------------------------------------


def current_line(facts: PatientFacts) -> TherapyLine | None:
    ongoing = [line for line in facts.therapy_lines if line.ongoing]
    return ongoing[-1] if ongoing else None


def weeks_on_current_regimen(facts: PatientFacts) -> Derived | None:
    """Weeks from the start of the ongoing line to today."""
    line = current_line(facts)
    if line is None:
        return None
    days = (facts.today - line.start).days
    weeks = days / 7
    shown = f"{days // 7} weeks" + (f" {days % 7} days" if days % 7 else "")
    return Derived(weeks, "weeks", line.refs, f"current line for {shown}", line.start)
