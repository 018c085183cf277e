"""The resources of a FHIR JSON document: a Bundle's entries (nested Bundles unwrapped), or the resource.

The one place a Bundle is flattened, for prefetch values, files given to the command line, bulk exports and
the records stage. Anything that is not a JSON object with a string `resourceType` is passed over.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from cds_service.fhir.concepts import is_object

MAX_BUNDLE_DEPTH = 8  # Bundles nested deeper are not opened


class Entry(NamedTuple):
    resource: dict[str, Any]
    full_url: str | None  # the Bundle entry's fullUrl, if any


def is_resource(value: Any) -> bool:
    """A JSON object with a string `resourceType`."""
    return is_object(value) and isinstance(value.get("resourceType"), str)


def entries(document: Any, full_url: str | None = None, depth: int = 0) -> Iterator[Entry]:
    """Every resource of `document` with its fullUrl, Bundles (also nested) unwrapped, in order."""
    if not is_resource(document):
        return
    if document["resourceType"] != "Bundle":
        yield Entry(document, full_url)
        return
    items = document.get("entry")
    if depth >= MAX_BUNDLE_DEPTH or not isinstance(items, list):
        return
    for item in items:
        resource = item.get("resource") if is_object(item) else None
        if not is_resource(resource):
            continue
        url = item.get("fullUrl")
        url = url if isinstance(url, str) else None
        if resource["resourceType"] == "Bundle":
            yield from entries(resource, url, depth + 1)
        else:  # most entries: one generator less each
            yield Entry(resource, url)


def resources(document: Any) -> Iterator[dict[str, Any]]:
    """Every resource of `document`, Bundles (also nested) unwrapped, in order."""
    for entry in entries(document):
        yield entry.resource
