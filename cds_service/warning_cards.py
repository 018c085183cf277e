"""Order warnings as CDS Hooks 2.0 cards (contract, "Order warnings"), with their texts kept in `cards/`.

One card per trial that an order would take away (`draft_orders.OrderImpact`): `indicator: warning`, the
trial cards' source and topic, a suggestion to refer the patient to the trial team first, one to remove
the orders from the session (actions `delete` with `resourceId`), and the `org.trialmatch.order-impact`
extension naming the trial, the orders and the criteria they would end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from cds_service.cards import (
    SUMMARY_LIMIT,
    CardBuilder,
    CardContext,
    drop_empty,
    first_clauses,
    load_card_texts,
    markdown_escape,
    outcome_label,
    shorten,
)
from cds_service.draft_orders import DraftOrder, OrderImpact

ORDER_IMPACT_EXTENSION = "org.trialmatch.order-impact"
SHORTEST_NAME = 8  # characters of the order's or the trial's name kept when a summary must be cut


class WarningCardBuilder:
    """Build order-warning cards from `OrderImpact`s with the texts of a cards folder (card.yaml
    `order_warning`, warning-summary.txt.j2, warning-detail.md.j2); `trial_cards` gives the referral."""

    def __init__(self, cards_dir: Path, uuid_factory: Callable[[], str], trial_cards: CardBuilder) -> None:
        self._texts = load_card_texts(cards_dir)
        self._warning = self._texts["order_warning"]
        self._trial_cards = trial_cards
        self._uuid = uuid_factory
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(cards_dir)),
            autoescape=False,  # Markdown, escaped explicitly with the `md` filter
            undefined=jinja2.StrictUndefined,
        )
        env.filters["md"] = markdown_escape
        self._summary = env.get_template("warning-summary.txt.j2")
        self._detail = env.get_template("warning-detail.md.j2")

    def build(self, impact: OrderImpact, context: CardContext) -> dict[str, Any]:
        """The warning card of one trial an order would take away."""
        info = impact.now.trial
        nct_id = info.nct_id or info.key
        topic = self._texts["topic"]
        card = {
            "uuid": self._uuid(),
            "summary": self._summary_text(impact),
            "indicator": "warning",
            "source": {
                "label": self._trial_cards.source_label,
                "topic": {
                    "system": topic["system"],
                    "code": nct_id,
                    "display": topic["display"].format(nct_id=nct_id),
                },
            },
            "detail": self._detail_text(impact),
            "links": [
                {
                    "label": self._texts["link_label"].format(nct_id=nct_id),
                    "url": self._texts["link_url"].format(nct_id=nct_id),
                    "type": "absolute",
                }
            ],
            "suggestions": [
                self._trial_cards.referral(impact.now, context, self._warning["referral_label"]),
                self._removal(impact.orders),
            ],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [
                {"system": r["system"], "code": r["code"], "display": r["display"]}
                for r in self._warning["override_reasons"]
            ],
        }
        card = drop_empty(card)
        card["extension"] = {ORDER_IMPACT_EXTENSION: order_impact_extension(impact)}
        return card

    def _name(self, order: DraftOrder) -> str:
        return shorten(order.label or self._warning["order_label"], self._warning["order_chars"])

    def _summary_text(self, impact: OrderImpact) -> str:
        """The summary; when too long, the trial's name is cut (at a word), then the order's."""
        info = impact.now.trial
        names = {"trial": info.acronym or info.short_title, "order": self._name(impact.orders[0])}
        values = {"others": len(impact.orders) - 1, "nct_id": info.nct_id or info.key}
        text = self._summary.render(**names, **values).strip()
        for cut in ("trial", "order"):
            overflow = len(text) - SUMMARY_LIMIT
            if overflow > 0:
                names[cut] = shorten(names[cut], max(len(names[cut]) - overflow, SHORTEST_NAME))
                text = self._summary.render(**names, **values).strip()
        return text

    def _detail_text(self, impact: OrderImpact) -> str:
        warning = self._warning
        shown = impact.ended[: warning["criteria"]]
        verdict = self._texts["verdict_labels"][str(impact.now.verdict)]
        text = self._detail.render(
            verdict=verdict,
            orders=", ".join(self._name(order) for order in impact.orders),
            many=len(impact.orders) > 1,
            criteria=[
                {
                    "outcome": outcome_label(self._texts, c.type, str(c.outcome)),
                    "text": shorten(c.text, warning["criterion_chars"]),
                    "reason": first_clauses(c.reason, warning["reason_chars"]),
                }
                for c in shown
            ],
            more=len(impact.ended) - len(shown),
        ).strip()
        limit = self._texts["detail"]["max_chars"]
        return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"

    def _removal(self, orders: Sequence[DraftOrder]) -> dict[str, Any]:
        """The suggestion that removes the orders from the session: one `delete` action each."""
        remove = self._warning["remove"]
        return {
            "label": remove["label"],
            "uuid": self._uuid(),
            "actions": [
                {
                    "type": "delete",
                    "description": remove["description"].format(order=self._name(order)),
                    "resourceId": order.ref,
                }
                for order in orders
            ],
        }


def order_impact_extension(impact: OrderImpact) -> Mapping[str, Any]:
    """The machine-readable `org.trialmatch.order-impact` object of the contract."""
    return {
        "nctId": impact.now.trial.nct_id,
        "orders": [order.ref for order in impact.orders],
        "criteria": [{"id": c.id, "text": c.text, "reason": c.reason} for c in impact.ended],
    }
