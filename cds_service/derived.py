"""Values derived from PatientFacts: pure functions, no FHIR, no settings.

Each result carries the references of the facts it used and a short text for the verdict's reason. Missing
inputs give `None` (or a result whose value is `None`), never a made-up number. Recency is the caller's
business: the `since` parameters drop measurements dated before that day (undated ones are then dropped too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from cds_service.facts import (
    KIDNEY_CANCER,
    METASTATIC_DISEASE,
    NEPHRECTOMY,
    LabValue,
    PatientFacts,
    ScoreFact,
    TherapyLine,
    TumourSizeFact,
    about_kidney_tumour,
    kidney_cancer_refs,
)
from cds_service.terminology import Analyte, Terminology

CORRECTED_CALCIUM_PAIRING_DAYS = 7  # albumin used to correct a calcium must be measured this close to it
SYNCHRONOUS_DAYS = 90
IMDC_GROUPS = ("favorable", "intermediate", "poor")
# Analytes `imdc_risk` reads since `lab_since` (albumin too, up to CORRECTED_CALCIUM_PAIRING_DAYS earlier).
IMDC_LAB_ANALYTES = ("hemoglobin", "calcium", "calcium-corrected", "neutrophils", "platelets")


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


@dataclass(frozen=True)
class ImdcFactor:
    name: str
    abnormal: bool | None  # None: unknown
    refs: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class ImdcRisk:
    """IMDC (Heng) risk: the six factors and every risk group still possible given the unknown ones."""

    factors: tuple[ImdcFactor, ...]
    possible: frozenset[str]

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref for f in self.factors for ref in f.refs))

    @property
    def text(self) -> str:
        """E.g. "IMDC intermediate: 1 of 6 risk factors (Karnofsky < 80: ECOG 2 on 2026-11-03)"."""
        groups = " or ".join(g for g in IMDC_GROUPS if g in self.possible)
        abnormal = [f"{f.name}: {f.text}" for f in self.factors if f.abnormal is True]
        unknown = sum(f.abnormal is None for f in self.factors)
        counted = f"{len(abnormal)} of {len(self.factors)} risk factors"
        text = f"IMDC {groups}: {counted}" + (f" ({'; '.join(abnormal)})" if abnormal else "")
        return text + (f", {unknown} unknown" if unknown else "")


# --- small helpers ------------------------------------------------------------------------------------------


def _recent(items: Sequence[LabValue] | Sequence[ScoreFact], since: date | None) -> list:
    return [i for i in items if since is None or (i.date is not None and i.date >= since)]


def latest_lab(facts: PatientFacts, analyte: str, since: date | None = None) -> LabValue | None:
    """Newest value of an analyte (dated on or after `since` when given)."""
    values = _recent(facts.labs.get(analyte, ()), since)
    return values[0] if values else None


def _latest_score(scores: Sequence[ScoreFact], since: date | None) -> ScoreFact | None:
    recent = _recent(scores, since)
    return recent[0] if recent else None


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _oldest(dates: Iterable[date | None]) -> date | None:
    known = [d for d in dates if d is not None]
    return min(known) if known else None


def _less_than_a_year(start: date, later: date) -> bool:
    """Tell whether `later` comes before the first anniversary of `start` (29 February: 28 February)."""
    if start.year == date.max.year:
        return True
    anniversary = date(start.year + 1, start.month, 28 if (start.month, start.day) == (2, 29) else start.day)
    return later < anniversary


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
        f"Cockcroft-Gault {clearance:.0f} mL/min (age {age}, {facts.sex}, weight {_fmt(weight.value)} kg on "
        f"{weight.date}, creatinine {_fmt(creatinine.value)} mg/dL on {creatinine.date})"
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
    where = "the Observation's range" if source == "observation" else "default range"
    text = (
        f"{analyte.title} {_fmt(lab.value)} {analyte.unit} on {lab.date} = {lab.value / limit:.2f} x {name} "
        f"({_fmt(limit)} {analyte.unit}, {where})"
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
        if a.date is not None and abs(a.date - calcium.date) <= window
    ]
    if not albumins:
        return None
    albumin = min(albumins, key=lambda a: (abs(a.date - calcium.date), a.ref))  # type: ignore[operator]
    value = calcium.value + 0.8 * (4.0 - albumin.value)
    text = (
        f"corrected calcium {value:.2f} mg/dL (calcium {_fmt(calcium.value)} mg/dL on {calcium.date}, "
        f"albumin {_fmt(albumin.value)} g/dL on {albumin.date})"
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
    weeks = (facts.today - line.start).days / 7
    ingredients = " + ".join(sorted(line.ingredients))
    return Derived(
        weeks, "weeks", line.refs, f"{ingredients} since {line.start} ({weeks:.1f} weeks)", line.start
    )


def metastatic_lines(facts: PatientFacts) -> tuple[TherapyLine, ...] | None:
    """Lines given for metastatic disease; None when a line's setting is unknown (no metastasis date)."""
    if any(line.metastatic_setting is None for line in facts.therapy_lines):
        return None
    return tuple(line for line in facts.therapy_lines if line.metastatic_setting)


def metastatic_line_count(facts: PatientFacts) -> Derived | None:
    """Number of systemic lines for metastatic disease (0 when no line is recorded)."""
    lines = metastatic_lines(facts)
    if lines is None:
        return None
    refs = tuple(ref for line in lines for ref in line.refs)
    described = "; ".join(
        f"line {ln.number}: {' + '.join(sorted(ln.ingredients))} from {ln.start}" for ln in lines
    )
    text = f"{len(lines)} line(s) for metastatic disease" + (f" ({described})" if described else "")
    return Derived(float(len(lines)), "lines", refs, text, _oldest(line.start for line in lines))


# --- disease history ----------------------------------------------------------------------------------------


def primary_diagnosis(facts: PatientFacts) -> tuple[date, str] | None:
    """Earliest dated, confirmed kidney-cancer condition: (onset, reference)."""
    dated = [
        (c.onset, c.ref) for c in facts.conditions if KIDNEY_CANCER in c.valuesets and c.confirmed and c.onset
    ]
    return min(dated) if dated else None  # type: ignore[type-var]


def metastases_synchronous(facts: PatientFacts, days: int = SYNCHRONOUS_DAYS) -> Flag:
    """True when metastasis is documented within `days` of the primary diagnosis (condition, M1 or status).

    False (metachronous) needs positive evidence: a metastasis condition first dated after the window, or an
    M0 staging at diagnosis. A late M1 staging or status alone does not say when metastases appeared: unknown.
    """
    primary = primary_diagnosis(facts)
    if primary is None:
        return Flag(None, (), "date of the primary kidney cancer diagnosis unknown")
    diagnosed, primary_ref = primary
    evidence: list[tuple[date, str, str]] = [
        (c.onset, c.ref, "condition")
        for c in facts.conditions
        if METASTATIC_DISEASE in c.valuesets and c.confirmed and c.onset
    ]
    evidence += [(s.date, s.ref, "staging") for s in facts.staging if s.metastatic and s.date]
    evidence += [
        (d.date, d.ref, "status") for d in facts.disease_status if d.status == "metastatic" and d.date
    ]
    if not evidence:
        return Flag(None, (primary_ref,), "no dated evidence of distant metastasis")
    first_date, first_ref, _ = min(evidence)
    if (first_date - diagnosed).days <= days:
        text = f"metastasis documented {first_date}, within {days} days of diagnosis {diagnosed}"
        return Flag(True, (primary_ref, first_ref), text)
    m0_at_diagnosis = [
        s for s in facts.staging if not s.metastatic and s.date and abs(s.date - diagnosed).days <= days
    ]
    late_conditions = [e for e in evidence if e[2] == "condition"]
    if late_conditions or m0_at_diagnosis:
        refs = (primary_ref, first_ref, *(s.ref for s in m0_at_diagnosis))
        text = (
            f"first metastasis {first_date}, more than {days} days after diagnosis {diagnosed} (metachronous)"
        )
        return Flag(False, tuple(dict.fromkeys(refs)), text)
    return Flag(
        None, (primary_ref, first_ref), f"metastasis first documented {first_date}; onset not recorded"
    )


def primary_tumour_size(facts: PatientFacts, terminology: Terminology) -> TumourSizeFact | None:
    """Latest size of the primary tumour: focus on a kidney-cancer condition, or body site kidney."""
    kidney_refs = kidney_cancer_refs(facts.conditions)
    return next((s for s in facts.tumour_sizes if about_kidney_tumour(s, kidney_refs, terminology)), None)


def nephrectomies(facts: PatientFacts) -> tuple[str, ...]:
    return tuple(p.ref for p in facts.procedures if NEPHRECTOMY in p.valuesets)


def primary_in_place(facts: PatientFacts, terminology: Terminology) -> Flag:
    """False after a nephrectomy; True with no nephrectomy and a measured primary tumour; else unknown."""
    removed = nephrectomies(facts)
    if removed:
        return Flag(False, removed, "nephrectomy recorded")
    size = primary_tumour_size(facts, terminology)
    if size is None:
        return Flag(None, (), "no nephrectomy recorded and no measurement of the primary tumour")
    return Flag(
        True, (size.ref,), f"no nephrectomy recorded; primary tumour {size.longest_cm:g} cm on {size.date}"
    )


# --- IMDC ---------------------------------------------------------------------------------------------------


def _time_to_therapy_factor(facts: PatientFacts) -> ImdcFactor:
    name = "diagnosis to systemic therapy < 1 year"
    primary = primary_diagnosis(facts)
    if primary is None:
        return ImdcFactor(name, None, (), "date of the kidney cancer diagnosis unknown")
    diagnosed, ref = primary
    lines = [line for line in facts.therapy_lines if line.metastatic_setting is not False]
    if lines:
        first = lines[0]
        text = f"first systemic therapy {first.start}, diagnosis {diagnosed}"
        return ImdcFactor(name, _less_than_a_year(diagnosed, first.start), (ref, *first.refs), text)
    # No systemic therapy yet: the interval runs to today (treatment, if any, starts now or later).
    if not _less_than_a_year(diagnosed, facts.today):
        return ImdcFactor(
            name, False, (ref,), f"diagnosis {diagnosed}, no systemic therapy recorded, over 1 year"
        )
    return ImdcFactor(
        name, True, (ref,), f"diagnosis {diagnosed}, less than 1 year ago, no therapy recorded yet"
    )


def _performance_factor(facts: PatientFacts, since: date | None) -> ImdcFactor:
    name = "Karnofsky < 80"
    kps = _latest_score(facts.karnofsky, since)
    ecog = _latest_score(facts.ecog, since)
    kps_is_newer = kps is not None and (ecog is None or (kps.date or date.min) >= (ecog.date or date.min))
    if kps is not None and (kps_is_newer or ecog is None or ecog.value == 1):
        return ImdcFactor(name, kps.value < 80, (kps.ref,), f"Karnofsky {kps.value} on {kps.date}")
    if ecog is None:
        return ImdcFactor(name, None, (), "no recent Karnofsky or ECOG score")
    if ecog.value == 0:
        return ImdcFactor(name, False, (ecog.ref,), f"ECOG 0 on {ecog.date} (Karnofsky >= 90)")
    if ecog.value >= 2:
        return ImdcFactor(name, True, (ecog.ref,), f"ECOG {ecog.value} on {ecog.date} (Karnofsky < 80)")
    return ImdcFactor(name, None, (ecog.ref,), f"ECOG 1 on {ecog.date} (Karnofsky 70-80: not decidable)")


def _lab_factor(
    facts: PatientFacts,
    terminology: Terminology,
    analyte_id: str,
    which: Literal["high", "low"],
    since: date | None,
) -> ImdcFactor:
    name = f"{analyte_id} {'> ULN' if which == 'high' else '< LLN'}"
    analyte = terminology.analytes.get(analyte_id)
    lab = latest_lab(facts, analyte_id, since)
    if analyte is None or lab is None:
        return ImdcFactor(name, None, (), f"no recent {analyte_id} value")
    multiple = limit_multiple(lab, analyte, facts.sex, which)
    if multiple is None:
        return ImdcFactor(name, None, (lab.ref,), f"{analyte_id} {_fmt(lab.value)}: limit of normal unknown")
    abnormal = multiple.multiple > 1 if which == "high" else multiple.multiple < 1
    return ImdcFactor(name, abnormal, (lab.ref,), multiple.text)


def _calcium_factor(facts: PatientFacts, terminology: Terminology, since: date | None) -> ImdcFactor:
    """Measured corrected calcium, else calcium corrected with albumin; the newer one is used."""
    name = "corrected calcium > ULN"
    measured = latest_lab(facts, "calcium-corrected", since)
    computed = corrected_calcium(facts, since)
    calcium = latest_lab(facts, "calcium", since)
    use_measured = measured is not None and (
        computed is None or calcium is None or (measured.date or date.min) >= (calcium.date or date.min)
    )
    if use_measured:
        return _lab_factor(facts, terminology, "calcium-corrected", "high", since)
    analyte = terminology.analytes.get("calcium")
    if computed is None or calcium is None or analyte is None:
        return ImdcFactor(name, None, (), "no recent corrected calcium (or calcium with albumin)")
    found = limit_of_normal(calcium, analyte, facts.sex, "high")  # the measured calcium's range
    if found is None:
        return ImdcFactor(name, None, computed.refs, f"{computed.text}: upper limit unknown")
    limit, source = found
    text = f"{computed.text} vs ULN {_fmt(limit)} mg/dL ({source} range)"
    return ImdcFactor(name, computed.value / limit > 1, computed.refs, text)


def imdc_risk(
    facts: PatientFacts,
    terminology: Terminology,
    lab_since: date | None = None,
    performance_since: date | None = None,
) -> ImdcRisk:
    """IMDC factors and the risk groups (favorable 0, intermediate 1-2, poor >= 3) still possible."""
    factors = (
        _time_to_therapy_factor(facts),
        _performance_factor(facts, performance_since),
        _lab_factor(facts, terminology, "hemoglobin", "low", lab_since),
        _calcium_factor(facts, terminology, lab_since),
        _lab_factor(facts, terminology, "neutrophils", "high", lab_since),
        _lab_factor(facts, terminology, "platelets", "high", lab_since),
    )
    return ImdcRisk(factors, imdc_groups_possible([f.abnormal for f in factors]))


def imdc_group(abnormal: int) -> str:
    return "favorable" if abnormal == 0 else "intermediate" if abnormal <= 2 else "poor"


def imdc_groups_possible(factors: Sequence[bool | None]) -> frozenset[str]:
    """Every group reachable when each unknown factor may turn out either way."""
    abnormal = sum(f is True for f in factors)
    unknown = sum(f is None for f in factors)
    return frozenset(imdc_group(n) for n in range(abnormal, abnormal + unknown + 1))
