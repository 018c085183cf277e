"""GET /openapi.json: the OpenAPI 3.1 description, embedding the schemas requests are validated with."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("openapi", __name__)

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

# components/schemas entry -> the validation schema file it is filled from
_EMBEDDED = {
    "HookRequest": "cds-hooks-request.schema.json",
    "Feedback": "cds-hooks-feedback.schema.json",
    "Cards": "cds-hooks-response.schema.json",
}


def _read(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))


def _embed(document: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Put a standalone JSON Schema under components/schemas/<name>, hoisting its $defs as <name>_<def>."""
    moved = json.loads(json.dumps(schema).replace('"#/$defs/', f'"#/components/schemas/{name}_'))
    schemas = document["components"]["schemas"]
    for def_name, definition in moved.pop("$defs", {}).items():
        schemas[f"{name}_{def_name}"] = definition
    schemas[name] = {key: value for key, value in moved.items() if key not in ("$schema", "$id")}


@cache
def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI description with the service's validation schemas embedded."""
    document = _read("openapi.json")
    for name, file_name in _EMBEDDED.items():
        _embed(document, name, _read(file_name))
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
