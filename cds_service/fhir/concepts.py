"""How each FHIR datatype is read from raw JSON: codings, dates, quantities, references, medications.

One reader per concept, used both to select resources before validation and to build the records once a
resource has validated. Each reader is forgiving: a part of an unexpected shape is passed over, never
guessed (a resource whose read elements are malformed fails validation and is skipped anyway).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from cds_service.terminology import Code, normalize_code


@dataclass(frozen=True)
class Concept:
    """A CodeableConcept: its normalised codes and a text (the text, else the first display)."""

    codes: frozenset[Code]
    text: str | None


NO_CONCEPT = Concept(frozenset(), None)


@dataclass(frozen=True)
class Amount:
    """A Quantity with a finite value; `units` holds the UCUM code then the printed unit (to try in order)."""

    value: float
    units: tuple[str, ...]
    comparator: str | None = None  # <, <=, >=, > (the value is a bound, not a measurement)

    @property
    def as_sent(self) -> str:
        unit = self.units[-1] if self.units else ""
        return f"{self.comparator or ''}{self.value:g} {unit}".strip()


def _items(value: Any) -> list[Any]:
    """The items of a JSON array, none for anything else."""
    return value if isinstance(value, list) else []


def is_object(value: Any) -> bool:
    """A JSON object (json.loads gives dicts, tested first: a Mapping test costs several times more)."""
    return type(value) is dict or isinstance(value, Mapping)


@lru_cache(maxsize=4096)
def _normalized(system: str | None, code: str) -> Code | None:
    """`normalize_code`, remembered: a chart repeats the same few codes hundreds of times."""
    return normalize_code(system, code)


def codes(concept: Any) -> frozenset[Code]:
    """The normalised codes of a CodeableConcept (codings of an unusual shape are passed over)."""
    codings = concept.get("coding") if is_object(concept) else None
    found: set[Code] = set()
    for coding in codings if isinstance(codings, list) else ():
        if is_object(coding):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(code, str) and (system is None or isinstance(system, str)):
                normalised = _normalized(system, code)
                if normalised:
                    found.add(normalised)
    return frozenset(found)


def is_concept(value: Any) -> bool:
    """Whether a value has the shape of a CodeableConcept as far as `codes` reads it (an object whose
    `coding`, if any, is a list of objects): else only validation can tell what it means."""
    if not is_object(value):
        return False
    codings = value.get("coding")
    return codings is None or (isinstance(codings, list) and all(is_object(c) for c in codings))


def concept(value: Any) -> Concept:
    """A CodeableConcept's codes and text (its `text`, else the first coding's display)."""
    if not is_object(value):
        return NO_CONCEPT
    text = value.get("text")
    if not isinstance(text, str) or not text:
        codings = value.get("coding")
        text = next(
            (
                c["display"]
                for c in (codings if isinstance(codings, list) else ())
                if is_object(c) and isinstance(c.get("display"), str) and c["display"]
            ),
            None,
        )
    return Concept(codes(value), text)


def all_codes(values: Any) -> frozenset[Code]:
    """The codes of a list of CodeableConcepts."""
    return frozenset(code for value in _items(values) for code in codes(value))


def status_code(value: Any) -> str | None:
    """The first code of a status CodeableConcept (clinicalStatus...), lower-cased."""
    codings = value.get("coding") if is_object(value) else None
    for coding in codings if isinstance(codings, list) else ():
        if is_object(coding) and isinstance(coding.get("code"), str) and coding["code"]:
            return coding["code"].strip().lower()
    return None


def day(value: Any) -> date | None:
    """The calendar date of a FHIR date, dateTime or instant (a partial date is its first day)."""
    return _day(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _day(value: str) -> date | None:
    """Remembered: the resources of one visit share their dates."""
    parts = value[:10].split("-")
    try:
        return date(
            int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1
        )
    except (ValueError, IndexError):
        return None


def first_day(resource: Mapping[str, Any], names: Iterable[str]) -> date | None:
    """The date of the first of these elements present: a dateTime or instant, or a Period's start."""
    for name in names:
        value = resource.get(name)
        if value is not None:
            return day(value.get("start") if is_object(value) else value)
    return None


def period_end(value: Any) -> date | None:
    return day(value.get("end")) if is_object(value) else None


def number(value: Any) -> float | None:
    """A finite JSON number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def amount(quantity: Any) -> Amount | None:
    """A Quantity with a finite value, its UCUM code and printed unit, and its comparator."""
    if not is_object(quantity):
        return None
    value = number(quantity.get("value"))
    if value is None:
        return None
    units = tuple(
        dict.fromkeys(
            unit.strip()
            for unit in (quantity.get("code"), quantity.get("unit"))
            if isinstance(unit, str) and unit.strip()
        )
    )
    comparator = quantity.get("comparator")
    return Amount(value, units, comparator if isinstance(comparator, str) else None)


def reference(value: Any) -> str | None:
    """The `reference` of a Reference."""
    target = value.get("reference") if is_object(value) else None
    return target if isinstance(target, str) and target else None


def references(values: Any) -> tuple[str, ...]:
    return tuple(ref for value in _items(values) if (ref := reference(value)))


def medication_of(medication: Mapping[str, Any]) -> Concept:
    """A Medication resource: the codes of its code and of its ingredients, the text of its code."""
    own = concept(medication.get("code"))
    ingredients = medication.get("ingredient")
    ingredient_codes = frozenset(
        code
        for item in (ingredients if isinstance(ingredients, list) else ())
        if is_object(item)
        for code in codes(item.get("itemCodeableConcept"))
    )
    return Concept(own.codes | ingredient_codes, own.text)


def medication(resource: Mapping[str, Any], bundled: Mapping[str, Mapping[str, Any]]) -> Concept:
    """The medication of a MedicationStatement/Request/Administration: inline, a contained Medication, a
    bundled one (by reference or fullUrl), else only the reference's display."""
    inline = resource.get("medicationCodeableConcept")
    if inline is not None:
        return concept(inline)
    pointer = resource.get("medicationReference")
    if not is_object(pointer):
        return NO_CONCEPT
    target = reference(pointer)
    found = None
    if target is not None and target.startswith("#"):
        contained = resource.get("contained")
        found = next(
            (
                item
                for item in (contained if isinstance(contained, list) else ())
                if is_object(item)
                and item.get("resourceType") == "Medication"
                and item.get("id") == target[1:]
            ),
            None,
        )
    elif target is not None:
        found = bundled.get(target)
    if found is not None:
        return medication_of(found)
    display = pointer.get("display")
    return Concept(frozenset(), display if isinstance(display, str) and display else None)
