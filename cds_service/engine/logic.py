"""Kleene's strong three-valued logic, with `clinician` ranked between `unknown` and a definite value."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from cds_service.verdicts import Truth

ALL_PRECEDENCE = (Truth.FALSE, Truth.UNKNOWN, Truth.CLINICIAN, Truth.TRUE)
ANY_PRECEDENCE = (Truth.TRUE, Truth.UNKNOWN, Truth.CLINICIAN, Truth.FALSE)
_NEGATION = {Truth.TRUE: Truth.FALSE, Truth.FALSE: Truth.TRUE}


def first_present(precedence: tuple[Truth, ...], present: AbstractSet[Truth]) -> Truth:
    """The first value of `precedence` in `present` (the last of `precedence` when none is)."""
    for truth in precedence:
        if truth in present:
            return truth
    return precedence[-1]


def kleene_all(truths: Iterable[Truth]) -> Truth:
    """Conjunction: false if any is false, else unknown, else clinician, else true (true when empty)."""
    return first_present(ALL_PRECEDENCE, set(truths))


def kleene_any(truths: Iterable[Truth]) -> Truth:
    """Disjunction: true if any is true, else unknown, else clinician, else false (false when empty)."""
    return first_present(ANY_PRECEDENCE, set(truths))


def kleene_not(truth: Truth) -> Truth:
    """Negation: swaps true and false; unknown and clinician stay."""
    return _NEGATION.get(truth, truth)
