"""Read a chart: raw FHIR R4 JSON -> resources selected by the read plan -> validated on demand -> records.

1. Bundles are unwrapped (`fhir.bundles`);
2. resources are selected on the raw JSON, before any validation (it costs ~0.14 ms a resource): only the
   types the plan reads, only about the patient (when one is named), only Observations with a wanted code,
   only Conditions, Procedures and medication uses whose codes (or medication text) the plan's `readable`
   accepts, and only the Medications such a use references;
3. each selected resource is a `Candidate`: validated (`fhir.validate`, with only the elements its record
   reads) and converted (`fhir.records`) the first time its record is asked for. A resource that fails is
   skipped and its reference (never its content) logged. The facts stage asks for every candidate's record,
   except for Observations of a repeated measurement, which it reads newest first until one gives a fact:
   older values are never validated.

Never raises for a bad resource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from typing import Any

from cds_service.fhir import bundles, records
from cds_service.fhir.concepts import codes, concept, first_day, is_concept, is_object, medication, reference
from cds_service.fhir.plan import Selection
from cds_service.fhir.validate import is_valid
from cds_service.terminology import Code

OBSERVATION_DATE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
_CONVERTERS: Mapping[str, Callable[[Mapping[str, Any], str], Any]] = {
    "Patient": records.patient,
    "Condition": records.condition,
    "Observation": records.observation,
    "Procedure": records.procedure,
}
MEDICATION_USES = frozenset({"MedicationStatement", "MedicationRequest", "MedicationAdministration"})


class Candidate:
    """A selected resource, validated and converted only when its `record` is first asked for.

    `codes` are an Observation's wanted codes, `day` its date as read from the raw JSON (None when undated),
    `status` its status as sent if a string (a valid record has the same).
    """

    __slots__ = (
        "_record",
        "codes",
        "day",
        "elements",
        "full_url",
        "read",
        "ref",
        "resource",
        "status",
    )

    def __init__(
        self,
        resource: Mapping[str, Any],
        ref: str,
        full_url: str | None,
        codes: frozenset[Code],
        elements: frozenset[str],
    ) -> None:
        self.resource = resource
        self.ref = ref
        self.full_url = full_url
        self.codes = codes
        self.elements = elements
        status = resource.get("status")
        self.status = status if isinstance(status, str) else None  # any other JSON value is no status
        self.day = (
            first_day(resource, OBSERVATION_DATE) if resource["resourceType"] == "Observation" else None
        )
        self.read = False
        self._record: Any = None

    @property
    def type(self) -> str:
        return str(self.resource["resourceType"])

    def valid(self) -> Mapping[str, Any] | None:
        """The resource pruned to its read elements if it validates, else None (logged once)."""
        if not self.read:
            self.read = True
            pruned = {name: value for name, value in self.resource.items() if name in self.elements}
            if is_valid(pruned, self.ref):
                self._record = pruned
            else:
                self._record = None
        return self._record  # type: ignore[no-any-return]

    def record(self, medications: Mapping[str, Mapping[str, Any]] | None = None) -> Any | None:
        """The record of this resource (see `fhir.records`), None when it is not valid FHIR; a medication use
        resolves its Medication among `medications` (by reference and fullUrl)."""
        pruned = self.valid()
        if pruned is None:
            return None
        if self.type in MEDICATION_USES:
            return records.medication_use(pruned, self.ref, medications or {})
        return _CONVERTERS[self.type](pruned, self.ref)  # Medications are read through the uses only


class _ValidMedications(Mapping[str, Mapping[str, Any]]):
    """The chart's Medications by reference and fullUrl, each validated when a use first reads it."""

    def __init__(self) -> None:
        self.by_reference: dict[str, Candidate] = {}

    def __getitem__(self, target: str) -> Mapping[str, Any]:
        valid = self.by_reference[target].valid()
        if valid is None:  # read as absent: the use then keeps only its reference's display
            raise KeyError(target)
        return valid

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_reference)

    def __len__(self) -> int:
        return len(self.by_reference)


class Chart:
    """The selected resources of one patient's chart, by type, in the order they came."""

    def __init__(self) -> None:
        self.candidates: dict[str, list[Candidate]] = {}
        self.valid_medications = _ValidMedications()

    def of(self, resource_type: str) -> list[Candidate]:
        return self.candidates.get(resource_type, [])

    def records(self, resource_type: str) -> list[Any]:
        """The valid records of every candidate of a type."""
        return [
            record for c in self.of(resource_type) if (record := c.record(self.valid_medications)) is not None
        ]

    def skipped(self) -> tuple[str, ...]:
        """References of the candidates read so far that failed validation, in order."""
        return tuple(
            c.ref for group in self.candidates.values() for c in group if c.read and c.valid() is None
        )


def read_chart(resources: Iterable[Any], plan: Selection, patient_id: str | None) -> Chart:
    """Select the resources worth validating (see the module docstring); none is validated yet."""
    found = list(_refs(resources))
    aliases = {f"Patient/{patient_id}"} if patient_id is not None else set()
    medications: dict[str, Mapping[str, Any]] = {}
    for entry, _ in found:
        rtype = entry.resource["resourceType"]
        if rtype == "Patient" and entry.full_url and entry.resource.get("id") == patient_id:
            aliases.add(entry.full_url)
        elif rtype == "Medication":
            for key in (_ref_of(entry), entry.full_url):
                if key:
                    medications[key] = entry.resource
    chart = Chart()
    referenced: set[str] = set()
    kept_medications: list[tuple[bundles.Entry, str]] = []
    for entry, ref in found:
        resource, rtype = entry.resource, entry.resource["resourceType"]
        if rtype not in plan.resource_types:
            continue
        if rtype == "Medication":
            kept_medications.append((entry, ref))
            continue
        wanted: frozenset[Code] = frozenset()
        if rtype == "Observation":
            wanted = codes(resource.get("code")) & plan.observation_elements.keys()
            if not wanted:
                continue
        if patient_id is not None and not _about(resource, rtype, patient_id, aliases):
            continue
        if rtype in ("Condition", "Procedure") and not _readable_coded(resource, rtype, plan):
            continue
        if rtype in MEDICATION_USES:
            if not _readable_use(resource, rtype, plan, medications):
                continue
            target = reference(resource.get("medicationReference"))
            if target is not None:
                referenced.add(target)
        elements = records.VALIDATED[rtype]
        if wanted:
            elements = frozenset().union(*(plan.observation_elements[code] for code in wanted))
        chart.candidates.setdefault(rtype, []).append(
            Candidate(resource, ref, entry.full_url, wanted, elements)
        )
    for entry, ref in kept_medications:
        if _ref_of(entry) in referenced or entry.full_url in referenced:
            candidate = Candidate(
                entry.resource, ref, entry.full_url, frozenset(), records.VALIDATED["Medication"]
            )
            chart.candidates.setdefault("Medication", []).append(candidate)
            for key in (_ref_of(entry), entry.full_url):
                if key:
                    chart.valid_medications.by_reference[key] = candidate
    return chart


def _refs(resources: Iterable[Any]) -> Iterator[tuple[bundles.Entry, str]]:
    """Every resource with its reference; one without an id is named by its fullUrl, else its position."""
    position = 0
    for item in resources:
        for entry in bundles.entries(item):
            position += 1
            yield entry, _ref_of(entry) or entry.full_url or f"{entry.resource['resourceType']}/#{position}"


def _ref_of(entry: bundles.Entry) -> str | None:
    rid = entry.resource.get("id")
    return f"{entry.resource['resourceType']}/{rid}" if isinstance(rid, str) and rid else None


def _about(resource: Mapping[str, Any], rtype: str, patient_id: str, aliases: set[str]) -> bool:
    """Whether a resource is about the patient: a Patient with its id, or a resource whose subject (or
    patient) references that Patient. A resource naming no subject, or one by identifier only, is kept; one
    whose subject is not a Reference of the FHIR shape is not (it cannot be told to be the patient's)."""
    if rtype == "Patient":
        return resource.get("id") == patient_id
    for key in ("subject", "patient"):
        value = resource.get(key)
        if value is None:
            continue
        target = value.get("reference") if is_object(value) else 0
        if target is None:
            return True
        if not isinstance(target, str):
            return False
        if target in aliases:
            return True
        parts = target.split("/_history/")[0].rstrip("/").split("/")
        return len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] == patient_id
    return True


def _readable_coded(resource: Mapping[str, Any], rtype: str, plan: Selection) -> bool:
    """A Condition or Procedure whose code something reads (a code of an unusual shape: validation decides);
    a Condition with a histology extension always."""
    if rtype == "Condition":
        extensions = resource.get("extension")
        if isinstance(extensions, list) and any(
            not is_object(e) or e.get("url") == records.HISTOLOGY_EXTENSION for e in extensions
        ):
            return True
    code = resource.get("code")
    if code is not None and not is_concept(code):
        return True
    found = concept(code)
    return plan.readable(rtype, found.codes, found.text)


def _readable_use(
    resource: Mapping[str, Any], rtype: str, plan: Selection, medications: Mapping[str, Mapping[str, Any]]
) -> bool:
    """A medication use whose medication something reads: resolved (inline, contained, bundled), or from the
    reference's display alone (what is read if the referenced Medication then fails validation). One of an
    unusual shape is read: validation decides."""
    inline = resource.get("medicationCodeableConcept")
    if inline is not None and not is_concept(inline):
        return True
    readings = [medication(resource, medications)]
    pointer = resource.get("medicationReference")
    if inline is None and is_object(pointer):
        readings.append(medication({"medicationReference": pointer}, {}))
    return any(plan.readable(rtype, found.codes, found.text) for found in readings)


def newest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates by date, newest first, undated last; ties by reference (as facts are ordered)."""
    return sorted(candidates, key=lambda c: (c.day is not None, c.day or date.min, c.ref), reverse=True)
