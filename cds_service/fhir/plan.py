"""What the records stage selects of a chart, derived from what the rules read (facts.plan.read_plan)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cds_service.terminology import Code

# (resource type, the codes of a Condition, Procedure or medication, its text) -> whether anything reads it
Readable = Callable[[str, frozenset[Code], str | None], bool]


@dataclass(frozen=True)
class Selection:
    """The resource types, Observation codes and coded resources worth validating.

    `observation_elements` maps each wanted Observation code to the elements validated of an Observation
    with it: the value (`records.OBSERVATION_VALUE`) and what its facts read besides, e.g. a lab's
    `referenceRange`. A Condition, Procedure or medication is validated only when `readable` says a rule can
    read one of its codes (a medication: also its text).
    """

    resource_types: frozenset[str]
    observation_elements: Mapping[Code, frozenset[str]]
    readable: Readable
