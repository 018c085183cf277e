"""Codes, value sets, analytes and medication ingredients: the vocabulary shared by facts and rules.

Everything here is plain data loaded from the catalog folder (`mappings/`); nothing imports FHIR models.
A code is a `(system, code)` pair after `normalize_code`, so that `urn:oid:2.16.840.1.113883.6.90|C64.1`
and `http://hl7.org/fhir/sid/icd-10-cm|C641` compare equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
UCUM = "http://unitsofmeasure.org"
AJCC = "http://cancerstaging.org"
# HL7 Terminology (THO): CodeSystem CPT, and NamingSystem icd10PCS, which marks this URI preferred (mCODE STU4
# uses both).
CPT = "http://www.ama-assn.org/go/cpt"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
# Our own system for medication ingredients after RxNorm product -> ingredient mapping.
INGREDIENT = "urn:trialmatch:ingredient"

Code = tuple[str, str]

SYSTEM_ALIASES: Mapping[str, str] = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.43.1": ICDO3,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "urn:oid:2.16.840.1.113883.6.4": ICD10PCS,
    "http://terminology.hl7.org/CodeSystem/icd10PCS": ICD10PCS,  # THO's non-preferred URI for ICD-10-PCS
    "https://snomed.info/sct": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "http://loinc.org/": LOINC,
}


def normalize_system(system: str | None) -> str:
    """Return the canonical URI for a code system (known OIDs and spelling variants mapped)."""
    if not system:
        return ""
    system = system.strip()
    return SYSTEM_ALIASES.get(system, system)


def normalize_code(system: str | None, code: str | None) -> Code | None:
    """Return a comparable `(system, code)`; ICD-10-CM codes lose their dot and are upper-cased, ICD-10-PCS
    codes are upper-cased."""
    if code is None:
        return None
    sys_uri = normalize_system(system)
    value = str(code).strip()
    if not value:
        return None
    if sys_uri == ICD10CM:
        value = value.replace(".", "").upper()
    elif sys_uri == ICD10PCS:
        value = value.upper()
    return (sys_uri, value)


@dataclass(frozen=True)
class ValueSet:
    """A named set of codes; ICD-10-CM entries may also match by prefix (a category and all below it)."""

    id: str
    title: str
    codes: frozenset[Code]
    prefixes: frozenset[Code] = frozenset()  # (ICD10CM, "C64") matches C64, C641, C6410...
    source: str = ""

    def contains(self, code: Code) -> bool:
        """Tell whether a normalised code belongs to this value set."""
        if code in self.codes:
            return True
        system, value = code
        return any(system == p_sys and value.startswith(p_val) for p_sys, p_val in self.prefixes)

    def is_empty(self) -> bool:
        return not self.codes and not self.prefixes


@dataclass(frozen=True)
class RangeLimits:
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Analyte:
    """A measured quantity: its LOINC codes, canonical unit, conversions and documented default range."""

    id: str
    title: str
    loinc: frozenset[str]
    unit: str  # canonical UCUM unit
    factors: Mapping[str, float]  # UCUM unit as sent -> multiply to get the canonical unit
    default_range: RangeLimits | None = None
    default_range_by_sex: Mapping[str, RangeLimits] = field(default_factory=dict)
    range_source: str = ""

    def to_canonical(self, value: float, unit: str | None) -> float | None:
        """Convert a value to the canonical unit; None when the unit is not one we know for this analyte."""
        if unit is None:
            return None
        factor = self.factors.get(unit.strip())
        if factor is None:
            return None
        return value * factor

    def default_limits(self, sex: str | None) -> RangeLimits | None:
        """Documented default reference range, sex-specific where the mapping gives one."""
        if sex and sex in self.default_range_by_sex:
            return self.default_range_by_sex[sex]
        return self.default_range


@dataclass(frozen=True)
class Ingredient:
    """A medication ingredient: the RxNorm ingredient and product codes that map to it, and name patterns."""

    id: str
    rxnorm: frozenset[str]
    names: tuple[str, ...]  # lower-case words matched in Medication text when no code is known


@dataclass(frozen=True)
class Terminology:
    """All value sets, analytes and ingredients of one catalog, indexed for fast lookup."""

    valuesets: Mapping[str, ValueSet]
    analytes: Mapping[str, Analyte]
    ingredients: Mapping[str, Ingredient]
    _by_code: Mapping[Code, frozenset[str]] = field(default_factory=dict, repr=False)
    _by_prefix: Mapping[Code, frozenset[str]] = field(default_factory=dict, repr=False)
    _prefix_systems: frozenset[str] = field(default=frozenset(), repr=False)
    _analyte_by_loinc: Mapping[str, Analyte] = field(default_factory=dict, repr=False)
    _ingredient_by_rxnorm: Mapping[str, str] = field(default_factory=dict, repr=False)
    _ingredient_names: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (name, ingredient id)

    @classmethod
    def build(
        cls,
        valuesets: Iterable[ValueSet],
        analytes: Iterable[Analyte],
        ingredients: Iterable[Ingredient],
    ) -> Terminology:
        vs_map = {vs.id: vs for vs in valuesets}
        by_code: dict[Code, set[str]] = {}
        by_prefix: dict[Code, set[str]] = {}
        for vs in vs_map.values():
            for code in vs.codes:
                by_code.setdefault(code, set()).add(vs.id)
            for prefix in vs.prefixes:
                by_prefix.setdefault(prefix, set()).add(vs.id)
        an_map = {a.id: a for a in analytes}
        by_loinc = {code: a for a in an_map.values() for code in a.loinc}
        ing_map = {i.id: i for i in ingredients}
        by_rx = {code: i.id for i in ing_map.values() for code in i.rxnorm}
        return cls(
            valuesets=vs_map,
            analytes=an_map,
            ingredients=ing_map,
            _by_code={k: frozenset(v) for k, v in by_code.items()},
            _by_prefix={k: frozenset(v) for k, v in by_prefix.items()},
            _prefix_systems=frozenset(system for system, _ in by_prefix),
            _analyte_by_loinc=by_loinc,
            _ingredient_by_rxnorm=by_rx,
            _ingredient_names=tuple((name, i.id) for i in ing_map.values() for name in i.names),
        )

    def memberships(self, codes: Iterable[Code]) -> frozenset[str]:
        """Return the ids of every value set that contains at least one of `codes`."""
        found: set[str] = set()
        for code in codes:
            found.update(self._by_code.get(code, ()))
            system, value = code
            if system in self._prefix_systems:  # only a code of such a system can match a prefix
                for end in range(len(value) + 1):  # each prefix of the code, as `ValueSet.contains` tries
                    found.update(self._by_prefix.get((system, value[:end]), ()))
        return frozenset(found)

    def analyte_for_loinc(self, loinc_code: str) -> Analyte | None:
        return self._analyte_by_loinc.get(loinc_code)

    def ingredients_for(self, codes: Iterable[Code], text: str | None) -> frozenset[str]:
        """Map RxNorm product or ingredient codes (or, failing that, a name in `text`) to ingredient ids."""
        by_rxnorm = self._ingredient_by_rxnorm
        found = {by_rxnorm[c] for s, c in codes if s == RXNORM and c in by_rxnorm}
        if not found and text:
            lowered = text.lower()
            found = {ingredient for name, ingredient in self._ingredient_names if name in lowered}
        return frozenset(found)

    def relevant_loinc(self) -> frozenset[str]:
        """LOINC codes of every analyte: used to select Observations worth validating."""
        return frozenset(self._analyte_by_loinc)
