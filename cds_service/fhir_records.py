"""Raw FHIR R4 JSON -> validated R4B models -> plain records: the only module that imports fhir.resources.

Reading has three steps, each forgiving:
1. flatten: Bundles (also nested) are unwrapped; anything not a JSON object with a resourceType is ignored;
2. select on the raw dicts, before validating (validation costs ~0.14 ms a resource): only the resource types
   the facts stage reads, only Observations whose code is wanted, only resources about the patient; with
   `ReadableCodes`, only Conditions, Procedures and medications whose codes something can read (and only the
   Medications they reference); with `RecencyWindows`, only the values of a repeated measurement recent
   enough to be used (see there);
3. validate each selected resource alone with its R4B model, pruned to the elements the conversion below
   reads (`READ_ELEMENTS`) plus those the model requires (subject, status, intent, medication[x]). A resource
   that fails is skipped: its reference (never its content) is logged on "cds_service.fhir" and returned in
   `skipped`. An Observation's code and reference ranges and a Condition's status codes are validated once
   per distinct JSON text and remembered (at most 2,048): charts repeat the same few, and they say nothing
   about a patient. A subject (the patient's reference) is validated once a call, and forgotten with it.

What is validated, and why only that: validation is the largest cost of a call (~0.14 ms a resource, nested
models checked one by one in Python), and most of a resource is never read (narrative, identifiers,
performers, encounter, notes, meta). Every element that can become a record, hence evidence, is still
validated by fhir.resources, whole (every variant of a choice element read, e.g. all value[x], so that two
of them still fail; primitive extensions `_x` with their element). An error in an element nothing reads no
longer skips the resource; an error in one that is read still does.

The records keep FHIR's structure where the facts stage needs it (status codes, dates, codings) but no FHIR
types: the facts stage reads plain dataclasses only. Clinical meaning (value sets, units, lines) is decided
there.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.reference import Reference

from cds_service.terminology import Code, normalize_code

logger = logging.getLogger("cds_service.fhir")

HISTOLOGY_EXTENSION = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
MAX_BUNDLE_DEPTH = 8

MODELS: Mapping[str, Any] = {
    "Patient": Patient,
    "Condition": Condition,
    "Observation": Observation,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "Medication": Medication,
    "Procedure": Procedure,
}


# --- plain records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """A CodeableConcept: its normalised codes and a text (the text, else the first display)."""

    codes: frozenset[Code]
    text: str | None


@dataclass(frozen=True)
class Amount:
    """A Quantity with a finite value; `units` holds the UCUM code then the printed unit (to try in order)."""

    value: float
    units: tuple[str, ...]
    comparator: str | None = None

    @property
    def as_sent(self) -> str:
        unit = self.units[-1] if self.units else ""
        return f"{self.comparator or ''}{self.value:g} {unit}".strip()


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
    """A MedicationStatement or MedicationRequest, its medication resolved (inline, contained or bundled)."""

    ref: str
    kind: str  # "MedicationStatement" | "MedicationRequest"
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
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecencyWindows:
    """Per Observation code of a repeated measurement: how many days before `today` its values are read.

    An Observation all of whose wanted codes have a window is validated when it is undated, dated within the
    longest of its windows, or the newest one older than that for one of its codes among those with a usable
    status (ties: all of that day). Observations with any other wanted code are always validated.
    """

    today: date
    days: Mapping[Code, int]
    usable_statuses: frozenset[str]


@dataclass(frozen=True)
class ReadableCodes:
    """What the facts stage can read of the codes of a Condition, a Procedure or a medication.

    A resource of these types whose codes (as they will be read after validation: a medication's resolved
    from an inline, contained or bundled Medication) are not readable is not validated: nothing could use it.
    A Condition with the histology extension is always read. Medications are validated only when a kept
    MedicationStatement or MedicationRequest references them.
    """

    condition: Callable[[frozenset[Code]], bool]
    procedure: Callable[[frozenset[Code]], bool]
    medication: Callable[[frozenset[Code], str | None], bool]  # codes (with ingredients') and text


# --- step 1 and 2: flatten and select on raw JSON -----------------------------------------------------------


class _Raw(NamedTuple):
    resource: Mapping[str, Any]
    type: str  # resourceType
    ref: str
    full_url: str | None


def _is_object(value: Any) -> bool:
    """A JSON object: json.loads gives dicts, tested first because a Mapping test costs several times more."""
    return type(value) is dict or isinstance(value, Mapping)


def _flatten(items: Iterable[Any]) -> list[_Raw]:
    """Every resource of `items`, Bundles unwrapped; a resource without id is named by its position."""
    found: list[_Raw] = []
    for item in items:
        _collect(item, None, 0, found)
    return found


def _collect(obj: Any, full_url: str | None, depth: int, found: list[_Raw]) -> None:
    """Append `obj` to `found`, or the resources of a Bundle (a module function, not a closure: a closure
    calling itself is a reference cycle, which would keep every resource alive until the GC runs)."""
    if not _is_object(obj):
        return
    rtype = obj.get("resourceType")
    if not isinstance(rtype, str):
        return
    if rtype == "Bundle":
        entries = obj.get("entry")
        if depth < MAX_BUNDLE_DEPTH and isinstance(entries, list):
            for entry in entries:
                if _is_object(entry):
                    url = entry.get("fullUrl")
                    _collect(entry.get("resource"), url if isinstance(url, str) else None, depth + 1, found)
        return
    rid = obj.get("id")
    if isinstance(rid, str) and rid:
        ref = f"{rtype}/{rid}"
    else:
        ref = full_url or f"{rtype}/#{len(found) + 1}"
    found.append(_Raw(obj, rtype, ref, full_url))


@lru_cache(maxsize=4096)
def _normalized(system: str | None, code: str) -> Code | None:
    """`normalize_code`, remembered: a chart repeats the same few codes hundreds of times."""
    return normalize_code(system, code)


def _raw_codes(concept: Any) -> list[Code]:
    """The normalised codes of a raw CodeableConcept; codings of an unusual shape are passed over."""
    if not _is_object(concept):
        return []
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return []
    found = []
    for coding in codings:
        if _is_object(coding):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(code, str) and (system is None or isinstance(system, str)):
                normalised = _normalized(system, code)
                if normalised:
                    found.append(normalised)
    return found


def _raw_concept(concept: Any) -> tuple[frozenset[Code], str | None] | None:
    """Codes and text of a raw CodeableConcept as `_concept` will read them once validated (absent: none);
    None when its shape is unusual, so that what validation makes of it cannot be told here."""
    if concept is None:
        return frozenset(), None
    if not _is_object(concept):
        return None
    codings = concept.get("coding", [])
    if not isinstance(codings, list) or not all(
        _is_object(c)
        and isinstance(c.get("system"), str | None)
        and isinstance(c.get("code"), str | None)
        and isinstance(c.get("display"), str | None)
        for c in codings
    ):
        return None
    text = concept.get("text")
    if not isinstance(text, str | None):
        return None
    display = next((c["display"] for c in codings if c.get("display")), None)
    return frozenset(_raw_codes(concept)), text or display


def _raw_medication(medication: Mapping[str, Any]) -> tuple[frozenset[Code], str | None] | None:
    """As `_medication_concept`: the codes of the code and of the ingredients, the text of the code."""
    own = _raw_concept(medication.get("code"))
    ingredients = medication.get("ingredient", [])
    if own is None or not isinstance(ingredients, list):
        return None
    codes = own[0]
    for ingredient in ingredients:
        concept = ingredient.get("itemCodeableConcept") if _is_object(ingredient) else ""
        item = _raw_concept(concept)
        if item is None:
            return None
        codes = codes | item[0]
    return codes, own[1]


def _medication_readings(
    resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
) -> tuple[list[tuple[frozenset[Code], str | None] | None], str | None]:
    """Every (codes, text) `_resolve_medication` may read for this use (None: cannot be told), and the
    bundled Medication it names. A referenced Medication may fail validation; then the reference's display
    is read: both are listed."""
    inline = resource.get("medicationCodeableConcept")
    if inline is not None:
        return [_raw_concept(inline)], None
    reference = resource.get("medicationReference")
    if reference is None:
        return [(frozenset(), None)], None
    if not _is_object(reference) or not isinstance(reference.get("display"), str | None):
        return [None], None
    target = reference.get("reference")
    readings: list[tuple[frozenset[Code], str | None] | None] = [(frozenset(), reference.get("display"))]
    if not isinstance(target, str):
        return readings, None
    if target.startswith("#"):
        contained = resource.get("contained")
        for item in contained if isinstance(contained, list) else ():
            if not _is_object(item) or item.get("resourceType") != "Medication":
                continue
            if item.get("id") == target[1:]:
                readings.append(_raw_medication(item))
                break
        return readings, None
    if target in medications:
        readings.append(_raw_medication(medications[target]))
    return readings, target


def _readable(
    raw: _Raw, readable: ReadableCodes, medications: Mapping[str, Mapping[str, Any]]
) -> tuple[bool, str | None]:
    """Whether a Condition, Procedure or medication use can be read (when unsure: yes), and the Medication
    it references."""
    resource = raw.resource
    rtype = raw.type
    if rtype in ("Condition", "Procedure"):
        extensions = resource.get("extension")
        if (
            rtype == "Condition"
            and isinstance(extensions, list)
            and any(not _is_object(e) or e.get("url") == HISTOLOGY_EXTENSION for e in extensions)
        ):
            return True, None
        concept = _raw_concept(resource.get("code"))
        if concept is None:
            return True, None
        wanted = readable.condition if rtype == "Condition" else readable.procedure
        return wanted(concept[0]), None
    readings, target = _medication_readings(resource, medications)
    return any(r is None or readable.medication(*r) for r in readings), target


def _raw_reference(resource: Mapping[str, Any]) -> str | None:
    for key in ("subject", "patient"):
        value = resource.get(key)
        if _is_object(value):
            ref = value.get("reference")
            return ref if isinstance(ref, str) else None
    return None


def _points_to_patient(reference: str, patient_id: str, aliases: frozenset[str]) -> bool:
    if reference in aliases:
        return True
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] == patient_id


_CODED = frozenset({"Condition", "Procedure", "MedicationStatement", "MedicationRequest"})


def _wanted_observation_codes(
    concept: Any, observation_codes: frozenset[Code], known: dict[tuple[str | None, str], frozenset[Code]]
) -> frozenset[Code]:
    """The wanted codes of an Observation's raw `code`. Those of a single coding are remembered in `known`
    (for one call) by its system and code, all they depend on: a chart repeats the same few lab codes, and
    the Observations of one code then share one set."""
    key = None
    codings = concept.get("coding") if type(concept) is dict else None
    if type(codings) is list and len(codings) == 1 and type(coding := codings[0]) is dict:
        system, code = coding.get("system"), coding.get("code")
        if type(code) is str and (system is None or type(system) is str):
            key = (system, code)
            if key in known:
                return known[key]
    wanted = frozenset(found for found in _raw_codes(concept) if found in observation_codes)
    if key is not None:
        known[key] = wanted
    return wanted


def _selected(
    raws: list[_Raw],
    observation_codes: frozenset[Code],
    patient_id: str | None,
    readable: ReadableCodes | None = None,
) -> list[tuple[_Raw, frozenset[Code]]]:
    """Keep the resources worth validating: wanted types and codes, about the patient when one is named.

    Each comes with its wanted codes (read once here; empty for every type but Observation)."""
    aliases = {f"Patient/{patient_id}"} if patient_id is not None else set()
    medications: dict[str, Mapping[str, Any]] = {}  # as `_records` finds bundled Medications
    for raw in raws:
        if raw.type == "Patient" and raw.full_url and patient_id is not None:
            if raw.resource.get("id") == patient_id:
                aliases.add(raw.full_url)
        elif raw.type == "Medication" and readable is not None:
            medications[raw.ref] = raw.resource
            if raw.full_url:
                medications[raw.full_url] = raw.resource
    frozen_aliases = frozenset(aliases)
    kept = []
    referenced: set[str] = set()
    no_codes: frozenset[Code] = frozenset()
    known_codes: dict[tuple[str | None, str], frozenset[Code]] = {}
    for raw in raws:
        rtype = raw.type
        codes = no_codes
        if rtype == "Observation":
            codes = _wanted_observation_codes(raw.resource.get("code"), observation_codes, known_codes)
            if not codes:
                continue
        elif rtype not in MODELS:
            continue
        elif rtype == "Patient":
            if patient_id is not None and raw.resource.get("id") != patient_id:
                continue
        if patient_id is not None and rtype != "Patient" and rtype != "Medication":
            reference = _raw_reference(raw.resource)
            if reference is not None and not _points_to_patient(reference, patient_id, frozen_aliases):
                continue
        if readable is not None and rtype in _CODED:
            wanted, target = _readable(raw, readable, medications)
            if not wanted:
                continue
            if target is not None:
                referenced.add(target)
        kept.append((raw, codes))
    if readable is None:
        return kept
    return [
        (raw, codes)
        for raw, codes in kept
        if raw.type != "Medication" or raw.ref in referenced or raw.full_url in referenced
    ]


def _raw_date(resource: Mapping[str, Any], parsed: dict[str, date | None]) -> date | None:
    """The date `_observation` will read (effective[x], else issued), from raw JSON; None if unreadable.
    `parsed` remembers the dates read so far (the labs of one visit share their time)."""
    first = resource.get("effectiveDateTime")
    if first is None:
        period = resource.get("effectivePeriod")
        first = period.get("start") if _is_object(period) else None
        if first is None:
            first = resource.get("effectiveInstant")
            if first is None:
                first = resource.get("issued")
    if not isinstance(first, str):
        return None
    if first not in parsed:
        parsed[first] = as_date(first)
    return parsed[first]


class _Windowed(NamedTuple):
    raw: _Raw
    day: date | None  # as `_observation` will read it; None for other types, and when undated
    codes: frozenset[Code]  # wanted codes (empty for other types)
    repeated: bool  # a value of a repeated measurement: every wanted code has a window


def _windowed(selected: list[tuple[_Raw, frozenset[Code]]], windows: RecencyWindows) -> list[_Windowed]:
    """Drop the values of repeated measurements that no rule can use (see `RecencyWindows`), in order."""
    kept: list[_Windowed | None] = []
    older: list[tuple[int, _Windowed]] = []  # older than the window: kept when the newest of a code
    newest_older: dict[Code, date] = {}
    parsed: dict[str, date | None] = {}
    earliest: dict[frozenset[Code], date | None] = {}  # per wanted codes: its window's first day, if any
    days, today, usable = windows.days, windows.today, windows.usable_statuses
    for raw, codes in selected:
        if raw.type != "Observation":
            kept.append(_Windowed(raw, None, codes, False))
            continue
        day = _raw_date(raw.resource, parsed)
        if codes in earliest:
            first_day = earliest[codes]
        else:
            first_day = earliest[codes] = _first_day(codes, days, today)
        if first_day is None:
            kept.append(_Windowed(raw, day, codes, False))
        elif day is None or day >= first_day:
            kept.append(_Windowed(raw, day, codes, True))
        elif raw.resource.get("status") in usable:
            older.append((len(kept), _Windowed(raw, day, codes, True)))
            kept.append(None)
            for code in codes:
                if code not in newest_older or day > newest_older[code]:
                    newest_older[code] = day
    for index, item in older:
        if any(newest_older[code] == item.day for code in item.codes):
            kept[index] = item
    return [item for item in kept if item is not None]


def _first_day(codes: frozenset[Code], days: Mapping[Code, int], today: date) -> date | None:
    """The first day within the longest window of `codes`; None unless every code has a window."""
    if not codes or not all(code in days for code in codes):
        return None
    try:
        return today - timedelta(days=max(days[code] for code in codes))
    except OverflowError:  # a window reaching before year 1: every dated value is within it
        return date.min


# --- step 3: validate, then convert to records --------------------------------------------------------------


def _choice(name: str, *types: str) -> tuple[str, ...]:
    return tuple(name + kind for kind in types)


_EFFECTIVE = _choice("effective", "DateTime", "Period", "Timing", "Instant")
_MEDICATION = _choice("medication", "CodeableConcept", "Reference")
_SUBJECT = ("resourceType", "id", "subject")  # subject: required (1..1) by all but Observation
_OBSERVATION_VALUE = (
    *_SUBJECT,
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

_READ_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    "Patient": ("resourceType", "id", "birthDate", "gender"),
    "Condition": (
        *_SUBJECT,
        "extension",
        "code",
        "clinicalStatus",
        "verificationStatus",
        "recordedDate",
        "bodySite",
        *_choice("onset", "DateTime", "Age", "Period", "Range", "String"),
    ),
    "Observation": (
        *_OBSERVATION_VALUE,
        "interpretation",
        "referenceRange",
        "component",
        "focus",
        "bodySite",
    ),
    "MedicationStatement": (*_SUBJECT, "status", "contained", "dosage", *_MEDICATION, *_EFFECTIVE),
    "MedicationRequest": (
        *_SUBJECT,
        "status",
        "intent",
        "contained",
        "dosageInstruction",
        "authoredOn",
        *_MEDICATION,
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


def _with_extensions(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names) | frozenset("_" + name for name in names)


READ_ELEMENTS: Mapping[str, frozenset[str]] = {
    rtype: _with_extensions(names) for rtype, names in _READ_BY_TYPE.items()
}
"""Per resource type: the top-level elements validated, each whole (`_x`: the extensions of primitive x)."""

LAB_VALUE_ELEMENTS = _with_extensions((*_OBSERVATION_VALUE, "referenceRange"))
"""The elements validated of an Observation selected for lab codes only (see `read_records`): its value and
reference range are all a lab value reads; interpretation, components, focus and body site are not."""


def _elements(raw: _Raw, codes: frozenset[Code], lab_codes: frozenset[Code]) -> frozenset[str]:
    """The elements of this selected resource to validate (`codes`: its wanted codes)."""
    if raw.type == "Observation" and codes and codes <= lab_codes:
        return LAB_VALUE_ELEMENTS
    return READ_ELEMENTS[raw.type]


def _validated_ranges(ranges: Any) -> list[ObservationReferenceRange]:
    if not isinstance(ranges, list):
        raise TypeError("referenceRange is not a list")
    return [ObservationReferenceRange.model_validate(item) for item in ranges]


# Per resource type, the elements validated once per distinct JSON text (see `_shared_element`), each as its
# field validates it: every item a model, which the resource then takes as it is.
_SHARED_ELEMENTS: Mapping[str, Mapping[str, Callable[[Any], Any]]] = {
    "Observation": {"code": CodeableConcept.model_validate, "referenceRange": _validated_ranges},
    "Condition": {
        "clinicalStatus": CodeableConcept.model_validate,
        "verificationStatus": CodeableConcept.model_validate,
    },
}


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=False)  # made once: json.dumps makes one a call


def _shared_element(rtype: str, name: str, value: Any) -> Any:
    """An element of `_SHARED_ELEMENTS` validated, remembered by its JSON text: charts repeat the same few
    lab codes, reference ranges and condition status codes, and none says anything about a patient. The raw
    value when it cannot be remembered or does not validate alone (the resource's validation then decides)."""
    try:
        key = _KEY_ENCODER.encode(value)
    except (TypeError, ValueError):
        return value
    validated = _validated_element(rtype, name, key)
    return value if validated is None else validated


@lru_cache(maxsize=2048)
def _validated_element(rtype: str, name: str, key: str) -> Any | None:
    try:
        return _SHARED_ELEMENTS[rtype][name](json.loads(key))
    except Exception:  # the resource's own validation reports it
        return None


_Subjects = dict[tuple[tuple[str, str], ...], Any]  # a call's validated subjects, by their elements


def _call_subject(subject: Any, subjects: _Subjects) -> Any:
    """A resource's `subject` validated once a call (`subjects`, made for one call, is never kept): the
    resources of a chart nearly all name the same patient. Only a subject of strings (its reference and
    display) is shared; any other, or one that does not validate alone, stays raw for the resource's own
    validation."""
    if type(subject) is not dict or not all(type(value) is str for value in subject.values()):
        return subject
    key = tuple(subject.items())
    if key not in subjects:
        try:
            subjects[key] = Reference.model_validate(subject)
        except Exception:  # the resource's own validation reports it
            subjects[key] = subject
    return subjects[key]


def _validated(raw: _Raw, elements: frozenset[str], subjects: _Subjects) -> Any | None:
    """The resource's model, validated with only `elements` (a shallow copy: nothing inside is changed);
    `subjects`: the subjects validated so far in this call (see `_call_subject`)."""
    model = MODELS[raw.type]
    try:
        pruned = {name: value for name, value in raw.resource.items() if name in elements}
        for name in _SHARED_ELEMENTS.get(raw.type, ()):
            value = pruned.get(name)
            if value is not None:
                pruned[name] = _shared_element(raw.type, name, value)
        if "subject" in pruned:
            pruned["subject"] = _call_subject(pruned["subject"], subjects)
        return model.model_validate(pruned)
    except Exception:  # any failure of one resource only skips that resource
        logger.warning("skipped invalid resource %s", raw.ref)
        return None


def as_date(value: Any) -> date | None:
    """Return the calendar date of a FHIR date, dateTime or instant; a partial date is its first day."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        parts = value[:10].split("-")
        try:
            year = int(parts[0])
            month = int(parts[1]) if len(parts) > 1 else 1
            day = int(parts[2]) if len(parts) > 2 else 1
            return date(year, month, day)
        except (ValueError, IndexError):
            return None
    return None


def _concept(cc: Any) -> Concept:
    if cc is None:
        return Concept(frozenset(), None)
    codes = set()
    display = None
    for coding in cc.coding or ():
        code = normalize_code(coding.system, coding.code)
        if code:
            codes.add(code)
        display = display or coding.display
    return Concept(frozenset(codes), cc.text or display)


def _concepts_codes(ccs: Any) -> frozenset[Code]:
    return frozenset(code for cc in ccs or () for code in _concept(cc).codes)


def _status_code(cc: Any) -> str | None:
    for coding in (cc.coding or ()) if cc is not None else ():
        if coding.code:
            return str(coding.code).strip().lower()
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float | Decimal) else None
    except (OverflowError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _amount(quantity: Any) -> Amount | None:
    if quantity is None:
        return None
    value = _number(quantity.value)
    if value is None:
        return None
    units = tuple(
        dict.fromkeys(u.strip() for u in (quantity.code, quantity.unit) if isinstance(u, str) and u.strip())
    )
    return Amount(value, units, quantity.comparator)


def _refs(references: Any) -> tuple[str, ...]:
    return tuple(r.reference for r in references or () if r is not None and r.reference)


def _patient(res: Patient, ref: str) -> PatientRecord:
    return PatientRecord(ref, as_date(res.birthDate), res.gender)


def _condition(res: Condition, ref: str) -> ConditionRecord:
    histology = frozenset(
        code
        for ext in res.extension or ()
        if ext.url == HISTOLOGY_EXTENSION
        for code in _concept(ext.valueCodeableConcept).codes
    )
    onset = as_date(res.onsetDateTime) or (as_date(res.onsetPeriod.start) if res.onsetPeriod else None)
    return ConditionRecord(
        ref=ref,
        code=_concept(res.code),
        clinical_status=_status_code(res.clinicalStatus),
        verification_status=_status_code(res.verificationStatus),
        onset=onset,
        recorded=as_date(res.recordedDate),
        histology=histology,
        body_sites=_concepts_codes(res.bodySite),
    )


def _ranges(res: Observation) -> tuple[RangeRecord, ...]:
    return tuple(
        RangeRecord(
            low=_amount(rr.low),
            high=_amount(rr.high),
            meaning=_concept(rr.type).codes,
            applies_to=bool(rr.appliesTo) or rr.age is not None,
        )
        for rr in res.referenceRange or ()
    )


def _observation(res: Observation, ref: str) -> ObservationRecord:
    when = (
        as_date(res.effectiveDateTime)
        or (as_date(res.effectivePeriod.start) if res.effectivePeriod else None)
        or as_date(res.effectiveInstant)
        or as_date(res.issued)
    )
    components = tuple(
        ComponentRecord(
            code=_concept(comp.code),
            quantity=_amount(comp.valueQuantity),
            concept=_concept(comp.valueCodeableConcept) if comp.valueCodeableConcept else None,
            integer=comp.valueInteger,
        )
        for comp in res.component or ()
    )
    return ObservationRecord(
        ref=ref,
        status=res.status,
        code=_concept(res.code),
        when=when,
        quantity=_amount(res.valueQuantity),
        concept=_concept(res.valueCodeableConcept) if res.valueCodeableConcept else None,
        integer=res.valueInteger,
        string=res.valueString,
        interpretation=_concepts_codes(res.interpretation),
        ranges=_ranges(res),
        components=components,
        focus=_refs(res.focus),
        body_sites=_concept(res.bodySite).codes,
    )


def _medication_concept(med: Medication) -> Concept:
    own = _concept(med.code)
    ingredient_codes = frozenset(
        code for ing in med.ingredient or () for code in _concept(ing.itemCodeableConcept).codes
    )
    return Concept(own.codes | ingredient_codes, own.text)


def _resolve_medication(res: Any, bundled: Mapping[str, Medication]) -> Concept:
    if res.medicationCodeableConcept is not None:
        return _concept(res.medicationCodeableConcept)
    reference = res.medicationReference
    if reference is None:
        return Concept(frozenset(), None)
    target = reference.reference or ""
    if target.startswith("#"):
        for contained in res.contained or ():
            if isinstance(contained, Medication) and contained.id == target[1:]:
                return _medication_concept(contained)
    elif target in bundled:
        return _medication_concept(bundled[target])
    return Concept(frozenset(), reference.display)


def _dosage_bounds(dosages: Any) -> tuple[date | None, date | None]:
    for dosage in dosages or ():
        repeat = dosage.timing.repeat if dosage.timing is not None else None
        if repeat is not None and repeat.boundsPeriod is not None:
            return as_date(repeat.boundsPeriod.start), as_date(repeat.boundsPeriod.end)
    return None, None


def _medication_use(res: Any, ref: str, bundled: Mapping[str, Medication]) -> MedicationUseRecord:
    if isinstance(res, MedicationStatement):
        period = res.effectivePeriod
        start = as_date(res.effectiveDateTime) or (as_date(period.start) if period else None)
        end = as_date(period.end) if period else None
        dosages = res.dosage
    else:
        start, end = None, None
        dosages = res.dosageInstruction
    bound_start, bound_end = _dosage_bounds(dosages)
    start = start or bound_start
    end = end or bound_end
    if isinstance(res, MedicationRequest):
        start = start or as_date(res.authoredOn)
    return MedicationUseRecord(
        ref=ref,
        kind=res.get_resource_type(),
        status=res.status,
        medication=_resolve_medication(res, bundled),
        start=start,
        end=end,
        intent=res.intent if isinstance(res, MedicationRequest) else None,
    )


def _procedure(res: Procedure, ref: str) -> ProcedureRecord:
    performed = as_date(res.performedDateTime) or (
        as_date(res.performedPeriod.start) if res.performedPeriod else None
    )
    return ProcedureRecord(ref, res.status, _concept(res.code), performed, _concepts_codes(res.bodySite))


def _validated_all(
    raws: Iterable[tuple[_Raw, frozenset[str]]], subjects: _Subjects
) -> tuple[list[tuple[_Raw, Any]], list[str]]:
    """The models of the resources that validate (each with its elements), and the references of those that
    do not."""
    skipped: list[str] = []
    valid: list[tuple[_Raw, Any]] = []
    for raw, elements in raws:
        model = _validated(raw, elements, subjects)
        if model is None:
            skipped.append(raw.ref)
        else:
            valid.append((raw, model))
    return valid, skipped


def read_records(
    resources: Iterable[Any],
    observation_codes: frozenset[Code],
    patient_id: str | None = None,
    windows: RecencyWindows | None = None,
    readable: ReadableCodes | None = None,
    lab_codes: frozenset[Code] = frozenset(),
) -> PatientRecords:
    """Select, validate and convert raw FHIR JSON resources; never raises for a bad resource.

    An Observation whose wanted codes are all `lab_codes` is validated as a lab value (`LAB_VALUE_ELEMENTS`):
    its record has no interpretation, components, focus or body site.
    """
    selected = _selected(_flatten(resources), observation_codes, patient_id, readable)
    if windows is not None:
        selected = [(item.raw, item.codes) for item in _windowed(selected, windows)]
    return _records(*_validated_all(((raw, _elements(raw, codes, lab_codes)) for raw, codes in selected), {}))


class ObservationCandidate:
    """A selected Observation, validated and converted only when its `record` is first asked for.

    Each comes with its date as read from the raw JSON (`day`, None when undated) and its wanted `codes`.
    `repeated` candidates are values of a repeated measurement (every wanted code has a window); the caller
    decides which of them to read, and of the others which it can leave unread.
    """

    __slots__ = (
        "_elements",
        "_raw",
        "_record",
        "_subjects",
        "codes",
        "day",
        "read",
        "ref",
        "repeated",
        "status",
    )

    def __init__(
        self,
        raw: _Raw,
        day: date | None,
        codes: frozenset[Code],
        repeated: bool,
        elements: frozenset[str],
        subjects: _Subjects,
    ) -> None:
        self._raw = raw
        self._elements = elements
        self._subjects = subjects  # of the call (see `_call_subject`)
        self.ref = raw.ref
        self.status: Any = raw.resource.get("status")  # as sent: a valid record has the same status
        self.day = day
        self.codes = codes
        self.repeated = repeated
        self.read = False
        self._record: ObservationRecord | None = None

    def value_codes(self) -> frozenset[Code] | None:
        """The codes of its valueCodeableConcept as the record will hold them, read from the raw JSON (empty
        when there is none); None when their shape is unusual, so that only validation can tell."""
        concept = _raw_concept(self._raw.resource.get("valueCodeableConcept"))
        return None if concept is None else concept[0]

    def record(self) -> ObservationRecord | None:
        """The Observation as a record, None when it is not valid FHIR (then logged, once)."""
        if not self.read:
            self.read = True
            model = _validated(self._raw, self._elements, self._subjects)
            self._record = None if model is None else _observation(model, self.ref)
        return self._record


def read_records_lazily(
    resources: Iterable[Any],
    observation_codes: frozenset[Code],
    patient_id: str | None,
    windows: RecencyWindows,
    readable: ReadableCodes | None = None,
    lab_codes: frozenset[Code] = frozenset(),
) -> tuple[PatientRecords, tuple[ObservationCandidate, ...]]:
    """As `read_records` with windows, but the Observations come back unvalidated, as candidates in order.

    The records hold every other resource type; which Observations are worth validating is the caller's
    choice (the facts stage reads only the newest usable value of a repeated measurement).
    """
    selected = _selected(_flatten(resources), observation_codes, patient_id, readable)
    others: list[tuple[_Raw, frozenset[str]]] = []
    candidates: list[ObservationCandidate] = []
    subjects: _Subjects = {}
    for raw, day, codes, repeated in _windowed(selected, windows):
        elements = _elements(raw, codes, lab_codes)
        if raw.type == "Observation":
            candidates.append(ObservationCandidate(raw, day, codes, repeated, elements, subjects))
        else:
            others.append((raw, elements))
    return _records(*_validated_all(others, subjects)), tuple(candidates)


def _records(valid: list[tuple[_Raw, Any]], skipped: list[str]) -> PatientRecords:
    bundled: dict[str, Medication] = {}
    for raw, model in valid:
        if isinstance(model, Medication):
            bundled[raw.ref] = model
            if raw.full_url:
                bundled[raw.full_url] = model
    patients, conditions, observations, uses, procedures = [], [], [], [], []
    for raw, model in valid:
        if isinstance(model, Patient):
            patients.append(_patient(model, raw.ref))
        elif isinstance(model, Condition):
            conditions.append(_condition(model, raw.ref))
        elif isinstance(model, Observation):
            observations.append(_observation(model, raw.ref))
        elif isinstance(model, MedicationStatement | MedicationRequest):
            uses.append(_medication_use(model, raw.ref, bundled))
        elif isinstance(model, Procedure):
            procedures.append(_procedure(model, raw.ref))
    return PatientRecords(
        patients=tuple(patients),
        conditions=tuple(conditions),
        observations=tuple(observations),
        medication_uses=tuple(uses),
        procedures=tuple(procedures),
        skipped=tuple(skipped),
    )
