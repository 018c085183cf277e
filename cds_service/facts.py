"""Facts about one patient, as plain frozen dataclasses: what the rules read.

Built from FHIR records by `build_facts` (below). Absent stays `None` or an empty tuple, never a sentinel,
so that a rule can turn it into `unknown`. Every fact keeps the reference of the resource it came from (`ref`,
e.g. "Observation/cr-1") so that a verdict can cite it. Sequences are ordered newest first.

Value-set memberships (`valuesets`) are computed once here, so rules test membership by id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from cds_service.terminology import ICD10CM, INGREDIENT, LOINC, SNOMED, Analyte, Code, Terminology

if TYPE_CHECKING:  # records come from fhir_records, imported lazily so the rules never load FHIR models
    from cds_service.fhir_records import (
        Amount,
        ConditionRecord,
        MedicationUseRecord,
        ObservationCandidate,
        ObservationRecord,
        PatientRecords,
        RangeRecord,
        ReadableCodes,
    )


@dataclass(frozen=True)
class ConditionFact:
    ref: str
    codes: frozenset[Code]
    valuesets: frozenset[str]  # ids of value sets containing any of `codes` or `histology`
    display: str | None
    onset: date | None  # onset, else recordedDate
    current: bool  # False for resolved / inactive / remission (still history)
    confirmed: bool  # verificationStatus confirmed or absent; provisional/differential/unconfirmed: False
    histology: frozenset[Code] = frozenset()  # mCODE histology-morphology-behavior extension
    body_sites: frozenset[Code] = frozenset()


@dataclass(frozen=True)
class LabValue:
    """One measurement converted to its analyte's canonical unit, with the Observation's own range."""

    analyte: str
    value: float
    unit: str  # canonical unit of the analyte
    date: date | None
    ref: str
    low: float | None = None  # referenceRange.low, converted; None when the Observation has none
    high: float | None = None
    as_sent: str = ""  # e.g. "97 umol/L", for the reason text when the unit was converted


@dataclass(frozen=True)
class ScoreFact:
    """A performance status score (ECOG 0-5, Karnofsky 0-100)."""

    kind: str  # "ecog" | "karnofsky"
    value: int
    date: date | None
    ref: str


@dataclass(frozen=True)
class DiseaseStatusFact:
    """mCODE CancerDiseaseStatus (LOINC 97509-4; 88040-1 in STU1)."""

    # improved | stable | worsened | undetermined | complete-remission | partial-remission | metastatic
    status: str
    code: Code
    date: date | None
    ref: str


@dataclass(frozen=True)
class TumourSizeFact:
    """mCODE TumorSize (21889-1) or a longest-dimension (33728-7) observation, in cm."""

    longest_cm: float
    date: date | None
    ref: str
    focus: tuple[str, ...] = ()  # references of the Condition(s) / BodyStructure the size is about
    body_sites: frozenset[Code] = frozenset()


@dataclass(frozen=True)
class BloodPressureFact:
    systolic: float | None
    diastolic: float | None
    date: date | None
    ref: str


@dataclass(frozen=True)
class StagingFact:
    """A TNM distant-metastasis (M) category observation: `metastatic` True for M1*, False for M0."""

    metastatic: bool
    code: Code
    date: date | None
    ref: str


@dataclass(frozen=True)
class PregnancyTestFact:
    positive: bool
    date: date | None
    ref: str


@dataclass(frozen=True)
class MedicationFact:
    """A MedicationStatement or MedicationRequest, after product -> ingredient mapping."""

    ref: str
    ingredients: frozenset[str]  # ingredient ids from mappings/medications.yaml
    valuesets: frozenset[str]  # value sets containing (INGREDIENT, id) or the medication's own codes
    display: str | None
    start: date | None
    end: date | None
    active: bool  # status active / on-hold / intended (not completed or stopped)


@dataclass(frozen=True)
class TherapyLine:
    """A line of systemic anticancer therapy: drugs started together, kept until a new drug is added."""

    number: int  # 1-based, in time order over all lines
    ingredients: frozenset[str]
    start: date
    end: date | None  # None while ongoing
    ongoing: bool
    refs: tuple[str, ...]
    metastatic_setting: bool | None  # None when the metastasis date is unknown


@dataclass(frozen=True)
class ProcedureFact:
    ref: str
    codes: frozenset[Code]
    valuesets: frozenset[str]
    display: str | None
    date: date | None  # performed (start of the period)
    body_sites: frozenset[Code] = frozenset()


@dataclass(frozen=True)
class PatientFacts:
    """Everything the rules may read about one patient on `today`."""

    today: date
    patient_ref: str | None = None
    birth_date: date | None = None
    sex: str | None = None  # FHIR administrative gender: male | female | other | unknown
    conditions: tuple[ConditionFact, ...] = ()
    labs: Mapping[str, tuple[LabValue, ...]] = field(default_factory=dict)  # analyte id -> newest first
    ecog: tuple[ScoreFact, ...] = ()
    karnofsky: tuple[ScoreFact, ...] = ()
    disease_status: tuple[DiseaseStatusFact, ...] = ()
    staging: tuple[StagingFact, ...] = ()
    tumour_sizes: tuple[TumourSizeFact, ...] = ()
    blood_pressure: tuple[BloodPressureFact, ...] = ()
    pregnancy_tests: tuple[PregnancyTestFact, ...] = ()
    medications: tuple[MedicationFact, ...] = ()
    therapy_lines: tuple[TherapyLine, ...] = ()
    procedures: tuple[ProcedureFact, ...] = ()
    skipped: tuple[str, ...] = ()  # references of resources that failed validation
    # Resource types that could not be read (FHIR server failure): absence proves nothing for them.
    unavailable: frozenset[str] = frozenset()
    # Lab values whose unit is not one of the analyte's (value and unit as sent, newest first): never used,
    # but a rule can say why its lab stays unknown.
    unconverted_labs: Mapping[str, tuple[LabValue, ...]] = field(default_factory=dict)

    @property
    def age(self) -> int | None:
        """Age in whole years on `today`, or None without a birth date."""
        if self.birth_date is None:
            return None
        born = self.birth_date
        years = self.today.year - born.year
        if (self.today.month, self.today.day) < (born.month, born.day):
            years -= 1
        return years


# --- building facts from FHIR records -----------------------------------------------------------------------

ECOG_CODE = (LOINC, "89247-1")
KARNOFSKY_CODE = (LOINC, "89243-0")
DISEASE_STATUS_CODES = frozenset({(LOINC, "97509-4"), (LOINC, "88040-1")})  # 88040-1: mCODE STU1
TUMOUR_SIZE_CODE = (LOINC, "21889-1")
LONGEST_DIMENSION_CODE = (LOINC, "33728-7")
TUMOUR_SIZE_CODES = frozenset({TUMOUR_SIZE_CODE, LONGEST_DIMENSION_CODE})
BP_PANEL_CODE = (LOINC, "85354-9")
SYSTOLIC_CODE = (LOINC, "8480-6")
DIASTOLIC_CODE = (LOINC, "8462-4")
M_CATEGORY_CODES = frozenset(
    {(LOINC, "21907-1"), (LOINC, "21901-4"), (LOINC, "21913-9")}
    | {(SNOMED, "277208005"), (SNOMED, "399387003"), (SNOMED, "371497001")}
)
PREGNANCY_QUALITATIVE_CODES = frozenset({(LOINC, "2106-3"), (LOINC, "2112-1")})
PREGNANCY_QUANTITATIVE_CODES = frozenset({(LOINC, "2107-1"), (LOINC, "19080-1")})
SPECIAL_OBSERVATION_CODES = frozenset(
    {
        ECOG_CODE,
        KARNOFSKY_CODE,
        TUMOUR_SIZE_CODE,
        LONGEST_DIMENSION_CODE,
        BP_PANEL_CODE,
        SYSTOLIC_CODE,
        DIASTOLIC_CODE,
    }
    | DISEASE_STATUS_CODES
    | M_CATEGORY_CODES
    | PREGNANCY_QUALITATIVE_CODES
    | PREGNANCY_QUANTITATIVE_CODES
)

# Quantitative hCG (analyte "hcg", mIU/mL): above 25 is read as a positive pregnancy test (the usual
# qualitative test threshold), below 5 as negative; 5-25 is equivocal and gives no fact.
HCG_ANALYTE = "hcg"
HCG_POSITIVE_ABOVE = 25.0
HCG_NEGATIVE_BELOW = 5.0

TUMOUR_SIZE_UNITS_TO_CM: Mapping[str, float] = {"cm": 1.0, "mm": 0.1}
BLOOD_PRESSURE_UNITS: frozenset[str] = frozenset({"mm[Hg]", "mmHg"})

# Observation statuses whose values are used. `preliminary` is left out on purpose: eligibility rests on
# verified results, and a missing value only makes a criterion unknown.
USABLE_OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})
IGNORED_VERIFICATION = frozenset({"entered-in-error", "refuted"})
UNCONFIRMED_VERIFICATION = frozenset({"provisional", "differential", "unconfirmed"})
NOT_CURRENT_CLINICAL = frozenset({"resolved", "inactive", "remission"})
IGNORED_MEDICATION_STATUSES = frozenset({"entered-in-error", "cancelled", "not-taken", "draft"})
# A proposal or plan is not an order: counting it would invent an exposure (or a therapy line).
IGNORED_REQUEST_INTENTS = frozenset({"proposal", "plan"})
ACTIVE_MEDICATION_STATUSES = frozenset({"active", "on-hold", "intended"})

LINE_JOIN_DAYS = 28  # a drug started within this many days of a line's start belongs to that line
# A line started up to this long before the first metastasis date is a line for metastatic disease.
METASTATIC_LINE_MARGIN_DAYS = 30

KIDNEY_CANCER = "kidney-cancer"
METASTATIC_DISEASE = "metastatic-disease"
NEPHRECTOMY = "nephrectomy"
SYSTEMIC_ANTICANCER = "systemic-anticancer"
PREGNANCY = "pregnancy"
STAGING_M1 = "staging-m1"
STAGING_M0 = "staging-m0"
RESULT_POSITIVE = "result-positive"
RESULT_NEGATIVE = "result-negative"
TUMOUR_SITE_KIDNEY = "tumour-site-kidney"
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

VALUESETS_READ_BY_FACTS: frozenset[str] = frozenset(
    {KIDNEY_CANCER, METASTATIC_DISEASE, NEPHRECTOMY, SYSTEMIC_ANTICANCER, PREGNANCY}
    | {STAGING_M1, STAGING_M0, RESULT_POSITIVE, RESULT_NEGATIVE, TUMOUR_SITE_KIDNEY}
    | {DISEASE_STATUS_PREFIX + status for status in DISEASE_STATUSES}
    | {f"ecog-{v}" for v in ECOG_VALUES}
    | {f"karnofsky-{v}" for v in KARNOFSKY_VALUES}
)


@dataclass(frozen=True)
class MeasurementWindows:
    """How many days before today each repeated measurement can still become evidence (from the rules).

    Given to `build_facts`, it validates only the Observations of such a measurement dated within its window,
    the newest usable one older than that (so that a reason can say "latest creatinine ... is older than 30
    days") and undated ones; a measurement no rule reads keeps only that newest one. With `newest_only` (the
    pipeline), `build_facts` validates of these only what the rules read (see `_read_newest`), and nothing of
    an analyte missing from `labs`.
    """

    labs: Mapping[str, int] = field(default_factory=dict)  # analyte id -> days
    performance: int = 0  # ECOG and Karnofsky (a rule on one reads the other too)
    blood_pressure: int = 0
    pregnancy_test: int = 0
    # Analyte -> (anchor analyte, days): besides its newest value, the rules read the value closest to the
    # newest value of the anchor, within so many days (albumin for a corrected calcium).
    pairs: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def by_code(self, terminology: Terminology) -> dict[Code, int]:
        """Window of each Observation code of a repeated measurement (the longest when a code has several)."""
        days: dict[Code, int] = {}

        def widen(codes: Iterable[Code], window: int) -> None:
            for code in codes:
                days[code] = max(days.get(code, 0), window)

        for analyte in terminology.analytes.values():
            widen(((LOINC, code) for code in analyte.loinc), self.labs.get(analyte.id, 0))
        widen((ECOG_CODE, KARNOFSKY_CODE), self.performance)
        widen((BP_PANEL_CODE, SYSTOLIC_CODE, DIASTOLIC_CODE), self.blood_pressure)
        widen(PREGNANCY_QUALITATIVE_CODES | PREGNANCY_QUANTITATIVE_CODES, self.pregnancy_test)
        return days


def _newest_first(items: Iterable[Any]) -> tuple[Any, ...]:
    """Sort facts by `date` (`start` for medications), newest first, undated last; ties by reference."""

    def key(item: Any) -> tuple[bool, date, str]:
        when = item.date if hasattr(item, "date") else item.start
        return (when is not None, when or date.min, item.ref)

    return tuple(sorted(items, key=key, reverse=True))


def _convert(analyte: Analyte, amount: Amount | None) -> float | None:
    """Convert an exact amount to the analyte's unit; None for a bound (`<0.5`) or a unit we do not know."""
    if amount is None or amount.comparator:
        return None
    for unit in amount.units:
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


def _lab_value(rec: ObservationRecord, analyte: Analyte) -> LabValue | None:
    value = _convert(analyte, rec.quantity)
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
        as_sent=rec.quantity.as_sent,
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


def _tumour_size(rec: ObservationRecord) -> TumourSizeFact | None:
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


def _blood_pressure(rec: ObservationRecord) -> BloodPressureFact | None:
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
    for codes in (rec.concept.codes if rec.concept else frozenset(), rec.interpretation):
        memberships = terminology.memberships(codes)
        positive, negative = RESULT_POSITIVE in memberships, RESULT_NEGATIVE in memberships
        if positive != negative:
            return positive
    if rec.string is not None:
        return _RESULT_WORDS.get(rec.string.strip().lower())
    return None


def _pregnancy_test(rec: ObservationRecord, terminology: Terminology) -> PregnancyTestFact | None:
    positive = _test_result(rec, terminology)
    hcg = terminology.analytes.get(HCG_ANALYTE)
    if positive is None and rec.code.codes & PREGNANCY_QUANTITATIVE_CODES and hcg is not None:
        level = _convert(hcg, rec.quantity)
        if level is not None and level > HCG_POSITIVE_ABOVE:
            positive = True
        elif level is not None and level < HCG_NEGATIVE_BELOW:
            positive = False
    if positive is None:
        return None
    return PregnancyTestFact(positive=positive, date=rec.when, ref=rec.ref)


@dataclass
class _ObservationFacts:
    labs: dict[str, list[LabValue]] = field(default_factory=dict)
    unconverted: dict[str, list[LabValue]] = field(default_factory=dict)
    ecog: list[ScoreFact] = field(default_factory=list)
    karnofsky: list[ScoreFact] = field(default_factory=list)
    disease_status: list[DiseaseStatusFact] = field(default_factory=list)
    staging: list[StagingFact] = field(default_factory=list)
    tumour_sizes: list[TumourSizeFact] = field(default_factory=list)
    blood_pressure: list[BloodPressureFact] = field(default_factory=list)
    pregnancy_tests: list[PregnancyTestFact] = field(default_factory=list)

    def extend(self, other: _ObservationFacts) -> None:
        """Add `other`'s facts after these: as if its records had been read after these ones."""
        for name in _OBSERVATION_FACT_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, dict):
                for key, values in theirs.items():
                    mine.setdefault(key, []).extend(values)
            else:
                mine.extend(theirs)


_OBSERVATION_FACT_FIELDS = tuple(f.name for f in dataclasses.fields(_ObservationFacts))


def _read_observations(records: Iterable[ObservationRecord], terminology: Terminology) -> _ObservationFacts:
    out = _ObservationFacts()
    for rec in records:
        if rec.status not in USABLE_OBSERVATION_STATUSES:
            continue
        codes = rec.code.codes
        for loinc_code in sorted(code for system, code in codes if system == LOINC):
            analyte = terminology.analyte_for_loinc(loinc_code)
            if analyte is not None and (lab := _lab_value(rec, analyte)) is not None:
                out.labs.setdefault(analyte.id, []).append(lab)
                break
            if analyte is not None and rec.quantity is not None and not rec.quantity.comparator:
                unit = rec.quantity.units[-1] if rec.quantity.units else ""
                out.unconverted.setdefault(analyte.id, []).append(
                    LabValue(
                        analyte.id, rec.quantity.value, unit, rec.when, rec.ref, as_sent=rec.quantity.as_sent
                    )
                )
                break
        if ECOG_CODE in codes and (score := _score(rec, "ecog", terminology)):
            out.ecog.append(score)
        if KARNOFSKY_CODE in codes and (score := _score(rec, "karnofsky", terminology)):
            out.karnofsky.append(score)
        if codes & DISEASE_STATUS_CODES and (status := _disease_status(rec, terminology)):
            out.disease_status.append(status)
        if codes & M_CATEGORY_CODES and (stage := _staging(rec, terminology)):
            out.staging.append(stage)
        if codes & TUMOUR_SIZE_CODES and (size := _tumour_size(rec)):
            out.tumour_sizes.append(size)
        if codes & {BP_PANEL_CODE, SYSTOLIC_CODE, DIASTOLIC_CODE} and (bp := _blood_pressure(rec)):
            out.blood_pressure.append(bp)
        if codes & (PREGNANCY_QUALITATIVE_CODES | PREGNANCY_QUANTITATIVE_CODES) and (
            test := _pregnancy_test(rec, terminology)
        ):
            out.pregnancy_tests.append(test)
    return out


def _condition_facts(records: Iterable[ConditionRecord], terminology: Terminology) -> list[ConditionFact]:
    return [fact for rec in records if (fact := _condition_fact(rec, terminology))]


def _condition_fact(rec: ConditionRecord, terminology: Terminology) -> ConditionFact | None:
    """Entered-in-error and refuted conditions are dropped; resolved / inactive / remission are history."""
    if rec.verification_status in IGNORED_VERIFICATION:
        return None
    return ConditionFact(
        ref=rec.ref,
        codes=rec.code.codes,
        valuesets=terminology.memberships(rec.code.codes | rec.histology),
        display=rec.code.text,
        onset=rec.onset or rec.recorded,
        current=rec.clinical_status not in NOT_CURRENT_CLINICAL,
        confirmed=rec.verification_status not in UNCONFIRMED_VERIFICATION,
        histology=rec.histology,
        body_sites=rec.body_sites,
    )


def _medication_fact(
    rec: MedicationUseRecord, terminology: Terminology, today: date
) -> MedicationFact | None:
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


def first_metastasis(
    conditions: Iterable[ConditionFact],
    staging: Iterable[StagingFact],
    disease_status: Iterable[DiseaseStatusFact],
) -> tuple[date, str] | None:
    """Earliest dated evidence of distant metastasis (condition onset, M1 staging, status) and its ref."""
    dated = [
        (c.onset, c.ref) for c in conditions if METASTATIC_DISEASE in c.valuesets and c.confirmed and c.onset
    ]
    dated += [(s.date, s.ref) for s in staging if s.metastatic and s.date]
    dated += [(d.date, d.ref) for d in disease_status if d.status == "metastatic" and d.date]
    return min(dated) if dated else None


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
                refs=tuple(m.ref for m in group),
                metastatic_setting=metastatic,
            )
        )
    return tuple(lines)


_SECONDARY_ICD10_CATEGORIES = ("C77", "C78", "C79", "C7B")  # secondary (metastatic) neoplasms


def is_malignancy_code(system: str, code: str) -> bool:
    """ICD-10-CM C00-D09 (malignant and in situ neoplasms), leaving out secondary neoplasms: the rules
    read these as another cancer without a value set."""
    if system != ICD10CM or code.startswith(_SECONDARY_ICD10_CATEGORIES):
        return False
    return code[:1] == "C" or ("D00" <= code[:3] <= "D09")


def readable_codes(terminology: Terminology) -> ReadableCodes:
    """What a rule or derived value can read of a Condition, Procedure or medication: its facts carry
    value-set memberships, ingredients and (for conditions) malignancy codes, and nothing else is read by
    code. Anything else is left out before validation (see `fhir_records.ReadableCodes`)."""
    from cds_service.fhir_records import ReadableCodes  # FHIR only here

    def condition(codes: frozenset[Code]) -> bool:
        return bool(terminology.memberships(codes)) or any(is_malignancy_code(*code) for code in codes)

    def procedure(codes: frozenset[Code]) -> bool:
        return bool(terminology.memberships(codes))

    def medication(codes: frozenset[Code], text: str | None) -> bool:
        return bool(terminology.memberships(codes)) or bool(terminology.ingredients_for(codes, text))

    return ReadableCodes(condition=condition, procedure=procedure, medication=medication)


def observation_codes_to_read(terminology: Terminology) -> frozenset[Code]:
    """Observation codes worth validating: analyte LOINC codes plus scores, statuses, sizes and tests."""
    return lab_value_codes(terminology) | SPECIAL_OBSERVATION_CODES


def lab_value_codes(terminology: Terminology) -> frozenset[Code]:
    """Codes read as lab values only (analytes): of these Observations only the value and its reference
    range are read (see `_lab_value`), so only those are validated."""
    return frozenset((LOINC, code) for code in terminology.relevant_loinc()) - SPECIAL_OBSERVATION_CODES


def _facts_from_records(
    records: PatientRecords,
    terminology: Terminology,
    today: date,
    patient_id: str | None,
    observations: _ObservationFacts | None = None,
    conditions: list[ConditionFact] | None = None,
) -> PatientFacts:
    """The facts of the records; `observations` and `conditions`, when given, are those already worked out
    from `records.observations` and `records.conditions`."""
    patient = next(
        (p for p in records.patients if patient_id is None or p.ref == f"Patient/{patient_id}"),
        None,
    )
    if conditions is None:
        conditions = _condition_facts(records.conditions, terminology)
    obs = _read_observations(records.observations, terminology) if observations is None else observations
    medications = [m for rec in records.medication_uses if (m := _medication_fact(rec, terminology, today))]
    procedures = [
        ProcedureFact(
            ref=rec.ref,
            codes=rec.code.codes,
            valuesets=terminology.memberships(rec.code.codes),
            display=rec.code.text,
            date=rec.performed,
            body_sites=rec.body_sites,
        )
        for rec in records.procedures
        if rec.status == "completed"
    ]
    metastasis = first_metastasis(conditions, obs.staging, obs.disease_status)
    return PatientFacts(
        today=today,
        patient_ref=patient.ref if patient else (f"Patient/{patient_id}" if patient_id else None),
        birth_date=patient.birth_date if patient else None,
        sex=patient.gender if patient else None,
        conditions=tuple(
            sorted(conditions, key=lambda c: (c.onset is not None, c.onset or date.min, c.ref), reverse=True)
        ),
        labs={analyte: _newest_first(values) for analyte, values in sorted(obs.labs.items())},
        unconverted_labs={
            analyte: _newest_first(values) for analyte, values in sorted(obs.unconverted.items())
        },
        ecog=_newest_first(obs.ecog),
        karnofsky=_newest_first(obs.karnofsky),
        disease_status=_newest_first(obs.disease_status),
        staging=_newest_first(obs.staging),
        tumour_sizes=_newest_first(obs.tumour_sizes),
        blood_pressure=_newest_first(obs.blood_pressure),
        pregnancy_tests=_newest_first(obs.pregnancy_tests),
        medications=_newest_first(medications),
        therapy_lines=therapy_lines(medications, metastasis[0] if metastasis else None),
        procedures=_newest_first(procedures),
        skipped=records.skipped,
    )


def _slots_of(code: Code, terminology: Terminology) -> tuple[str, ...]:
    """The kinds of repeated-measurement fact an Observation with this code can give ("lab:<analyte>"...)."""
    system, value = code
    analyte = terminology.analyte_for_loinc(value) if system == LOINC else None
    slots = [f"lab:{analyte.id}"] if analyte is not None else []
    slots += [slot for slot, codes in _SLOT_CODES if code in codes]
    return tuple(slots)


_SLOT_CODES: tuple[tuple[str, frozenset[Code]], ...] = (
    ("ecog", frozenset({ECOG_CODE})),
    ("karnofsky", frozenset({KARNOFSKY_CODE})),
    ("blood_pressure", frozenset({BP_PANEL_CODE, SYSTOLIC_CODE, DIASTOLIC_CODE})),
    ("pregnancy_test", PREGNANCY_QUALITATIVE_CODES | PREGNANCY_QUANTITATIVE_CODES),
)


def _slots_filled(found: _ObservationFacts) -> frozenset[str]:
    filled = {f"lab:{analyte}" for analyte in found.labs}
    filled.update(slot for slot, values in _slot_values(found) if values)
    return frozenset(filled)


def _slot_values(found: _ObservationFacts) -> tuple[tuple[str, list[Any]], ...]:
    return (
        ("ecog", found.ecog),
        ("karnofsky", found.karnofsky),
        ("blood_pressure", found.blood_pressure),
        ("pregnancy_test", found.pregnancy_tests),
    )


class _Reader:
    """Validates candidates on demand and remembers the facts each one gives."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self._found: dict[int, _ObservationFacts] = {}

    def facts_of(self, candidate: ObservationCandidate) -> _ObservationFacts:
        found = self._found.get(id(candidate))
        if found is None:
            record = candidate.record()
            found = _read_observations((record,) if record else (), self.terminology)
            self._found[id(candidate)] = found
        return found

    def first_filling(self, candidates: Iterable[ObservationCandidate], slot: str) -> None:
        """Read `candidates` in order until one gives a fact of kind `slot` (only a usable status can)."""
        for candidate in candidates:
            if candidate.status in USABLE_OBSERVATION_STATUSES and slot in _slots_filled(
                self.facts_of(candidate)
            ):
                return


def _candidates_newest_first(candidates: Iterable[ObservationCandidate]) -> list[ObservationCandidate]:
    """In the order of `_newest_first` (by date, undated last, ties by reference)."""
    return sorted(candidates, key=lambda c: (c.day is not None, c.day or date.min, c.ref), reverse=True)


def _read_newest(
    candidates: tuple[ObservationCandidate, ...],
    terminology: Terminology,
    windows: MeasurementWindows,
    kidney_refs: frozenset[str],
) -> _Reader:
    """Read (validate and convert) the candidates the rules can use; the others stay unread.

    The rules read only the newest usable value of a repeated measurement (usable: final status, a unit that
    converts, no comparator, valid FHIR, a score on its scale...), and an unconverted value newer than it.
    So, for each kind of fact, its candidates are read newest first until one gives a fact: the facts then
    start with the same value as if every candidate had been read. A paired analyte (`windows.pairs`) also
    reads, closest first, its candidates near the newest value of its anchor until one gives a fact. Tumour
    sizes are read newest first until one of the primary kidney tumour (`kidney_refs`: the kidney-cancer
    conditions), the only size the rules read (`derived.primary_tumour_size`). Of disease statuses, the
    rules read the latest and every "metastatic" one (evidence of metastases and of when they were first
    seen): they are read newest first until one gives a status, then every one whose coded value may say
    "metastatic" (told from the raw JSON; when its shape is unusual, it is read). Every other Observation
    (staging...) is read.
    """
    reader = _Reader(terminology)
    by_slot: dict[str, list[ObservationCandidate]] = {}
    sizes: list[ObservationCandidate] = []
    statuses: list[ObservationCandidate] = []
    for candidate in candidates:
        if not candidate.repeated:
            if candidate.codes and candidate.codes <= TUMOUR_SIZE_CODES:
                sizes.append(candidate)
            elif candidate.codes and candidate.codes <= DISEASE_STATUS_CODES:
                statuses.append(candidate)
            else:
                reader.facts_of(candidate)
            continue
        slots = [_slots_of(code, terminology) for code in candidate.codes]
        if not all(slots):  # a code giving no fact of a repeated measurement: read it as any other
            reader.facts_of(candidate)
            continue
        for slot in dict.fromkeys(s for code_slots in slots for s in code_slots):
            by_slot.setdefault(slot, []).append(candidate)
    newest_first: dict[str, list[ObservationCandidate]] = {
        slot: _candidates_newest_first(group) for slot, group in by_slot.items()
    }
    for candidate in _candidates_newest_first(sizes):
        found = reader.facts_of(candidate).tumour_sizes
        if any(about_kidney_tumour(size, kidney_refs, terminology) for size in found):
            break
    for candidate in _candidates_newest_first(statuses):
        if reader.facts_of(candidate).disease_status:
            break
    metastatic = terminology.valuesets.get(DISEASE_STATUS_PREFIX + "metastatic")
    for candidate in statuses:
        codes = candidate.value_codes()
        if codes is None or (metastatic is not None and any(metastatic.contains(code) for code in codes)):
            reader.facts_of(candidate)
    for slot, group in newest_first.items():
        reader.first_filling(group, slot)
    for analyte, (anchor, days) in windows.pairs.items():
        anchors = _newest_first(
            value for c in candidates if c.read for value in reader.facts_of(c).labs.get(anchor, ())
        )
        if not anchors or anchors[0].date is None:
            continue
        anchor_day: date = anchors[0].date
        near = [
            c
            for c in newest_first.get(f"lab:{analyte}", ())
            if c.day is not None and abs((c.day - anchor_day).days) <= days
        ]
        closest_first = sorted(near, key=lambda c: (abs((c.day - anchor_day).days), c.ref))  # type: ignore[operator]
        reader.first_filling(closest_first, f"lab:{analyte}")
    return reader


def build_facts(
    resources: Iterable[Mapping[str, Any]],
    terminology: Terminology,
    today: date,
    patient_id: str | None = None,
    windows: MeasurementWindows | None = None,
    newest_only: bool = False,
    readable_only: bool = False,
) -> PatientFacts:
    """Turn raw FHIR R4 JSON resources (Bundles unwrapped) into PatientFacts; bad resources are skipped.

    With `patient_id`, resources whose subject is another patient are ignored; without it, the first Patient
    found gives the demographics and every resource is read. With `windows`, repeated measurements too old to
    become evidence are left out before validation (see `MeasurementWindows`); without, every one is read.
    With `newest_only` too, of a repeated measurement only the values the rules read are validated, so its
    facts hold fewer values but start with the same one (see `_read_newest`), and an analyte no rule reads
    (none of `windows.labs`) is not read at all. With `readable_only`,
    Conditions, Procedures and medications whose codes no rule or derived value can read (see
    `readable_codes`) are neither validated nor turned into facts (nor, when invalid, listed as skipped).
    """
    from cds_service.fhir_records import RecencyWindows, read_records, read_records_lazily  # FHIR only here

    recency = (
        None
        if windows is None
        else RecencyWindows(today, windows.by_code(terminology), USABLE_OBSERVATION_STATUSES)
    )
    codes = observation_codes_to_read(terminology)
    labs = lab_value_codes(terminology)
    readable = readable_codes(terminology) if readable_only else None
    if windows is None or recency is None or not newest_only:
        records = read_records(resources, codes, patient_id, recency, readable, labs)
        return _facts_from_records(records, terminology, today, patient_id)
    unread = labs - {
        (LOINC, code)
        for analyte in terminology.analytes.values()
        if analyte.id in windows.labs
        for code in analyte.loinc
    }
    others, candidates = read_records_lazily(resources, codes - unread, patient_id, recency, readable, labs)
    conditions = _condition_facts(others.conditions, terminology)
    reader = _read_newest(candidates, terminology, windows, kidney_cancer_refs(conditions))
    read = [c for c in candidates if c.read]
    records = dataclasses.replace(
        others,
        observations=tuple(record for c in read if (record := c.record()) is not None),
        skipped=others.skipped + tuple(c.ref for c in read if c.record() is None),
    )
    observations = _ObservationFacts()  # each read candidate's facts, already worked out by the reader
    for candidate in read:
        observations.extend(reader.facts_of(candidate))
    return _facts_from_records(records, terminology, today, patient_id, observations, conditions)
