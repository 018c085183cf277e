"""Observations -> facts: lab values, performance scores, disease status, staging, sizes, blood pressure,
pregnancy tests.

Each kind of fact is declared once (`KINDS`; lab values take their codes from the catalog's analytes) with
the `PatientFacts` field it fills, the LOINC/SNOMED codes it reads, the Observation elements it reads beyond
the value (validated only when wanted), whether it is a repeated measurement, and the value sets it reads by
name. Only a `final`, `amended` or `corrected` Observation gives a fact: eligibility rests on verified
results, and a missing value only makes a criterion unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cds_service.facts.model import (
    BloodPressureFact,
    DiseaseStatusFact,
    LabValue,
    PregnancyTestFact,
    ScoreFact,
    StagingFact,
    TumourSizeFact,
)
from cds_service.fhir.concepts import Amount, codes, references
from cds_service.fhir.records import ObservationRecord, RangeRecord
from cds_service.terminology import LOINC, SNOMED, Analyte, Code, Terminology

USABLE_OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})

ECOG_CODE = (LOINC, "89247-1")
KARNOFSKY_CODE = (LOINC, "89243-0")
DISEASE_STATUS_CODES = frozenset({(LOINC, "97509-4"), (LOINC, "88040-1")})  # 88040-1: mCODE STU1
TUMOUR_SIZE_CODE = (LOINC, "21889-1")
LONGEST_DIMENSION_CODE = (LOINC, "33728-7")
BP_PANEL_CODE = (LOINC, "85354-9")
SYSTOLIC_CODE = (LOINC, "8480-6")
DIASTOLIC_CODE = (LOINC, "8462-4")
M_CATEGORY_CODES = frozenset(
    {(LOINC, "21907-1"), (LOINC, "21901-4"), (LOINC, "21913-9")}
    | {(SNOMED, "277208005"), (SNOMED, "399387003"), (SNOMED, "371497001")}
)
# Qualitative pregnancy tests, [Presence] in urine or serum/plasma: VSAC Pregnancy Test
# 2.16.840.1.113883.3.464.1003.111.12.1011 (2106-3 and 2112-1 as in shared/reference/codes.md; 2118-8, 2110-5,
# 80384-1 and 80385-8 from its 2026 and 2022 expansions). The quantitative tests are the codes of the
# catalog's "hcg" analyte (mappings/analytes.yaml), added by the read plan.
PREGNANCY_QUALITATIVE_CODES = frozenset(
    (LOINC, code) for code in ("2106-3", "2112-1", "2118-8", "2110-5", "80384-1", "80385-8")
)

# Quantitative hCG (analyte "hcg", mIU/mL): above 25 is read as a positive pregnancy test (the usual
# qualitative test threshold), below 5 as negative; 5-25 is equivocal and gives no fact.
HCG_ANALYTE = "hcg"
HCG_POSITIVE_ABOVE = 25.0
HCG_NEGATIVE_BELOW = 5.0

TUMOUR_SIZE_UNITS_TO_CM: Mapping[str, float] = {"cm": 1.0, "mm": 0.1}
BLOOD_PRESSURE_UNITS: frozenset[str] = frozenset({"mm[Hg]", "mmHg"})

STAGING_M1 = "staging-m1"
STAGING_M0 = "staging-m0"
RESULT_POSITIVE = "result-positive"
RESULT_NEGATIVE = "result-negative"
DISEASE_STATUS_PREFIX = "disease-status-"
DISEASE_STATUSES = (
    "improved",
    "stable",
    "worsened",
    "undetermined",
    "complete-remission",
    "partial-remission",
    "metastatic",
)
ECOG_VALUES = tuple(range(6))
KARNOFSKY_VALUES = tuple(range(0, 101, 10))


# A quantity sent without a unit is read in the unit 1, which only a pure number (INR) lists.
UNITLESS = ("1",)


def _convert(analyte: Analyte, amount: Amount | None, *, bound_too: bool = False) -> float | None:
    """Convert an amount to the analyte's unit; None for a unit we do not know, and for a bound (`<0.5`)
    unless `bound_too` (the factor is positive: a bound stays a bound of the same side)."""
    if amount is None or (amount.comparator and not bound_too):
        return None
    for unit in amount.units or UNITLESS:
        value = analyte.to_canonical(amount.value, unit)
        if value is not None:
            return value
    return None


def _reference_range(ranges: tuple[RangeRecord, ...]) -> RangeRecord | None:
    """The Observation's own normal range: the first one that is not restricted to a population."""
    for candidate in ranges:
        meaning = {code for _, code in candidate.meaning}
        if not candidate.applies_to and (not meaning or "normal" in meaning):
            return candidate
    return None


def lab_value(rec: ObservationRecord, analyte: Analyte) -> LabValue | None:
    """The value (or bound, with its comparator) in the analyte's canonical unit, with the Observation's own
    range; None if not convertible."""
    value = _convert(analyte, rec.quantity, bound_too=True)
    if value is None or rec.quantity is None:
        return None
    own = _reference_range(rec.ranges)
    return LabValue(
        analyte=analyte.id,
        value=value,
        unit=analyte.unit,
        date=rec.when,
        ref=rec.ref,
        low=_convert(analyte, own.low) if own else None,
        high=_convert(analyte, own.high) if own else None,
        as_sent=rec.quantity.as_sent if not math.isclose(value, rec.quantity.value) else "",
        comparator=rec.quantity.comparator,
    )


def _answer_values(codes: Iterable[Code], prefix: str, terminology: Terminology) -> set[int]:
    return {
        int(vs_id[len(prefix) :])
        for vs_id in terminology.memberships(codes)
        if vs_id.startswith(prefix) and vs_id[len(prefix) :].isdigit()
    }


def _score(rec: ObservationRecord, kind: str, terminology: Terminology) -> ScoreFact | None:
    """Read ECOG or Karnofsky from the value, else its LA answer code, else the LA interpretation.

    A value outside the scale (ECOG -1 in real fixtures) discards the observation; it does not fall back to
    the interpretation, which would then contradict the value.
    """
    valid = ECOG_VALUES if kind == "ecog" else KARNOFSKY_VALUES
    value: int | None = None
    if rec.integer is not None:
        value = rec.integer
    elif rec.quantity is not None:
        value = (
            int(rec.quantity.value) if rec.quantity.value.is_integer() and not rec.quantity.comparator else -1
        )
    else:
        for codes in (rec.concept.codes if rec.concept else frozenset(), rec.interpretation):
            answers = _answer_values(codes, f"{kind}-", terminology)
            if answers:
                value = answers.pop() if len(answers) == 1 else -1
                break
    if value is None or value not in valid:
        return None
    return ScoreFact(kind=kind, value=value, date=rec.when, ref=rec.ref)


def _matching_code(codes: Iterable[Code], valueset_id: str, terminology: Terminology) -> Code | None:
    vs = terminology.valuesets.get(valueset_id)
    return next((c for c in sorted(codes) if vs is not None and vs.contains(c)), None)


def _disease_status(rec: ObservationRecord, terminology: Terminology) -> DiseaseStatusFact | None:
    if rec.concept is None:
        return None
    found = [
        (status, code)
        for status in DISEASE_STATUSES
        if (code := _matching_code(rec.concept.codes, DISEASE_STATUS_PREFIX + status, terminology))
    ]
    if len(found) != 1:
        return None
    status, code = found[0]
    return DiseaseStatusFact(status=status, code=code, date=rec.when, ref=rec.ref)


def _size_cm(amount: Amount | None) -> float | None:
    if amount is None or amount.comparator:
        return None
    factor = next((TUMOUR_SIZE_UNITS_TO_CM[u] for u in amount.units if u in TUMOUR_SIZE_UNITS_TO_CM), None)
    return None if factor is None or amount.value <= 0 else amount.value * factor


def _tumour_size(rec: ObservationRecord, terminology: Terminology) -> TumourSizeFact | None:
    """Longest dimension: the 33728-7 component, else the largest dimension given, else the value."""
    longest = [_size_cm(c.quantity) for c in rec.components if LONGEST_DIMENSION_CODE in c.code.codes]
    sizes = [s for s in longest if s is not None]
    if not sizes:
        sizes = [s for c in rec.components if (s := _size_cm(c.quantity)) is not None]
    if not sizes and (value := _size_cm(rec.quantity)) is not None:
        sizes = [value]
    if not sizes:
        return None
    return TumourSizeFact(
        longest_cm=max(sizes), date=rec.when, ref=rec.ref, focus=rec.focus, body_sites=rec.body_sites
    )


def _pressure(amount: Amount | None) -> float | None:
    if amount is None or amount.comparator or not BLOOD_PRESSURE_UNITS.intersection(amount.units):
        return None
    return amount.value


def _blood_pressure(rec: ObservationRecord, terminology: Terminology) -> BloodPressureFact | None:
    """A 85354-9 panel with systolic/diastolic components, or a stand-alone systolic or diastolic reading."""
    systolic = _pressure(rec.quantity) if SYSTOLIC_CODE in rec.code.codes else None
    diastolic = _pressure(rec.quantity) if DIASTOLIC_CODE in rec.code.codes else None
    for comp in rec.components:
        if SYSTOLIC_CODE in comp.code.codes and systolic is None:
            systolic = _pressure(comp.quantity)
        elif DIASTOLIC_CODE in comp.code.codes and diastolic is None:
            diastolic = _pressure(comp.quantity)
    if systolic is None and diastolic is None:
        return None
    return BloodPressureFact(systolic=systolic, diastolic=diastolic, date=rec.when, ref=rec.ref)


def _staging(rec: ObservationRecord, terminology: Terminology) -> StagingFact | None:
    if rec.concept is None:
        return None
    m1 = _matching_code(rec.concept.codes, STAGING_M1, terminology)
    m0 = _matching_code(rec.concept.codes, STAGING_M0, terminology)
    if (m1 is None) == (m0 is None):  # neither (MX, stage groups) or contradictory
        return None
    code: Code = m1 or m0  # type: ignore[assignment]
    return StagingFact(metastatic=m1 is not None, code=code, date=rec.when, ref=rec.ref)


_RESULT_WORDS = {"positive": True, "detected": True, "negative": False, "not detected": False}


def _test_result(rec: ObservationRecord, terminology: Terminology) -> bool | None:
    """Positive/negative from the coded value, else the interpretation, else the exact word in valueString."""
    for coded in (rec.concept.codes if rec.concept else frozenset(), rec.interpretation):
        memberships = terminology.memberships(coded)
        positive, negative = RESULT_POSITIVE in memberships, RESULT_NEGATIVE in memberships
        if positive != negative:
            return positive
    if rec.string is not None:
        return _RESULT_WORDS.get(rec.string.strip().lower())
    return None


def _pregnancy_test(rec: ObservationRecord, terminology: Terminology) -> PregnancyTestFact | None:
    positive = _test_result(rec, terminology)
    hcg = terminology.analytes.get(HCG_ANALYTE)
    quantitative = hcg is not None and any(s == LOINC and c in hcg.loinc for s, c in rec.code.codes)
    if positive is None and quantitative:
        level = _convert(hcg, rec.quantity)  # type: ignore[arg-type]
        if level is not None and level > HCG_POSITIVE_ABOVE:
            positive = True
        elif level is not None and level < HCG_NEGATIVE_BELOW:
            positive = False
    if positive is None:
        return None
    return PregnancyTestFact(positive=positive, date=rec.when, ref=rec.ref)


def _lesion(resource: Mapping[str, Any]) -> Hashable:
    """What a tumour size is of: the conditions or structures it focuses on, and its body site."""
    return references(resource.get("focus")), codes(resource.get("bodySite"))


@dataclass(frozen=True)
class Kind:
    """A kind of fact read from Observations (one PatientFacts field), and what it reads."""

    field: str
    codes: frozenset[Code]
    read: Callable[[ObservationRecord, Terminology], Any | None]
    elements: frozenset[str] = frozenset()  # Observation elements read beyond the value
    repeated: bool = False  # a repeated measurement: only its newest usable value is read
    valuesets: frozenset[str] = frozenset()  # read by name
    # A repeated measurement of each distinct what (from the raw JSON), e.g. each lesion of a tumour size.
    per: Callable[[Mapping[str, Any]], Hashable] | None = None
    analyte: str | None = (
        None  # also read under the LOINC codes of this catalog analyte (`with_analyte_codes`)
    )

    def with_analyte_codes(self, terminology: Terminology) -> Kind:
        """This kind with the codes of its analyte in this catalog (itself when it names none)."""
        analyte = terminology.analytes.get(self.analyte) if self.analyte else None
        if analyte is None:
            return self
        return replace(self, codes=self.codes | {(LOINC, code) for code in analyte.loinc})


KINDS: tuple[Kind, ...] = (
    Kind(
        "ecog",
        frozenset({ECOG_CODE}),
        lambda rec, terminology: _score(rec, "ecog", terminology),
        frozenset({"interpretation"}),
        repeated=True,
        valuesets=frozenset(f"ecog-{v}" for v in ECOG_VALUES),
    ),
    Kind(
        "karnofsky",
        frozenset({KARNOFSKY_CODE}),
        lambda rec, terminology: _score(rec, "karnofsky", terminology),
        frozenset({"interpretation"}),
        repeated=True,
        valuesets=frozenset(f"karnofsky-{v}" for v in KARNOFSKY_VALUES),
    ),
    Kind(
        "disease_status",
        DISEASE_STATUS_CODES,
        _disease_status,
        valuesets=frozenset(DISEASE_STATUS_PREFIX + status for status in DISEASE_STATUSES),
    ),
    Kind("staging", M_CATEGORY_CODES, _staging, valuesets=frozenset({STAGING_M1, STAGING_M0})),
    Kind(
        "tumour_sizes",
        frozenset({TUMOUR_SIZE_CODE, LONGEST_DIMENSION_CODE}),
        _tumour_size,
        frozenset({"component", "focus", "bodySite"}),
        repeated=True,
        per=_lesion,
    ),
    Kind(
        "blood_pressure",
        frozenset({BP_PANEL_CODE, SYSTOLIC_CODE, DIASTOLIC_CODE}),
        _blood_pressure,
        frozenset({"component"}),
        repeated=True,
    ),
    Kind(
        "pregnancy_tests",
        PREGNANCY_QUALITATIVE_CODES,
        _pregnancy_test,
        frozenset({"interpretation"}),
        repeated=True,
        valuesets=frozenset({RESULT_POSITIVE, RESULT_NEGATIVE}),
        analyte=HCG_ANALYTE,
    ),
)
KINDS_BY_FIELD: Mapping[str, Kind] = {kind.field: kind for kind in KINDS}
LAB_ELEMENTS = frozenset({"referenceRange"})
"""What a lab value reads beyond the value: the Observation's own reference range (`lab_value`)."""


@dataclass
class ObservationFacts:
    """Facts read from Observations so far, by PatientFacts field (labs by analyte id)."""

    labs: dict[str, list[LabValue]] = field(default_factory=dict)
    unconverted: dict[str, list[LabValue]] = field(default_factory=dict)
    kinds: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, other: ObservationFacts) -> None:
        """Add `other`'s facts after these."""
        for mine, theirs in (
            (self.labs, other.labs),
            (self.unconverted, other.unconverted),
            (self.kinds, other.kinds),
        ):
            for key, values in theirs.items():
                mine.setdefault(key, []).extend(values)

    def fills(self, slot: str) -> bool:
        """Whether these facts hold a usable value of a slot ("lab:<analyte>" or a kind's field)."""
        if slot.startswith("lab:"):
            return bool(self.labs.get(slot[4:]))
        return bool(self.kinds.get(slot))


def read_observation(
    rec: ObservationRecord, terminology: Terminology, kinds: Iterable[Kind], analytes: frozenset[str]
) -> ObservationFacts:
    """The facts one Observation gives: a lab value of a wanted analyte (or its unconverted value), and every
    kind of fact its code may give; nothing unless its status is usable."""
    out = ObservationFacts()
    if rec.status not in USABLE_OBSERVATION_STATUSES:
        return out
    for loinc_code in sorted(code for system, code in rec.code.codes if system == LOINC):
        analyte = terminology.analyte_for_loinc(loinc_code)
        if analyte is None or analyte.id not in analytes:
            continue
        if (lab := lab_value(rec, analyte)) is not None:
            out.labs.setdefault(analyte.id, []).append(lab)
            break
        if rec.quantity is not None:
            unit = rec.quantity.units[-1] if rec.quantity.units else ""
            unconverted = LabValue(
                analyte.id, rec.quantity.value, unit, rec.when, rec.ref, as_sent=rec.quantity.as_sent
            )
            out.unconverted.setdefault(analyte.id, []).append(unconverted)
            break
    for kind in kinds:
        if rec.code.codes & kind.codes and (fact := kind.read(rec, terminology)) is not None:
            out.kinds.setdefault(kind.field, []).append(fact)
    return out
