"""`order-select` and `order-sign`: warn before an order ends a patient's eligibility for a trial.

The draft orders of `context.draftOrders` are evaluated as if carried out today (`draft_orders`,
`Matcher.warn`): a trial that gets a card now and would get none with them gets a warning card. order-select
considers the orders named in `selections`, order-sign all of them.

No double warning (the PDDI-CDS implementation guide's `filter-out-repeated-alerts`, on unless a request's
`extension` turns it off): a warning order-select showed is remembered (patient, trial, a digest of its
orders, the day), and order-sign leaves out the same warning that day unless its orders changed. Warnings are
not quieted by feedback on trial cards: a trial the patient was referred to is the one most worth a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.draft_orders import draft_orders
from cds_service.hooks.patient_view import CONTEXT
from cds_service.hooks.registry import Card, HookCall, Runtime, hook
from cds_service.pipeline import OrderWarning

# PDDI-CDS configuration options as a request's extension (its examples name the object
# pddi-configuration-items, its prose configuration-items).
CONFIGURATION_ITEMS = ("pddi-configuration-items", "configuration-items")
FILTER_REPEATED = "filter-out-repeated-alerts"

DRAFT_ORDERS = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"const": "Bundle"}, "entry": {"type": "array"}},
}
ORDER_SIGN_CONTEXT = {
    **CONTEXT,
    "required": [*CONTEXT["required"], "draftOrders"],
    "properties": {**CONTEXT["properties"], "draftOrders": DRAFT_ORDERS},
}
ORDER_SELECT_CONTEXT = {
    **ORDER_SIGN_CONTEXT,
    "required": [*ORDER_SIGN_CONTEXT["required"], "selections"],
    "properties": {
        **ORDER_SIGN_CONTEXT["properties"],
        "selections": {"type": "array", "items": {"type": "string", "minLength": 1}},
    },
}


@hook("order-select", context=ORDER_SELECT_CONTEXT)
def order_select(call: HookCall, runtime: Runtime) -> list[Card]:
    """A warning per trial the selected orders would end; each is remembered for order-sign."""
    warnings = _warnings(call, runtime, call.request.context["selections"])
    patient_id = call.request.patient_id
    if warnings and patient_id:
        runtime.remember_warned(patient_id, call.today, [_key(warning) for warning in warnings])
    return [warning.card for warning in warnings]


@hook("order-sign", context=ORDER_SIGN_CONTEXT)
def order_sign(call: HookCall, runtime: Runtime) -> list[Card]:
    """A warning per trial the orders would end, without those order-select showed today for the same
    orders."""
    warnings = _warnings(call, runtime, None)
    patient_id = call.request.patient_id
    if warnings and patient_id and filters_repeated(call.request.extension):
        shown = runtime.warned(patient_id, call.today)
        warnings = [warning for warning in warnings if _key(warning) not in shown]
    return [warning.card for warning in warnings]


def _warnings(call: HookCall, runtime: Runtime, selections: list[str] | None) -> list[OrderWarning]:
    request = call.request
    orders = draft_orders(request.context["draftOrders"], request.patient_id, call.today, selections)
    return runtime.matcher.warn(
        call.data.resources, orders, request.patient_id, call.today, call.data.unavailable
    )


def _key(warning: OrderWarning) -> tuple[str, str]:
    impact = warning.impact
    return (impact.now.trial.nct_id or impact.now.trial.key, impact.orders_digest)


def filters_repeated(extension: Mapping[str, Any]) -> bool:
    """Whether repeated warnings are left out: yes, unless the request's PDDI configuration says false."""
    for name in CONFIGURATION_ITEMS:
        items = extension.get(name)
        if isinstance(items, Mapping) and items.get(FILTER_REPEATED) is False:
            return False
    return True
