"""The rule language of mappings/README.md: leaf operators and the compiled all / any / not tree.

`compile_rule` turns a raw rule mapping into a `Rule` once, at start: operator names and parameters are
checked and bounds parsed, so that evaluation never reads raw dicts. `Rule.evaluate` is one short recursion
returning a `LeafResult` (truth, reason, evidence), with Kleene's strong three-valued logic and `clinician`
ranked between `unknown` and a definite value.

Each leaf operator is a small function `(facts, params, context) -> LeafResult` registered in `OPERATORS`.
Reasons are short and factual, with ISO dates; evidence lists the references of the resources actually used.
Absent data follows the README: an unrecorded diagnosis, procedure or medication is `false` ("no record
of ..."), unless its resource type could not be read (`PatientFacts.unavailable`); a missing or stale
measurement is `unknown`.

Raises RuleError (cds_service.errors): UnknownOperatorError, RuleParameterError, naming the path in the rule.
"""

from __future__ import annotations

import json
import math
import operator as op
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import InitVar, dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from cds_service import derived
from cds_service.errors import RuleParameterError, UnknownOperatorError
from cds_service.facts import (
    DISEASE_STATUSES,
    KIDNEY_CANCER,
    METASTATIC_DISEASE,
    NEPHRECTOMY,
    PREGNANCY,
    TUMOUR_SITE_KIDNEY,
    ConditionFact,
    MeasurementWindows,
    PatientFacts,
    ScoreFact,
    TherapyLine,
    is_malignancy_code,
)
from cds_service.terminology import INGREDIENT, Analyte, Terminology
from cds_service.verdicts import Truth

T = TypeVar("T")
_Day = date  # `date` is also a field name of the dated facts

OTHER_MALIGNANCY = "other-malignancy"  # SNOMED-coded cancers; ICD-10-CM C00-D09 is recognised without a list
# Value sets the operators read by name (directly or via cds_service.derived), not through a rule parameter.
# KIDNEY_CANCER is the primary cancer of every trial in this catalog.
VALUESETS_READ_BY_RULES = frozenset(
    {KIDNEY_CANCER, METASTATIC_DISEASE, PREGNANCY, OTHER_MALIGNANCY, NEPHRECTOMY, TUMOUR_SITE_KIDNEY}
)
PREGNANCY_TEST_MAX_AGE_DAYS = 30
DISEASE_STATUS_MAX_AGE_DAYS = 90
SOFTENED = (Truth.UNKNOWN, Truth.CLINICIAN)  # what if_true / if_false may turn a definite answer into
MODIFIERS = ("if_true", "if_false", "note")
NODES = ("all", "any", "not")


@dataclass(frozen=True)
class LeafResult:
    """The value of a rule for one patient, why, and the references of the resources used."""

    truth: Truth
    reason: str
    evidence: tuple[str, ...] = ()


_KEYED_BY_VALUE = (int, float, str, date, type(None))


class Labels:
    """How reasons name the value sets and analytes of a terminology, worked out once for a catalog."""

    def __init__(self, terminology: Terminology) -> None:
        self._valuesets = {
            valueset_id: _lower_first(valueset.title)
            for valueset_id, valueset in terminology.valuesets.items()
            if valueset.title
        }
        self._analytes = {
            analyte_id: _analyte_label(analyte, analyte_id)
            for analyte_id, analyte in terminology.analytes.items()
        }

    def valueset(self, valueset_id: str) -> str:
        """The value set's title as inside a sentence ("heart failure"), else its id in words."""
        found = self._valuesets.get(valueset_id)
        return found if found is not None else valueset_id.replace("-", " ")

    def analyte(self, analyte_id: str) -> str:
        """The analyte's short name ("ALT", "creatinine"; see `_analyte_label`)."""
        found = self._analytes.get(analyte_id)
        return found if found is not None else _analyte_label(None, analyte_id)


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


# ------------------------------------------------------------------------------------------------------------
# Kleene's strong three-valued logic, `clinician` ranked between `unknown` and a definite value.

_ALL_PRECEDENCE = (Truth.FALSE, Truth.UNKNOWN, Truth.CLINICIAN, Truth.TRUE)
_ANY_PRECEDENCE = (Truth.TRUE, Truth.UNKNOWN, Truth.CLINICIAN, Truth.FALSE)
_NEGATION = {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE}


def _first_present(precedence: tuple[Truth, ...], present: AbstractSet[Truth]) -> Truth:
    """The first value of `precedence` in `present` (the last of `precedence` when none is)."""
    for truth in precedence:
        if truth in present:
            return truth
    return precedence[-1]


def kleene_all(truths: Iterable[Truth]) -> Truth:
    """Conjunction: false if any is false, else unknown, else clinician, else true (true when empty)."""
    return _first_present(_ALL_PRECEDENCE, set(truths))


def kleene_any(truths: Iterable[Truth]) -> Truth:
    """Disjunction: true if any is true, else unknown, else clinician, else false (false when empty)."""
    return _first_present(_ANY_PRECEDENCE, set(truths))


def kleene_not(truth: Truth) -> Truth:
    """Negation: swaps true and false; unknown and clinician stay."""
    return _NEGATION.get(truth, truth)


# ------------------------------------------------------------------------------------------------------------
# Bounds: parsed once, checked with a tolerance so that 1.8 / 1.2 is "1.5 x ULN", not 1.5000000000000002.


def _close(value: float, limit: float) -> bool:
    return math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)


_COMPARATORS: Mapping[str, tuple[str, Callable[[float, float], bool]]] = {
    "lt": ("<", lambda v, limit: op.lt(v, limit) and not _close(v, limit)),
    "le": ("≤", lambda v, limit: op.le(v, limit) or _close(v, limit)),
    "gt": (">", lambda v, limit: op.gt(v, limit) and not _close(v, limit)),
    "ge": ("≥", lambda v, limit: op.ge(v, limit) or _close(v, limit)),
}


@dataclass(frozen=True)
class Bounds:
    """Limits that must all hold, e.g. ((ge, 24), (le, 52))."""

    limits: tuple[tuple[str, float], ...]
    # text(suffix) of these limits (catalog data only), filled on first use
    _texts: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def holds(self, value: float) -> bool:
        for cmp, limit in self.limits:
            if not _COMPARATORS[cmp][1](value, limit):
                return False
        return True

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
        found = self._texts.get(suffix)
        if found is None:
            found = self._texts[suffix] = " and ".join(
                [f"{_COMPARATORS[cmp][0]} {fmt_number(limit)}{suffix}" for cmp, limit in self.limits]
            )
        return found


def fmt_number(value: float) -> str:
    """Format a measured or derived number for a reason: 80, 1.1, 0.004, 12.3."""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_multiple(value: float) -> str:
    """Format a multiple of a limit of normal: 2.0, 1.54."""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _on(day: date | None) -> str:
    return f" on {day.isoformat()}" if day else " (undated)"


def _since(day: date | None) -> str:
    return f" since {day.isoformat()}" if day else ""


def _days_before(facts: PatientFacts, day: date) -> int:
    return (facts.today - day).days


class _Dated(Protocol):
    @property
    def date(self) -> _Day | None: ...


D = TypeVar("D", bound=_Dated)


def _latest(items: Iterable[D]) -> D | None:
    """The first item with the latest `date` (undated items cannot be placed in time and are skipped)."""
    latest: D | None = None
    latest_day = date.min
    for item in items:
        day = item.date
        if day is not None and (latest is None or day > latest_day):
            latest, latest_day = item, day
    return latest


def _recent(facts: PatientFacts, item: _Dated | None, max_age: int) -> bool:
    """Whether an item is dated no more than `max_age` days before today."""
    return item is not None and item.date is not None and _days_before(facts, item.date) <= max_age


def _lower_first(title: str) -> str:
    """Lower-case a title's first letter unless it starts an acronym ("Heart failure" -> "heart failure")."""
    if len(title) > 1 and title[0].isupper() and not title[1].isupper():
        return title[0].lower() + title[1:]
    return title


def _clean(text: str | None) -> str | None:
    """Remove zero-width characters some systems put into displays."""
    if text is None:
        return None
    cleaned = text.replace("\u200b", "").replace("\ufeff", "").strip()
    return cleaned or None


def _refs(items: Iterable[Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.ref for item in items))


# ------------------------------------------------------------------------------------------------------------
# Operators and their registry.


class OperatorFunction(Protocol):
    def __call__(
        self, facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
    ) -> LeafResult: ...


ParamType = type | tuple[type, ...]


@dataclass(frozen=True)
class Operator:
    """A registered leaf: its function, accepted parameters (name -> type) and bounds (name -> comparator)."""

    name: str
    function: OperatorFunction
    params: Mapping[str, ParamType]
    required: frozenset[str]
    bounds: Mapping[str, str]
    # The parameter a scalar leaf value fills ({sex: female}); such a leaf takes no modifiers.
    scalar: str | None
    prepare: Callable[[dict[str, Any]], None] | None


OPERATORS: dict[str, Operator] = {}

_LAB_BOUNDS = {f"{cmp}{suffix}": cmp for cmp in ("lt", "le", "gt", "ge") for suffix in ("", "_uln", "_lln")}
_SCORE_BOUNDS = {cmp: cmp for cmp in ("lt", "le", "gt", "ge")}
_MIN_MAX = {"min": "ge", "max": "le"}


def operator(
    name: str,
    params: Mapping[str, ParamType] | None = None,
    *,
    required: Iterable[str] = (),
    bounds: Mapping[str, str] | None = None,
    scalar: str | None = None,
    prepare: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[OperatorFunction], OperatorFunction]:
    """Register a leaf operator under `name` (a decorator)."""

    def register(function: OperatorFunction) -> OperatorFunction:
        OPERATORS[name] = Operator(
            name=name,
            function=function,
            params=MappingProxyType(dict(params or {})),
            required=frozenset(required),
            bounds=MappingProxyType(dict(bounds or {})),
            scalar=scalar,
            prepare=prepare,
        )
        return function

    return register


def _unavailable(facts: PatientFacts, *resource_types: str) -> str | None:
    """A reason when one of these resource types could not be read, so that absence proves nothing."""
    if not facts.unavailable:
        return None
    missing = sorted(t for t in resource_types if t in facts.unavailable)
    return f"{' and '.join(missing)} could not be read" if missing else None


def _analyte_label(analyte: Analyte | None, analyte_id: str) -> str:
    """Short analyte name: the abbreviation ending its title ("ALT", "aPTT"), else the id ("creatinine")."""
    if analyte and analyte.title.endswith(")") and "(" in analyte.title:
        abbreviation = analyte.title[analyte.title.rindex("(") + 1 : -1]
        if abbreviation.isalpha() and any(ch.isupper() for ch in abbreviation):
            return abbreviation
    return analyte_id.replace("-", " ")


def _amount(value: float, unit: str) -> str:
    """A value with its unit; UCUM annotations such as {INR} and the unit 1 are not shown."""
    shown = "" if unit.startswith("{") or unit == "1" else f" {unit}"
    return f"{fmt_number(value)}{shown}"


def _condition_label(condition: ConditionFact, fallback: str) -> str:
    return _clean(condition.display) or fallback


# --- demographics -------------------------------------------------------------------------------------------


@operator("clinician", {"text": str}, required=("text",), scalar="text")
def clinician(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    return LeafResult(Truth.CLINICIAN, params["text"])


@operator("age", bounds=_MIN_MAX)
def age(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    refs = (facts.patient_ref,) if facts.patient_ref else ()
    years = facts.age
    if years is None:
        return LeafResult(Truth.UNKNOWN, "no birth date recorded", refs)
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(years) else Truth.FALSE
    return LeafResult(truth, f"age {years} ({bounds.text()})", refs)


def _check_sex(params: dict[str, Any]) -> None:
    if params["sex"] not in ("female", "male"):
        raise ValueError(f"sex must be female or male, not {params['sex']!r}")


@operator("sex", {"sex": str}, required=("sex",), scalar="sex", prepare=_check_sex)
def sex(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    refs = (facts.patient_ref,) if facts.patient_ref else ()
    if facts.sex in (None, "unknown"):
        return LeafResult(Truth.UNKNOWN, "administrative sex not recorded", refs)
    truth = Truth.TRUE if facts.sex == params["sex"] else Truth.FALSE
    return LeafResult(truth, f"sex {facts.sex}", refs)


# --- conditions and procedures ------------------------------------------------------------------------------


def _dated_record_result(
    facts: PatientFacts,
    matches: Sequence[Any],
    label: Callable[[Any], str],
    day_of: Callable[[Any], date | None],
    within_days: int | None,
    when: Callable[[date | None], str],
) -> LeafResult | None:
    """Decide from recorded conditions or procedures, within an optional window; None when none match."""
    if not matches:
        return None
    if within_days is None:
        return LeafResult(Truth.TRUE, f"{label(matches[0])}{when(day_of(matches[0]))}", _refs(matches))
    inside: list[Any] = []
    undated: list[Any] = []
    outside: list[Any] = []
    for match in matches:
        day = day_of(match)
        (undated if day is None else inside if _days_before(facts, day) <= within_days else outside).append(
            match
        )
    if inside:
        return LeafResult(Truth.TRUE, f"{label(inside[0])}{_on(day_of(inside[0]))}", _refs(inside))
    if undated:
        return LeafResult(Truth.UNKNOWN, f"{label(undated[0])} recorded without a date", _refs(undated))
    latest = max(outside, key=lambda m: day_of(m) or date.min)
    reason = f"{label(latest)}{_on(day_of(latest))}, more than {within_days} days ago"
    return LeafResult(Truth.FALSE, reason, _refs(outside))


def _check_absent(params: dict[str, Any]) -> None:
    if params.get("absent", False) not in (False, "unknown"):
        raise ValueError("absent must be false or unknown")


@operator(
    "condition",
    {"valueset": str, "within_days": int, "current_only": bool, "absent": (bool, str)},
    required=("valueset",),
    prepare=_check_absent,
)
def condition(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset = params["valueset"]
    title = context.labels.valueset(valueset)
    matches = [c for c in facts.conditions if valueset in c.valuesets]
    decided = _recorded_condition(facts, matches, params, title) if matches else None
    if decided is not None:
        return decided
    unreadable = _unavailable(facts, "Condition")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    absent = Truth.UNKNOWN if params.get("absent") == "unknown" else Truth.FALSE
    return LeafResult(absent, f"no record of {title}")


def _recorded_condition(
    facts: PatientFacts, matches: list[ConditionFact], params: Mapping[str, Any], title: str
) -> LeafResult | None:
    """Decide from the conditions of the value set on record; None when none of them decides."""
    current_only = params.get("current_only", False)
    within_days = params.get("within_days")
    candidates = [c for c in matches if c.confirmed and (c.current or not current_only)]
    decided = _dated_record_result(
        facts, candidates, lambda c: _condition_label(c, title), lambda c: c.onset, within_days, _since
    )
    if decided is not None:
        return decided
    unconfirmed = [
        c
        for c in matches
        if not c.confirmed
        and (c.current or not current_only)
        and (within_days is None or c.onset is None or _days_before(facts, c.onset) <= within_days)
    ]
    if unconfirmed:
        label = _condition_label(unconfirmed[0], title)
        return LeafResult(Truth.UNKNOWN, f"{label} recorded but not confirmed", _refs(unconfirmed))
    history = [c for c in matches if c.confirmed and not c.current]
    if history:
        label = _condition_label(history[0], title)
        return LeafResult(Truth.FALSE, f"{label} resolved or inactive (history only)", _refs(history))
    return None


@operator("procedure", {"valueset": str, "within_days": int}, required=("valueset",))
def procedure(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset = params["valueset"]
    title = context.labels.valueset(valueset)
    matches = [p for p in facts.procedures if valueset in p.valuesets]
    decided = _dated_record_result(
        facts, matches, lambda p: _clean(p.display) or title, lambda p: p.date, params.get("within_days"), _on
    )
    if decided is not None:
        return decided
    unreadable = _unavailable(facts, "Procedure")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    return LeafResult(Truth.FALSE, f"no record of {title}")


def _primary_cancers(facts: PatientFacts) -> list[ConditionFact]:
    return [c for c in facts.conditions if c.confirmed and KIDNEY_CANCER in c.valuesets]


def _histology_text(condition: ConditionFact, context: EvaluationContext, valueset_id: str) -> str:
    """The condition's display, with the histology it matched unless the display already says it."""
    histology = re.sub(r"\s*\([^()]*\)$", "", context.labels.valueset(valueset_id))
    display = _condition_label(condition, histology)
    return display if histology.lower() in display.lower() else f"{display} ({histology})"


@operator("histology", {"valueset": str, "contrary": str}, required=("valueset",))
def histology(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    wanted, contrary = params["valueset"], params.get("contrary")
    primaries = _primary_cancers(facts)
    if not primaries:
        return LeafResult(Truth.UNKNOWN, f"no record of {context.labels.valueset(KIDNEY_CANCER)}")
    matching = [c for c in primaries if wanted in c.valuesets]
    if matching:
        return LeafResult(Truth.TRUE, _histology_text(matching[0], context, wanted), _refs(matching))
    opposed = [c for c in primaries if contrary is not None and contrary in c.valuesets]
    if contrary is not None and opposed:
        return LeafResult(Truth.FALSE, _histology_text(opposed[0], context, contrary), _refs(opposed))
    return LeafResult(Truth.UNKNOWN, "histology not recorded", _refs(primaries))


@operator("metastatic")
def metastatic(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    label = context.labels.valueset(METASTATIC_DISEASE)
    sites = [c for c in facts.conditions if METASTATIC_DISEASE in c.valuesets]
    confirmed = [c for c in sites if c.confirmed]
    m1 = [s for s in facts.staging if s.metastatic]
    status = [d for d in facts.disease_status if d.status == "metastatic"]
    if confirmed or m1 or status:
        if confirmed:
            first = f"{_condition_label(confirmed[0], label)}{_since(confirmed[0].onset)}"
        elif m1:
            first = f"M1{_on(m1[0].date)}"
        else:
            first = f"disease status: distant metastasis present{_on(status[0].date)}"
        return LeafResult(Truth.TRUE, first, _refs([*confirmed, *m1, *status]))
    if sites:
        return LeafResult(
            Truth.UNKNOWN, f"{_condition_label(sites[0], label)} recorded but not confirmed", _refs(sites)
        )
    latest_m = _latest(facts.staging)
    unreadable = _unavailable(facts, "Condition", "Observation")
    if latest_m is not None and not unreadable:
        return LeafResult(
            Truth.FALSE, f"latest M category M0{_on(latest_m.date)}; no metastasis recorded", (latest_m.ref,)
        )
    return LeafResult(Truth.UNKNOWN, unreadable or "no metastasis or M category recorded")


def _flag_result(flag: derived.Flag) -> LeafResult:
    truth = Truth.UNKNOWN if flag.value is None else Truth.TRUE if flag.value else Truth.FALSE
    return LeafResult(truth, flag.text, flag.refs)


@operator("metastases_synchronous", {"days": int})
def metastases_synchronous(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    days = params.get("days", derived.SYNCHRONOUS_DAYS)
    return _flag_result(context.derive(facts, derived.metastases_synchronous, days))


@operator("primary_in_place")
def primary_in_place(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    result = _flag_result(context.derive(facts, derived.primary_in_place, context.terminology))
    unreadable = _unavailable(facts, "Procedure")
    if result.truth is Truth.TRUE and unreadable:  # "no nephrectomy" proves nothing then
        return LeafResult(Truth.UNKNOWN, f"{result.reason}; {unreadable}", result.evidence)
    return result


@operator("primary_tumour_size", bounds={"le_cm": "le", "gt_cm": "gt"})
def primary_tumour_size(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    size = context.derive(facts, derived.primary_tumour_size, context.terminology)
    if size is None:
        return LeafResult(Truth.UNKNOWN, "no size of the primary kidney tumour recorded")
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(size.longest_cm) else Truth.FALSE
    reason = f"primary tumour {fmt_number(size.longest_cm)} cm{_on(size.date)} ({bounds.text(' cm')})"
    return LeafResult(truth, reason, (size.ref,))


@operator("pregnant")
def pregnant(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    refs = (facts.patient_ref,) if facts.patient_ref else ()
    if facts.sex == "male":
        return LeafResult(Truth.FALSE, "sex male", refs)
    label = context.labels.valueset(PREGNANCY)
    active = [c for c in facts.conditions if PREGNANCY in c.valuesets and c.confirmed and c.current]
    if active:
        return LeafResult(
            Truth.TRUE, f"{_condition_label(active[0], label)}{_since(active[0].onset)}", _refs(active)
        )
    recent = [t for t in facts.pregnancy_tests if _recent(facts, t, PREGNANCY_TEST_MAX_AGE_DAYS)]
    latest = _latest(recent)
    if latest is not None and latest.positive:
        return LeafResult(Truth.TRUE, f"positive pregnancy test{_on(latest.date)}", (latest.ref,))
    unreadable = _unavailable(facts, "Condition", "Observation")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    if latest is not None:
        return LeafResult(Truth.FALSE, f"negative pregnancy test{_on(latest.date)}", (latest.ref,))
    return LeafResult(Truth.FALSE, f"no record of {label}")


# --- other malignancy ---------------------------------------------------------------------------------------


def _years_before(day: date, years: float) -> date:
    """`day` minus a number of years (whole years by calendar, fractions by days)."""
    whole = int(years)
    try:
        shifted = day.replace(year=day.year - whole)
    except ValueError:  # 29 February
        shifted = day.replace(year=day.year - whole, day=28)
    return shifted - timedelta(days=round((years - whole) * 365.25))


@operator("other_malignancy", {"within_years": (int, float), "except": str})
def other_malignancy(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    excepted_set = params.get("except")
    cancers: list[ConditionFact] = []
    excepted: list[ConditionFact] = []
    for c in facts.conditions:
        if KIDNEY_CANCER in c.valuesets or METASTATIC_DISEASE in c.valuesets:
            continue
        if OTHER_MALIGNANCY in c.valuesets or any(is_malignancy_code(*code) for code in c.codes):
            (excepted if excepted_set and excepted_set in c.valuesets else cancers).append(c)
    years = params.get("within_years")
    window = f" in the last {fmt_number(years)} years" if years is not None else ""
    since = _years_before(facts.today, years) if years is not None else None

    def in_window(c: ConditionFact) -> bool:
        return c.current or since is None or (c.onset is not None and c.onset >= since)

    confirmed = [c for c in cancers if c.confirmed]
    inside = [c for c in confirmed if in_window(c)]
    if inside:
        first = inside[0]
        state = "current" if first.current else f"onset {first.onset}"
        return LeafResult(Truth.TRUE, f"{_condition_label(first, 'another cancer')} ({state})", _refs(inside))
    undated = [c for c in confirmed if c.onset is None]
    if undated:
        label = _condition_label(undated[0], "another cancer")
        return LeafResult(Truth.UNKNOWN, f"{label} recorded without a date", _refs(undated))
    unconfirmed = [c for c in cancers if not c.confirmed and (c.onset is None or in_window(c))]
    if unconfirmed:
        label = _condition_label(unconfirmed[0], "another cancer")
        return LeafResult(Truth.UNKNOWN, f"{label} recorded but not confirmed", _refs(unconfirmed))
    unreadable = _unavailable(facts, "Condition")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    notes = []
    if confirmed:
        notes.append(
            "older: " + ", ".join(f"{_condition_label(c, 'cancer')}{_on(c.onset)}" for c in confirmed)
        )
    if excepted:
        notes.append("excepted: " + ", ".join(_condition_label(c, "cancer") for c in excepted))
    detail = f" ({'; '.join(notes)})" if notes else ""
    return LeafResult(
        Truth.FALSE, f"no record of another cancer{window}{detail}", _refs([*confirmed, *excepted])
    )


# --- measurements -------------------------------------------------------------------------------------------


def _stale_or_missing(
    facts: PatientFacts, name: str, latest: Any, shown: Callable[[Any], str], max_age: int, resource_type: str
) -> LeafResult | None:
    """Unknown when there is no dated value or the latest is older than `max_age` days; None when usable."""
    if latest is None:
        reason = _unavailable(facts, resource_type) or f"no {name} in the last {max_age} days"
        return LeafResult(Truth.UNKNOWN, reason)
    if not _recent(facts, latest, max_age):
        return LeafResult(
            Truth.UNKNOWN,
            f"latest {name} {shown(latest)}{_on(latest.date)} is older than {max_age} days",
            (latest.ref,),
        )
    return None


def _prepare_lab(params: dict[str, Any]) -> None:
    families = {key.partition("_")[2] for key in params if key in _LAB_BOUNDS}
    if len(families) > 1:
        raise ValueError("use one kind of bound: absolute, *_uln or *_lln")
    params["limit"] = families.pop().upper() if families else ""


@operator(
    "lab",
    {"analyte": str, "max_age_days": int},
    required=("analyte",),
    bounds=_LAB_BOUNDS,
    prepare=_prepare_lab,
)
def lab(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    analyte_id = params["analyte"]
    analyte = context.terminology.analytes.get(analyte_id)
    name = context.labels.analyte(analyte_id)
    max_age = params.get("max_age_days", context.lab_max_age_days)
    latest = _latest(facts.labs.get(analyte_id, ()))
    unconverted = _latest(facts.unconverted_labs.get(analyte_id, ()))
    if (
        unconverted is not None
        and _recent(facts, unconverted, max_age)
        and (latest is None or (unconverted.date or date.min) > (latest.date or date.min))
    ):
        canonical = analyte.unit if analyte else "the analyte's unit"
        return LeafResult(
            Truth.UNKNOWN,
            f"{name} {unconverted.as_sent}{_on(unconverted.date)}: unit cannot be converted to {canonical}",
            (unconverted.ref,),
        )

    def shown(value: Any) -> str:
        return _amount(value.value, value.unit)

    stale = _stale_or_missing(facts, name, latest, shown, max_age, "Observation")
    if stale is not None or latest is None:
        return stale or LeafResult(Truth.UNKNOWN, f"no {name}")
    converted = latest.as_sent and not latest.as_sent.endswith(f" {latest.unit}")
    measured = (
        f"{name} {shown(latest)}{f' (sent as {latest.as_sent})' if converted else ''}{_on(latest.date)}"
    )
    bounds: Bounds = params["bounds"]
    limit_name = params["limit"]
    if not limit_name:
        truth = Truth.TRUE if bounds.holds(latest.value) else Truth.FALSE
        return LeafResult(truth, f"{measured} ({bounds.text()})", (latest.ref,))
    found = None
    if analyte is not None:
        found = derived.limit_of_normal(latest, analyte, facts.sex, "high" if limit_name == "ULN" else "low")
    if found is None:
        return LeafResult(
            Truth.UNKNOWN,
            f"{measured}: no {limit_name} (no Observation range, no default range)",
            (latest.ref,),
        )
    limit, where = found
    multiple = latest.value / limit
    source = "Observation range" if where == "observation" else "default range"
    truth = Truth.TRUE if bounds.holds(multiple) else Truth.FALSE
    return LeafResult(
        truth,
        f"{measured} = {fmt_multiple(multiple)} x {limit_name} {fmt_number(limit)} ({source}; "
        f"{bounds.text(f' x {limit_name}')})",
        (latest.ref,),
    )


@operator("creatinine_clearance", bounds=_SCORE_BOUNDS)
def creatinine_clearance(
    facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    since = facts.today - timedelta(days=context.lab_max_age_days)
    found = context.derive(facts, derived.creatinine_clearance, since)
    if found is None:
        inputs = (
            ("age", facts.age is not None),
            ("sex", facts.sex in ("male", "female")),
            ("weight", derived.latest_lab(facts, "weight") is not None),
            (
                f"creatinine in the last {context.lab_max_age_days} days",
                derived.latest_lab(facts, "creatinine", since) is not None,
            ),
        )
        missing = ", ".join(name for name, known in inputs if not known) or "a usable creatinine or weight"
        return LeafResult(Truth.UNKNOWN, f"Cockcroft-Gault clearance not computable: no {missing}")
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(found.value) else Truth.FALSE
    return LeafResult(truth, f"{found.text} ({bounds.text(' mL/min')})", found.refs)


# Karnofsky -> possible ECOG grades: the union of the two published conversions (ECOG-ACRIN: KPS 100-90 =
# ECOG 0, 80-70 = 1, 60-50 = 2, 40-30 = 3, 20-10 = 4; the other common table: 100 = 0, 90-80 = 1, 70-60 = 2,
# 50-40 = 3, 30-10 = 4; both: 0 = 5). A bound is decided from the other scale only when every possible value
# agrees.
_KARNOFSKY_TO_ECOG: Mapping[int, frozenset[int]] = {
    100: frozenset({0}),
    90: frozenset({0, 1}),
    80: frozenset({1}),
    70: frozenset({1, 2}),
    60: frozenset({2}),
    50: frozenset({2, 3}),
    40: frozenset({3}),
    30: frozenset({3, 4}),
    20: frozenset({4}),
    10: frozenset({4}),
    0: frozenset({5}),
}
_ECOG_TO_KARNOFSKY: Mapping[int, frozenset[int]] = {
    grade: frozenset(k for k, grades in _KARNOFSKY_TO_ECOG.items() if grade in grades) for grade in range(6)
}
_SCORE_LABEL = {"ecog": "ECOG", "karnofsky": "Karnofsky"}


def _performance(
    kind: str, facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext
) -> LeafResult:
    other = "karnofsky" if kind == "ecog" else "ecog"
    mapping = _KARNOFSKY_TO_ECOG if kind == "ecog" else _ECOG_TO_KARNOFSKY
    label, other_label = _SCORE_LABEL[kind], _SCORE_LABEL[other]
    max_age = params.get("max_age_days", context.performance_max_age_days)
    bounds: Bounds = params["bounds"]
    latest: ScoreFact | None = _latest(getattr(facts, kind))
    if latest is not None and _recent(facts, latest, max_age):
        truth = Truth.TRUE if bounds.holds(latest.value) else Truth.FALSE
        return LeafResult(truth, f"{label} {latest.value}{_on(latest.date)} ({bounds.text()})", (latest.ref,))
    latest_other: ScoreFact | None = _latest(getattr(facts, other))
    if latest_other is not None and _recent(facts, latest_other, max_age):
        possible = sorted(mapping.get(latest_other.value, ()))
        if possible:
            read = " or ".join(str(v) for v in possible)
            return LeafResult(
                bounds.decide(possible),
                f"{other_label} {latest_other.value}{_on(latest_other.date)} = {label} {read} "
                f"({bounds.text()})",
                (latest_other.ref,),
            )
    missing = _stale_or_missing(facts, label, latest, lambda s: str(s.value), max_age, "Observation")
    return missing or LeafResult(Truth.UNKNOWN, f"no {label}")


@operator("ecog", {"max_age_days": int}, bounds=_SCORE_BOUNDS)
def ecog(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    return _performance("ecog", facts, params, context)


@operator("karnofsky", {"max_age_days": int}, bounds=_SCORE_BOUNDS)
def karnofsky(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    return _performance("karnofsky", facts, params, context)


def _prepare_blood_pressure(params: dict[str, Any]) -> None:
    if "systolic_gt" not in params and "diastolic_gt" not in params:
        raise ValueError("give systolic_gt or diastolic_gt")


@operator(
    "blood_pressure",
    {"systolic_gt": (int, float), "diastolic_gt": (int, float), "max_age_days": int},
    prepare=_prepare_blood_pressure,
)
def blood_pressure(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    max_age = params.get("max_age_days", context.lab_max_age_days)
    latest = _latest(facts.blood_pressure)

    def shown(reading: Any) -> str:
        return (
            f"{fmt_number(reading.systolic) if reading.systolic is not None else '?'}/"
            f"{fmt_number(reading.diastolic) if reading.diastolic is not None else '?'} mmHg"
        )

    stale = _stale_or_missing(facts, "blood pressure", latest, shown, max_age, "Observation")
    if stale is not None or latest is None:
        return stale or LeafResult(Truth.UNKNOWN, "no blood pressure")
    limits = [
        (value, params[key])
        for key, value in (("systolic_gt", latest.systolic), ("diastolic_gt", latest.diastolic))
        if key in params
    ]
    limit_text = "/".join(
        fmt_number(params[key]) if key in params else "-" for key in ("systolic_gt", "diastolic_gt")
    )
    if any(value is not None and _COMPARATORS["gt"][1](value, limit) for value, limit in limits):
        truth = Truth.TRUE
    elif any(value is None for value, _ in limits):
        truth = Truth.UNKNOWN
    else:
        truth = Truth.FALSE
    return LeafResult(
        truth, f"blood pressure {shown(latest)}{_on(latest.date)} (limit > {limit_text})", (latest.ref,)
    )


def _prepare_statuses(params: dict[str, Any]) -> None:
    for key in ("true_if", "false_if"):
        unknown = set(params.get(key, ())) - set(DISEASE_STATUSES)
        if unknown:
            raise ValueError(f"{key}: unknown status {sorted(unknown)}")
        params[key] = frozenset(params.get(key, ()))
    if not params["true_if"] and not params["false_if"]:
        raise ValueError("give true_if or false_if")
    if params["true_if"] & params["false_if"]:
        raise ValueError("a status cannot be in both true_if and false_if")


@operator(
    "disease_status",
    {"true_if": (list, tuple), "false_if": (list, tuple), "max_age_days": int},
    prepare=_prepare_statuses,
)
def disease_status(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    max_age = params.get("max_age_days", DISEASE_STATUS_MAX_AGE_DAYS)
    latest = _latest(facts.disease_status)
    stale = _stale_or_missing(facts, "disease status", latest, lambda d: d.status, max_age, "Observation")
    if stale is not None or latest is None:
        return stale or LeafResult(Truth.UNKNOWN, "no disease status")
    if latest.status in params["true_if"]:
        truth = Truth.TRUE
    elif latest.status in params["false_if"]:
        truth = Truth.FALSE
    else:
        truth = Truth.UNKNOWN
    return LeafResult(truth, f"disease status {latest.status}{_on(latest.date)}", (latest.ref,))


# --- medications and therapy lines --------------------------------------------------------------------------


@operator("medication", {"valueset": str, "current": bool, "within_days": int}, required=("valueset",))
def medication(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset = params["valueset"]
    title = context.labels.valueset(valueset)
    matches = [m for m in facts.medications if valueset in m.valuesets]
    within_days = params.get("within_days")  # when given, `current` does not apply
    current = params.get("current", True) and within_days is None
    taken: list[Any] = []
    undecided: list[Any] = []  # stopped at a date not recorded: maybe within the window
    for m in matches:
        if m.start is not None and m.start > facts.today:
            continue  # not started yet
        if m.active and (m.end is None or m.end >= facts.today):
            taken.append(m)
        elif within_days is None:
            if not current:
                taken.append(m)
        else:
            last = m.end or m.start
            if last is not None and _days_before(facts, last) <= within_days:
                taken.append(m)
            elif m.end is None:
                undecided.append(m)
    window = f" in the last {within_days} days" if within_days is not None else ""

    def shown(m: Any) -> str:
        period = _since(m.start) + (f" until {m.end.isoformat()}" if m.end else "")
        return f"{_clean(m.display) or title}{period}"

    if taken:
        return LeafResult(Truth.TRUE, shown(taken[0]), _refs(taken))
    if undecided:
        return LeafResult(
            Truth.UNKNOWN, f"{shown(undecided[0])}: not known whether taken{window}", _refs(undecided)
        )
    unreadable = _unavailable(facts, "MedicationStatement", "MedicationRequest")
    if unreadable:
        return LeafResult(Truth.UNKNOWN, unreadable)
    if matches:
        qualifier = "current" if current else f"taken{window}"
        return LeafResult(Truth.FALSE, f"no {qualifier} {title} ({shown(matches[0])})", _refs(matches))
    return LeafResult(Truth.FALSE, f"no record of {title}")


def _line_text(line: TherapyLine) -> str:
    state = "ongoing" if line.ongoing else f"until {line.end.isoformat()}" if line.end else "ended"
    return (
        f"line {line.number}: {' + '.join(sorted(line.ingredients))} from {line.start.isoformat()} ({state})"
    )


def _no_therapy(facts: PatientFacts, reason: str) -> LeafResult:
    unreadable = _unavailable(facts, "MedicationStatement", "MedicationRequest")
    return LeafResult(Truth.UNKNOWN, unreadable) if unreadable else LeafResult(Truth.FALSE, reason)


@operator("received", {"valueset": str, "combination": bool}, required=("valueset",))
def received(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    valueset_id = params["valueset"]
    valueset = context.terminology.valuesets.get(valueset_id)
    combination = params.get("combination", False)
    title = context.labels.valueset(valueset_id)
    hits = [
        line
        for line in facts.therapy_lines
        if valueset is not None
        and any(valueset.contains((INGREDIENT, ingredient)) for ingredient in line.ingredients)
        and (not combination or len(line.ingredients) > 1)
    ]
    if hits:
        return LeafResult(Truth.TRUE, "; ".join(_line_text(line) for line in hits), _refs_of_lines(hits))
    what = f"{title} in combination" if combination else title
    return _no_therapy(facts, f"no therapy line with {what}")


def _refs_of_lines(lines: Iterable[TherapyLine]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ref for line in lines for ref in line.refs))


def _prepare_regimens(params: dict[str, Any]) -> None:
    options = params["one_of"]
    if not all(isinstance(o, (list, tuple)) and o and all(isinstance(i, str) for i in o) for o in options):
        raise ValueError("one_of must be a list of non-empty ingredient lists")
    params["one_of"] = tuple(frozenset(option) for option in options)


@operator("current_regimen", {"one_of": (list, tuple)}, required=("one_of",), prepare=_prepare_regimens)
def current_regimen(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    line = context.derive(facts, derived.current_line)
    if line is None:
        return _no_therapy(facts, "no ongoing systemic therapy recorded")
    if line.ingredients in params["one_of"]:
        return LeafResult(Truth.TRUE, _line_text(line), line.refs)
    unreadable = _unavailable(facts, "MedicationStatement", "MedicationRequest")
    if unreadable:  # a partner drug may be among the unread medications
        return LeafResult(Truth.UNKNOWN, f"{_line_text(line)}; {unreadable}", line.refs)
    return LeafResult(Truth.FALSE, _line_text(line), line.refs)


@operator("regimen_weeks", bounds=_MIN_MAX)
def regimen_weeks(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    weeks = context.derive(facts, derived.weeks_on_current_regimen)
    if weeks is None:
        return _no_therapy(facts, "no ongoing systemic therapy recorded")
    bounds: Bounds = params["bounds"]
    truth = Truth.TRUE if bounds.holds(weeks.value) else Truth.FALSE
    return LeafResult(truth, f"{weeks.text} ({bounds.text(' weeks')})", weeks.refs)


@operator("therapy_lines", {"ongoing": bool, "metastatic_only": bool}, bounds=_MIN_MAX)
def therapy_lines(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    """Count lines; a line whose setting is unknown (no metastasis date) may or may not count, and with
    medications that could not be read any higher count is possible."""
    lines = facts.therapy_lines
    unreadable = _unavailable(facts, "MedicationStatement", "MedicationRequest")
    metastatic_only = params.get("metastatic_only", True)
    counted = [line for line in lines if line.metastatic_setting or not metastatic_only]
    uncertain = [line for line in lines if line.metastatic_setting is None and metastatic_only]
    current = context.derive(facts, derived.current_line)
    wanted_ongoing = params.get("ongoing")
    if wanted_ongoing is True and current is None:
        return _no_therapy(facts, "no ongoing systemic therapy recorded")
    if wanted_ongoing is False and current is not None:
        return LeafResult(Truth.FALSE, f"ongoing {_line_text(current)}", current.refs)
    bounds: Bounds = params["bounds"]
    possible: list[float] = list(range(len(counted), len(counted) + len(uncertain) + 1))
    truth = bounds.decide([*possible, math.inf] if unreadable else possible)
    what = "for metastatic disease" if metastatic_only else "of systemic therapy"
    reason = f"{len(counted)} line(s) {what} ({bounds.text()})"
    if uncertain:
        reason += f", {len(uncertain)} more of unknown setting"
    if unreadable:
        reason += f", {unreadable}"
    details = "; ".join(_line_text(line) for line in [*counted, *uncertain])
    return LeafResult(
        truth, f"{reason}: {details}" if details else reason, _refs_of_lines([*counted, *uncertain])
    )


def _prepare_imdc(params: dict[str, Any]) -> None:
    unknown = set(params["in"]) - set(derived.IMDC_GROUPS)
    if unknown:
        raise ValueError(f"in: unknown IMDC group {sorted(unknown)}")
    params["in"] = frozenset(params["in"])


@operator("imdc_risk", {"in": (list, tuple)}, required=("in",), prepare=_prepare_imdc)
def imdc_risk(facts: PatientFacts, params: Mapping[str, Any], context: EvaluationContext) -> LeafResult:
    """True when every group still possible is wanted: 3 known factors decide "poor" whatever is unknown."""
    lab_since = facts.today - timedelta(days=context.lab_max_age_days)
    performance_since = facts.today - timedelta(days=context.performance_max_age_days)
    risk = context.derive(facts, derived.imdc_risk, context.terminology, lab_since, performance_since)
    wanted: frozenset[str] = params["in"]
    if risk.possible <= wanted:
        truth = Truth.TRUE
    elif not risk.possible & wanted:
        truth = Truth.FALSE
    else:
        truth = Truth.UNKNOWN
    reason = risk.text
    unknown = [f"{f.name} ({f.text})" for f in risk.factors if f.abnormal is None]
    if truth is Truth.UNKNOWN and unknown:
        reason += f"; unknown: {'; '.join(unknown)}"
    return LeafResult(truth, reason, risk.refs)


# ------------------------------------------------------------------------------------------------------------
# The compiled tree.


@dataclass(frozen=True)
class Leaf:
    """A leaf operator with its checked parameters and the if_true / if_false / note modifiers."""

    operator: Operator
    params: Mapping[str, Any]
    if_true: Truth | None = None
    if_false: Truth | None = None
    note: str | None = None

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
        truth = _first_present(_ALL_PRECEDENCE if self.kind == "all" else _ANY_PRECEDENCE, present)
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
    return Leaf(operator_, MappingProxyType(params), softened.get("if_true"), softened.get("if_false"), note)


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


def _leaves(rules: Iterable[Rule]) -> Iterator[Leaf]:
    stack = list(rules)
    while stack:
        rule = stack.pop()
        if rule.leaf is not None:
            yield rule.leaf
        stack.extend(rule.children)


def measurement_windows(rules: Iterable[Rule], lab_days: int, performance_days: int) -> MeasurementWindows:
    """The longest window in which these rules read each repeated measurement (lab, score, BP, test).

    `lab_days` and `performance_days` are the defaults of leaves without `max_age_days`. Keep in step with the
    operators above: the pipeline reads nothing of an analyte missing here (and only the newest value of
    another measurement missing here), so an operator reading an analyte must name it.
    """
    labs: dict[str, int] = {}
    pairs: dict[str, tuple[str, int]] = {}
    performance = blood_pressure = pregnancy_test = 0

    def read_lab(analyte: str, days: int) -> None:
        labs[analyte] = max(labs.get(analyte, 0), days)

    for leaf in _leaves(rules):
        name, days = leaf.operator.name, leaf.params.get("max_age_days")
        if name == "lab":
            read_lab(leaf.params["analyte"], lab_days if days is None else days)
        elif name == "creatinine_clearance":
            read_lab("creatinine", lab_days)
            read_lab("weight", 0)  # the newest weight, whatever its age
        elif name == "imdc_risk":
            for analyte in derived.IMDC_LAB_ANALYTES:
                read_lab(analyte, lab_days)
            read_lab("albumin", lab_days + derived.CORRECTED_CALCIUM_PAIRING_DAYS)
            pairs["albumin"] = ("calcium", derived.CORRECTED_CALCIUM_PAIRING_DAYS)
            performance = max(performance, performance_days)
        elif name in ("ecog", "karnofsky"):
            performance = max(performance, performance_days if days is None else days)
        elif name == "blood_pressure":
            blood_pressure = max(blood_pressure, lab_days if days is None else days)
        elif name == "pregnant":
            pregnancy_test = PREGNANCY_TEST_MAX_AGE_DAYS
    return MeasurementWindows(labs, performance, blood_pressure, pregnancy_test, pairs)
