"""Which patient each resource of an export belongs to, and which Medications it needs, line by line.

A Patient is keyed by its `id`. Any other resource of the patient compartment names its patient in `subject`
or `patient` (the first of the two present, as the records stage reads them), by a reference ending in
`Patient/<id>` (relative, absolute or versioned) or, as exports written from transaction Bundles have it,
`urn:uuid:<id>`. A Medication lies outside every patient compartment: it is keyed by its own id and joined
to the patients whose resources name it in `medicationReference` (a `#contained` one travels inside them).

A line that is not a JSON object with a string `resourceType` is malformed: counted, and its line number and
reason kept (the first `MAX_LISTED` of a chunk), never fatal. Resource types no rule reads are dropped here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cds_service.prescreen.export import Chunk, chunk_lines

PATIENT = "Patient"
MEDICATION = "Medication"
MAX_LISTED = 100  # malformed lines listed per chunk (all are counted)
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # also what a patient-view context.patientId may be
_UUID = "urn:uuid:"


class Record(NamedTuple):
    """One resource to group: under a patient id, or (a Medication) under its own id."""

    line: int  # in the chunk, from 1
    medication: bool  # a Medication, keyed by its id; else keyed by its patient
    key: str
    needs: tuple[str, ...]  # ids of the Medications it references
    text: bytes  # the line as read


@dataclass
class ChunkStats:
    """What reading one chunk found, besides its records."""

    chunk: int
    lines: int = 0
    patients: int = 0  # Patient resources
    grouped: int = 0  # resources keyed by a patient (Patients included)
    medications: int = 0
    not_read: int = 0  # resources of a type no rule reads
    unattributed: int = 0  # no usable patient reference (a Medication: no usable id)
    malformed: int = 0
    listed: list[tuple[int, str]] = field(default_factory=list)  # (line in chunk, reason)


class MalformedLine(ValueError):
    """A line that is not a FHIR resource."""


def referenced_id(reference: Any, resource_type: str) -> str | None:
    """The id in a reference to a `resource_type` (`Type/id`, absolute, versioned, `urn:uuid:<id>`)."""
    if not isinstance(reference, str):
        return None
    if reference.startswith(_UUID):
        found = reference[len(_UUID) :]
    else:
        parts = reference.split("/_history/")[0].rstrip("/").split("/")
        found = parts[-1] if len(parts) >= 2 and parts[-2] == resource_type else ""
    return found if _FHIR_ID.match(found) else None


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a compartment resource names in `subject` or `patient`."""
    for element in ("subject", "patient"):
        value = resource.get(element)
        if isinstance(value, dict):
            return referenced_id(value.get("reference"), PATIENT)
    return None


def medications_needed(resource: dict[str, Any]) -> tuple[str, ...]:
    """Ids of the Medications a resource references outside itself (`medicationReference`)."""
    reference = resource.get("medicationReference")
    found = referenced_id(reference.get("reference"), MEDICATION) if isinstance(reference, dict) else None
    return (found,) if found else ()


def parse(line: bytes) -> dict[str, Any]:
    """The resource of one line (raises MalformedLine)."""
    try:
        resource = json.loads(line)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedLine(f"not JSON ({exc})") from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise MalformedLine("not a FHIR resource (no resourceType)")
    return resource


def chunk_records(path: Path, chunk: Chunk, types: Collection[str], stats: ChunkStats) -> Iterator[Record]:
    """The records of one chunk of an export file; `stats` is filled as they are read."""
    for number, line in enumerate(chunk_lines(path, chunk), 1):
        stats.lines = number
        if not line.strip():
            continue
        try:
            resource = parse(line)
        except MalformedLine as exc:
            stats.malformed += 1
            if len(stats.listed) < MAX_LISTED:
                stats.listed.append((number, str(exc)))
            continue
        resource_type = resource["resourceType"]
        if resource_type not in types:
            stats.not_read += 1
            continue
        if resource_type == MEDICATION:
            key = resource.get("id")
            medication, needs = True, ()
        else:
            key = resource.get("id") if resource_type == PATIENT else patient_of(resource)
            medication, needs = False, medications_needed(resource)
        if not isinstance(key, str) or not _FHIR_ID.match(key):
            stats.unattributed += 1
            continue
        if medication:
            stats.medications += 1
        else:
            stats.grouped += 1
            stats.patients += resource_type == PATIENT
        yield Record(number, medication, key, needs, line if line.endswith(b"\n") else line + b"\n")
