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
from cds_service.fhir.concepts import Concept, codes, concept, first_day, is_object, medication, reference
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
MEDICATION_USES = frozenset({"MedicationStatement", "MedicationRequest"})


class Candidate:
    """A selected resource, validated and converted only when its `record` is first asked for.

    `codes` are an Observation's wanted codes, `day` its date as read from the raw JSON (None when undated),
    `status` its status as sent if a string (a valid record has the same).
    """

    __slots__ = (
        "_chart",
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
        chart: Chart,
    ) -> None:
        self.resource = resource
        self.ref = ref
        self.full_url = full_url
        self.codes = codes
        self.elements = elements
        self._chart = chart
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

    def record(self) -> Any | None:
        """The record of this resource (see `fhir.records`), None when it is not valid FHIR."""
        pruned = self.valid()
        if pruned is None:
            return None
        if self.type in MEDICATION_USES:
            return records.medication_use(pruned, self.ref, self._chart.valid_medications)
        return _CONVERTERS[self.type](pruned, self.ref)  # Medications are read through the uses only


class _ValidMedications:
    """The chart's Medications by reference and fullUrl, each validated when a use first reads it."""

    def __init__(self) -> None:
        self.by_reference: dict[str, Candidate] = {}

    def get(self, target: str) -> Mapping[str, Any] | None:
        found = self.by_reference.get(target)
        return None if found is None else found.valid()


class Chart:
    """The selected resources of one patient's chart, by type, in the order they came."""

    def __init__(self) -> None:
        self.candidates: dict[str, list[Candidate]] = {}
        self.valid_medications = _ValidMedications()

    def of(self, resource_type: str) -> list[Candidate]:
        return self.candidates.get(resource_type, [])

    def records(self, resource_type: str) -> list[Any]:
        """The valid records of every candidate of a type."""
        return [record for c in self.of(resource_type) if (record := c.record()) is not None]

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
            readings = _medication_readings(resource, medications)
            if not any(plan.readable(rtype, c.codes, c.text) for c in readings):
                continue
            target = reference(resource.get("medicationReference"))
            if target is not None:
                referenced.add(target)
        elements = records.with_extensions(
            (*records.ELEMENTS[rtype], *(e for code in wanted for e in plan.observation_elements[code]))
        )
        chart.candidates.setdefault(rtype, []).append(
            Candidate(resource, ref, entry.full_url, wanted, elements, chart)
        )
    medication_elements = records.with_extensions(records.ELEMENTS["Medication"])
    for entry, ref in kept_medications:
        if _ref_of(entry) in referenced or entry.full_url in referenced:
            candidate = Candidate(
                entry.resource, ref, entry.full_url, frozenset(), medication_elements, chart
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
    patient) is that Patient; a resource naming no subject is kept."""
    if rtype == "Patient":
        return resource.get("id") == patient_id
    for key in ("subject", "patient"):
        value = resource.get(key)
        if is_object(value):
            target = value.get("reference")
            if not isinstance(target, str):
                return True
            if target in aliases:
                return True
            parts = target.split("/_history/")[0].rstrip("/").split("/")
            return len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] == patient_id
    return True


def _readable_coded(resource: Mapping[str, Any], rtype: str, plan: Selection) -> bool:
    """A Condition or Procedure whose code something reads; a Condition with a histology extension always."""
    if rtype == "Condition":
        extensions = resource.get("extension")
        if isinstance(extensions, list) and any(
            not is_object(e) or e.get("url") == records.HISTOLOGY_EXTENSION for e in extensions
        ):
            return True
    found = concept(resource.get("code"))
    return plan.readable(rtype, found.codes, found.text)


def _medication_readings(
    resource: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
) -> list[Concept]:
    """What a medication use may read as its medication: the resolved one, and the reference's display alone
    (what it reads if the referenced Medication then fails validation)."""
    resolved = medication(resource, medications)
    pointer = resource.get("medicationReference")
    if resource.get("medicationCodeableConcept") is None and is_object(pointer):
        return [resolved, medication({"medicationReference": pointer}, {})]
    return [resolved]


def newest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates by date, newest first, undated last; ties by reference (as facts are ordered)."""
    return sorted(candidates, key=lambda c: (c.day is not None, c.day or date.min, c.ref), reverse=True)
