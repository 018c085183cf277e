"""The one way through the engine: raw FHIR resources of a patient -> facts -> trial results (-> cards).

`evaluate` is the entry point of every caller: the hook handlers, `cds-trials evaluate`, the gunicorn
warm-up and population pre-screening. It is pure: no Flask, no database, no clock (`today` is an argument),
so the same resources, date and catalog always give the same results. `Matcher` adds the cards, and the
order warnings: the trials evaluated without and with draft orders carried out (`Matcher.warn`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.cards import CardBuilder, CardContext
from cds_service.catalog import Catalog
from cds_service.config import Settings
from cds_service.draft_orders import (
    DraftOrder,
    OrderImpact,
    replaces,
    responsible,
    with_orders,
    without_orders,
)
from cds_service.engine.evaluate import Engine, EvaluationPolicy
from cds_service.facts import PatientFacts, ReadPlan
from cds_service.facts.build import build_facts
from cds_service.verdicts import Outcome, TrialResult, Verdict
from cds_service.warning_cards import WarningCardBuilder


def random_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Evaluation:
    facts: PatientFacts
    results: tuple[TrialResult, ...]


def evaluate(
    engine: Engine,
    resources: Sequence[Mapping[str, Any]],
    patient_id: str | None,
    today: date,
    unavailable: Collection[str] = (),
    *,
    cards_only: bool = False,
) -> Evaluation:
    """Evaluate every trial of `engine`'s catalog for one patient on `today`.

    `unavailable` names the resource types that could not be read (their absence proves nothing). With
    `cards_only`, the results are only those of the trials that get a card (see `Engine.evaluate`). A patient
    recorded as deceased is offered no trial: every trial's verdict is `patient-deceased`, with no criterion.
    """
    facts = build_facts(
        resources, engine.catalog.terminology, today, patient_id, engine.read_plan, unavailable
    )
    if facts.deceased:
        return Evaluation(facts, () if cards_only else engine.every_trial(Verdict.DECEASED))
    return Evaluation(facts, engine.evaluate(facts, cards_only=cards_only))


@dataclass(frozen=True)
class MatchOutput:
    facts: PatientFacts
    results: tuple[TrialResult, ...]
    cards: list[dict[str, Any]]


@dataclass(frozen=True)
class OrderWarning:
    impact: OrderImpact
    card: dict[str, Any]


OBSERVATION_CODES = "{{catalog.observationCodes}}"
"""A prefetch template token (mappings/services.yaml): the codes of every Observation the rules read."""


def with_observation_codes(catalog: Catalog, plan: ReadPlan) -> Catalog:
    """The catalog with OBSERVATION_CODES in its services' prefetch templates replaced by the plan's codes, so
    that the prefetch asks for exactly what is read."""
    codes = ",".join(code for _, code in sorted(plan.selection.observation_elements))
    services = tuple(
        dataclasses.replace(
            service,
            prefetch={
                key: template.replace(OBSERVATION_CODES, codes) for key, template in service.prefetch.items()
            },
        )
        for service in catalog.services
    )
    return dataclasses.replace(catalog, services=services)


class Matcher:
    """Everything prepared once at start (compiled rules, templates); `match` runs per patient.

    `catalog` is the catalog given, its services' prefetch templates completed (`with_observation_codes`).
    """

    def __init__(
        self, catalog: Catalog, settings: Settings, uuid_factory: Callable[[], str] | None = None
    ) -> None:
        self.settings = settings
        self.engine = Engine(
            catalog,
            EvaluationPolicy(
                lab_max_age_days=settings.lab_max_age_days,
                performance_max_age_days=settings.performance_max_age_days,
            ),
        )
        self.catalog = with_observation_codes(catalog, self.engine.read_plan)
        uuids = uuid_factory or random_uuid
        self.cards = CardBuilder(settings.cards_dir, uuids, self.catalog.services)
        self.warnings = WarningCardBuilder(settings.cards_dir, uuids, self.cards)

    def match(
        self,
        resources: Sequence[Mapping[str, Any]],
        patient_id: str | None,
        today: date,
        notes: Sequence[str] = (),
        unavailable: Collection[str] = (),
        *,
        cards_only: bool = False,
    ) -> MatchOutput:
        """`evaluate`, then the cards of the trials the patient may fit; `notes` say what could not be read.

        With `cards_only`, the results are only those of the trials that get a card: the cards are the
        same."""
        evaluation = evaluate(self.engine, resources, patient_id, today, unavailable, cards_only=cards_only)
        context = CardContext(patient_id=patient_id, notes=tuple(notes))
        cards = self.cards.build_all(evaluation.results, context)
        return MatchOutput(facts=evaluation.facts, results=evaluation.results, cards=cards)

    def warn(
        self,
        resources: Sequence[Mapping[str, Any]],
        orders: Sequence[DraftOrder],
        patient_id: str | None,
        today: date,
        unavailable: Collection[str] = (),
    ) -> list[OrderWarning]:
        """One warning per trial that gets a card now and would get none with `orders` carried out today.

        The chart with the orders is `evaluate`d; the chart without them too, on the same facts without
        what the orders gave (`without_orders`: each resource validated once), unless the chart holds a
        draft an order replaces. Both sides with `cards_only` (a trial is left at its first criterion not
        met); only when a trial is lost are the trials evaluated in full, on the facts with the orders, to
        tell which of its criteria the orders end.
        """
        if not orders:
            return []
        after = evaluate(
            self.engine, with_orders(resources, orders), patient_id, today, unavailable, cards_only=True
        )
        if replaces(resources, orders):
            now = evaluate(self.engine, resources, patient_id, today, unavailable, cards_only=True).results
        else:
            before = without_orders(after.facts, orders)
            if before is after.facts:  # the orders gave no fact: nothing changes
                return []
            now = self.engine.evaluate(before, cards_only=True)
        kept = {result.trial.key for result in after.results}
        lost = [result for result in now if result.trial.key not in kept]
        if not lost:
            return []
        full = {result.trial.key: result for result in self.engine.evaluate(after.facts)}
        context = CardContext(patient_id=patient_id)
        warnings = []
        for result in lost:
            ended = tuple(c for c in full[result.trial.key].criteria if c.outcome is Outcome.NOT_MET)
            impact = OrderImpact(result, responsible(orders, ended), ended)
            warnings.append(OrderWarning(impact, self.warnings.build(impact, context)))
        return warnings
