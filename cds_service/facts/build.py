"""Build a patient's facts from raw FHIR resources, reading only what the plan says the rules read."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from datetime import date
from typing import Any

from cds_service.facts.conditions import condition_fact, metastasis_evidence, procedure_fact
from cds_service.facts.medications import exposures, medication_fact, therapy_lines
from cds_service.facts.model import MedicationFact, PatientFacts
from cds_service.facts.observations import USABLE_OBSERVATION_STATUSES, ObservationFacts, read_observation
from cds_service.facts.plan import ReadPlan
from cds_service.fhir.reader import Candidate, newest_first, read_chart
from cds_service.terminology import Terminology


def build_facts(
    resources: Iterable[Mapping[str, Any]],
    terminology: Terminology,
    today: date,
    patient_id: str | None,
    plan: ReadPlan,
    unavailable: Collection[str] = (),
) -> PatientFacts:
    """The facts about one patient on `today` (see facts.model); bad resources are skipped, never raised.

    With `patient_id`, resources about another patient are ignored; without it, the first Patient found gives
    the demographics. `unavailable` names the resource types that could not be read (absence proves nothing
    for them).
    """
    chart = read_chart(resources, plan.selection, patient_id)
    patient = next(iter(chart.records("Patient")), None)
    conditions = _newest_first(
        fact for rec in chart.records("Condition") if (fact := condition_fact(rec, terminology))
    )
    observations = _observation_facts(chart.of("Observation"), terminology, plan)
    kinds = {name: _newest_first(values) for name, values in observations.kinds.items()}
    staging, statuses = kinds.get("staging", ()), kinds.get("disease_status", ())
    metastasis = metastasis_evidence(conditions, staging, statuses, terminology)

    def facts_of(kind: str) -> list[MedicationFact]:
        return [fact for rec in chart.records(kind) if (fact := medication_fact(rec, terminology, today))]

    doses = exposures(facts_of("MedicationAdministration"), today)
    medications = _newest_first([*facts_of("MedicationStatement"), *facts_of("MedicationRequest"), *doses])
    first_metastasis = metastasis.first()
    return PatientFacts(
        today=today,
        patient_ref=patient.ref if patient else (f"Patient/{patient_id}" if patient_id else None),
        birth_date=patient.birth_date if patient else None,
        sex=patient.gender if patient else None,
        deceased=patient.deceased if patient else False,
        conditions=conditions,
        labs={analyte: _newest_first(values) for analyte, values in sorted(observations.labs.items())},
        unconverted_labs={
            analyte: _newest_first(values) for analyte, values in sorted(observations.unconverted.items())
        },
        ecog=kinds.get("ecog", ()),
        karnofsky=kinds.get("karnofsky", ()),
        disease_status=statuses,
        staging=staging,
        tumour_sizes=kinds.get("tumour_sizes", ()),
        blood_pressure=kinds.get("blood_pressure", ()),
        pregnancy_tests=kinds.get("pregnancy_tests", ()),
        medications=medications,
        therapy_lines=therapy_lines(medications, first_metastasis[0] if first_metastasis else None),
        procedures=_newest_first(
            fact for rec in chart.records("Procedure") if (fact := procedure_fact(rec, terminology))
        ),
        metastasis=metastasis,
        skipped=chart.skipped(),
        unavailable=frozenset(unavailable),
    )


def _newest_first(items: Iterable[Any]) -> tuple[Any, ...]:
    """Facts by date (a condition's onset, a medication's start), newest first, undated last; ties by
    reference."""

    def key(item: Any) -> tuple[bool, date, str]:
        when = next(getattr(item, name) for name in ("date", "onset", "start") if hasattr(item, name))
        return (when is not None, when or date.min, item.ref)

    return tuple(sorted(items, key=key, reverse=True))


class _ObservationReader:
    """Validates Observation candidates on demand and remembers the facts each one gives."""

    def __init__(self, terminology: Terminology, plan: ReadPlan) -> None:
        self._terminology = terminology
        self._plan = plan
        self.found: dict[Candidate, ObservationFacts] = {}

    def facts_of(self, candidate: Candidate) -> ObservationFacts:
        found = self.found.get(candidate)
        if found is None:
            record = candidate.record()
            found = ObservationFacts()
            if record is not None:
                found = read_observation(
                    record, self._terminology, self._plan.kinds, self._plan.needs.analytes
                )
            self.found[candidate] = found
        return found

    def first_filling(self, candidates: Iterable[Candidate], slot: str) -> None:
        """Read `candidates` in order until one gives a fact of `slot` (only a usable status can)."""
        for candidate in candidates:
            if candidate.status in USABLE_OBSERVATION_STATUSES and self.facts_of(candidate).fills(slot):
                return


def _observation_facts(
    candidates: list[Candidate], terminology: Terminology, plan: ReadPlan
) -> ObservationFacts:
    """The facts of the Observations the rules can use; the others are never validated.

    Of a repeated measurement the rules read only the newest usable value (usable: final status, a unit that
    converts, valid FHIR, a score on its scale...) and unusable values newer than it. So its candidates are
    read newest first until one gives a fact: the facts then start with the same value as if every candidate
    had been read; a kind with a `per` key does so for each key (each lesion of a tumour size). An analyte
    read near another (`Needs.near`) also reads, closest first, its candidates near the newest value of its
    anchor until one gives a fact. Every other Observation is read.
    """
    reader = _ObservationReader(terminology, plan)
    by_slot: dict[tuple[str, Hashable], list[Candidate]] = {}
    for candidate in candidates:
        for slot in dict.fromkeys(slot for code in sorted(candidate.codes) for slot in plan.slots[code]):
            of = plan.per[slot](candidate.resource) if slot in plan.per else None
            by_slot.setdefault((slot, of), []).append(candidate)
    ordered = {key: newest_first(group) for key, group in by_slot.items()}
    for (slot, _), group in ordered.items():
        if slot in plan.repeated:
            reader.first_filling(group, slot)
        else:
            for candidate in group:
                reader.facts_of(candidate)
    for analyte, (anchor, days) in plan.needs.near.items():
        anchor_days = sorted(
            (
                value.date
                for facts in reader.found.values()
                for value in facts.labs.get(anchor, ())
                if value.date
            ),
            reverse=True,
        )
        if not anchor_days:
            continue
        near = [
            c
            for c in ordered.get((f"lab:{analyte}", None), ())
            if c.day and abs((c.day - anchor_days[0]).days) <= days
        ]
        closest_first = sorted(near, key=lambda c: (abs((c.day - anchor_days[0]).days), c.ref))  # type: ignore[operator]
        reader.first_filling(closest_first, f"lab:{analyte}")
    found = ObservationFacts()
    for candidate in candidates:  # in the chart's order, as if read one by one
        if candidate in reader.found:
            found.add(reader.found[candidate])
    return found
