"""Infusions recorded as MedicationAdministration (as infusion centres and Epic record immunotherapy): read
through a referenced, `_include`d or contained Medication coded in the EHR's own system (known by its RxNorm
ingredients, else its name), only when given, and grouped into continuous exposures that feed the lines of
therapy like statements and requests."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from conftest_facts import RXNORM_URI, concept, facts_of, load_terminology, patient

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
EPIC_ERX = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288"  # an Epic medication (ERX) id system
NIVOLUMAB, IPILIMUMAB, PEMBROLIZUMAB = "1597876", "1094833", "1547545"  # RxNorm ingredients


def medication(mid: str, rxnorm: str | None, name: str) -> dict[str, Any]:
    """A Medication coded in the EHR's own system, its RxNorm ingredient listed (or none)."""
    resource: dict[str, Any] = {"resourceType": "Medication", "id": mid, "code": concept(EPIC_ERX, mid, name)}
    if rxnorm:
        resource["ingredient"] = [{"itemCodeableConcept": concept(RXNORM_URI, rxnorm)}]
    return resource


def infusion(aid: str, mid: str, days_ago: int, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": aid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": f"Medication/{mid}"},
        "effectiveDateTime": (TODAY - timedelta(days=days_ago)).isoformat() + "T10:00:00Z",
        **extra,
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    """A searchset as `MedicationAdministration?patient=...&_include=MedicationAdministration:medication`."""
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def test_induction_then_maintenance_is_one_ongoing_line_of_both_drugs() -> None:
    nivo, ipi = medication("erx-nivo", NIVOLUMAB, "OPDIVO IV"), medication("erx-ipi", IPILIMUMAB, "YERVOY IV")
    induction = [infusion(f"nivo-{d}", "erx-nivo", d) for d in (200, 179, 158, 137)]
    induction += [infusion(f"ipi-{d}", "erx-ipi", d) for d in (200, 179, 158, 137)]
    maintenance = [infusion(f"nivo-m{d}", "erx-nivo", d) for d in (109, 81, 53, 25)]
    facts = facts_of([patient(), bundle(nivo, ipi, *induction, *maintenance)], TERMINOLOGY, TODAY, "p1")
    (line,) = facts.therapy_lines
    assert line.ingredients == {"nivolumab", "ipilimumab"} and line.ongoing
    assert line.start == TODAY - timedelta(days=200)
    assert set(line.refs) == {  # each exposure cites its first and last dose
        "MedicationAdministration/nivo-200",
        "MedicationAdministration/nivo-m25",
        "MedicationAdministration/ipi-200",
        "MedicationAdministration/ipi-137",
    }
    by_drug = {m.ingredients: m for m in facts.medications}
    assert not by_drug[frozenset({"ipilimumab"})].active  # last dose 137 days ago
    assert by_drug[frozenset({"nivolumab"})].active


def test_a_pause_longer_than_six_weeks_ends_the_exposure() -> None:
    pembro = medication("erx-pembro", PEMBROLIZUMAB, "KEYTRUDA IV")
    doses = [infusion(f"p-{d}", "erx-pembro", d) for d in (150, 129, 108)]  # last dose 108 days ago
    facts = facts_of([patient(), pembro, *doses], TERMINOLOGY, TODAY, "p1")
    (exposure,) = facts.medications
    assert (exposure.start, exposure.end, exposure.active) == (
        TODAY - timedelta(days=150),
        TODAY - timedelta(days=108),
        False,
    )
    assert not facts.therapy_lines[0].ongoing


@pytest.mark.parametrize("status", ["not-done", "entered-in-error", "stopped", "on-hold", "unknown"])
def test_only_given_doses_count(status: str) -> None:
    pembro = medication("erx-pembro", PEMBROLIZUMAB, "KEYTRUDA IV")
    facts = facts_of([patient(), pembro, infusion("p-1", "erx-pembro", 10, status)], TERMINOLOGY, TODAY, "p1")
    assert facts.medications == () and facts.therapy_lines == ()


def test_a_medication_without_rxnorm_is_known_by_its_name_and_a_contained_one_is_read() -> None:
    by_name = medication("erx-keytruda", None, "KEYTRUDA 100 MG/4ML IV SOLN")
    contained = infusion("c-1", "#m", 14) | {
        "medicationReference": {"reference": "#m"},
        "contained": [medication("m", NIVOLUMAB, "nivolumab")],
    }
    facts = facts_of(
        [patient(), by_name, infusion("k-1", "erx-keytruda", 20), contained], TERMINOLOGY, TODAY, "p1"
    )
    assert {m.ingredients for m in facts.medications} == {
        frozenset({"pembrolizumab"}),
        frozenset({"nivolumab"}),
    }


def test_a_period_dates_the_dose_and_an_undated_dose_is_left_out() -> None:
    pembro = medication("erx-pembro", PEMBROLIZUMAB, "KEYTRUDA IV")
    start = (TODAY - timedelta(days=7)).isoformat()
    timed = infusion("p-1", "erx-pembro", 0) | {"effectivePeriod": {"start": start + "T09:00:00Z"}}
    del timed["effectiveDateTime"]
    undated = infusion("p-2", "erx-pembro", 0)
    del undated["effectiveDateTime"]
    (exposure,) = facts_of([patient(), pembro, timed, undated], TERMINOLOGY, TODAY, "p1").medications
    assert exposure.start == TODAY - timedelta(days=7) and exposure.refs == ("MedicationAdministration/p-1",)
