"""Facts about one patient, as plain frozen dataclasses: what the rules read.

Built from FHIR records by `build_facts`. Absent stays `None` or an empty tuple, never a sentinel, so that a
rule can turn it into `unknown`. Every fact keeps the reference of the resource it came from (`ref`, e.g.
"Observation/cr-1") so that a verdict can cite it. Sequences are ordered newest first. Of a repeated
measurement (a lab, a performance score, blood pressure, a pregnancy test) the facts hold the newest usable
value and the unusable ones newer than it (see `facts.observations`), which is all a rule reads of it.

Value-set memberships (`valuesets`) are computed once, so rules test membership by id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from cds_service.terminology import Code


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
    stage: frozenset[Code] = frozenset()  # codes of its stages' summaries


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
    as_sent: str = ""  # e.g. "97 umol/L": what was sent, when converting changed the number
    comparator: str | None = None  # <, <=, >=, >: the value is a bound ("<0.2"), not a measurement


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
    """A TNM distant-metastasis (M) category: `metastatic` True for M1*, False for M0. From an Observation, or
    from the stage summary of a Condition (`ref` the Condition; `date` its onset)."""

    metastatic: bool
    code: Code
    date: date | None
    ref: str
    condition: str | None = None  # the display of the Condition whose stage says it (None: an Observation)


@dataclass(frozen=True)
class PregnancyTestFact:
    positive: bool
    date: date | None
    ref: str


@dataclass(frozen=True)
class MedicationFact:
    """A medication statement or request, or an exposure built from administrations (facts.medications),
    after product -> ingredient mapping."""

    ref: str
    ingredients: frozenset[str]  # ingredient ids from mappings/medications.yaml
    valuesets: frozenset[str]  # value sets containing (INGREDIENT, id) or the medication's own codes
    display: str | None
    start: date | None
    end: date | None
    active: bool  # status active / on-hold / intended (not completed or stopped)
    refs: tuple[str, ...] = ()  # what it cites: its own reference; an exposure, its first and last dose

    def __post_init__(self) -> None:
        if not self.refs:
            object.__setattr__(self, "refs", (self.ref,))


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
class MetastasisEvidence:
    """Everything that documents distant metastasis: metastatic-disease conditions (confirmed or not), M1
    staging and "metastatic" disease statuses, each newest first; built once from the other facts."""

    conditions: tuple[ConditionFact, ...] = ()  # confirmed
    unconfirmed: tuple[ConditionFact, ...] = ()
    staging: tuple[StagingFact, ...] = ()  # M1 only
    statuses: tuple[DiseaseStatusFact, ...] = ()  # "distant metastasis present"

    @property
    def documented(self) -> bool:
        return bool(self.conditions or self.staging or self.statuses)

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.ref for item in (*self.conditions, *self.staging, *self.statuses)))

    def dated(self) -> list[tuple[date, str, str]]:
        """(date, reference, kind) of each dated piece of evidence; kind: condition, staging or status."""
        found = [(c.onset, c.ref, "condition") for c in self.conditions if c.onset]
        found += [(s.date, s.ref, "staging") for s in self.staging if s.date]
        found += [(d.date, d.ref, "status") for d in self.statuses if d.date]
        return found  # type: ignore[return-value]  # dates filtered above

    def first(self) -> tuple[date, str] | None:
        """Earliest dated evidence and its reference."""
        dated = self.dated()
        return min((day, ref) for day, ref, _ in dated) if dated else None


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
    metastasis: MetastasisEvidence = field(default_factory=MetastasisEvidence)
    skipped: tuple[str, ...] = ()  # references of resources that failed validation
    # Resource types that could not be read (FHIR server failure): absence proves nothing for them.
    unavailable: frozenset[str] = frozenset()
    # Lab values whose unit is not one of the analyte's (value and unit as sent, newest first): never used,
    # but a rule can say why its lab stays unknown.
    unconverted_labs: Mapping[str, tuple[LabValue, ...]] = field(default_factory=dict)
    deceased: bool = False  # Patient.deceasedBoolean true or a deceasedDateTime

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
