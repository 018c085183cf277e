"""A fake FHIR server (`responses`) answering the service's prefetch queries; the stored request stubs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import responses

from cds_service.catalog import ServiceDefinition, load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR, load_settings
from cds_service.patient_data import expand_template
from cds_service.pipeline import Matcher

BASE = "https://fhir.example.org/r4"
TOKEN = "test-access-token"
REQUESTS_DIR = Path(__file__).parent / "data" / "requests"


def load_request(name: str) -> dict[str, Any]:
    return json.loads((REQUESTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def service_templates() -> dict[str, str]:
    """Prefetch templates of the bundled service, read straight from the catalog file."""
    return dict(bundled_service().prefetch)


@cache
def bundled_service() -> ServiceDefinition:
    """The bundled patient-view service as discovery lists it (the Observation codes the rules read)."""
    return Matcher(load_catalog(DEFAULT_MAPPINGS_DIR), load_settings({}, environ={})).catalog.services[0]


def key_url(key: str, context: Mapping[str, Any]) -> str:
    """The URL the service must fetch for one prefetch key."""
    return f"{BASE}/{expand_template(service_templates()[key], context)}"


def serve(rsps: responses.RequestsMock, key: str, context: Mapping[str, Any], **answer: Any) -> None:
    """Answer the query of one prefetch key (default: 200 with the `full-prefetch` stub's data for it)."""
    if "json" not in answer and "body" not in answer:
        answer["json"] = load_request("full-prefetch")["prefetch"][key]
    rsps.get(key_url(key, context), **answer)


def bearer_headers(rsps: responses.RequestsMock) -> list[str | None]:
    return [call.request.headers.get("Authorization") for call in rsps.calls]
