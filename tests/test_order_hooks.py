"""order-select and order-sign through the service (contract, "Order warnings").

Discovery lists both services with the patient-view prefetch; the shipped example requests give their golden
cards; a warning shown at order-select is not repeated at order-sign the same day for the same draft orders
(two apps on one database stand for two workers or a restart; on SQLite and PostgreSQL), unless the drafts
changed, the day changed or the request turns the filter off; the request schema of each hook; the audit
trail and feedback of a warning card; the public CDS Hooks sandbox's Rx View and Rx Sign drafts.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from hook_checks import assert_valid_hook_response
from sqlalchemy import select

from cds_service.storage import Storage, audit, audit_card

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUESTS = REPO_ROOT / "examples" / "requests"
SELECT = "/cds-services/mrcc-trials-order-select"
SIGN = "/cds-services/mrcc-trials-order-sign"
PATIENT_VIEW = "/cds-services/mrcc-trials"
IMPACT = "org.trialmatch.order-impact"
NAMECAR = "NCT06882486"
NEPHRECTOMY = "ServiceRequest/draft-nephrectomy-cpt"


def _load_gallery() -> ModuleType:
    """examples/build_examples.py, which builds the example requests and goldens checked here."""
    spec = importlib.util.spec_from_file_location(
        "build_examples", REPO_ROOT / "examples" / "build_examples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gallery = _load_gallery()
EXAMPLES = [f"{hook}-{order}-{slug}" for hook, order, slug in gallery.ORDER_EXAMPLES]


def example(name: str) -> dict[str, Any]:
    return json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))


def gallery_request(hook: str, order: str, slug: str) -> dict[str, Any]:
    """The order hook request for a gallery patient and a draft order of examples/orders."""
    entry = next(e for e in gallery.manifest() if gallery.slug_of(e) == slug)
    return gallery.order_request(hook, order, slug, gallery.load_bundle(entry))


def sign_request() -> dict[str, Any]:
    """order-sign of a laparoscopic radical nephrectomy for the NAMECAR candidate."""
    return example("order-sign-nephrectomy-cpt-fit-namecar")


def select_request() -> dict[str, Any]:
    """The same nephrectomy, just selected (order-select)."""
    request = sign_request()
    request["hook"] = "order-select"
    request["context"]["selections"] = [NEPHRECTOMY]
    return request


def post(app: Flask, path: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    response = app.test_client().post(path, json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    return assert_valid_hook_response(response.get_json())


def warned_trials(cards: list[dict[str, Any]]) -> list[str]:
    return [card["extension"][IMPACT]["nctId"] for card in cards]


def test_discovery_lists_both_order_hooks_with_the_patient_view_prefetch(client: Any) -> None:
    services = {s["hook"]: s for s in client.get("/cds-services").get_json()["services"]}
    assert services["order-select"]["id"] == "mrcc-trials-order-select"
    assert services["order-sign"]["id"] == "mrcc-trials-order-sign"
    for hook in ("order-select", "order-sign"):
        assert services[hook]["prefetch"] == services["patient-view"]["prefetch"]


@pytest.mark.parametrize(("hook", "order", "slug"), gallery.ORDER_EXAMPLES)
def test_the_example_request_is_built_from_the_gallery(hook: str, order: str, slug: str) -> None:
    assert example(f"{hook}-{order}-{slug}") == gallery_request(hook, order, slug)


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_service_answers_the_example_request_with_the_golden_warnings(name: str, app: Flask) -> None:
    request = example(name)
    path = SELECT if request["hook"] == "order-select" else SIGN
    golden = json.loads((REPO_ROOT / "examples" / "golden" / f"{name}.cards.json").read_text("utf-8"))
    assert post(app, path, request) == golden["cards"]


def test_the_golden_namecar_warning_names_the_nephrectomy_and_the_criteria_it_ends() -> None:
    golden = json.loads(
        (REPO_ROOT / "examples" / "golden" / "order-sign-nephrectomy-cpt-fit-namecar.cards.json").read_text()
    )
    (card,) = golden["cards"]
    assert card["indicator"] == "warning"
    assert card["extension"][IMPACT] == {
        "nctId": NAMECAR,
        "orders": [NEPHRECTOMY],
        "criteria": [
            {
                "id": "primary-in-place",
                "text": "With primary tumor still in place (no primary cytoreductive nephrectomy)",
                "reason": "nephrectomy recorded",
            },
            {
                "id": "prior-nephrectomy",
                "text": "Patients who have undergone prior cytoreductive nephrectomy",
                "reason": "Cytoreductive nephrectomy (laparoscopic radical) on 2026-11-21",
            },
        ],
    }


@pytest.mark.parametrize(
    ("order", "slug", "warned"),
    [
        ("nephrectomy-cpt", "fit-namecar", [NAMECAR]),
        ("cabozantinib", "fit-ablation-small-primary", ["NCT06903312"]),
        ("lenvatinib", "fit-sbrt", ["NCT04299646"]),
        ("cbc", "fit-namecar", []),
        ("axitinib-refill", "fit-ablation-small-primary", []),  # a drug the patient already takes
        ("nephrectomy-cpt", "excluded-prior-nephrectomy", []),  # no trial card now
    ],
)
@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_each_hook_warns_about_each_seed_trial_an_order_would_end(
    app: Flask, hook: str, order: str, slug: str, warned: list[str]
) -> None:
    path = SELECT if hook == "order-select" else SIGN
    assert warned_trials(post(app, path, gallery_request(hook, order, slug))) == warned


# --- no double warning (PDDI-CDS filter-out-repeated-alerts)


@pytest.fixture
def two_workers(make_sandbox_app: Any, database_url: str) -> tuple[Flask, Flask]:
    config = {"DATABASE_URL": database_url, "TODAY": "2026-11-21"}
    return make_sandbox_app(**config), make_sandbox_app(**config)


def test_a_warning_shown_at_order_select_is_not_repeated_at_order_sign_the_same_day(two_workers) -> None:
    first, second = two_workers
    assert warned_trials(post(first, SELECT, select_request())) == [NAMECAR]
    assert warned_trials(post(first, SELECT, select_request())) == [NAMECAR]  # order-select always shows it
    assert post(second, SIGN, sign_request()) == []
    with_a_blood_count = sign_request()  # another draft that ends nothing: the same warning
    with_a_blood_count["context"]["draftOrders"]["entry"].append(
        {"resource": gallery.draft_order("cbc", with_a_blood_count["context"]["patientId"])}
    )
    assert post(second, SIGN, with_a_blood_count) == []


def test_the_warning_is_shown_again_at_order_sign_when_the_drafts_changed(two_workers) -> None:
    first, second = two_workers
    post(first, SELECT, select_request())
    changed = sign_request()
    changed["context"]["draftOrders"]["entry"][0]["resource"]["code"]["coding"][0]["code"] = "50543"
    assert warned_trials(post(second, SIGN, changed)) == [NAMECAR]  # a partial nephrectomy now


def test_the_warning_is_shown_again_at_order_sign_on_another_day(
    make_sandbox_app: Any, database_url: str
) -> None:
    today = make_sandbox_app(DATABASE_URL=database_url, TODAY="2026-11-21")
    post(today, SELECT, select_request())
    tomorrow = make_sandbox_app(DATABASE_URL=database_url, TODAY="2026-11-22")
    assert warned_trials(post(tomorrow, SIGN, sign_request())) == [NAMECAR]


def test_order_sign_repeats_the_warning_when_the_request_turns_the_filter_off(two_workers) -> None:
    first, second = two_workers
    post(first, SELECT, select_request())
    unfiltered = {
        **sign_request(),
        "extension": {"pddi-configuration-items": {"filter-out-repeated-alerts": False}},
    }
    assert warned_trials(post(second, SIGN, unfiltered)) == [NAMECAR]


def test_order_sign_shows_its_warnings_when_the_database_cannot_say_which_were_shown(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(patient_id: str, day: object) -> None:
        raise OSError("the database does not answer")

    post(app, SELECT, select_request())
    monkeypatch.setattr(app.extensions["cds"].storage, "warned", unavailable)
    assert warned_trials(post(app, SIGN, sign_request())) == [NAMECAR]  # fails open, and logs it


def test_order_select_considers_only_the_selected_orders(app: Flask) -> None:
    request = select_request()
    patient_id = request["context"]["patientId"]
    request["context"]["draftOrders"]["entry"].append({"resource": gallery.draft_order("cbc", patient_id)})
    request["context"]["selections"] = ["ServiceRequest/draft-cbc"]
    assert post(app, SELECT, request) == []


# --- the request schema of each hook


@pytest.mark.parametrize(
    ("path", "request_of", "remove", "named"),
    [
        (SIGN, sign_request, "draftOrders", "'draftOrders' is a required property"),
        (SELECT, select_request, "draftOrders", "'draftOrders' is a required property"),
        (SELECT, select_request, "selections", "'selections' is a required property"),
    ],
)
def test_a_missing_context_field_is_a_400_naming_it(client: Any, path, request_of, remove, named) -> None:
    request = request_of()
    del request["context"][remove]
    response = client.post(path, json=request)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid-request", "message": f"$.context: {named}"}


@pytest.mark.parametrize(
    ("path", "request_of", "field", "value", "message"),
    [
        (
            SIGN,
            sign_request,
            "draftOrders",
            {"resourceType": "Patient"},
            "$.context.draftOrders.resourceType",
        ),
        (SIGN, sign_request, "draftOrders", [], "$.context.draftOrders: must be of type object"),
        (SELECT, select_request, "selections", NEPHRECTOMY, "$.context.selections: must be of type array"),
        (SELECT, select_request, "selections", [""], "$.context.selections[0]: must not be empty"),
    ],
)
def test_a_malformed_context_field_is_a_400_naming_its_path(
    client: Any, path, request_of, field, value, message
):
    request = request_of()
    request["context"][field] = value
    response = client.post(path, json=request)
    assert response.status_code == 400
    assert response.get_json()["message"].startswith(message)


def test_a_patient_view_call_to_an_order_service_is_the_wrong_hook(client: Any) -> None:
    response = client.post(SIGN, json=example("patient-view-fit-namecar"))
    assert response.status_code == 400
    assert response.get_json()["error"] == "wrong-hook"


# --- audit trail and feedback


def test_a_warning_is_audited_and_answered_like_a_trial_card(
    make_sandbox_app: Any, database_url: str
) -> None:
    app = make_sandbox_app(DATABASE_URL=database_url, TODAY="2026-11-21")
    (warning,) = post(app, SIGN, sign_request())
    feedback = {
        "card": warning["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": warning["overrideReasons"][0]},
        "outcomeTimestamp": "2026-11-21T10:00:00Z",
    }
    response = app.test_client().post(f"{SIGN}/feedback", json={"feedback": [feedback]})
    assert response.status_code == 200
    storage = Storage(database_url)
    try:
        with storage.engine.connect() as connection:
            (call,) = connection.execute(select(audit.c.service_id, audit.c.hook, audit.c.cards)).all()
            (row,) = connection.execute(
                select(audit_card.c.nct_id, audit_card.c.kind, audit_card.c.orders)
            ).all()
        assert tuple(call) == (
            "mrcc-trials-order-sign",
            "order-sign",
            [{"uuid": warning["uuid"], "nctId": NAMECAR, "orders": [NEPHRECTOMY]}],
        )
        assert tuple(row) == (NAMECAR, "order-warning", [NEPHRECTOMY])
        stats = {trial.nct_id: trial for trial in storage.feedback_stats(datetime.now(UTC), 30)}
        assert (stats[NAMECAR].warnings, stats[NAMECAR].warnings_overridden) == (1, {"order-needed-now": 1})
        (exported,) = storage.iter_feedback()
        assert (exported["nctId"], exported["serviceId"]) == (NAMECAR, "mrcc-trials-order-sign")
    finally:
        storage.close()
    # a dismissed warning does not quiet the trial's card at chart opening
    cards = post(app, PATIENT_VIEW, example("patient-view-fit-namecar"))
    assert NAMECAR in [card["extension"]["org.trialmatch.eligibility"]["nctId"] for card in cards]


# --- the public CDS Hooks sandbox (its Rx View and Rx Sign screens send MedicationRequest drafts)


def rx_draft(patient_id: str, *, rx_view: bool) -> dict[str, Any]:
    """The MedicationRequest the sandbox builds (src/reducers/medication-reducers.js at 3b7e255): status
    draft, `category` an object, `reasonCode` the chosen Condition's code (Rx View only), a product-level
    RxNorm code."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": "request-123",
        "status": "draft",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": "2027-01-04",
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [
                    {"doseQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "{pill}"}}
                ],
            }
        ],
        "dispenseRequest": {
            "expectedSupplyDuration": {
                "value": 30,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            }
        },
        "intent": "order",
        "category": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "community",
                }
            ]
        },
        "medicationCodeableConcept": {
            "text": "cabozantinib 80 MG Oral Capsule [Cometriq]",
            "coding": [
                {
                    "display": "cabozantinib 80 MG Oral Capsule [Cometriq]",
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "1363284",
                }
            ],
        },
    }
    if rx_view:
        resource["reasonCode"] = {"coding": [{"system": "http://snomed.info/sct", "code": "254915003"}]}
    return resource


def sandbox_request(hook: str) -> dict[str, Any]:
    """What the sandbox posts: no Bundle.type, no encounterId, its default user."""
    request = example("patient-view-fit-ablation-small-primary")
    patient_id = request["context"]["patientId"]
    draft = rx_draft(patient_id, rx_view=hook == "order-select")
    context = {
        "patientId": patient_id,
        "userId": "Practitioner/COREPRACTITIONER1",
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]},
    }
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/request-123"]
    return {**request, "hook": hook, "context": context}


def test_the_sandbox_rx_view_and_rx_sign_drafts_reach_the_services(two_workers) -> None:
    first, second = two_workers
    (warning,) = post(first, SELECT, sandbox_request("order-select"))
    assert warning["summary"].startswith("cabozantinib 80 MG Oral Capsule [Cometriq] may end eligibility for")
    assert warning["summary"].endswith("(NCT06903312)") and len(warning["summary"]) < 140
    assert warning["suggestions"][1]["actions"][0]["resourceId"] == "MedicationRequest/request-123"
    assert post(second, SIGN, sandbox_request("order-sign")) == []  # the same drug: already warned
    not_chosen_yet = sandbox_request("order-select")  # Rx View before a drug is chosen
    del not_chosen_yet["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    assert post(first, SELECT, not_chosen_yet) == []
