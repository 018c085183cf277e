"""Compose the stages: raw FHIR resources -> facts -> trial results -> cards.

Used by the hook endpoint and by `cds-trials evaluate`, so both give the same cards for the same data.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cds_service.cards import CardBuilder, CardContext
from cds_service.catalog import Catalog
from cds_service.config import Settings
from cds_service.evaluate import Engine, EvaluationPolicy
from cds_service.facts import PatientFacts, build_facts
from cds_service.verdicts import TrialResult


def random_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class MatchOutput:
    facts: PatientFacts
    results: tuple[TrialResult, ...]
    cards: list[dict[str, Any]]


class Matcher:
    """Everything prepared once at start (compiled rules, templates); `match` runs per request."""

    def __init__(
        self, catalog: Catalog, settings: Settings, uuid_factory: Callable[[], str] | None = None
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.engine = Engine(
            catalog,
            EvaluationPolicy(
                lab_max_age_days=settings.lab_max_age_days,
                performance_max_age_days=settings.performance_max_age_days,
            ),
        )
        self.cards = CardBuilder(settings.cards_dir, uuid_factory or random_uuid)

    def match(
        self,
        resources: Sequence[Mapping[str, Any]],
        patient_id: str | None,
        notes: Sequence[str] = (),
        unavailable: Collection[str] = (),
        *,
        cards_only: bool = False,
    ) -> MatchOutput:
        """Evaluate every trial for one patient; `unavailable` names resource types that could not be read.

        With `cards_only`, the results are only those of the trials that get a card (see `Engine.evaluate`):
        the cards are the same."""
        facts = build_facts(
            resources,
            self.catalog.terminology,
            self.settings.current_date(),
            patient_id,
            windows=self.engine.measurement_windows,
            newest_only=True,
            readable_only=True,
        )
        if unavailable:
            facts = dataclasses.replace(facts, unavailable=frozenset(unavailable))
        results = self.engine.evaluate(facts, cards_only=cards_only)
        context = CardContext(
            patient_id=patient_id,
            notes=tuple(notes),
            lab_max_age_days=self.settings.lab_max_age_days,
            performance_max_age_days=self.settings.performance_max_age_days,
        )
        cards = self.cards.build_all(results, context)
        return MatchOutput(facts=facts, results=results, cards=cards)
