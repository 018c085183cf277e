"""Compiled rules: the all / any / not tree of mappings/README.md, its leaves checked once at start.

`compile_rule` turns a raw rule mapping into a `Rule`: operator names and parameters are checked and bounds
parsed, so that evaluation never reads raw dicts. `Rule.evaluate` is one short recursion returning a
`LeafResult` (truth, reason, evidence), with Kleene's three values plus `clinician` (engine.logic). Equal
rules have equal keys (their canonical JSON) and are evaluated once per patient. Raises `RuleError`
(cds_service.errors): UnknownOperatorError, RuleParameterError, naming the path inside the rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cds_service.engine.logic import ALL_PRECEDENCE, ANY_PRECEDENCE, first_present, kleene_not
from cds_service.engine.registry import OPERATORS, Bounds, EvaluationContext, LeafResult, Operator, ParamType
from cds_service.errors import RuleParameterError, UnknownOperatorError
from cds_service.facts import Needs, PatientFacts
from cds_service.verdicts import Truth

SOFTENED = (Truth.UNKNOWN, Truth.CLINICIAN)  # what if_true / if_false may turn a definite answer into
MODIFIERS = ("if_true", "if_false", "note")
NODES = ("all", "any", "not")


@dataclass(frozen=True)
class Leaf:
    """A leaf operator with its checked parameters and the if_true / if_false / note modifiers."""

    operator: Operator
    params: Mapping[str, Any]
    if_true: Truth | None = None
    if_false: Truth | None = None
    note: str | None = None
    needs: Needs = Needs()  # what it reads of the facts, as its operator declares it for these parameters

    def evaluate(self, facts: PatientFacts, context: EvaluationContext) -> LeafResult:
        result = self.operator.function(facts, self.params, context)
        if self.if_true is None and self.if_false is None and self.note is None:
            return result
        softened = (
            self.if_true
            if result.truth is Truth.TRUE
            else self.if_false
            if result.truth is Truth.FALSE
            else None
        )
        if softened is None and (self.if_true or self.if_false or not self.note):
            return result
        reason = f"{result.reason}; {self.note}" if self.note else result.reason
        return LeafResult(softened or result.truth, reason, result.evidence)


@dataclass(frozen=True, eq=False)
class Rule:
    """A compiled rule: `all` / `any` / `not` over child rules, or a leaf. Call it with facts, context."""

    kind: str  # "all" | "any" | "not" | the leaf operator's name
    children: tuple[Rule, ...] = ()
    leaf: Leaf | None = None
    key: str = ""  # canonical JSON of the raw rule: equal rules have equal keys

    def evaluate(self, facts: PatientFacts, context: EvaluationContext) -> LeafResult:
        """Evaluate the tree once a patient (equal rules, also inside other rules, have equal keys); a node
        cites the reasons and evidence of the children that decided it."""
        result: LeafResult | None = context.memo.get(self.key)
        if result is None:
            if self.leaf is not None:
                result = self.leaf.evaluate(facts, context)
            else:
                truth, reasons, evidence = self._walk(facts, context)
                result = LeafResult(truth, "; ".join(reasons), evidence)
            context.memo[self.key] = result
        return result

    __call__ = evaluate

    def _walk(
        self, facts: PatientFacts, context: EvaluationContext
    ) -> tuple[Truth, tuple[str, ...], tuple[str, ...]]:
        """One recursion over a node returning three values: the truth, and the leaf reasons and references
        behind it."""
        results = []
        for child in self.children:
            if child.leaf is None:
                results.append(child._walk(facts, context))
            else:  # equal leaves anywhere are evaluated once a patient
                value = child.evaluate(facts, context)
                results.append((value.truth, (value.reason,), value.evidence))
        if self.kind == "not":
            truth, reasons, evidence = results[0]
            return kleene_not(truth), reasons, evidence
        present = {result[0] for result in results}
        truth = first_present(ALL_PRECEDENCE if self.kind == "all" else ANY_PRECEDENCE, present)
        cited = [result for result in results if result[0] is truth]
        if len(cited) == 1:  # its reasons are distinct already, a leaf's references may not be
            _, reasons, evidence = cited[0]
            return truth, reasons, evidence if len(evidence) < 2 else tuple(dict.fromkeys(evidence))
        reasons = tuple(dict.fromkeys([reason for result in cited for reason in result[1]]))
        evidence = tuple(dict.fromkeys([ref for result in cited for ref in result[2]]))
        return truth, reasons, evidence


def _has_type(value: Any, expected: ParamType) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _compile_leaf(operator_: Operator, value: Any, path: str) -> Leaf:
    if operator_.scalar is not None:
        if not isinstance(value, str) or not value:
            raise RuleParameterError(f"{path}: expected a string")
        params: dict[str, Any] = {operator_.scalar: value}
    elif value is None:
        params = {}
    elif isinstance(value, Mapping):
        params = dict(value)
    else:
        raise RuleParameterError(f"{path}: expected a mapping of parameters, got {type(value).__name__}")
    modifiers = {name: params.pop(name) for name in MODIFIERS if name in params}
    unknown = sorted(set(params) - set(operator_.params) - set(operator_.bounds))
    if unknown:
        accepted = ", ".join(sorted({*operator_.params, *operator_.bounds, *MODIFIERS})) or "none"
        raise RuleParameterError(f"{path}/{unknown[0]}: unknown parameter (accepted: {accepted})")
    missing = sorted(operator_.required - set(params))
    if missing:
        raise RuleParameterError(f"{path}: missing parameter {missing[0]!r}")
    for name, expected in operator_.params.items():
        if name in params and not _has_type(params[name], expected):
            raise RuleParameterError(f"{path}/{name}: wrong type {type(params[name]).__name__}")
    if operator_.bounds:
        limits = []
        for name, comparator in operator_.bounds.items():
            if name in params:
                if not _has_type(params[name], (int, float)):
                    raise RuleParameterError(f"{path}/{name}: a bound must be a number")
                limits.append((comparator, float(params[name])))
        if not limits:
            raise RuleParameterError(f"{path}: give at least one of {', '.join(operator_.bounds)}")
        params["bounds"] = Bounds(tuple(limits))
    if operator_.prepare is not None:
        try:
            operator_.prepare(params)
        except ValueError as exc:
            raise RuleParameterError(f"{path}: {exc}") from exc
    softened: dict[str, Truth] = {}
    for name in ("if_true", "if_false"):
        if name in modifiers:
            if modifiers[name] not in SOFTENED:
                raise RuleParameterError(f"{path}/{name}: must be unknown or clinician")
            softened[name] = Truth(modifiers[name])
    note = modifiers.get("note")
    if note is not None and (not isinstance(note, str) or not note):
        raise RuleParameterError(f"{path}/note: must be a non-empty string")
    frozen = MappingProxyType(params)
    return Leaf(
        operator_, frozen, softened.get("if_true"), softened.get("if_false"), note, operator_.needs(frozen)
    )


def rule_key(rule: Mapping[str, Any]) -> str:
    """Canonical text of a raw rule, so that equal rules in different files share one evaluation."""
    return json.dumps(rule, sort_keys=True, separators=(",", ":"), default=str)


def compile_rule(rule: Mapping[str, Any], path: str = "rule") -> Rule:
    """Check a raw rule mapping and turn it into a `Rule` (raises `RuleError` naming the path)."""
    if not isinstance(rule, Mapping) or len(rule) != 1:
        raise RuleParameterError(f"{path}: a rule is a mapping with exactly one key")
    ((name, value),) = rule.items()
    key = rule_key(rule)
    if name in ("all", "any"):
        if not isinstance(value, (list, tuple)) or not value:
            raise RuleParameterError(f"{path}/{name}: expected a non-empty list of rules")
        return Rule(
            name, tuple(compile_rule(child, f"{path}/{name}/{i}") for i, child in enumerate(value)), key=key
        )
    if name == "not":
        return Rule(name, (compile_rule(value, f"{path}/not"),), key=key)
    found = OPERATORS.get(name)
    if found is None:
        known = ", ".join((*NODES, *sorted(OPERATORS)))
        raise UnknownOperatorError(f"{path}: unknown operator {name!r} (known: {known})")
    return Rule(name, leaf=_compile_leaf(found, value, f"{path}/{name}"), key=key)


def leaves(rules: Iterable[Rule]) -> Iterator[Leaf]:
    """Every leaf of these rules (each occurrence)."""
    stack = list(rules)
    while stack:
        rule = stack.pop()
        if rule.leaf is not None:
            yield rule.leaf
        stack.extend(rule.children)
