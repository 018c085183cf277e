"""Evaluate every trial of the catalog for one patient: criterion outcomes, verdicts and arms.

`Engine` compiles every anchor, criterion and cohort rule once. Equal rules (same canonical text, in any
trial) become one `Rule` object, evaluated at most once per patient. Trials are grouped by their anchor rules
(the trial's disease and stage, mappings/README.md): a group's anchors are evaluated once, and a group whose
anchors are not all true is settled without looking at any criterion. Such a trial is `not-considered`, and
its result lists the anchor evaluations (type `anchor`, id `anchor:<n>` counted from 1, text = the anchor's
label) to show why; a considered trial's result lists its registry criteria only, so cards (which only
considered trials get) never show an anchor. Derived values are memoised in the per-patient
`EvaluationContext`.

The engine also derives the catalog's `read_plan` from what its leaves declare they read, and checks that
every value set a leaf reads by name is in the catalog (a `CatalogError` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service import operators  # noqa: F401 (registers every operator)
from cds_service.catalog import Anchor, Catalog, Criterion, Problem, Trial
from cds_service.engine.registry import EvaluationContext, Labels, LeafResult
from cds_service.engine.rules import Rule, compile_rule, leaves
from cds_service.errors import CatalogError
from cds_service.facts import Needs, PatientFacts, ReadPlan, read_plan
from cds_service.verdicts import (
    ANCHOR,
    RECRUITING_STATUSES,
    CriterionResult,
    Outcome,
    TrialResult,
    Truth,
    Verdict,
)

_INCLUSION_OUTCOME: Mapping[Truth, Outcome] = {
    Truth.TRUE: Outcome.MET,
    Truth.FALSE: Outcome.NOT_MET,
    Truth.UNKNOWN: Outcome.UNKNOWN,
    Truth.CLINICIAN: Outcome.CLINICIAN,
}
# An exclusion's rule describes the excluding situation: true excludes.
_EXCLUSION_OUTCOME: Mapping[Truth, Outcome] = {
    **_INCLUSION_OUTCOME,
    Truth.TRUE: Outcome.NOT_MET,
    Truth.FALSE: Outcome.MET,
}
_VERDICT_ORDER = {
    Verdict.LIKELY: 0,
    Verdict.POSSIBLY: 1,
    Verdict.NOT_ELIGIBLE: 2,
    Verdict.NOT_RECRUITING: 3,
    Verdict.NOT_CONSIDERED: 4,
    Verdict.DECEASED: 5,
}


@dataclass(frozen=True)
class EvaluationPolicy:
    """Recency windows (days) for measurements without their own `max_age_days`."""

    lab_max_age_days: int = 30
    performance_max_age_days: int = 60


def _outcomes(criterion_type: str) -> Mapping[Truth, Outcome]:
    return _EXCLUSION_OUTCOME if criterion_type == "exclusion" else _INCLUSION_OUTCOME


def outcome_of(criterion_type: str, truth: Truth) -> Outcome:
    """Map a rule's value to the criterion's outcome (an exclusion that applies is `not-met`)."""
    return _outcomes(criterion_type)[truth]


def verdict_of(status: str, anchors_met: bool, outcomes: list[Outcome]) -> Verdict:
    """Verdict of a trial from its status, its anchors and its criterion outcomes."""
    if status not in RECRUITING_STATUSES:
        return Verdict.NOT_RECRUITING
    if not anchors_met:
        return Verdict.NOT_CONSIDERED
    if Outcome.NOT_MET in outcomes:
        return Verdict.NOT_ELIGIBLE
    if Outcome.UNKNOWN in outcomes:
        return Verdict.POSSIBLY
    return Verdict.LIKELY  # every outcome met or left to the clinician


@dataclass(frozen=True, eq=False)
class _Criterion:
    """A compiled criterion; equal criteria of different trials (variants of one study) are one object."""

    source: Criterion
    rule: Rule | None  # None: left to the clinician
    outcomes: Mapping[Truth, Outcome]  # the rule's value -> the criterion's outcome
    fixed: CriterionResult | None  # the result of a criterion left to the clinician, the same for everyone

    @classmethod
    def of(cls, source: Criterion, rule: Rule | None) -> _Criterion:
        fixed = None
        if rule is None:
            c = source
            fixed = CriterionResult(c.id, c.type, c.text, Outcome.CLINICIAN, c.clinician or "", (), c.heading)
        return cls(source, rule, _outcomes(source.type), fixed)

    def result(self, facts: PatientFacts, context: EvaluationContext) -> CriterionResult:
        """The criterion's result for one patient, built once per patient (keyed by this object)."""
        if self.rule is None:
            assert self.fixed is not None  # built with the criterion
            return self.fixed
        result: CriterionResult | None = context.memo.get(self)
        if result is None:
            c = self.source
            value = self.rule.evaluate(facts, context)
            result = context.memo[self] = CriterionResult(
                c.id, c.type, c.text, self.outcomes[value.truth], value.reason, value.evidence, c.heading
            )
        return result


@dataclass(frozen=True)
class _Trial:
    source: Trial
    criteria: tuple[_Criterion, ...]  # in file order
    anchors: tuple[tuple[Anchor, Rule], ...]
    cohorts: tuple[tuple[str, Rule], ...]

    @property
    def anchor_key(self) -> tuple[str, ...]:
        return tuple(rule.key for _, rule in self.anchors)


def _anchor_result(number: int, label: str, value: LeafResult) -> CriterionResult:
    """An anchor's evaluation, shown in the result of a trial that is not considered."""
    outcome = outcome_of("inclusion", value.truth)
    return CriterionResult(f"anchor:{number}", ANCHOR, label, outcome, value.reason, value.evidence)


@dataclass(frozen=True)
class _Group:
    """Trials sharing their anchor rules (a trial's anchors may have other labels than its neighbours').

    What their results hold when the anchors are not all met is prepared once: each trial's verdict and
    anchor labels; a call only fills in the anchors' values.
    """

    trials: tuple[_Trial, ...]
    anchor_rules: tuple[Rule, ...]
    # Distinct anchor label lists of the group's trials; for each trial: (index into that list, verdict).
    label_lists: tuple[tuple[str, ...], ...]
    unconsidered: tuple[tuple[int, Verdict], ...]

    @classmethod
    def of(cls, trials: list[_Trial]) -> _Group:
        lists: dict[tuple[str, ...], int] = {}
        unconsidered = []
        for trial in trials:
            labels = tuple(anchor.label for anchor, _ in trial.anchors)
            verdict = verdict_of(trial.source.info.status, False, [])
            unconsidered.append((lists.setdefault(labels, len(lists)), verdict))
        rules = tuple(rule for _, rule in trials[0].anchors)
        return cls(tuple(trials), rules, tuple(lists), tuple(unconsidered))

    def not_considered(self, values: list[LeafResult], catalog_version: str) -> list[TrialResult]:
        """The results when the anchors are not all met: built from the prepared parts."""
        criteria = [
            tuple(
                _anchor_result(n, label, value)
                for n, (label, value) in enumerate(zip(labels, values, strict=True), start=1)
            )
            for labels in self.label_lists
        ]
        return [
            TrialResult(trial.source.info, verdict, criteria[index], None, catalog_version)
            for trial, (index, verdict) in zip(self.trials, self.unconsidered, strict=True)
        ]


class Engine:
    """Compiled catalog; `evaluate(facts)` returns one `TrialResult` per trial, best verdicts first."""

    def __init__(self, catalog: Catalog, policy: EvaluationPolicy | None = None) -> None:
        self.catalog = catalog
        self.policy = policy or EvaluationPolicy()
        self._rules: dict[str, Rule] = {}
        self._labels = Labels(catalog.terminology)
        self._criteria: dict[tuple[object, ...], _Criterion] = {}
        groups: dict[tuple[str, ...], list[_Trial]] = {}
        for trial in catalog.trials:
            compiled = self._compile_trial(trial)
            groups.setdefault(compiled.anchor_key, []).append(compiled)
        self._groups = tuple(_Group.of(group) for group in groups.values())
        # Positions of the results (made group by group) in trial-key order, the order within a verdict.
        keys = [trial.source.info.key for group in self._groups for trial in group.trials]
        self._key_order = sorted(range(len(keys)), key=keys.__getitem__)
        wanted = Needs()
        for leaf in leaves(self._rules.values()):
            wanted = wanted | leaf.needs
        self.read_plan: ReadPlan = read_plan(wanted, catalog.terminology)
        missing = sorted(self.read_plan.needs.valuesets - catalog.terminology.valuesets.keys())
        if missing:
            raise CatalogError(
                [
                    Problem("valuesets", "", f"value set {name!r} read by a rule is missing")
                    for name in missing
                ]
            )
        # Value sets that neither a rule parameter nor an operator names: reported, the catalog still works.
        self.warnings = tuple(
            problem
            for valueset_id, problem in catalog.unnamed_valuesets.items()
            if valueset_id not in self.read_plan.needs.valuesets
        )

    @property
    def distinct_rules(self) -> int:
        """Number of distinct compiled rules (anchors, criteria and cohorts of every trial)."""
        return len(self._rules)

    def _intern(self, raw: Mapping[str, object], path: str) -> Rule:
        rule = compile_rule(raw, path)
        return self._rules.setdefault(rule.key, rule)

    def _compile_trial(self, trial: Trial) -> _Trial:
        key = trial.info.key
        anchors = tuple(
            (anchor, self._intern(anchor.rule, f"{key}/anchors/{i}/rule"))
            for i, anchor in enumerate(trial.anchors)
        )
        criteria = tuple(
            self._criterion(
                c, self._intern(c.rule, f"{key}/criteria/{c.id}/rule") if c.rule is not None else None
            )
            for c in trial.criteria
        )
        cohorts = tuple(
            (cohort.label, self._intern(cohort.rule, f"{key}/cohorts/{i}/rule"))
            for i, cohort in enumerate(trial.cohorts)
        )
        return _Trial(trial, criteria, anchors, cohorts)

    def _criterion(self, source: Criterion, rule: Rule | None) -> _Criterion:
        """The one `_Criterion` of this content and rule (results are then built once per patient)."""
        key = (source.id, source.type, source.text, source.heading, source.clinician, rule)
        return self._criteria.setdefault(key, _Criterion.of(source, rule))

    def context(self) -> EvaluationContext:
        """A fresh per-patient context (memo of rule results and derived values)."""
        return EvaluationContext(
            terminology=self.catalog.terminology,
            lab_max_age_days=self.policy.lab_max_age_days,
            performance_max_age_days=self.policy.performance_max_age_days,
            prepared_labels=self._labels,
        )

    def evaluate(self, facts: PatientFacts, *, cards_only: bool = False) -> tuple[TrialResult, ...]:
        """Evaluate every trial of the catalog for one patient, sorted: likely, possibly, then the rest (by
        key within a verdict). With `cards_only`, only the trials that get a card are returned, and a trial is
        left as soon as it cannot get one (anchors not met, not recruiting, a criterion not met): a large
        catalog holds hundreds of those, and the cards are the same."""
        context = self.context()
        results: list[TrialResult] = []
        for group in self._groups:
            values = [rule.evaluate(facts, context) for rule in group.anchor_rules]
            if not all(value.truth is Truth.TRUE for value in values):
                if not cards_only:
                    results.extend(group.not_considered(values, self.catalog.version))
            elif cards_only:
                carded = (self._carded(trial, facts, context) for trial in group.trials)
                results.extend(result for result in carded if result is not None)
            else:
                results.extend(self._considered(trial, facts, context) for trial in group.trials)
        if cards_only:
            return tuple(sorted(results, key=lambda r: (_VERDICT_ORDER[r.verdict], r.trial.key)))
        in_key_order = [results[i] for i in self._key_order]
        in_key_order.sort(key=lambda r: _VERDICT_ORDER[r.verdict])  # stable: the key order stays within
        return tuple(in_key_order)

    def every_trial(self, verdict: Verdict) -> tuple[TrialResult, ...]:
        """Every trial of the catalog with this verdict and no criterion (by key)."""
        results = [
            TrialResult(trial.source.info, verdict, (), None, self.catalog.version)
            for group in self._groups
            for trial in group.trials
        ]
        return tuple(results[i] for i in self._key_order)

    def _carded(self, trial: _Trial, facts: PatientFacts, context: EvaluationContext) -> TrialResult | None:
        """The result of a considered trial when it gets a card, else None (criteria read in file order, up
        to the first one not met)."""
        if trial.source.info.status not in RECRUITING_STATUSES:
            return None
        criteria = []
        for criterion in trial.criteria:
            result = criterion.result(facts, context)
            if result.outcome is Outcome.NOT_MET:
                return None
            criteria.append(result)
        return self._with_arm(trial, tuple(criteria), facts, context)

    def _considered(self, trial: _Trial, facts: PatientFacts, context: EvaluationContext) -> TrialResult:
        """The result of a trial whose anchors are met: its criteria, verdict and arm."""
        criteria = tuple([c.result(facts, context) for c in trial.criteria])
        return self._with_arm(trial, criteria, facts, context)

    def _with_arm(
        self,
        trial: _Trial,
        criteria: tuple[CriterionResult, ...],
        facts: PatientFacts,
        context: EvaluationContext,
    ) -> TrialResult:
        """The result of a considered trial from its criteria' results: its verdict and arm."""
        arm = None
        for label, rule in trial.cohorts:
            if rule.evaluate(facts, context).truth is Truth.TRUE:
                arm = label
                break
        info = trial.source.info
        verdict = verdict_of(info.status, True, [c.outcome for c in criteria])
        return TrialResult(info, verdict, criteria, arm, self.catalog.version)
