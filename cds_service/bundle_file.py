"""FHIR data from a file, made into the patient-view request an EHR would send for it (`cds-trials evaluate`).

The prefetch is filled from the file's resources by type (a read template gets the resource, a search template
a searchset Bundle), so the command line runs the hook's own path: prefetch -> patient data -> facts -> cards.
A file that is a CDS Hooks request already is used as the service would read it.

Raises BundleFileError (cds_service.errors): unreadable file, not FHIR, or not exactly one Patient; a request
file raises the RequestError the service would answer with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cds_service.errors import BundleFileError
from cds_service.fhir import bundles
from cds_service.hook_request import HookRequest, parse_hook_request

CLI_USER = "Practitioner/cds-trials-cli"
NEITHER = (
    "expected a FHIR Bundle, a FHIR resource or a list of resources (each with a resourceType), "
    "or a CDS Hooks request (an object with hook, hookInstance, context and prefetch)"
)
NO_ORDERS: Mapping[str, Mapping[str, Any]] = {  # the context of an order hook's request without orders
    "order-select": {"draftOrders": {"resourceType": "Bundle", "type": "collection"}, "selections": []},
    "order-sign": {"draftOrders": {"resourceType": "Bundle", "type": "collection"}},
}
_TEMPLATE_TYPE = re.compile(r"^([A-Za-z]+)(/|\?|$)")


def resources_of(data: Any) -> Iterator[dict[str, Any]]:
    """Yield the resources of a Bundle (any type, nested Bundles too), a resource, or a list of them."""
    for item in data if isinstance(data, list) else [data]:
        if not bundles.is_resource(item):
            raise BundleFileError(NEITHER)
        yield from bundles.resources(item)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleFileError(f"{path}: cannot read JSON: {exc}") from None


def _is_hook_request(document: Any) -> bool:
    """Whether a JSON document is meant as a CDS Hooks request (not a FHIR resource)."""
    return isinstance(document, dict) and "hook" in document and "resourceType" not in document


def read_hook_request(
    path: Path, hook: str, templates: Mapping[str, str], hook_instance: str, max_depth: int
) -> HookRequest:
    """The request for a file: a CDS Hooks request as the service reads it, or FHIR data made into one."""
    document = _read_json(path)
    if _is_hook_request(document):
        return parse_hook_request(Path(path).read_bytes(), {hook}, max_depth=max_depth)
    try:
        resources = list(resources_of(document))
    except BundleFileError:
        raise BundleFileError(f"{path}: {NEITHER}") from None
    return hook_request_for(hook, templates, resources, hook_instance)


def patient_id_of(resources: Sequence[Mapping[str, Any]]) -> str:
    """Return the id of the one Patient among the resources."""
    ids = sorted({str(r.get("id")) for r in resources if r.get("resourceType") == "Patient"})
    if len(ids) != 1 or ids[0] in ("", "None"):
        raise BundleFileError(f"expected exactly one Patient with an id, found {len(ids)}")
    return ids[0]


def _searchset(matches: list[dict[str, Any]], included: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [{"resource": r, "search": {"mode": "match"}} for r in matches]
    entries += [{"resource": r, "search": {"mode": "include"}} for r in included]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(matches), "entry": entries}


def prefetch_for(
    templates: Mapping[str, str], resources: Sequence[dict[str, Any]], patient_id: str
) -> dict[str, Any]:
    """Fill each prefetch template from the resources by type; `_include=...:medication` adds Medications.

    Other search parameters are not applied: the service reads what it needs from what it gets.
    """
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        match = _TEMPLATE_TYPE.match(template)
        if match is None:
            continue
        resource_type, separator = match.groups()
        same_type = [r for r in resources if r.get("resourceType") == resource_type]
        if separator == "/":
            wanted = [r for r in same_type if resource_type != "Patient" or r.get("id") == patient_id]
            prefetch[key] = wanted[0] if wanted else None
            continue
        query = parse_qs(template.partition("?")[2])
        includes_medication = any(value.endswith(":medication") for value in query.get("_include", ()))
        included = [r for r in resources if includes_medication and r.get("resourceType") == "Medication"]
        prefetch[key] = _searchset(same_type, included)
    return prefetch


def hook_request_for(
    hook: str, templates: Mapping[str, str], resources: Sequence[dict[str, Any]], hook_instance: str
) -> HookRequest:
    """Return the request an EHR would send for these resources, with every prefetch key filled (an order
    hook's request with no draft orders)."""
    patient_id = patient_id_of(resources)
    return HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        context={"userId": CLI_USER, "patientId": patient_id, **NO_ORDERS.get(hook, {})},
        prefetch=prefetch_for(templates, resources, patient_id),
    )
