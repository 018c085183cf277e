"""Recency windows: repeated measurements too old to become evidence are not validated, except the newest one.

The Engine derives the windows from the catalog's rules; the Matcher passes them to build_facts, which leaves
out (before FHIR validation) the values of a lab, score, blood pressure or pregnancy test dated before the
window, but the newest usable one older than it, so that a reason can still cite it. Without windows every
Observation is read, as before.
"""

from __future__ import annotations

from datetime import date, timedelta

from conftest_facts import load_terminology, observation, patient, quantity
from factories import catalog, criterion, trial

from cds_service.evaluate import Engine, EvaluationPolicy
from cds_service.facts import USABLE_OBSERVATION_STATUSES, MeasurementWindows, build_facts
from cds_service.fhir_records import RecencyWindows, read_records
from cds_service.rules import EvaluationContext, compile_rule
from cds_service.terminology import LOINC

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
CREATININE = "2160-0"
TUMOUR_SIZE = "21889-1"
WINDOWS = MeasurementWindows(labs={"creatinine": 30})


def days_ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def creatinine(oid: str, days: int | None, status: str = "final", value: object = 1.1) -> dict:
    """A creatinine `days` before today (undated for None); `value` may be made invalid."""
    res = observation(oid, CREATININE, days_ago(days or 0), status, valueQuantity=quantity(1.1, "mg/dL"))
    res["valueQuantity"]["value"] = value
    if days is None:
        del res["effectiveDateTime"]
    return res


def creatinine_refs(resources: list[dict], windows: MeasurementWindows | None) -> list[str]:
    facts = build_facts([patient(), *resources], TERMINOLOGY, TODAY, "p1", windows)
    return [value.ref for value in facts.labs.get("creatinine", ())]


def test_values_older_than_the_window_are_left_out_but_the_newest_older_one_is_kept():
    chart = [creatinine("d5", 5), creatinine("d30", 30), creatinine("d45", 45), creatinine("d400", 400)]
    assert creatinine_refs(chart, None) == [
        "Observation/d5",
        "Observation/d30",
        "Observation/d45",
        "Observation/d400",
    ]
    assert creatinine_refs(chart, WINDOWS) == ["Observation/d5", "Observation/d30", "Observation/d45"]


def test_old_values_are_not_even_validated():
    """An invalid old value is skipped (and logged) without windows, never looked at with them."""
    chart = [creatinine("d5", 5), creatinine("d45", 45), creatinine("bad", 90, value="not a number")]
    codes = frozenset({(LOINC, CREATININE)})
    windows = RecencyWindows(TODAY, {(LOINC, CREATININE): 30}, USABLE_OBSERVATION_STATUSES)
    assert read_records(chart, codes).skipped == ("Observation/bad",)
    kept = read_records(chart, codes, windows=windows)
    assert kept.skipped == ()
    assert [o.ref for o in kept.observations] == ["Observation/d5", "Observation/d45"]


def test_the_newest_older_value_must_have_a_usable_status():
    chart = [creatinine("error", 40, status="entered-in-error"), creatinine("d50", 50), creatinine("d60", 60)]
    assert creatinine_refs(chart, WINDOWS) == ["Observation/d50"]


def test_a_value_dated_on_the_first_day_of_the_calendar_is_still_the_newest_older_one():
    chart = [creatinine("d5", 5), creatinine("ancient", None)]
    chart[1]["effectiveDateTime"] = "0001-01-01"
    assert creatinine_refs(chart, WINDOWS) == ["Observation/d5", "Observation/ancient"]


def test_undated_values_and_other_observations_are_kept():
    size = observation("size", TUMOUR_SIZE, days_ago(900), valueQuantity=quantity(5.0, "cm"))
    chart = [creatinine("undated", None), creatinine("d45", 45), creatinine("d400", 400), size]
    facts = build_facts([patient(), *chart], TERMINOLOGY, TODAY, "p1", WINDOWS)
    assert [value.ref for value in facts.labs["creatinine"]] == ["Observation/d45", "Observation/undated"]
    assert [s.ref for s in facts.tumour_sizes] == ["Observation/size"]


def test_a_measurement_no_rule_reads_keeps_its_newest_value_only():
    chart = [creatinine("d45", 45), creatinine("d400", 400)]
    assert creatinine_refs(chart, MeasurementWindows()) == ["Observation/d45"]


def test_the_reason_still_cites_the_newest_older_value():
    rule = compile_rule({"lab": {"analyte": "creatinine", "le_uln": 1.5}})
    facts = build_facts(
        [patient(), creatinine("d45", 45), creatinine("d400", 400)], TERMINOLOGY, TODAY, "p1", WINDOWS
    )
    result = rule.evaluate(facts, EvaluationContext(terminology=TERMINOLOGY))
    assert result.evidence == ("Observation/d45",)
    assert f"on {days_ago(45)} is older than 30 days" in result.reason


def test_the_engine_reads_the_windows_off_its_rules():
    rules = [
        criterion("cr", {"lab": {"analyte": "creatinine", "max_age_days": 14, "le_uln": 1.5}}),
        criterion("cr-default", {"lab": {"analyte": "creatinine", "le_uln": 3}}),
        criterion("hb", {"any": [{"lab": {"analyte": "hemoglobin", "max_age_days": 90, "ge": 9}}]}),
        criterion("ps", {"not": {"karnofsky": {"lt": 70, "max_age_days": 45}}}),
        criterion("bp", {"blood_pressure": {"systolic_gt": 150}}),
        criterion("crcl", {"creatinine_clearance": {"ge": 40}}),
        criterion("imdc", {"imdc_risk": {"in": ["favorable"]}}),
        criterion("preg", {"pregnant": {}}, type="exclusion"),
    ]
    engine = Engine(
        catalog(trial("T1", rules)), EvaluationPolicy(lab_max_age_days=21, performance_max_age_days=28)
    )
    windows = engine.measurement_windows
    assert windows.labs["creatinine"] == 21
    assert windows.labs["hemoglobin"] == 90
    assert windows.labs["albumin"] == 28  # paired with a calcium of the lab window: 7 days earlier still
    assert windows.labs["weight"] == 0  # Cockcroft-Gault takes the newest weight, whatever its age
    assert (windows.performance, windows.blood_pressure, windows.pregnancy_test) == (45, 21, 30)
    assert Engine(catalog(trial("T2", [criterion("age", {"age": {"min": 18}})]))).measurement_windows == (
        MeasurementWindows()
    )
