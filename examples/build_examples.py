"""Build the example hook requests (and, with --golden, the golden hook responses) from the patient gallery.

    .venv/bin/python examples/build_examples.py            # examples/requests/patient-view-<slug>.json
    .venv/bin/python examples/build_examples.py --golden   # also examples/golden/<slug>.cards.json

Every patient named in examples/patients/manifest.yaml gets a CDS Hooks 2.0 patient-view request whose
prefetch holds the chart split into the prefetch keys of mappings/services.yaml by cds_service.bundle_file
(Medication resources ride with the MedicationRequests, as `_include` brings them). The golden file is the
hook response {"cards": [...]} the Matcher gives for the chart on the gallery's "today", with card uuids from
a fresh counter per patient (the same numbering as the tests' `uuid_factory` fixture). Run it again with
--golden after any change to the mappings: the catalog version inside every card changes with them.

The order examples (ORDER_EXAMPLES) are such requests for order-select or order-sign, with one draft order
of examples/orders/ in `context.draftOrders` (selected, for order-select):
examples/requests/<hook>-<order>-<slug>.json and, with --golden, the warnings the Matcher gives for it,
examples/golden/<hook>-<order>-<slug>.cards.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from cds_service.bundle_file import prefetch_for

EXAMPLES_DIR = Path(__file__).resolve().parent
PATIENTS_DIR = EXAMPLES_DIR / "patients"
ORDERS_DIR = EXAMPLES_DIR / "orders"
REQUESTS_DIR = EXAMPLES_DIR / "requests"
GOLDEN_DIR = EXAMPLES_DIR / "golden"
REPO_ROOT = EXAMPLES_DIR.parent
TODAY = "2026-11-21"
USER_ID = "Practitioner/onc-1"
HOOK_INSTANCE_NAMESPACE = uuid.UUID("6f1c1a52-93a4-4c1e-9d0a-2f1b0c7e5a11")

SERVICES_FILE = REPO_ROOT / "mappings" / "services.yaml"
SERVICE_ID = "mrcc-trials"
# (hook, draft order of examples/orders/, gallery patient): an order that ends a trial of each seed trial, and
# one that changes nothing.
ORDER_EXAMPLES = (
    ("order-sign", "nephrectomy-cpt", "fit-namecar"),
    ("order-select", "nephrectomy-snomed", "fit-ablation-small-primary"),
    ("order-select", "cabozantinib", "fit-ablation-small-primary"),
    ("order-sign", "lenvatinib", "fit-sbrt"),
    ("order-select", "cbc", "fit-namecar"),
)


def manifest() -> list[dict[str, Any]]:
    """The gallery's entries, in manifest order."""
    return yaml.safe_load((PATIENTS_DIR / "manifest.yaml").read_text(encoding="utf-8"))


def slug_of(entry: Mapping[str, Any]) -> str:
    return Path(entry["file"]).stem


def load_bundle(entry: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads((PATIENTS_DIR / entry["file"]).read_text(encoding="utf-8"))


def resources_of(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]


def patient_of(bundle: Mapping[str, Any]) -> dict[str, Any]:
    (patient,) = (r for r in resources_of(bundle) if r["resourceType"] == "Patient")
    return patient


def today() -> date:
    """The day the gallery's charts were written for."""
    return date.fromisoformat(TODAY)


def card_uuids() -> Callable[[], str]:
    """Card uuids 00000000-0000-4000-8000-000000000001, ...002, ...: one counter per patient."""
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def prefetch_templates() -> dict[str, str]:
    """The prefetch templates of the gallery's service, as discovery lists them (mappings/services.yaml)."""
    services = yaml.safe_load(SERVICES_FILE.read_text(encoding="utf-8"))["services"]
    (service,) = (s for s in services if s["id"] == SERVICE_ID)
    return service["prefetch"]


def _base_url(bundle: Mapping[str, Any]) -> str:
    """The FHIR base of the chart, from the fullUrl of its Patient entry."""
    (full_url,) = (e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return full_url.rsplit("/Patient/", 1)[0]


def hook_request(slug: str, bundle: Mapping[str, Any]) -> dict[str, Any]:
    """A CDS Hooks 2.0 patient-view request with the whole chart prefetched: split into the service's prefetch
    keys by the command line's own code (cds_service.bundle_file), then given the chart's fullUrls, its order
    and a self link, as an EHR's searchset would have them."""
    patient_id = patient_of(bundle)["id"]
    templates = prefetch_templates()
    prefetch = prefetch_for(templates, resources_of(bundle), patient_id)
    position = {id(e["resource"]): i for i, e in enumerate(bundle["entry"])}
    full_url = {id(e["resource"]): e["fullUrl"] for e in bundle["entry"]}
    base = _base_url(bundle)
    for key, value in prefetch.items():
        if value is None or value["resourceType"] != "Bundle":
            continue
        value["link"] = [
            {"relation": "self", "url": f"{base}/{templates[key].partition('?')[0]}?patient={patient_id}"}
        ]
        value["entry"] = [
            {"fullUrl": full_url[id(e["resource"])], **e}
            for e in sorted(value["entry"], key=lambda e: position[id(e["resource"])])
        ]
    return {
        "hookInstance": str(uuid.uuid5(HOOK_INSTANCE_NAMESPACE, slug)),
        "hook": "patient-view",
        "context": {"userId": USER_ID, "patientId": patient_id},
        "prefetch": prefetch,
    }


def draft_order(order: str, patient_id: str) -> dict[str, Any]:
    """The draft order examples/orders/<order>.json, for this patient."""
    resource = json.loads((ORDERS_DIR / f"{order}.json").read_text(encoding="utf-8"))
    return {**resource, "subject": {"reference": f"Patient/{patient_id}"}}


def order_request(hook: str, order: str, slug: str, bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The patient's request for an order hook, with the draft order `order` (selected, for order-select)."""
    request = hook_request(slug, bundle)
    resource = draft_order(order, request["context"]["patientId"])
    context = {
        **request["context"],
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]},
    }
    if hook == "order-select":
        context["selections"] = [f"{resource['resourceType']}/{resource['id']}"]
    name = f"{hook}-{order}-{slug}"
    return {
        **request,
        "hook": hook,
        "hookInstance": str(uuid.uuid5(HOOK_INSTANCE_NAMESPACE, name)),
        "context": context,
    }


def order_response(matcher: Any, request: Mapping[str, Any], bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The order hook's response the Matcher gives for the chart and the request's draft orders."""
    from cds_service.draft_orders import draft_orders

    context = request["context"]
    patient_id = context["patientId"]
    orders = draft_orders(context["draftOrders"], patient_id, today(), context.get("selections"))
    return {"cards": [w.card for w in matcher.warn(resources_of(bundle), orders, patient_id, today())]}


def hook_response(matcher: Any, bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The hook response the Matcher gives for the chart: {"cards": [...]}."""
    output = matcher.match(resources_of(bundle), patient_of(bundle)["id"], today())
    return {"cards": output.cards}


def gallery_matchers() -> Callable[[Callable[[], str]], Any]:
    """Matchers on the bundled catalog with the gallery's "today", one per uuid factory (the catalog is loaded
    once; imported late, as the requests need no engine)."""
    from cds_service.catalog import load_catalog
    from cds_service.config import load_settings
    from cds_service.pipeline import Matcher

    settings = load_settings({"today": TODAY}, environ={})
    catalog = load_catalog(settings.mappings_dir)
    return lambda uuid_factory: Matcher(catalog, settings, uuid_factory)


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build(golden: bool) -> Iterator[Path]:
    REQUESTS_DIR.mkdir(exist_ok=True)
    if golden:
        GOLDEN_DIR.mkdir(exist_ok=True)
        matcher_for = gallery_matchers()
    for entry in manifest():
        slug, bundle = slug_of(entry), load_bundle(entry)
        request_path = REQUESTS_DIR / f"patient-view-{slug}.json"
        request_path.write_text(dumps(hook_request(slug, bundle)), encoding="utf-8")
        yield request_path
        if golden:
            golden_path = GOLDEN_DIR / f"{slug}.cards.json"
            golden_path.write_text(dumps(hook_response(matcher_for(card_uuids()), bundle)), encoding="utf-8")
            yield golden_path
    entries = {slug_of(entry): entry for entry in manifest()}
    for hook, order, slug in ORDER_EXAMPLES:
        bundle, name = load_bundle(entries[slug]), f"{hook}-{order}-{slug}"
        request = order_request(hook, order, slug, bundle)
        request_path = REQUESTS_DIR / f"{name}.json"
        request_path.write_text(dumps(request), encoding="utf-8")
        yield request_path
        if golden:
            golden_path = GOLDEN_DIR / f"{name}.cards.json"
            response = order_response(matcher_for(card_uuids()), request, bundle)
            golden_path.write_text(dumps(response), encoding="utf-8")
            yield golden_path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--golden", action="store_true", help="also write examples/golden/<slug>.cards.json")
    args = parser.parse_args()
    for path in build(args.golden):
        print(path.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
