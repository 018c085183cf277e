"""Checks every hook answer passes: the CDS Hooks 2.0 response schema and "no null, "", [] or {} anywhere"."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from cds_service.hook_request import SCHEMA_DIR

_RESPONSE = Draft202012Validator(
    json.loads((SCHEMA_DIR / "cds-hooks-response.schema.json").read_text(encoding="utf-8"))
)


def empty_values(value: Any, path: str = "$") -> list[str]:
    """JSON paths of every null, "", [] or {} inside `value` (CDS Hooks: omit optional fields instead)."""
    if value is None or value in ("", [], {}):
        return [path]
    if isinstance(value, dict):
        return [p for key, child in value.items() for p in empty_values(child, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for i, child in enumerate(value) for p in empty_values(child, f"{path}[{i}]")]
    return []


def assert_valid_hook_response(body: Any) -> list[dict[str, Any]]:
    """Assert a service answer is valid CDS Hooks 2.0 without empty values; return its cards."""
    errors = [f"{e.json_path}: {e.message}" for e in _RESPONSE.iter_errors(body)]
    assert errors == []
    assert empty_values(body["cards"], "$.cards") in ([], ["$.cards"])  # only the top-level list may be empty
    assert set(body) <= {"cards", "systemActions"}
    return body["cards"]
