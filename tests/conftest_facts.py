"""Test helpers for the facts stage: a Terminology read straight from the YAML catalog, and FHIR builders.

Kept apart from the catalog loader (cds_service/catalog.py) on purpose: these tests need only the vocabulary,
not trials, and must not depend on a catalog that is still being written. A minimal `systemic-anticancer`
value set is added when mappings/valuesets/ does not define one yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cds_service.terminology import (
    INGREDIENT,
    Analyte,
    Ingredient,
    RangeLimits,
    Terminology,
    ValueSet,
    normalize_code,
)

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
THIRDPARTY = Path(__file__).resolve().parents[2] / "shared" / "thirdparty-fhir"
ANTICANCER = (
    "pembrolizumab nivolumab ipilimumab avelumab axitinib cabozantinib sunitinib sorafenib everolimus "
    "pazopanib lenvatinib tivozanib belzutifan temsirolimus"
).split()


def _valueset(entry: Mapping[str, Any]) -> ValueSet:
    codes, prefixes = set(), set()
    for include in entry["include"]:
        for value in include.get("codes", ()):
            codes.add(normalize_code(include["system"], str(value)))
        for value in include.get("prefixes", ()):
            prefixes.add(normalize_code(include["system"], str(value)))
    return ValueSet(entry["id"], entry.get("title", ""), frozenset(codes), frozenset(prefixes))


def _limits(raw: Mapping[str, Any] | None) -> RangeLimits | None:
    return None if raw is None else RangeLimits(raw.get("low"), raw.get("high"))


def _analyte(entry: Mapping[str, Any]) -> Analyte:
    return Analyte(
        id=entry["id"],
        title=entry["title"],
        loinc=frozenset(entry["loinc"]),
        unit=entry["unit"],
        factors={str(k): float(v) for k, v in entry["factors"].items()},
        default_range=_limits(entry.get("default_range")),
        default_range_by_sex={k: _limits(v) for k, v in entry.get("default_range_by_sex", {}).items()},
        range_source=entry.get("range_source", ""),
    )


def load_terminology(directory: Path = MAPPINGS, extra: Iterable[ValueSet] = ()) -> Terminology:
    """Build a Terminology from analytes.yaml, medications.yaml and valuesets/*.yaml of `directory`."""
    analytes = [_analyte(a) for a in yaml.safe_load((directory / "analytes.yaml").read_text())["analytes"]]
    ingredients = [
        Ingredient(i["id"], frozenset(i["rxnorm"]), tuple(n.lower() for n in i["names"]))
        for i in yaml.safe_load((directory / "medications.yaml").read_text())["ingredients"]
    ]
    valuesets = {
        vs.id: vs
        for path in sorted((directory / "valuesets").glob("*.yaml"))
        for vs in map(_valueset, yaml.safe_load(path.read_text()).get("valuesets", []))
    }
    if "systemic-anticancer" not in valuesets:
        valuesets["systemic-anticancer"] = ValueSet(
            "systemic-anticancer", "test stand-in", frozenset((INGREDIENT, i) for i in ANTICANCER)
        )
    for vs in extra:
        valuesets[vs.id] = vs
    return Terminology.build(valuesets.values(), analytes, ingredients)


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
