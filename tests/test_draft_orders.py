"""Draft orders as what they would create if carried out today, and the trials they would take away.

`draft_orders` turns a `draftOrders` Bundle into resources (a ServiceRequest: a completed Procedure today; a
MedicationRequest: active from today), read through the catalog's value sets like the chart. `Matcher.warn`
evaluates the gallery's charts without and with them: for each seed trial an order that ends it gets a warning
card (naming the criteria it ends), an order that ends nothing gets none.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hook_checks import empty_values

from cds_service.catalog import load_catalog
from cds_service.config import load_settings
from cds_service.draft_orders import draft_orders, replaces, with_orders, without_orders
from cds_service.pipeline import Matcher, OrderWarning, evaluate
from cds_service.warning_cards import ORDER_IMPACT_EXTENSION

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TODAY = date(2026, 11, 21)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def order(name: str, **changes: Any) -> dict[str, Any]:
    """A draft order of examples/orders/, with changes."""
    resource = json.loads((EXAMPLES / "orders" / f"{name}.json").read_text(encoding="utf-8"))
    return {**resource, **changes}


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


@cache
def chart(slug: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    """A gallery patient's id and resources."""
    document = json.loads((EXAMPLES / "patients" / f"{slug}.json").read_text(encoding="utf-8"))
    resources = tuple(entry["resource"] for entry in document["entry"])
    (patient_id,) = (r["id"] for r in resources if r["resourceType"] == "Patient")
    return patient_id, resources


@cache
def matcher() -> Matcher:
    settings = load_settings({"today": TODAY.isoformat()}, environ={})
    return Matcher(load_catalog(settings.mappings_dir), settings, lambda: "uuid")


def warn(slug: str, *orders: dict[str, Any]) -> list[OrderWarning]:
    patient_id, resources = chart(slug)
    return matcher().warn(resources, draft_orders(bundle(*orders), patient_id, TODAY), patient_id, TODAY)


def ended(warnings: list[OrderWarning]) -> dict[str, list[str]]:
    """NCT number -> ids of the criteria the orders end, from the cards' extension."""
    found = {}
    for warning in warnings:
        impact = warning.card["extension"][ORDER_IMPACT_EXTENSION]
        found[impact["nctId"]] = [criterion["id"] for criterion in impact["criteria"]]
    return found


# --- draft orders as resources


def test_a_service_request_becomes_a_procedure_done_today_with_its_code_and_body_site() -> None:
    (draft,) = draft_orders(bundle(order("nephrectomy-snomed")), "pt-1", TODAY)
    (procedure,) = draft.resources
    source = order("nephrectomy-snomed")
    assert draft.ref == "ServiceRequest/draft-nephrectomy-snomed"
    assert draft.label == "Cytoreductive radical nephrectomy, right"
    assert procedure == {
        "resourceType": "Procedure",
        "id": "order-draft-nephrectomy-snomed",
        "status": "completed",
        "subject": {"reference": "Patient/pt-1"},
        "basedOn": [{"reference": "ServiceRequest/draft-nephrectomy-snomed"}],
        "code": source["code"],
        "bodySite": source["bodySite"],
        "performedDateTime": "2026-11-21",
    }


def test_a_medication_request_becomes_active_from_today_with_the_medication_it_points_to() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "med-cabo",
        "code": {"coding": [{"system": RXNORM, "code": "1790169"}], "text": "Cabometyx 40 mg"},
    }
    draft_order = order("cabozantinib")
    del draft_order["medicationCodeableConcept"]
    draft_order["medicationReference"] = {"reference": "Medication/med-cabo"}
    (draft,) = draft_orders(bundle(draft_order, medication), "pt-1", TODAY)
    signed, pointed = draft.resources
    assert draft.label == "Cabometyx 40 mg"
    assert signed == {
        "resourceType": "MedicationRequest",
        "id": "draft-cabozantinib",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pt-1"},
        "authoredOn": "2026-11-21",
        "medicationReference": {"reference": "Medication/med-cabo"},
    }
    assert pointed == medication


@pytest.mark.parametrize(
    "draft",
    [
        {**order("nephrectomy-cpt"), "id": None},
        order("nephrectomy-cpt", status="revoked"),
        order("nephrectomy-cpt", status="entered-in-error"),
        order("cabozantinib", status="cancelled"),
        order("nephrectomy-cpt", subject={"reference": "Patient/someone-else"}),
        {key: value for key, value in order("nephrectomy-cpt").items() if key != "code"},
        {"resourceType": "NutritionOrder", "id": "diet-1", "status": "draft", "intent": "order"},
    ],
    ids=["no-id", "revoked", "entered-in-error", "cancelled", "other-patient", "no-code", "other-type"],
)
def test_an_order_that_cannot_be_carried_out_for_this_patient_is_passed_over(draft: dict[str, Any]) -> None:
    assert draft_orders(bundle(draft), "pt-1", TODAY) == ()


def test_selections_name_the_orders_considered() -> None:
    drafts = bundle(order("nephrectomy-cpt"), order("cbc"))
    selected = draft_orders(drafts, "pt-1", TODAY, ["ServiceRequest/draft-cbc"])
    assert [draft.ref for draft in selected] == ["ServiceRequest/draft-cbc"]
    assert draft_orders(drafts, "pt-1", TODAY, []) == ()


def test_the_digest_changes_with_what_the_order_would_do_not_with_its_paperwork() -> None:
    (base,) = draft_orders(bundle(order("nephrectomy-cpt")), "pt-1", TODAY)
    paperwork = order("nephrectomy-cpt", status="active", priority="urgent", reasonCode=[{"text": "mRCC"}])
    (same,) = draft_orders(bundle(paperwork), "pt-1", TODAY)
    other_code = copy.deepcopy(order("nephrectomy-cpt"))
    other_code["code"]["coding"][0]["code"] = "50543"
    (changed,) = draft_orders(bundle(other_code), "pt-1", TODAY)
    (renamed,) = draft_orders(bundle(order("nephrectomy-cpt", id="draft-2")), "pt-1", TODAY)
    assert same.digest == base.digest
    assert len({base.digest, changed.digest, renamed.digest}) == 3


def test_a_long_order_id_gives_a_procedure_id_fhir_allows() -> None:
    (draft,) = draft_orders(bundle(order("cbc", id="x" * 64)), "pt-1", TODAY)
    (procedure,) = draft.resources
    assert len(procedure["id"]) <= 64 and procedure["id"].startswith("order-")


def test_a_draft_the_ehr_also_sent_in_the_chart_is_replaced_by_what_it_becomes() -> None:
    in_chart = order("cabozantinib", subject={"reference": "Patient/pt-1"})
    (draft,) = draft_orders(bundle(in_chart), "pt-1", TODAY)
    other = {"resourceType": "Condition", "id": "c-1"}
    assert with_orders([other, in_chart], [draft]) == [other, *draft.resources]
    assert replaces([other, in_chart], [draft]) and not replaces([other], [draft])


ORDERS = ("nephrectomy-cpt", "nephrectomy-snomed", "cabozantinib", "lenvatinib", "axitinib-refill", "cbc")
CHARTS = (
    "fit-namecar",
    "fit-ablation-small-primary",
    "fit-sbrt",
    "fit-ablation-large-primary",
    "excluded-dialysis",
)


@pytest.mark.parametrize("slug", CHARTS)
def test_the_facts_without_the_orders_are_those_of_the_chart_alone(slug: str) -> None:
    """`without_orders` takes the orders' facts out of the facts of the chart with them (so the chart is
    validated once): it must give exactly what `build_facts` gives for the chart alone, lines of therapy
    included."""
    patient_id, resources = chart(slug)
    engine = matcher().engine
    alone = evaluate(engine, resources, patient_id, TODAY).facts
    for names in [(name,) for name in ORDERS] + [ORDERS]:
        orders = draft_orders(bundle(*(order(name) for name in names)), patient_id, TODAY)
        with_them = evaluate(engine, with_orders(resources, orders), patient_id, TODAY).facts
        assert without_orders(with_them, orders) == alone, names


# --- what the orders would take away, for each seed trial


@pytest.mark.parametrize("nephrectomy", ["nephrectomy-cpt", "nephrectomy-snomed"])
def test_a_nephrectomy_ends_namecar_for_its_candidate(nephrectomy: str) -> None:
    assert ended(warn("fit-namecar", order(nephrectomy))) == {
        "NCT06882486": ["primary-in-place", "prior-nephrectomy"]
    }


def test_a_nephrectomy_ends_every_trial_that_needs_the_primary_in_place() -> None:
    assert ended(warn("fit-ablation-small-primary", order("nephrectomy-cpt"))) == {
        "NCT06903312": ["primary-in-place", "recent-major-surgery"],
        "NCT06882486": ["primary-in-place", "prior-nephrectomy"],
    }


def test_a_switch_to_cabozantinib_ends_the_trial_of_the_ongoing_immunotherapy_regimen() -> None:
    assert ended(warn("fit-ablation-small-primary", order("cabozantinib"))) == {
        "NCT06903312": ["anti-pd1-regimen", "prior-treatments"]
    }


def test_a_third_line_ends_the_oligoprogression_trial() -> None:
    assert ended(warn("fit-sbrt", order("lenvatinib"))) == {
        "NCT04299646": ["line-of-therapy", "three-or-more-lines"]
    }


@pytest.mark.parametrize(
    ("slug", "draft"),
    [
        ("fit-namecar", "cbc"),
        ("fit-ablation-small-primary", "cbc"),
        ("fit-sbrt", "cbc"),
        ("fit-ablation-small-primary", "axitinib-refill"),  # a drug of the current line
        ("fit-sbrt", "cabozantinib"),  # the drug of the current line
        ("fit-ablation-large-primary", "cabozantinib"),  # on cabozantinib + nivolumab
        ("fit-namecar", "cabozantinib"),  # NAMECAR reads the treatment history, not the current line
        ("excluded-prior-nephrectomy", "nephrectomy-cpt"),  # no trial card now
        ("not-kidney-cancer", "nephrectomy-snomed"),
    ],
)
def test_an_order_that_ends_no_trial_gets_no_warning(slug: str, draft: str) -> None:
    assert warn(slug, order(draft)) == []


def test_a_chart_that_holds_the_draft_itself_gives_the_same_warning() -> None:
    """Some EHRs return the draft MedicationRequest in the MedicationRequest search too."""
    patient_id, resources = chart("fit-ablation-small-primary")
    draft = order("cabozantinib", subject={"reference": f"Patient/{patient_id}"})
    orders = draft_orders(bundle(draft), patient_id, TODAY)
    warnings = matcher().warn([*resources, draft], orders, patient_id, TODAY)
    assert ended(warnings) == {"NCT06903312": ["anti-pd1-regimen", "prior-treatments"]}


def test_the_warning_names_only_the_orders_that_end_the_trial() -> None:
    (warning,) = warn("fit-namecar", order("cbc"), order("nephrectomy-cpt"))
    assert [o.ref for o in warning.impact.orders] == ["ServiceRequest/draft-nephrectomy-cpt"]
    assert warning.card["extension"][ORDER_IMPACT_EXTENSION]["orders"] == [
        "ServiceRequest/draft-nephrectomy-cpt"
    ]


def test_a_warning_is_a_contract_card_with_a_referral_and_the_removal_of_the_order() -> None:
    (warning,) = warn("fit-namecar", order("nephrectomy-cpt"))
    card = warning.card
    assert card["indicator"] == "warning"
    assert card["summary"] == (
        "Cytoreductive nephrectomy (laparoscopic radical) may end eligibility for NAMECAR (NCT06882486)"
    )
    assert card["source"]["topic"] == {
        "system": "urn:trialmatch:trial",
        "code": "NCT06882486",
        "display": "Trial NCT06882486",
    }
    assert card["source"]["label"] == matcher().cards.source_label
    referral, removal = card["suggestions"]
    assert referral["label"] == "Refer to the trial team before signing"
    assert referral["actions"][0]["resource"]["resourceType"] == "ServiceRequest"
    assert removal["actions"] == [
        {
            "type": "delete",
            "description": "Remove Cytoreductive nephrectomy (laparoscopic radical) from the orders to sign",
            "resourceId": "ServiceRequest/draft-nephrectomy-cpt",
        }
    ]
    assert {reason["code"] for reason in card["overrideReasons"]} >= {"order-needed-now", "patient-refuses"}
    criteria = card["extension"][ORDER_IMPACT_EXTENSION]["criteria"]
    assert criteria[0] == {
        "id": "primary-in-place",
        "text": "With primary tumor still in place (no primary cytoreductive nephrectomy)",
        "reason": "nephrectomy recorded",
    }
    assert "With primary tumor still in place" in card["detail"]  # the detail names the criterion it ends
    assert empty_values(card) == []


def test_summaries_stay_under_140_characters_however_long_the_order_name() -> None:
    long_name = order("nephrectomy-cpt")
    long_name["code"]["text"] = "Cytoreductive nephrectomy " * 10
    for warning in warn("fit-ablation-small-primary", long_name):
        assert len(warning.card["summary"]) < 140
        assert len(warning.card["detail"]) <= 800
