"""Kleene all / any / not with the four values, as data (tests/truth_tables.yaml).

Each case is checked twice: on the plain combinators of cds_service.engine.logic, and end to end on a compiled
rule whose leaves are real operators chosen to take the wanted value for one fixed patient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import Patient, context

from cds_service import operators  # noqa: F401 (registers every operator)
from cds_service.engine.logic import kleene_all, kleene_any, kleene_not
from cds_service.engine.rules import compile_rule
from cds_service.verdicts import Truth

TABLES = yaml.safe_load((Path(__file__).parent / "truth_tables.yaml").read_text(encoding="utf-8"))

# A 60-year-old with no ECOG recorded: each leaf below takes the value it is keyed by.
PATIENT = Patient().aged(60).sex("female").build()
LEAVES: dict[str, dict[str, Any]] = {
    "true": {"age": {"min": 18}},
    "false": {"age": {"max": 17}},
    "unknown": {"ecog": {"le": 1}},
    "clinician": {"clinician": "check with the patient"},
}


def _as_rule(node: Any) -> dict[str, Any]:
    """Replace the value names of a YAML tree by leaves taking those values."""
    if isinstance(node, str):
        return LEAVES[node]
    ((name, value),) = node.items()
    return {name: [_as_rule(v) for v in value] if isinstance(value, list) else _as_rule(value)}


def _evaluate(rule: dict[str, Any]) -> Truth:
    return compile_rule(rule).evaluate(PATIENT, context()).truth


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [str(case.get("inputs", case.get("input", case.get("rule", case.get("leaf"))))) for case in cases]


def test_leaves_take_their_values() -> None:
    for value, leaf in LEAVES.items():
        assert _evaluate(leaf) is Truth(value)


@pytest.mark.parametrize("case", TABLES["not"], ids=_ids(TABLES["not"]))
def test_not(case: dict[str, Any]) -> None:
    expected = Truth(case["expected"])
    assert kleene_not(Truth(case["input"])) is expected
    assert _evaluate({"not": LEAVES[case["input"]]}) is expected


@pytest.mark.parametrize("case", TABLES["all"], ids=_ids(TABLES["all"]))
def test_all(case: dict[str, Any]) -> None:
    expected = Truth(case["expected"])
    assert kleene_all(Truth(v) for v in case["inputs"]) is expected
    assert _evaluate({"all": [LEAVES[v] for v in case["inputs"]]}) is expected


@pytest.mark.parametrize("case", TABLES["any"], ids=_ids(TABLES["any"]))
def test_any(case: dict[str, Any]) -> None:
    expected = Truth(case["expected"])
    assert kleene_any(Truth(v) for v in case["inputs"]) is expected
    assert _evaluate({"any": [LEAVES[v] for v in case["inputs"]]}) is expected


@pytest.mark.parametrize("case", TABLES["trees"], ids=_ids(TABLES["trees"]))
def test_nested_trees(case: dict[str, Any]) -> None:
    assert _evaluate(_as_rule(case["rule"])) is Truth(case["expected"])


MODIFIER_IDS = [str(sorted(case.items())) for case in TABLES["modifiers"]]


@pytest.mark.parametrize("case", TABLES["modifiers"], ids=MODIFIER_IDS)
def test_modifiers(case: dict[str, Any]) -> None:
    ((name, params),) = LEAVES[case["leaf"]].items()
    modifiers = {key: case[key] for key in ("if_true", "if_false") if key in case}
    assert _evaluate({name: {**params, **modifiers}}) is Truth(case["expected"])
