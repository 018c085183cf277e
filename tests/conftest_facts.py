"""Test helpers for the facts stage: the catalog's own Terminology (mappings/), and FHIR builders."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from cds_service import catalog
from cds_service.facts import PatientFacts, ReadPlan, build_facts, needs, read_plan
from cds_service.terminology import Terminology

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
THIRDPARTY = Path(__file__).resolve().parents[2] / "shared" / "thirdparty-fhir"


def load_terminology(directory: Path = MAPPINGS) -> Terminology:
    """The vocabulary of the catalog folder, loaded and checked by the catalog module itself."""
    return catalog.load_terminology(directory)


# Every PatientFacts field built from a chart (not today, skipped, unavailable).
ALL_FIELDS = tuple(
    f.name for f in dataclasses.fields(PatientFacts) if f.name not in ("today", "skipped", "unavailable")
)


def read_everything(terminology: Terminology) -> ReadPlan:
    """A plan that reads every field and every analyte of the catalog (as if every operator were used)."""
    return read_plan(needs(*ALL_FIELDS, analytes=terminology.analytes), terminology)


def facts_of(
    resources: Iterable[Mapping[str, Any]],
    terminology: Terminology,
    today: date,
    patient_id: str | None = None,
    unavailable: Collection[str] = (),
) -> PatientFacts:
    """The facts of a chart read with `read_everything` (a repeated measurement: its newest usable value)."""
    return build_facts(resources, terminology, today, patient_id, read_everything(terminology), unavailable)


# --- FHIR JSON builders -------------------------------------------------------------------------------------

LOINC_URI = "http://loinc.org"
SNOMED_URI = "http://snomed.info/sct"
RXNORM_URI = "http://www.nlm.nih.gov/research/umls/rxnorm"


def concept(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        cc["text"] = text
    return cc


def patient(pid: str = "p1", birth: str = "1966-01-01", gender: str = "male") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": gender}


def observation(
    oid: str,
    loinc: str,
    when: str = "2026-11-16",
    status: str = "final",
    subject: str = "Patient/p1",
    **value: Any,
) -> dict[str, Any]:
    res = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": concept(LOINC_URI, loinc),
        "subject": {"reference": subject},
        "effectiveDateTime": when,
    }
    res.update(value)
    return res


def quantity(value: float, unit: str, system: str | None = "http://unitsofmeasure.org") -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "code": unit}
    if system:
        q["system"] = system
    return q


def lab(
    oid: str, loinc: str, value: float, unit: str, when: str = "2026-11-16", **extra: Any
) -> dict[str, Any]:
    return observation(oid, loinc, when, valueQuantity=quantity(value, unit), **extra)


def condition(
    cid: str, system: str, code: str, onset: str | None = "2025-01-10", **extra: Any
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": concept(system, code),
        "subject": {"reference": "Patient/p1"},
    }
    if onset:
        res["onsetDateTime"] = onset
    res.update(extra)
    return res


def med_statement(
    mid: str,
    rxnorm: str | None,
    start: str,
    end: str | None = None,
    status: str = "active",
    text: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": mid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": start, **({"end": end} if end else {})},
    }
    if rxnorm:
        res["medicationCodeableConcept"] = concept(RXNORM_URI, rxnorm, text)
    else:
        res["medicationCodeableConcept"] = {"text": text}
    return res
