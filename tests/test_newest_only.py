"""Newest-only reading: of a repeated measurement, only the values the rules can read are validated.

The Matcher builds facts with `newest_only`: for each kind of measurement, candidates are validated newest
first until one is usable, plus, for a corrected calcium, the albumin closest to the newest calcium. The
facts then hold fewer values, but every trial gets the same results (outcomes, reasons, evidence) as when
every value within the windows is read: checked on the gallery, every criterion case, the benchmark chart
and random series of measurements.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from conftest_facts import concept, condition, load_terminology, observation, patient, quantity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gallery import ENTRIES, gallery
from test_trial_criteria import CASES, chart, matcher

from bench.generate import PATIENT_ID as BENCH_PATIENT
from bench.generate import hook_request
from cds_service import derived
from cds_service.facts import MeasurementWindows, PatientFacts, build_facts
from cds_service.pipeline import Matcher
from cds_service.rules import EvaluationContext, compile_rule

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
CREATININE, CALCIUM, ALBUMIN = "2160-0", "17861-6", "1751-7"
WINDOWS = MeasurementWindows(
    labs={"creatinine": 30, "calcium": 30, "albumin": 37}, pairs={"albumin": ("calcium", 7)}
)


def days_ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def lab(oid: str, loinc: str, days: int, value: Any, unit: str, status: str = "final") -> dict[str, Any]:
    res = observation(oid, loinc, days_ago(days), status, valueQuantity=quantity(1.0, unit))
    res["valueQuantity"]["value"] = value
    return res


def newest_only(resources: list[dict[str, Any]], windows: MeasurementWindows = WINDOWS) -> PatientFacts:
    return build_facts([patient(), *resources], TERMINOLOGY, TODAY, "p1", windows, newest_only=True)


def refs(facts: PatientFacts, analyte: str) -> list[str]:
    return [value.ref for value in facts.labs.get(analyte, ())]


# --- what is validated --------------------------------------------------------------------------------------


def test_values_older_than_the_newest_usable_one_are_never_validated(caplog):
    chart = [lab("d3", CREATININE, 3, 1.1, "mg/dL"), lab("bad", CREATININE, 10, "not a number", "mg/dL")]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = newest_only(chart)
    assert refs(facts, "creatinine") == ["Observation/d3"]
    assert facts.skipped == ()
    assert "Observation/bad" not in caplog.text
    # read in full, the same chart validates (and skips) the older value
    every = build_facts([patient(), *chart], TERMINOLOGY, TODAY, "p1", WINDOWS)
    assert every.skipped == ("Observation/bad",)


def size(oid: str, days: int, cm: Any, **about: Any) -> dict[str, Any]:
    value = {"value": cm, "unit": "cm", "code": "cm"}
    return observation(oid, "21889-1", days_ago(days), valueQuantity=value, **about)


def test_tumour_sizes_are_read_newest_first_down_to_the_primary_kidney_tumour(caplog):
    kidney_cancer = condition("rcc", "http://snomed.info/sct", "254915003")
    lung = {"bodySite": concept("http://snomed.info/sct", "39607008")}
    chart = [
        kidney_cancer,
        size("lung-new", 5, 2.0, **lung),  # newest, of a metastasis: read, passed over
        size("kidney-bad", 20, "large", focus=[{"reference": "Condition/rcc"}]),  # invalid: skipped
        size("kidney", 40, 6.5, focus=[{"reference": "Condition/rcc"}]),  # the one the rules read
        size("kidney-old", 90, "not read", focus=[{"reference": "Condition/rcc"}]),  # older: never validated
    ]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = newest_only(chart)
    assert [s.ref for s in facts.tumour_sizes] == ["Observation/lung-new", "Observation/kidney"]
    assert facts.skipped == ("Observation/kidney-bad",)
    assert "kidney-old" not in caplog.text
    every = build_facts([patient(), *chart], TERMINOLOGY, TODAY, "p1", WINDOWS)
    assert every.skipped == ("Observation/kidney-bad", "Observation/kidney-old")
    assert derived.primary_tumour_size(facts, TERMINOLOGY) == derived.primary_tumour_size(every, TERMINOLOGY)
    assert derived.primary_tumour_size(facts, TERMINOLOGY).ref == "Observation/kidney"


def status(oid: str, days: int, value: Any) -> dict[str, Any]:
    coded = concept("http://snomed.info/sct", value) if isinstance(value, str) else value
    return observation(oid, "97509-4", days_ago(days), valueCodeableConcept=coded)


STABLE, METASTATIC = "359746009", "399409002"


def test_disease_statuses_read_are_the_latest_and_every_one_that_may_say_metastatic(caplog):
    chart = [
        status("unusable-new", 2, STABLE) | {"status": "preliminary"},  # newest, not usable: passed over
        status("latest", 10, STABLE),  # the latest status the rules read
        status("old-stable", 200, STABLE) | {"issued": "not an instant"},  # invalid, never validated
        status("metastatic", 300, METASTATIC),  # when metastases were first seen: read, cited
        status("odd", 400, {"coding": "not a list"}),  # unusual shape: read (and skipped as invalid)
    ]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = newest_only(chart)
    assert [(d.ref, d.status) for d in facts.disease_status] == [
        ("Observation/latest", "stable"),
        ("Observation/metastatic", "metastatic"),
    ]
    assert facts.skipped == ("Observation/odd",)
    assert "old-stable" not in caplog.text
    every = build_facts([patient(), *chart], TERMINOLOGY, TODAY, "p1", WINDOWS)
    assert every.skipped == ("Observation/old-stable", "Observation/odd")
    for rule in ({"metastatic": {}}, {"disease_status": {"true_if": ["stable"], "max_age_days": 90}}):
        compiled = compile_rule(rule)
        results = [compiled.evaluate(f, EvaluationContext(terminology=TERMINOLOGY)) for f in (facts, every)]
        assert results[0] == results[1]


def test_an_analyte_no_rule_reads_is_not_read_at_all(caplog):
    chart = [lab("cr", CREATININE, 3, 1.1, "mg/dL"), lab("height", "8302-2", 3, "tall", "cm")]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = newest_only(chart)  # WINDOWS: creatinine, calcium and albumin only
    assert set(facts.labs) == {"creatinine"}
    assert facts.skipped == () and "height" not in caplog.text
    read_by_a_rule = MeasurementWindows(labs={**WINDOWS.labs, "height": 30}, pairs=WINDOWS.pairs)
    assert newest_only(chart, read_by_a_rule).skipped == ("Observation/height",)


def test_unusable_newer_values_are_passed_over_until_a_usable_one(caplog):
    chart = [
        lab("invalid", CREATININE, 1, "not a number", "mg/dL"),
        lab("preliminary", CREATININE, 2, 1.0, "mg/dL", status="preliminary"),
        lab("bound", CREATININE, 3, 1.0, "mg/dL"),
        lab("usable", CREATININE, 4, 1.2, "mg/dL"),
        lab("older", CREATININE, 5, 1.3, "mg/dL"),
    ]
    chart[2]["valueQuantity"]["comparator"] = "<"
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = newest_only(chart)
    assert refs(facts, "creatinine") == ["Observation/usable"]
    assert facts.skipped == ("Observation/invalid",)


def test_a_newer_value_in_an_unknown_unit_is_still_reported():
    chart = [lab("odd", CREATININE, 2, 1.1, "furlongs"), lab("usable", CREATININE, 6, 1.0, "mg/dL")]
    facts = newest_only(chart)
    assert [v.ref for v in facts.unconverted_labs["creatinine"]] == ["Observation/odd"]
    result = compile_rule({"lab": {"analyte": "creatinine", "le": 1.5}}).evaluate(
        facts, EvaluationContext(terminology=TERMINOLOGY)
    )
    assert result.evidence == ("Observation/odd",)
    assert "unit cannot be converted" in result.reason


def test_the_newest_older_value_is_read_only_when_nothing_in_the_window_is_usable():
    stale = [lab("d40", CREATININE, 40, 1.1, "mg/dL"), lab("d50", CREATININE, 50, 1.1, "mg/dL")]
    assert refs(newest_only([lab("bad", CREATININE, 5, "x", "mg/dL"), *stale]), "creatinine") == [
        "Observation/d40"
    ]
    assert refs(newest_only([lab("d5", CREATININE, 5, 1.0, "mg/dL"), *stale]), "creatinine") == [
        "Observation/d5"
    ]


def test_the_albumin_closest_to_the_newest_calcium_is_read_too():
    chart = [
        lab("ca", CALCIUM, 10, 9.0, "mg/dL"),
        lab("alb-newest", ALBUMIN, 1, 3.5, "g/dL"),
        lab("alb-far", ALBUMIN, 20, 3.5, "g/dL"),
        lab("alb-near", ALBUMIN, 12, 3.0, "g/dL"),
        lab("alb-nearer-but-invalid", ALBUMIN, 11, "x", "g/dL"),
        lab("alb-next", ALBUMIN, 14, 3.1, "g/dL"),
    ]
    facts = newest_only(chart)
    assert refs(facts, "albumin") == ["Observation/alb-newest", "Observation/alb-near"]
    every = build_facts([patient(), *chart], TERMINOLOGY, TODAY, "p1", WINDOWS)
    from cds_service import derived

    assert derived.corrected_calcium(facts) == derived.corrected_calcium(every)
    assert derived.corrected_calcium(facts) is not None


# --- same results as reading every value --------------------------------------------------------------------


def assert_same_results(engine_of: Matcher, resources: list[Any], patient_id: str | None) -> None:
    engine = engine_of.engine
    args = (resources, engine_of.catalog.terminology, TODAY, patient_id)
    newest = build_facts(*args, engine.measurement_windows, newest_only=True)
    every = build_facts(*args, engine.measurement_windows)
    assert engine.evaluate(newest) == engine.evaluate(every)


def test_every_criterion_case_gives_the_same_results():
    for case in CASES:
        assert_same_results(matcher(), chart(case), "p1")


def test_every_gallery_patient_gives_the_same_results():
    gallery_matcher = gallery.gallery_matchers()(gallery.card_uuids())
    for entry in ENTRIES.values():
        bundle = gallery.load_bundle(entry)
        assert_same_results(gallery_matcher, [bundle], gallery.patient_of(bundle)["id"])


def test_the_benchmark_chart_gives_the_same_results():
    request = hook_request(240)
    resources = list(request["prefetch"].values())
    assert_same_results(matcher(), resources, BENCH_PATIENT)


SERIES_CODES = [
    ("2160-0", ["mg/dL", "umol/L", "furlongs"]),  # creatinine
    ("38483-4", ["mg/dL"]),  # creatinine, another code
    ("17861-6", ["mg/dL", "mmol/L"]),  # calcium
    ("1751-7", ["g/dL", "g/L"]),  # albumin
    ("29463-7", ["kg", "[lb_av]"]),  # weight
    ("718-7", ["g/dL"]),  # hemoglobin
    ("89247-1", ["{score}"]),  # ECOG
    ("89243-0", ["{score}"]),  # Karnofsky
    ("8480-6", ["mm[Hg]"]),  # systolic
    ("2106-3", [""]),  # pregnancy test
]


@st.composite
def measurement(draw):
    loinc, units = draw(st.sampled_from(SERIES_CODES))
    days = draw(st.one_of(st.none(), st.integers(-3, 120)))
    res = observation(
        f"o{draw(st.integers(0, 12))}",
        loinc,
        days_ago(days or 0),
        draw(st.sampled_from(["final", "final", "amended", "preliminary", "entered-in-error"])),
    )
    if days is None:
        del res["effectiveDateTime"]
    kind = draw(st.sampled_from(["quantity", "quantity", "integer", "invalid", "comparator"]))
    if kind == "integer":
        res["valueInteger"] = draw(st.integers(-1, 100))
    else:
        res["valueQuantity"] = quantity(
            draw(st.sampled_from([0.5, 1, 3.5, 9.8, 60, 90])), draw(st.sampled_from(units))
        )
        if kind == "invalid":
            res["valueQuantity"]["value"] = "x"
        elif kind == "comparator":
            res["valueQuantity"]["comparator"] = "<"
    return res


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(measurement(), max_size=14))
def test_random_series_of_measurements_give_the_same_results(series):
    base = list(chart(next(case for case in CASES if case.trial == "NCT04299646")))
    assert_same_results(matcher(), [*base, *series], "p1")
