"""Kidney cancer (renal cell carcinoma): what the generic stages do not know, as operators and derivations.

The primary tumour (the kidney-cancer conditions, its size, whether it is still in place after a
nephrectomy), RCC histology, the timing of metastases against the primary diagnosis, and the IMDC (Heng)
risk model. Each operator declares what it reads; the value sets it reads by name (`kidney-cancer`,
`nephrectomy`, `tumour-site-kidney`) must then be in the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from cds_service.engine.derived import (
    CORRECTED_CALCIUM_PAIRING_DAYS,
    Flag,
    corrected_calcium,
    fmt,
    latest_lab,
    latest_score,
    limit_multiple,
    limit_of_normal,
)
from cds_service.engine.registry import Bounds, EvaluationContext, LeafResult, operator
from cds_service.engine.text import fmt_number, on, refs
from cds_service.facts import ConditionFact, PatientFacts, TumourSizeFact, needs
from cds_service.operators.common import condition_label, flag_result, unavailable
from cds_service.terminology import Terminology
from cds_service.verdicts import Truth

KIDNEY_CANCER = "kidney-cancer"
NEPHRECTOMY = "nephrectomy"
TUMOUR_SITE_KIDNEY = "tumour-site-kidney"
SYNCHRONOUS_DAYS = 90
IMDC_GROUPS = ("favorable", "intermediate", "poor")
# Analytes `imdc` reads since `lab_since` (albumin too, near the calcium it corrects).
IMDC_LAB_ANALYTES = ("hemoglobin", "calcium", "calcium-corrected", "neutrophils", "platelets")


# --- the primary tumour and the timing of metastases


def kidney_cancer_refs(conditions: Iterable[ConditionFact]) -> frozenset[str]:
    return frozenset(c.ref for c in conditions if KIDNEY_CANCER in c.valuesets)


def about_kidney_tumour(size: TumourSizeFact, kidney_refs: frozenset[str], terminology: Terminology) -> bool:
    """Whether a size is of the primary kidney tumour: its focus is a kidney-cancer condition (`kidney_refs`),
    or its body site is a kidney."""
    if any(
        focus in kidney_refs or focus.endswith(tuple("/" + r for r in kidney_refs)) for focus in size.focus
    ):
        return True
    site = terminology.valuesets.get(TUMOUR_SITE_KIDNEY)
    return site is not None and any(site.contains(code) for code in size.body_sites)


def primary_diagnosis(facts: PatientFacts) -> tuple[date, str] | None:
    """Earliest dated, confirmed kidney-cancer condition: (onset, reference)."""
    dated = [
        (c.onset, c.ref) for c in facts.conditions if KIDNEY_CANCER in c.valuesets and c.confirmed and c.onset
    ]
    return min(dated) if dated else None  # type: ignore[type-var]


def synchronous(facts: PatientFacts, days: int = SYNCHRONOUS_DAYS) -> Flag:
    """True when metastasis is documented within `days` of the primary diagnosis (condition, M1 or status).

    False (metachronous) needs positive evidence: a metastasis condition first dated after the window, or an
    M0 staging at diagnosis. A late M1 staging or status alone does not say when metastases appeared: unknown.
    """
    primary = primary_diagnosis(facts)
    if primary is None:
        return Flag(None, (), "date of the primary kidney cancer diagnosis unknown")
    diagnosed, primary_ref = primary
    evidence = facts.metastasis.dated()
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
        cited = (primary_ref, first_ref, *(s.ref for s in m0_at_diagnosis))
        text = (
            f"first metastasis {first_date}, more than {days} days after diagnosis {diagnosed} (metachronous)"
        )
        return Flag(False, tuple(dict.fromkeys(cited)), text)
    return Flag(
        None, (primary_ref, first_ref), f"metastasis first documented {first_date}; onset not recorded"
    )


def primary_tumour(facts: PatientFacts, terminology: Terminology) -> TumourSizeFact | None:
    """Latest size of the primary tumour: focus on a kidney-cancer condition, or body site kidney."""
    kidney_refs = kidney_cancer_refs(facts.conditions)
    return next((s for s in facts.tumour_sizes if about_kidney_tumour(s, kidney_refs, terminology)), None)


def nephrectomies(facts: PatientFacts) -> tuple[str, ...]:
    return tuple(p.ref for p in facts.procedures if NEPHRECTOMY in p.valuesets)


def primary_in_place_flag(facts: PatientFacts, terminology: Terminology) -> Flag:
    """False after a nephrectomy; True with no nephrectomy and a measured primary tumour; else unknown."""
    removed = nephrectomies(facts)
    if removed:
        return Flag(False, removed, "nephrectomy recorded")
    size = primary_tumour(facts, terminology)
    if size is None:
        return Flag(None, (), "no nephrectomy recorded and no measurement of the primary tumour")
    return Flag(
        True, (size.ref,), f"no nephrectomy recorded; primary tumour {size.longest_cm:g} cm on {size.date}"
    )


# --- IMDC (Heng) risk


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


def _less_than_a_year(start: date, later: date) -> bool:
    """Tell whether `later` comes before the first anniversary of `start` (29 February: 28 February)."""
    if start.year == date.max.year:
        return True
    anniversary = date(start.year + 1, start.month, 28 if (start.month, start.day) == (2, 29) else start.day)
    return later < anniversary


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
    kps = latest_score(facts.karnofsky, since)
    ecog = latest_score(facts.ecog, since)
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
        return ImdcFactor(name, None, (lab.ref,), f"{analyte_id} {fmt(lab.value)}: limit of normal unknown")
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
    text = f"{computed.text} vs ULN {fmt(limit)} mg/dL ({source} range)"
    return ImdcFactor(name, computed.value / limit > 1, computed.refs, text)


def imdc(
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


# --- operators


def _primary_cancers(facts: PatientFacts) -> list[ConditionFact]:
    return [c for c in facts.conditions if c.confirmed and KIDNEY_CANCER in c.valuesets]


def _histology_text(condition: ConditionFact, context: EvaluationContext, valueset_id: str) -> str:
    """The condition's display, with the histology it matched unless the display already says it."""
    histology = re.sub(r"\s*\([^()]*\)$", "", context.labels.valueset(valueset_id))
    display = condition_label(condition, histology)
    return display if histology.lower() in display.lower() else f"{display} ({histology})"


@operator(
    "histology",
    {"valueset": str, "contrary": str},
    needs=needs("conditions", valuesets=[KIDNEY_CANCER]),
    required=("valueset",),
)
def histology(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    wanted, contrary = params["valueset"], params.get("contrary")
    primaries = _primary_cancers(facts)
    if not primaries:
        return LeafResult(Truth.UNKNOWN, f"no record of {context.labels.valueset(KIDNEY_CANCER)}")
    matching = [c for c in primaries if wanted in c.valuesets]
    if matching:
        return LeafResult(Truth.TRUE, _histology_text(matching[0], context, wanted), refs(matching))
    opposed = [c for c in primaries if contrary is not None and contrary in c.valuesets]
    if contrary is not None and opposed:
        return LeafResult(Truth.FALSE, _histology_text(opposed[0], context, contrary), refs(opposed))
    return LeafResult(Truth.UNKNOWN, "histology not recorded", refs(primaries))


@operator(
    "metastases_synchronous",
    {"days": int},
    needs=needs("conditions", "metastasis", "staging", valuesets=[KIDNEY_CANCER]),
)
def metastases_synchronous(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    days = params.get("days", SYNCHRONOUS_DAYS)
    return flag_result(context.derive(facts, synchronous, days))


@operator(
    "primary_in_place",
    needs=needs(
        "procedures", "conditions", "tumour_sizes", valuesets=[NEPHRECTOMY, KIDNEY_CANCER, TUMOUR_SITE_KIDNEY]
    ),
)
def primary_in_place(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    result = flag_result(context.derive(facts, primary_in_place_flag, context.terminology))
    unreadable = unavailable(facts, "Procedure")
    if result.truth is Truth.TRUE and unreadable:  # "no nephrectomy" proves nothing then
        return LeafResult(Truth.UNKNOWN, f"{result.reason}; {unreadable}", result.evidence)
    return result


@operator(
    "primary_tumour_size",
    needs=needs("conditions", "tumour_sizes", valuesets=[KIDNEY_CANCER, TUMOUR_SITE_KIDNEY]),
    bounds={"le_cm": "le", "gt_cm": "gt"},
)
def primary_tumour_size(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    size = context.derive(facts, primary_tumour, context.terminology)
    if size is None:
        return LeafResult(Truth.UNKNOWN, "no size of the primary kidney tumour recorded")
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(size.longest_cm) else Truth.FALSE
    reason = f"primary tumour {fmt_number(size.longest_cm)} cm{on(size.date)} ({bounds.text(' cm')})"
    return LeafResult(truth, reason, (size.ref,))


def _prepare_imdc(params: dict[str, Any]) -> None:
    unknown = set(params["in"]) - set(IMDC_GROUPS)
    if unknown:
        raise ValueError(f"in: unknown IMDC group {sorted(unknown)}")
    params["in"] = frozenset(params["in"])


IMDC_NEEDS = needs(
    "conditions",
    "therapy_lines",
    "karnofsky",
    "ecog",
    "sex",
    analytes=IMDC_LAB_ANALYTES,
    near={"albumin": ("calcium", CORRECTED_CALCIUM_PAIRING_DAYS)},
    valuesets=[KIDNEY_CANCER],
)


@operator("imdc_risk", {"in": (list, tuple)}, needs=IMDC_NEEDS, required=("in",), prepare=_prepare_imdc)
def imdc_risk(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    """True when every group still possible is wanted: 3 known factors decide "poor" whatever is unknown."""
    lab_since = facts.today - timedelta(days=context.lab_max_age_days)
    performance_since = facts.today - timedelta(days=context.performance_max_age_days)
    risk = context.derive(facts, imdc, context.terminology, lab_since, performance_since)
    wanted: frozenset[str] = params["in"]
    if risk.possible <= wanted:
        truth = Truth.TRUE
    elif not risk.possible & wanted:
        truth = Truth.FALSE
    else:
        truth = Truth.UNKNOWN
    reason = risk.text
    unknown = [f"{f.name} ({f.text})" for f in risk.factors if f.abnormal is None]
    if truth is Truth.UNKNOWN and unknown:
        reason += f"; unknown: {'; '.join(unknown)}"
    return LeafResult(truth, reason, risk.refs)
