"""GET /openapi.json: the OpenAPI 3.1 description, embedding the schemas requests are validated with."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app

from cds_service.hooks import HOOKS
from cds_service.web.auth import authentication_required
from cds_service.web.hooks import STATE_KEY

bp = Blueprint("openapi", __name__)

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

# components/schemas entry -> the validation schema file it is filled from
_EMBEDDED = {
    "HookRequest": "cds-hooks-request.schema.json",
    "Feedback": "cds-hooks-feedback.schema.json",
    "Cards": "cds-hooks-response.schema.json",
}


def _read(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    return document


def _embed(document: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Put a standalone JSON Schema under components/schemas/<name>, hoisting its $defs as <name>_<def>."""
    moved = json.loads(json.dumps(schema).replace('"#/$defs/', f'"#/components/schemas/{name}_'))
    schemas = document["components"]["schemas"]
    for def_name, definition in moved.pop("$defs", {}).items():
        schemas[f"{name}_{def_name}"] = definition
    schemas[name] = {key: value for key, value in moved.items() if key not in ("$schema", "$id")}


def openapi_document(services: tuple[tuple[str, str], ...], sandbox: bool = False) -> dict[str, Any]:
    """Return the OpenAPI description for these (service id, hook) pairs, as a fresh object."""
    document: dict[str, Any] = json.loads(_openapi_text(services, sandbox))
    return document


@cache
def _openapi_text(services: tuple[tuple[str, str], ...], sandbox: bool) -> str:
    """The description with the validation schemas embedded and made as precise as the running service:
    its service ids and hooks, https-only `fhirServer` outside sandbox mode, and in sandbox mode an optional
    JWT (an empty security requirement)."""
    document = _read("openapi.json")
    for name, file_name in _EMBEDDED.items():
        _embed(document, name, _read(file_name))
    service_ids = list(dict.fromkeys(service_id for service_id, _ in services))
    for path in ("/cds-services/{id}", "/cds-services/{id}/feedback"):
        document["paths"][path]["parameters"][0]["schema"] = {"enum": service_ids}
    hook_names = list(dict.fromkeys(hook for _, hook in services))
    request_schema = document["components"]["schemas"]["HookRequest"]
    request_schema["allOf"] = [  # each hook's context, as its handler checks it
        {
            "if": {"properties": {"hook": {"const": name}}, "required": ["hook"]},
            "then": {"properties": {"context": dict(HOOKS[name].context)}},
        }
        for name in hook_names
    ]
    request = request_schema["properties"]
    request["hook"] = {"enum": hook_names}
    if sandbox:
        document["security"] = [*document["security"], {}]
    else:
        request["fhirServer"]["pattern"] = request["fhirServer"]["pattern"].replace("^https?://", "^https://")
    return json.dumps(document)


def described_services() -> tuple[tuple[str, str], ...]:
    """(service id, hook) of every discovery entry of the running app."""
    return tuple((s.id, s.hook) for s in current_app.extensions[STATE_KEY].catalog.services)


@bp.get("/openapi.json")
def openapi() -> Response:
    text = _openapi_text(described_services(), not authentication_required())
    return Response(text, mimetype="application/json")
