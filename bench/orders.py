"""The order-select call of `make bench`: the benchmark chart with one draft order in `context.draftOrders`.

order-select fires on every change in an order form, so its p50 at 240 resources must stay within 5x the
JSON-only baseline's (issue 14), measured in the same run as patient-view. The draft is what the public CDS
Hooks sandbox's Rx View sends: a MedicationRequest switching the benchmark patient (on axitinib +
pembrolizumab) to cabozantinib, an order that ends a trial's eligibility, so the call takes the whole warning
path (both evaluations, the full one of the trials taken away, a warning card, the row that remembers it).
"""

from __future__ import annotations

from typing import Any

from bench.generate import PATIENT_ID, TODAY, hook_request

ORDER_SELECT_SERVICE = "mrcc-trials-order-select"
ORDER_SELECT_SIZE = 240  # resources of the chart: the size of the target
DRAFT_ID = "bench-draft-1"


def draft_order() -> dict[str, Any]:
    """The Rx View draft: a cabozantinib MedicationRequest, coded with a product-level RxNorm code."""
    return {
        "resourceType": "MedicationRequest",
        "id": DRAFT_ID,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": TODAY.isoformat(),
        "medicationCodeableConcept": {
            "text": "cabozantinib 80 MG Oral Capsule [Cometriq]",
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "1363284",
                    "display": "cabozantinib 80 MG Oral Capsule [Cometriq]",
                }
            ],
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [
                    {"doseQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "{pill}"}}
                ],
            }
        ],
    }


def order_select_request(n_resources: int = ORDER_SELECT_SIZE) -> dict[str, Any]:
    """The benchmark's patient-view request made an order-select call with the draft order selected."""
    request = hook_request(n_resources)
    context = {
        **request["context"],
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft_order()}]},  # as Rx View
        "selections": [f"MedicationRequest/{DRAFT_ID}"],
    }
    return {**request, "hook": "order-select", "context": context}
