"""Helpers the operators share: dates and recency, absent or unreadable data, dated records, derived flags."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any, Protocol, TypeVar

from cds_service.engine.derived import Flag
from cds_service.engine.registry import LeafResult
from cds_service.engine.text import clean, on, refs
from cds_service.facts import ConditionFact, PatientFacts, TherapyLine
from cds_service.facts.medications import MEDICATION_TYPES
from cds_service.verdicts import Truth

_Day = date  # `date` is also a field name of the dated facts


def days_before(facts: PatientFacts, day: date) -> int:
    return (facts.today - day).days


class _Dated(Protocol):
    @property
    def date(self) -> _Day | None: ...


D = TypeVar("D", bound=_Dated)


def latest(items: Iterable[D]) -> D | None:
    """The first item with the latest `date` (undated items cannot be placed in time and are skipped)."""
    found: D | None = None
    latest_day = date.min
    for item in items:
        day = item.date
        if day is not None and (found is None or day > latest_day):
            found, latest_day = item, day
    return found


def recent(facts: PatientFacts, item: _Dated | None, max_age: int) -> bool:
    """Whether an item is dated no more than `max_age` days before today."""
    return item is not None and item.date is not None and days_before(facts, item.date) <= max_age


def unavailable(facts: PatientFacts, *resource_types: str) -> str | None:
    """A reason when one of these resource types could not be read, so that absence proves nothing."""
    if not facts.unavailable:
        return None
    missing = sorted(t for t in resource_types if t in facts.unavailable)
    return f"{' and '.join(missing)} could not be read" if missing else None


def condition_label(condition: ConditionFact, fallback: str) -> str:
    return clean(condition.display) or fallback


def dated_record_result(
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
        return LeafResult(Truth.TRUE, f"{label(matches[0])}{when(day_of(matches[0]))}", refs(matches))
    inside: list[Any] = []
    undated: list[Any] = []
    outside: list[Any] = []
    for match in matches:
        day = day_of(match)
        (undated if day is None else inside if days_before(facts, day) <= within_days else outside).append(
            match
        )
    if inside:
        return LeafResult(Truth.TRUE, f"{label(inside[0])}{on(day_of(inside[0]))}", refs(inside))
    if undated:
        return LeafResult(Truth.UNKNOWN, f"{label(undated[0])} recorded without a date", refs(undated))
    newest = max(outside, key=lambda m: day_of(m) or date.min)
    reason = f"{label(newest)}{on(day_of(newest))}, more than {within_days} days ago"
    return LeafResult(Truth.FALSE, reason, refs(outside))


def flag_result(flag: Flag) -> LeafResult:
    truth = Truth.UNKNOWN if flag.value is None else Truth.TRUE if flag.value else Truth.FALSE
    return LeafResult(truth, flag.text, flag.refs)


def stale_or_missing(
    facts: PatientFacts, name: str, newest: Any, shown: Callable[[Any], str], max_age: int, resource_type: str
) -> LeafResult | None:
    """Unknown when there is no dated value or the newest is older than `max_age` days; None when usable."""
    if newest is None:
        reason = unavailable(facts, resource_type) or f"no {name} in the last {max_age} days"
        return LeafResult(Truth.UNKNOWN, reason)
    if not recent(facts, newest, max_age):
        return LeafResult(
            Truth.UNKNOWN,
            f"latest {name} {shown(newest)}{on(newest.date)} is older than {max_age} days",
            (newest.ref,),
        )
    return None


def line_text(line: TherapyLine) -> str:
    state = "ongoing" if line.ongoing else f"until {line.end.isoformat()}" if line.end else "ended"
    return (
        f"line {line.number}: {' + '.join(sorted(line.ingredients))} from {line.start.isoformat()} ({state})"
    )


def no_therapy(facts: PatientFacts, reason: str) -> LeafResult:
    unreadable = unavailable(facts, *MEDICATION_TYPES)
    return LeafResult(Truth.UNKNOWN, unreadable) if unreadable else LeafResult(Truth.FALSE, reason)


def refs_of_lines(lines: Iterable[TherapyLine]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ref for line in lines for ref in line.refs))
