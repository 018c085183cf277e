"""The registry of leaf operators: each is a function `(facts, params, context) -> LeafResult`, registered
with `@operator` together with the parameters it accepts and what it reads of the facts (`needs`).

What an operator reads is declared where it is registered, and the read plan of a catalog is derived from
those declarations (facts.plan): an operator that reads something it did not declare is caught by
tests/test_declared_needs.py, never silently given no data.
"""

from __future__ import annotations

import math
import operator as op
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from cds_service.engine.text import analyte_label, fmt_number, lower_first
from cds_service.facts import Needs, PatientFacts
from cds_service.terminology import Terminology
from cds_service.verdicts import Truth

T = TypeVar("T")


@dataclass(frozen=True)
class LeafResult:
    """The value of a rule for one patient, why, and the references of the resources used."""

    truth: Truth
    reason: str
    evidence: tuple[str, ...] = ()


class Labels:
    """How reasons name the value sets and analytes of a terminology, worked out once for a catalog."""

    def __init__(self, terminology: Terminology) -> None:
        self._valuesets = {
            valueset_id: lower_first(valueset.title)
            for valueset_id, valueset in terminology.valuesets.items()
            if valueset.title
        }
        self._analytes = {
            analyte_id: analyte_label(analyte, analyte_id)
            for analyte_id, analyte in terminology.analytes.items()
        }

    def valueset(self, valueset_id: str) -> str:
        """The value set's title as inside a sentence ("heart failure"), else its id in words."""
        found = self._valuesets.get(valueset_id)
        return found if found is not None else valueset_id.replace("-", " ")

    def analyte(self, analyte_id: str) -> str:
        """The analyte's short name ("ALT", "creatinine"; see `text.analyte_label`)."""
        found = self._analytes.get(analyte_id)
        return found if found is not None else analyte_label(None, analyte_id)


_KEYED_BY_VALUE = (int, float, str, date, type(None))


@dataclass
class EvaluationContext:
    """What a leaf reads besides the facts: vocabulary, recency windows, and a memo for one patient."""

    terminology: Terminology
    lab_max_age_days: int = 30
    performance_max_age_days: int = 60
    memo: dict[Hashable, Any] = field(default_factory=dict)  # keys: rule keys, criteria, derive() tuples
    prepared_labels: InitVar[Labels | None] = None  # an engine's, built once from the same terminology
    labels: Labels = field(init=False, repr=False)

    def __post_init__(self, prepared_labels: Labels | None) -> None:
        self.labels = Labels(self.terminology) if prepared_labels is None else prepared_labels

    def derive(self, facts: PatientFacts, function: Callable[..., T], *args: Any) -> T:
        """Compute a derived value at most once per patient (objects in `args` are keyed by identity)."""
        key = (function, id(facts), tuple([a if isinstance(a, _KEYED_BY_VALUE) else id(a) for a in args]))
        if key in self.memo:  # a derived value may be None
            found: T = self.memo[key]
            return found
        value = self.memo[key] = function(facts, *args)
        return value


# --- bounds: parsed once, checked with a tolerance so that 1.8 / 1.2 is "1.5 x ULN", not 1.5000000000000002


def _close(value: float, limit: float) -> bool:
    return math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)


COMPARATORS: Mapping[str, tuple[str, Callable[[float, float], bool]]] = {
    "lt": ("<", lambda v, limit: op.lt(v, limit) and not _close(v, limit)),
    "le": ("≤", lambda v, limit: op.le(v, limit) or _close(v, limit)),
    "gt": (">", lambda v, limit: op.gt(v, limit) and not _close(v, limit)),
    "ge": ("≥", lambda v, limit: op.ge(v, limit) or _close(v, limit)),
}


@dataclass(frozen=True)
class Bounds:
    """Limits that must all hold, e.g. ((ge, 24), (le, 52))."""

    limits: tuple[tuple[str, float], ...]

    def holds(self, value: float) -> bool:
        return all(COMPARATORS[cmp][1](value, limit) for cmp, limit in self.limits)

    def decide(self, possible: Iterable[float]) -> Truth:
        """True when every possible value satisfies the bounds, false when none does, else unknown."""
        answers = {self.holds(v) for v in possible}
        if answers == {True}:
            return Truth.TRUE
        if answers == {False}:
            return Truth.FALSE
        return Truth.UNKNOWN

    def text(self, suffix: str = "") -> str:
        """The limits as a reason shows them, e.g. "≥ 24 weeks and ≤ 52 weeks"."""
        return " and ".join(
            f"{COMPARATORS[cmp][0]} {fmt_number(limit)}{suffix}" for cmp, limit in self.limits
        )


# --- operators


class OperatorFunction(Protocol):
    def __call__(
        self, facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
    ) -> LeafResult: ...


ParamType = type | tuple[type, ...]
NeedsOf = Callable[[Mapping[str, Any]], Needs]  # a leaf's checked parameters -> what it reads


@dataclass(frozen=True)
class Operator:
    """A registered leaf: its function, accepted parameters (name -> type) and bounds (name -> comparator),
    and what it reads of the facts for given parameters."""

    name: str
    function: OperatorFunction
    params: Mapping[str, ParamType]
    required: frozenset[str]
    bounds: Mapping[str, str]
    # The parameter a scalar leaf value fills ({sex: female}); such a leaf takes no modifiers.
    scalar: str | None
    prepare: Callable[[dict[str, Any]], None] | None
    needs: NeedsOf


OPERATORS: dict[str, Operator] = {}

LAB_BOUNDS = {f"{cmp}{suffix}": cmp for cmp in ("lt", "le", "gt", "ge") for suffix in ("", "_uln", "_lln")}
SCORE_BOUNDS = {cmp: cmp for cmp in ("lt", "le", "gt", "ge")}
MIN_MAX = {"min": "ge", "max": "le"}


def operator(
    name: str,
    params: Mapping[str, ParamType] | None = None,
    *,
    needs: Needs | NeedsOf,
    required: Iterable[str] = (),
    bounds: Mapping[str, str] | None = None,
    scalar: str | None = None,
    prepare: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[OperatorFunction], OperatorFunction]:
    """Register a leaf operator under `name` (a decorator); `needs`: what it reads, fixed or from its
    parameters."""
    needs_of: NeedsOf = (lambda _params: needs) if isinstance(needs, Needs) else needs

    def register(function: OperatorFunction) -> OperatorFunction:
        if name in OPERATORS:
            raise ValueError(f"operator {name!r} is registered twice")
        OPERATORS[name] = Operator(
            name=name,
            function=function,
            params=MappingProxyType(dict(params or {})),
            required=frozenset(required),
            bounds=MappingProxyType(dict(bounds or {})),
            scalar=scalar,
            prepare=prepare,
            needs=needs_of,
        )
        return function

    return register
