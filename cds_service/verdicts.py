"""Results of evaluating trials for one patient: plain data passed from the engine to the cards."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Truth(StrEnum):
    """Value of a rule: Kleene's three values plus `clinician` (no structured data can decide it)."""

    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"
    CLINICIAN = "clinician"


class Outcome(StrEnum):
    """Outcome of a criterion for eligibility (an exclusion that does not apply is `met`)."""

    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"
    CLINICIAN = "clinician"


class Verdict(StrEnum):
    LIKELY = "likely-eligible"
    POSSIBLY = "possibly-eligible"
    NOT_ELIGIBLE = "not-eligible"  # some criterion not-met: no card
    NOT_CONSIDERED = "not-considered"  # anchors (disease and stage) not documented: no card
    NOT_RECRUITING = "not-recruiting"  # status neither RECRUITING nor NOT_YET_RECRUITING: no card
    DECEASED = "patient-deceased"  # the patient is recorded as deceased: no trial is offered, no card


RECRUITING_STATUSES = frozenset({"RECRUITING", "NOT_YET_RECRUITING"})
# `CriterionResult.type` of an anchor's evaluation: only a not-considered trial's result holds them (no card).
ANCHOR = "anchor"


@dataclass(frozen=True)
class TrialInfo:
    """Registry metadata of a trial, as written in its mapping file."""

    key: str  # mapping id, e.g. "NCT06903312" or "RESORT"
    nct_id: str | None
    acronym: str | None
    short_title: str
    title: str
    status: str
    phase: str | None
    sponsor: str | None
    url: str | None


@dataclass(frozen=True)
class CriterionResult:
    id: str
    type: str  # inclusion | exclusion | anchor (then id is "anchor:<n>" and text the anchor's label)
    text: str  # verbatim registry text (an anchor's label)
    outcome: Outcome
    reason: str
    evidence: tuple[str, ...] = ()
    heading: str | None = None  # verbatim text of the list item this criterion belongs to, if any


@dataclass(frozen=True)
class TrialResult:
    trial: TrialInfo
    verdict: Verdict
    criteria: tuple[CriterionResult, ...]
    arm: str | None = None
    catalog_version: str = ""

    @property
    def gets_card(self) -> bool:
        return self.verdict in (Verdict.LIKELY, Verdict.POSSIBLY)
