"""CDS Hooks 2.0 request bodies (service calls and feedback): parsed, validated, turned into plain data.

Raises `RequestError`s (cds_service.errors): MalformedJson, InvalidBody, WrongHook, each with a message naming
the JSON path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from cds_service.errors import InvalidBody, MalformedJson, WrongHook

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class FhirAuthorization:
    access_token: str = field(repr=False)  # transient: never logged, stored or shown
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    context: Mapping[str, Any]
    fhir_server: str | None = None
    fhir_authorization: FhirAuthorization | None = None
    prefetch: Mapping[str, Any] = field(default_factory=dict, repr=False)  # key absent = not prefetched
    extension: Mapping[str, Any] = field(default_factory=dict)  # the request's `extension` (hook options)

    @property
    def patient_id(self) -> str | None:
        return self.context.get("patientId")

    @property
    def access_token(self) -> str | None:
        return self.fhir_authorization.access_token if self.fhir_authorization else None


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / schema_name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def load_json_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """Parse a request body that must be a JSON object nested at most `max_depth` levels.

    The depth is told from the bytes first, while they are fresh in the CPU's caches (the parse then fills
    them with its objects); a body that is not valid JSON is refused either way, as too deep only when its
    brackets pair and nest more than `max_depth` levels.
    """
    too_deep = MalformedJson(f"the JSON body is nested deeper than {max_depth} levels")
    deeper = _bytes_deeper_than(body, max_depth)
    if deeper:
        raise too_deep
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidBody(f"$: the body must be a JSON object, not {_json_type(document)}")
    if deeper is None and _deeper_than(document, max_depth):
        raise too_deep
    return document


def validate(document: Mapping[str, Any], schema_name: str) -> None:
    """Raise InvalidBody naming the JSON path of the most relevant violation of a schema of SCHEMA_DIR."""
    check(document, _validator(schema_name))


def check(document: Any, validator: Draft202012Validator, root: str = "$") -> None:
    """Raise InvalidBody naming the JSON path (under `root`) of the most relevant schema violation."""
    error = best_match(validator.iter_errors(document))
    if error is not None:
        raise InvalidBody(f"{root}{error.json_path[1:]}: {_describe(error)}")


def parse_hook_request(body: bytes, service_hooks: Collection[str], *, max_depth: int) -> HookRequest:
    """Validate a service call for a service answering `service_hooks` and return it as plain data."""
    document = load_json_object(body, max_depth)
    validate(document, "cds-hooks-request.schema.json")
    if document["hook"] not in service_hooks:
        expected = ", ".join(sorted(service_hooks))
        raise WrongHook(f"$.hook: this service answers {expected}, not {document['hook']!r}")
    fhir_server = document.get("fhirServer")
    if fhir_server is not None and not _is_url(fhir_server):
        raise InvalidBody("$.fhirServer: must be an http(s) URL with a valid host and port")
    authorization = document.get("fhirAuthorization")
    return HookRequest(
        hook=document["hook"],
        hook_instance=document["hookInstance"],
        context=document["context"],
        fhir_server=fhir_server.rstrip("/") if fhir_server else None,
        fhir_authorization=_authorization(authorization) if authorization is not None else None,
        prefetch=document.get("prefetch", {}),
        extension=document.get("extension", {}),
    )


def _is_url(text: str) -> bool:
    """True when `text` parses as a URL with a host (and a numeric port, if any): the schema's pattern
    admits strings such as "http://[x" that urllib rejects later, in the middle of a fetch."""
    try:
        parts = urlsplit(text)
        return bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return False


def parse_feedback(body: bytes, *, max_depth: int) -> tuple[Mapping[str, Any], ...]:
    """Validate a feedback body and return its items as posted."""
    document = load_json_object(body, max_depth)
    validate(document, "cds-hooks-feedback.schema.json")
    return tuple(document["feedback"])


def _authorization(raw: Mapping[str, Any]) -> FhirAuthorization:
    return FhirAuthorization(
        access_token=raw["access_token"],
        token_type=raw["token_type"],
        expires_in=raw["expires_in"],
        scope=raw["scope"],
        subject=raw["subject"],
        patient=raw.get("patient"),
    )


def _describe(error: ValidationError) -> str:
    """Say what is wrong without echoing (possibly large or sensitive) values back."""
    value = error.validator_value
    match error.validator:
        case "required" | "dependentRequired":
            return str(error.message)
        case "type":
            return f"must be of type {' or '.join(value) if isinstance(value, list) else value}"
        case "const":
            return f"must be {json.dumps(value)}"
        case "enum":
            return f"must be one of {', '.join(json.dumps(v) for v in value)}"
        case "pattern":
            return "has an invalid format"
        case "minLength":
            return "must not be empty"
        case "minItems" | "minProperties":
            return "must not be empty"
        case "maxLength" | "maxItems":
            return f"is too long (at most {value})"
        case "minimum":
            return f"must be at least {value}"
    return f"does not match the CDS Hooks 2.0 schema ({error.validator})"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "a boolean"


# `_bytes_deeper_than` keeps only quotes and brackets, braces turned into square brackets (JSON that parsed
# closes each bracket with its own kind, so the kind tells nothing more about the depth).
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'"{}[]')
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_STRING_WITH_BRACKETS = re.compile(rb'"[^"]*"')


def _bytes_deeper_than(body: bytes, limit: int) -> bool | None:
    """Whether a UTF-8 JSON body nests more than `limit` levels, told from its bytes (about twice as fast as
    walking the parsed document); None when it cannot be told (UTF-16/32, brackets that do not pair). Exact
    for valid JSON.

    Escaped backslashes and quotes go first (escapes read left to right, so `\\\\` pairs never straddle one),
    then every byte but quotes and brackets. Empty strings (`""`) go next: two adjacent quotes are a string's,
    or the end of one string and the start of the next with nothing between, so removing them leaves quotes
    that still open and close strings; the few strings left hold brackets (e.g. the UCUM unit "mm[Hg]") and
    go with them. What remains is the document's brackets: each pass removes the innermost pairs, so the
    number of passes is the nesting depth.
    """
    if b"\x00" in body:  # JSON in UTF-16 or UTF-32: the bytes are not the characters
        return None
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = body.translate(_BRACES_AS_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = _STRING_WITH_BRACKETS.sub(b"", brackets)
    for _ in range(limit):
        if not brackets:
            return False
        inner = brackets.replace(b"[]", b"")  # one level a pass: a pair it forms is not seen again
        if len(inner) == len(brackets):  # brackets that do not pair: not JSON, the parser will say why
            return None
        brackets = inner
    return bool(brackets)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests more than `limit` levels: walked level by level (no recursion on
    hostile input), stopping as soon as the limit is passed; scalars are never collected."""
    level, nodes = 1, [value]
    while nodes:
        if level > limit:
            return True
        children: list[Any] = []
        for node in nodes:
            children.extend(node.values() if type(node) is dict else node)
        # json.loads gives plain dicts and lists only: an exact type test is enough, and cheaper
        nodes = [child for child in children if type(child) is dict or type(child) is list]
        level += 1
    return False
