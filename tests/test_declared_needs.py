"""Every operator reads only what it declares (`needs=` where it is registered), since the read plan is
derived from those declarations: a leaf reading an undeclared PatientFacts field or analyte would get no data
and answer `unknown`, plausibly and wrongly. Each leaf of the bundled catalog is evaluated on real charts
through a recording view of the facts, and what it touched is compared with what it declared."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest_facts import facts_of
from test_gallery import ENTRIES, gallery
from test_trial_criteria import CASES, chart

from cds_service.catalog import load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.engine.evaluate import Engine
from cds_service.engine.registry import EvaluationContext, LeafResult, Operator
from cds_service.engine.rules import Leaf, leaves
from cds_service.facts import PatientFacts, needs
from cds_service.verdicts import Truth

ALWAYS_READABLE = frozenset({"today", "unavailable"})  # the day of the evaluation and what could not be read
ENGINE = Engine(load_catalog(DEFAULT_MAPPINGS_DIR))
TERMINOLOGY = ENGINE.catalog.terminology
LEAVES = {
    leaf.operator.name + repr(sorted(leaf.params.items(), key=str)): leaf
    for leaf in leaves(ENGINE._rules.values())
}


class _RecordingMapping(Mapping[str, Any]):
    def __init__(self, values: Mapping[str, Any], keys: set[str]) -> None:
        self._values, self._keys = values, keys

    def __getitem__(self, key: str) -> Any:
        self._keys.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        self._keys.add("*")  # iterating reads every key
        return iter(self._values)

    def __len__(self) -> int:
        self._keys.add("*")
        return len(self._values)


@dataclass
class Recording:
    """A view of PatientFacts that records the fields (and lab analytes) read through it."""

    facts: PatientFacts
    fields: set[str] = field(default_factory=set)
    analytes: set[str] = field(default_factory=set)

    def __getattr__(self, name: str) -> Any:
        if name == "age":  # a property of the birth date
            self.fields.add("birth_date")
            return self.facts.age
        self.fields.add(name)
        value = getattr(self.facts, name)
        if name in ("labs", "unconverted_labs"):
            return _RecordingMapping(value, self.analytes)
        return value


def undeclared(leaf: Leaf, facts: PatientFacts) -> tuple[set[str], set[str]]:
    """The fields and analytes a leaf read on these facts that it did not declare."""
    view = Recording(facts)
    leaf.evaluate(view, EvaluationContext(terminology=TERMINOLOGY))  # type: ignore[arg-type]
    declared = leaf.needs
    fields = view.fields - declared.fields - ALWAYS_READABLE
    analytes = view.analytes - declared.analytes
    return fields, analytes


def charts() -> Iterator[tuple[list[Any], str | None]]:
    """Every gallery patient, and one criterion case in seven (small charts on both sides of a criterion)."""
    for entry in ENTRIES.values():
        bundle = gallery.load_bundle(entry)
        yield [bundle], gallery.patient_of(bundle)["id"]
    for case in CASES[::7]:
        yield chart(case), "p1"


FACTS = [facts_of(resources, TERMINOLOGY, gallery.today(), patient_id) for resources, patient_id in charts()]


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_each_leaf_of_the_catalog_reads_only_what_its_operator_declares(key: str) -> None:
    leaf = LEAVES[key]
    for facts in FACTS:
        assert undeclared(leaf, facts) == (set(), set()), f"{leaf.operator.name} on {facts.patient_ref}"


def test_every_registered_operator_is_used_by_the_catalog_or_covered_here() -> None:
    used = {leaf.operator.name for leaf in LEAVES.values()}
    assert used >= {"lab", "ecog", "condition", "therapy_lines", "imdc_risk", "histology", "primary_in_place"}


def test_the_check_catches_an_operator_that_reads_more_than_it_declares() -> None:
    def sneaky(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
        return LeafResult(Truth.TRUE if facts.procedures or facts.labs.get("hemoglobin") else Truth.FALSE, "")

    operator = Operator("sneaky", sneaky, {}, frozenset(), {}, None, None, lambda params: needs("conditions"))
    leaf = Leaf(operator, {}, needs=needs("conditions"))
    fields, analytes = undeclared(leaf, FACTS[0])
    assert "procedures" in fields and "labs" in fields and analytes == {"hemoglobin"}
