"""Draft orders ("what if"): the FHIR resources each order would create if carried out today, and the trials
those resources would take away.

An order-select or order-sign call carries `draftOrders`, a Bundle of unsigned orders. Each order becomes the
resources it would create, with the codes the EHR sent (read through the catalog's value sets like the
chart's, so no trial keeps a list of orders):

    ServiceRequest     -> a `completed` Procedure with its code and bodySite, performed today
    MedicationRequest  -> the same MedicationRequest, `active`, intent `order`, authored today (the existing
                          code then recomputes the lines of therapy: a switch opens a line, a partner drug
                          joins the current one, a drug already taken changes nothing)
    anything else      -> nothing (a Medication a MedicationRequest points to rides along with it)

An order without an id (nothing could name it), revoked, cancelled, stopped or entered in error, or about
another patient, is passed over. `pipeline.Matcher.warn` evaluates the trials with the orders (`with_orders`)
and without them (`without_orders`) and keeps each trial that gets a card now and would get none with them
(`OrderImpact`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.facts import PatientFacts
from cds_service.facts.medications import therapy_lines
from cds_service.fhir import bundles
from cds_service.fhir.concepts import concept, is_object, medication, reference
from cds_service.verdicts import CriterionResult, TrialResult

IGNORED_ORDER_STATUSES = frozenset({"revoked", "cancelled", "stopped", "entered-in-error"})
PROCEDURE_ID_PREFIX = "order-"  # Procedure/order-<id> is what ServiceRequest/<id> would become
MAX_FHIR_ID = 64
MEDICATION_ELEMENTS = ("medicationCodeableConcept", "medicationReference")


@dataclass(frozen=True)
class DraftOrder:
    """One draft order and what carrying it out today would add to the chart."""

    ref: str  # how the EHR names the draft, e.g. "ServiceRequest/draft-1" (selections, delete actions)
    label: str | None  # what is ordered, as the EHR wrote it (code text or display), if it says
    resources: tuple[dict[str, Any], ...]  # the resources it would create (a MedicationRequest keeps `ref`)
    digest: str  # sha256 of `ref` and `resources`: it changes when what the order would do changes


@dataclass(frozen=True)
class OrderImpact:
    """A trial that gets a card now and would get none with the orders carried out."""

    now: TrialResult  # the trial's result without the orders (likely or possibly eligible)
    orders: tuple[DraftOrder, ...]  # the orders that end it
    ended: tuple[CriterionResult, ...]  # its criteria not met with the orders (their reasons say why)

    @property
    def orders_digest(self) -> str:
        """The orders warned about (their ids and what they would do), hashed: the same orders give the same
        digest, whatever else the draft Bundle holds."""
        key = sorted(f"{order.ref} {order.digest}" for order in self.orders)
        return hashlib.sha256("\n".join(key).encode()).hexdigest()


def draft_orders(
    bundle: Any, patient_id: str | None, today: date, selections: Collection[str] | None = None
) -> tuple[DraftOrder, ...]:
    """The orders of a `draftOrders` Bundle that would change the chart, in order; with `selections` (the
    references order-select names), only those."""
    entries = list(bundles.entries(bundle))
    medications = {
        key: entry.resource
        for entry in entries
        if entry.resource["resourceType"] == "Medication"
        for key in (_ref(entry.resource), entry.full_url)
        if key
    }
    found = []
    for entry in entries:
        resource = entry.resource
        ref = _ref(resource)
        if ref is None or (selections is not None and ref not in selections):
            continue
        if resource.get("status") in IGNORED_ORDER_STATUSES or not _about(resource, patient_id):
            continue
        subject = {"reference": f"Patient/{patient_id}"} if patient_id else resource.get("subject")
        if resource["resourceType"] == "ServiceRequest":
            order = _procedure(resource, ref, subject, today)
        elif resource["resourceType"] == "MedicationRequest":
            order = _medication_request(resource, ref, subject, today, medications)
        else:
            continue
        if order is not None:
            found.append(order)
    return tuple(found)


def _procedure(request: Mapping[str, Any], ref: str, subject: Any, today: date) -> DraftOrder | None:
    """A ServiceRequest carried out: a completed Procedure with its code and body site, performed today."""
    code = request.get("code")
    if not is_object(code):
        return None
    procedure = {
        "resourceType": "Procedure",
        "id": _procedure_id(request["id"]),
        "status": "completed",
        "subject": subject,
        "basedOn": [{"reference": ref}],
        "code": code,
        "bodySite": request.get("bodySite"),
        "performedDateTime": today.isoformat(),
    }
    return _order(ref, concept(code).text, _without_none(procedure))


def _medication_request(
    request: Mapping[str, Any],
    ref: str,
    subject: Any,
    today: date,
    medications: Mapping[str, Mapping[str, Any]],
) -> DraftOrder | None:
    """A MedicationRequest signed: active, intent order, from today; the Medication it points to in the
    draft Bundle rides along."""
    drug = {key: request[key] for key in MEDICATION_ELEMENTS if key in request}
    if not drug:
        return None
    signed = {
        "resourceType": "MedicationRequest",
        "id": request["id"],
        "status": "active",
        "intent": "order",
        "subject": subject,
        "authoredOn": today.isoformat(),
        "contained": request.get("contained"),
        **drug,
    }
    target = reference(request.get("medicationReference"))
    pointed = medications.get(target) if target else None
    resources = [_without_none(signed)] + ([dict(pointed)] if pointed is not None else [])
    return _order(ref, medication(request, medications).text, *resources)


def _order(ref: str, label: str | None, *resources: dict[str, Any]) -> DraftOrder:
    canonical = json.dumps([ref, resources], sort_keys=True, separators=(",", ":"))
    return DraftOrder(ref, label, resources, hashlib.sha256(canonical.encode()).hexdigest())


def _procedure_id(order_id: str) -> str:
    """`order-<id>`, or a hash of the id when that would be longer than FHIR allows."""
    derived = PROCEDURE_ID_PREFIX + order_id
    if len(derived) <= MAX_FHIR_ID:
        return derived
    return PROCEDURE_ID_PREFIX + hashlib.sha256(order_id.encode()).hexdigest()[:32]


def responsible(orders: Sequence[DraftOrder], ended: Sequence[CriterionResult]) -> tuple[DraftOrder, ...]:
    """The orders whose resources the ended criteria cite; all of them when none is cited (a criterion
    ended by a recomputed value, such as the lines of therapy, may cite the chart's resources only)."""
    cited = {ref for criterion in ended for ref in criterion.evidence}
    named = tuple(order for order in orders if any(_ref(r) in cited for r in order.resources))
    return named or tuple(orders)


def _ref(resource: Mapping[str, Any]) -> str | None:
    rid = resource.get("id")
    return f"{resource['resourceType']}/{rid}" if isinstance(rid, str) and rid else None


def _about(resource: Mapping[str, Any], patient_id: str | None) -> bool:
    """False only for an order whose subject names another Patient by id."""
    target = reference(resource.get("subject"))
    if patient_id is None or target is None:
        return True
    parts = target.split("/_history/")[0].rstrip("/").split("/")
    return len(parts) < 2 or parts[-2] != "Patient" or parts[-1] == patient_id


def _without_none(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if value is not None}


def with_orders(
    resources: Sequence[Mapping[str, Any]], orders: Sequence[DraftOrder]
) -> list[Mapping[str, Any]]:
    """The chart as if the orders were carried out: a draft the EHR also sent in the chart is replaced by
    what it becomes."""
    replaced = {order.ref for order in orders}
    kept = [r for r in resources if _ref(r) not in replaced]
    return kept + [resource for order in orders for resource in order.resources]


def replaces(resources: Sequence[Mapping[str, Any]], orders: Sequence[DraftOrder]) -> bool:
    """Whether the chart holds a resource an order replaces (the draft itself, as some EHRs send it)."""
    replaced = {order.ref for order in orders}
    return any(_ref(r) in replaced for r in resources)


def without_orders(facts: PatientFacts, orders: Sequence[DraftOrder]) -> PatientFacts:
    """The facts of the chart without the orders, from `facts` of the chart with them (`with_orders`, when it
    replaced nothing): the same facts without what the orders' resources gave, so that the chart's resources
    are validated once, not twice (validation is most of a call's time).

    Exact because an order adds only Procedures, MedicationRequests and Medications: their facts are taken
    out, and the lines of therapy recomputed as `build_facts` does (tests/test_draft_orders.py checks the
    result against `build_facts` of the chart alone). `facts` itself when the orders gave no fact.
    """
    added = {ref for order in orders for resource in order.resources if (ref := _ref(resource))}
    procedures = tuple(p for p in facts.procedures if p.ref not in added)
    medications = tuple(m for m in facts.medications if m.ref not in added)
    skipped = tuple(ref for ref in facts.skipped if ref not in added)
    if (len(procedures), len(medications), len(skipped)) == (
        len(facts.procedures),
        len(facts.medications),
        len(facts.skipped),
    ):
        return facts
    first_metastasis = facts.metastasis.first()
    return dataclasses.replace(
        facts,
        procedures=procedures,
        medications=medications,
        therapy_lines=therapy_lines(medications, first_metastasis[0] if first_metastasis else None),
        skipped=skipped,
    )
