"""Plain records of the FHIR resources the facts stage reads, each converted from a validated resource.

A converter reads only the elements listed for its type in `ELEMENTS` (for an Observation, those its wanted
codes need, see `ReadPlan.observation_elements`): the reader validates exactly these with fhir.resources and
hands the converter the same pruned JSON, so nothing unvalidated reaches a record. The records keep FHIR's
structure where the facts stage needs it (status codes, dates, codings) but no FHIR types; clinical meaning
(value sets, units, lines of therapy) is decided in the facts stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.fhir.concepts import (
    Amount,
    Concept,
    all_codes,
    amount,
    concept,
    day,
    first_day,
    is_object,
    medication,
    period_end,
    references,
    status_code,
)
from cds_service.terminology import Code

HISTOLOGY_EXTENSION = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"


def _choice(name: str, *kinds: str) -> tuple[str, ...]:
    return tuple(name + kind for kind in kinds)


_EFFECTIVE = _choice("effective", "DateTime", "Period", "Timing", "Instant")
_MEDICATION = _choice("medication", "CodeableConcept", "Reference")
# The subject is read by the selection only (fhir.reader), from the raw JSON; it is validated where the model
# requires it (1..1: every type read but Observation).
_SUBJECT = ("resourceType", "id", "subject")
OBSERVATION_VALUE = (
    "resourceType",
    "id",
    "status",
    "code",
    "issued",
    *_EFFECTIVE,
    *_choice(
        "value",
        "Quantity",
        "CodeableConcept",
        "String",
        "Boolean",
        "Integer",
        "Range",
        "Ratio",
        "SampledData",
        "Time",
        "DateTime",
        "Period",
    ),
)
"""What every Observation record reads: its status, code, date and value (all value[x], so two still fail)."""

# The top-level elements each converter reads (every variant of a choice element, so that two still fail
# validation); the reader validates these and the ones a type requires (subject, status, intent...).
ELEMENTS: Mapping[str, tuple[str, ...]] = {
    "Patient": ("resourceType", "id", "birthDate", "gender", "deceasedBoolean", "deceasedDateTime"),
    "Condition": (
        *_SUBJECT,
        "extension",
        "code",
        "clinicalStatus",
        "verificationStatus",
        "recordedDate",
        "bodySite",
        "stage",
        *_choice("onset", "DateTime", "Age", "Period", "Range", "String"),
    ),
    "Observation": OBSERVATION_VALUE,  # plus what its codes need: ReadPlan.observation_elements
    "MedicationStatement": (
        *_SUBJECT,
        "status",
        "contained",
        "dosage",
        *_MEDICATION,
        *_choice("effective", "DateTime", "Period"),
    ),
    "MedicationRequest": (
        *_SUBJECT,
        "status",
        "intent",
        "contained",
        "dosageInstruction",
        "authoredOn",
        *_MEDICATION,
    ),
    "MedicationAdministration": (
        *_SUBJECT,
        "status",
        "contained",
        *_MEDICATION,
        *_choice("effective", "DateTime", "Period"),
    ),
    "Medication": ("resourceType", "id", "code", "ingredient"),
    "Procedure": (
        *_SUBJECT,
        "status",
        "code",
        "bodySite",
        *_choice("performed", "DateTime", "Period", "String", "Age", "Range"),
    ),
}


@dataclass(frozen=True)
class RangeRecord:
    low: Amount | None
    high: Amount | None
    meaning: frozenset[Code] = frozenset()  # referenceRange.type (e.g. normal, treatment)
    applies_to: bool = False  # True when the range is restricted to a population (appliesTo / age)


@dataclass(frozen=True)
class ComponentRecord:
    code: Concept
    quantity: Amount | None
    concept: Concept | None
    integer: int | None


@dataclass(frozen=True)
class PatientRecord:
    ref: str
    birth_date: date | None
    gender: str | None
    deceased: bool = False  # deceasedBoolean true, or a deceasedDateTime


@dataclass(frozen=True)
class ConditionRecord:
    ref: str
    code: Concept
    clinical_status: str | None  # code of clinicalStatus (active, recurrence, relapse, inactive, ...)
    verification_status: str | None  # code of verificationStatus (confirmed, refuted, entered-in-error, ...)
    onset: date | None
    recorded: date | None
    histology: frozenset[Code]
    body_sites: frozenset[Code]
    stage: frozenset[Code] = frozenset()  # the codes of its stages' summaries (a stage group, or a TNM M)


@dataclass(frozen=True)
class ObservationRecord:
    ref: str
    status: str | None
    code: Concept
    when: date | None  # effectiveDateTime / effectivePeriod.start / effectiveInstant / issued
    quantity: Amount | None
    concept: Concept | None
    integer: int | None
    string: str | None
    interpretation: frozenset[Code]
    ranges: tuple[RangeRecord, ...]
    components: tuple[ComponentRecord, ...]
    focus: tuple[str, ...]
    body_sites: frozenset[Code]


@dataclass(frozen=True)
class MedicationUseRecord:
    """A MedicationStatement, MedicationRequest or MedicationAdministration, its medication resolved (inline,
    contained or bundled); an administration's start and end are those of the dose."""

    ref: str
    kind: str  # "MedicationStatement" | "MedicationRequest" | "MedicationAdministration"
    status: str | None
    medication: Concept  # codes of the medication code and of its ingredients; text of the code
    start: date | None
    end: date | None
    intent: str | None = None  # MedicationRequest.intent (order, plan, proposal, ...)


@dataclass(frozen=True)
class ProcedureRecord:
    ref: str
    status: str | None
    code: Concept
    performed: date | None
    body_sites: frozenset[Code]


@dataclass(frozen=True)
class PatientRecords:
    patients: tuple[PatientRecord, ...] = ()
    conditions: tuple[ConditionRecord, ...] = ()
    observations: tuple[ObservationRecord, ...] = ()
    medication_uses: tuple[MedicationUseRecord, ...] = ()
    procedures: tuple[ProcedureRecord, ...] = ()
    skipped: tuple[str, ...] = ()  # references of resources that failed validation


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _list(value: Any) -> list[Any]:
    return [item for item in value if is_object(item)] if isinstance(value, list) else []


def patient(res: Mapping[str, Any], ref: str) -> PatientRecord:
    deceased = res.get("deceasedBoolean") is True or isinstance(res.get("deceasedDateTime"), str)
    return PatientRecord(ref, day(res.get("birthDate")), _text(res.get("gender")), deceased)


def condition(res: Mapping[str, Any], ref: str) -> ConditionRecord:
    histology = frozenset(
        code
        for ext in _list(res.get("extension"))
        if ext.get("url") == HISTOLOGY_EXTENSION
        for code in concept(ext.get("valueCodeableConcept")).codes
    )
    return ConditionRecord(
        ref=ref,
        code=concept(res.get("code")),
        clinical_status=status_code(res.get("clinicalStatus")),
        verification_status=status_code(res.get("verificationStatus")),
        onset=first_day(res, ("onsetDateTime", "onsetPeriod")),
        recorded=day(res.get("recordedDate")),
        histology=histology,
        body_sites=all_codes(res.get("bodySite")),
        stage=frozenset(
            code for stage in _list(res.get("stage")) for code in concept(stage.get("summary")).codes
        ),
    )


def _ranges(res: Mapping[str, Any]) -> tuple[RangeRecord, ...]:
    return tuple(
        RangeRecord(
            low=amount(item.get("low")),
            high=amount(item.get("high")),
            meaning=concept(item.get("type")).codes,
            applies_to=bool(item.get("appliesTo")) or item.get("age") is not None,
        )
        for item in _list(res.get("referenceRange"))
    )


def _value_concept(res: Mapping[str, Any]) -> Concept | None:
    value = res.get("valueCodeableConcept")
    return concept(value) if is_object(value) else None


def observation(res: Mapping[str, Any], ref: str) -> ObservationRecord:
    components = tuple(
        ComponentRecord(
            code=concept(item.get("code")),
            quantity=amount(item.get("valueQuantity")),
            concept=_value_concept(item),
            integer=_integer(item.get("valueInteger")),
        )
        for item in _list(res.get("component"))
    )
    return ObservationRecord(
        ref=ref,
        status=_text(res.get("status")),
        code=concept(res.get("code")),
        when=first_day(res, ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")),
        quantity=amount(res.get("valueQuantity")),
        concept=_value_concept(res),
        integer=_integer(res.get("valueInteger")),
        string=_text(res.get("valueString")),
        interpretation=all_codes(res.get("interpretation")),
        ranges=_ranges(res),
        components=components,
        focus=references(res.get("focus")),
        body_sites=concept(res.get("bodySite")).codes,
    )


def _dosage_bounds(dosages: Any) -> tuple[date | None, date | None]:
    """The boundsPeriod of the first dosage that has one."""
    for dosage in _list(dosages):
        timing = dosage.get("timing")
        repeat = timing.get("repeat") if is_object(timing) else None
        bounds = repeat.get("boundsPeriod") if is_object(repeat) else None
        if is_object(bounds):
            return day(bounds.get("start")), period_end(bounds)
    return None, None


def medication_use(
    res: Mapping[str, Any], ref: str, bundled: Mapping[str, Mapping[str, Any]]
) -> MedicationUseRecord:
    """A medication statement, request or administration (`bundled`: valid Medications by reference, URL)."""
    kind = res["resourceType"]
    if kind == "MedicationAdministration":  # one dose, given on a day (or over a period)
        start = first_day(res, ("effectiveDateTime", "effectivePeriod"))
        end = period_end(res.get("effectivePeriod")) or start
        bound_start, bound_end = None, None
    elif kind == "MedicationStatement":
        start = first_day(res, ("effectiveDateTime", "effectivePeriod"))
        end = period_end(res.get("effectivePeriod"))
        bound_start, bound_end = _dosage_bounds(res.get("dosage"))
    else:
        start, end = None, None
        bound_start, bound_end = _dosage_bounds(res.get("dosageInstruction"))
    start = start or bound_start
    if kind == "MedicationRequest":
        start = start or day(res.get("authoredOn"))
    return MedicationUseRecord(
        ref=ref,
        kind=kind,
        status=_text(res.get("status")),
        medication=medication(res, bundled),
        start=start,
        end=end or bound_end,
        intent=_text(res.get("intent")) if kind == "MedicationRequest" else None,
    )


def procedure(res: Mapping[str, Any], ref: str) -> ProcedureRecord:
    return ProcedureRecord(
        ref,
        _text(res.get("status")),
        concept(res.get("code")),
        first_day(res, ("performedDateTime", "performedPeriod")),
        all_codes(res.get("bodySite")),
    )


def with_extensions(names: Iterable[str]) -> frozenset[str]:
    """Element names and their primitive extensions (`_birthDate`), validated with them."""
    return frozenset(names) | frozenset("_" + name for name in names)


VALIDATED: Mapping[str, frozenset[str]] = {rtype: with_extensions(names) for rtype, names in ELEMENTS.items()}
"""Per resource type, the top-level elements validated (an Observation: `Selection.observation_elements`)."""
