"""What to read of a chart, derived from what the rules read: `Needs` (in facts' words) -> `ReadPlan`.

Each leaf operator declares its `Needs` where it is registered (engine.registry); the engine joins them over
the compiled catalog and `read_plan` turns them into what the records stage selects: resource types,
Observation codes (with the elements their facts read) and the coded resources worth validating. The facts
fields built from others declare their own needs here (`DEPENDS_ON`), so nothing has to be kept in step by
hand: a field, analyte or value set no declaration names is not read, and a test checks that every operator
reads only what it declares.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cds_service.facts.conditions import METASTATIC_DISEASE, is_malignancy_code
from cds_service.facts.medications import MEDICATION_TYPES, SYSTEMIC_ANTICANCER
from cds_service.facts.observations import KINDS, KINDS_BY_FIELD, LAB_ELEMENTS, STAGING_M1, Kind
from cds_service.fhir import records
from cds_service.fhir.plan import Readable, Selection
from cds_service.fhir.records import with_extensions
from cds_service.terminology import LOINC, Code, Terminology


@dataclass(frozen=True)
class Needs:
    """What a rule reads of PatientFacts: whole fields, the analytes of `labs` (and `unconverted_labs`),
    analytes also read near another one's newest value (analyte -> (anchor analyte, days)), and the value sets
    it reads by name rather than through a rule parameter."""

    fields: frozenset[str] = frozenset()
    analytes: frozenset[str] = frozenset()
    near: Mapping[str, tuple[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    valuesets: frozenset[str] = frozenset()

    def __or__(self, other: Needs) -> Needs:
        near = dict(self.near)
        for analyte, (anchor, days) in other.near.items():
            if analyte in near and near[analyte][0] != anchor:
                raise ValueError(f"{analyte} is read near two analytes: {near[analyte][0]} and {anchor}")
            near[analyte] = (anchor, max(days, near.get(analyte, (anchor, 0))[1]))
        return Needs(
            self.fields | other.fields,
            self.analytes | other.analytes,
            MappingProxyType(near),
            self.valuesets | other.valuesets,
        )


def needs(
    *fields: str,
    analytes: Iterable[str] = (),
    near: Mapping[str, tuple[str, int]] | None = None,
    valuesets: Iterable[str] = (),
) -> Needs:
    """Needs of these PatientFacts fields (`labs` is implied by `analytes`)."""
    analytes = frozenset(analytes)
    near = dict(near or {})
    read = frozenset(fields) | ({"labs", "unconverted_labs"} if analytes or near else frozenset())
    return Needs(read, analytes | near.keys(), MappingProxyType(near), frozenset(valuesets))


ALWAYS = needs("patient_ref", "birth_date", "sex", "deceased")
"""The patient is always read: its demographics, and whether the patient has died."""

# Fields built from other fields, and what they read themselves.
DEPENDS_ON: Mapping[str, Needs] = {
    "therapy_lines": needs("medications", "metastasis", valuesets=[SYSTEMIC_ANTICANCER]),
    "metastasis": needs(
        "conditions", "staging", "disease_status", valuesets=[METASTATIC_DISEASE, STAGING_M1]
    ),
    "labs": needs("unconverted_labs"),
}
# The resource types each field is read from.
SOURCES: Mapping[str, frozenset[str]] = {
    **{name: frozenset({"Patient"}) for name in ("patient_ref", "birth_date", "sex", "deceased")},
    "conditions": frozenset({"Condition"}),
    "procedures": frozenset({"Procedure"}),
    "medications": frozenset({*MEDICATION_TYPES, "Medication"}),
    **{name: frozenset({"Observation"}) for name in ("labs", "unconverted_labs", *KINDS_BY_FIELD)},
}


def closed(wanted: Needs) -> Needs:
    """`wanted` with the needs of every field it reads, and theirs, and the patient's (`ALWAYS`)."""
    found = wanted | ALWAYS
    while True:
        more = found
        for name in found.fields:
            if name in DEPENDS_ON:
                more = more | DEPENDS_ON[name]
        for name in found.fields & KINDS_BY_FIELD.keys():
            more = more | Needs(valuesets=KINDS_BY_FIELD[name].valuesets)
        if more == found:
            return found
        found = more


@dataclass(frozen=True)
class ReadPlan:
    """What to read of a chart for these needs (see the module docstring)."""

    needs: Needs  # closed: with the needs of the fields it reads
    selection: Selection  # for the records stage
    kinds: tuple[Kind, ...]  # the kinds of Observation facts read
    slots: Mapping[Code, tuple[str, ...]]  # wanted Observation code -> "lab:<analyte>" and kind fields
    repeated: frozenset[str]  # slots of which only the newest usable value is read (of each `per` key)
    per: Mapping[str, Callable[[Mapping[str, Any]], Hashable]]  # slot -> what a value is of (Kind.per)

    @property
    def resource_types(self) -> frozenset[str]:
        return self.selection.resource_types


def read_plan(wanted: Needs, terminology: Terminology) -> ReadPlan:
    """The plan of what to read for `wanted` (plus the patient) with this catalog's vocabulary."""
    full = closed(wanted)
    unknown = full.fields - SOURCES.keys() - DEPENDS_ON.keys()
    if unknown:
        raise ValueError(f"no PatientFacts field {sorted(unknown)}")
    kinds = tuple(kind.with_analyte_codes(terminology) for kind in KINDS if kind.field in full.fields)
    slots: dict[Code, list[str]] = {}
    elements: dict[Code, set[str]] = {}
    for analyte_id in sorted(full.analytes):
        analyte = terminology.analytes.get(analyte_id)
        for code in sorted(analyte.loinc) if analyte else ():
            slots.setdefault((LOINC, code), []).append(f"lab:{analyte_id}")
            elements.setdefault((LOINC, code), set()).update(LAB_ELEMENTS)
    for kind in kinds:
        for code in kind.codes:
            slots.setdefault(code, []).append(kind.field)
            elements.setdefault(code, set()).update(kind.elements)
    types = frozenset().union(*(SOURCES.get(name, frozenset()) for name in full.fields))
    repeated = {f"lab:{a}" for a in full.analytes} | {k.field for k in kinds if k.repeated}
    return ReadPlan(
        needs=full,
        selection=Selection(
            resource_types=types,
            observation_elements=MappingProxyType(
                {
                    code: records.VALIDATED["Observation"] | with_extensions(names)
                    for code, names in elements.items()
                }
            ),
            readable=_readable(terminology),
        ),
        kinds=kinds,
        slots=MappingProxyType({code: tuple(names) for code, names in slots.items()}),
        repeated=frozenset(repeated),
        per=MappingProxyType({kind.field: kind.per for kind in kinds if kind.per is not None}),
    )


def _readable(terminology: Terminology) -> Readable:
    """A coded resource is read when one of its codes is in a value set of the catalog (a condition also
    when it is a malignancy code, a medication when it maps to an ingredient, by code or by its text)."""

    def readable(resource_type: str, codes: frozenset[Code], text: str | None) -> bool:
        if terminology.memberships(codes):
            return True
        if resource_type == "Condition":
            return any(is_malignancy_code(*code) for code in codes)
        if resource_type == "Procedure":
            return False
        return bool(terminology.ingredients_for(codes, text))

    return readable
