"""Of a repeated measurement only the values the rules can read are validated (cds_service.facts.build).

Candidates of a lab analyte, a performance score, blood pressure or a pregnancy test are validated newest
first until one gives a fact; an analyte read near another (the albumin of a corrected calcium) also reads
the candidate closest to its anchor's newest value. The facts then hold fewer values, but every trial gets the
same results (outcomes, reasons, evidence) as with the plain reading of every candidate (the same plan with
no repeated slot): checked on the gallery, every criterion case, the benchmark chart and random series.
"""

from __future__ import annotations

import dataclasses
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
from cds_service.domains import kidney
from cds_service.engine.derived import corrected_calcium
from cds_service.engine.registry import EvaluationContext
from cds_service.engine.rules import compile_rule
from cds_service.facts import PatientFacts, ReadPlan, build_facts, needs, read_plan
from cds_service.pipeline import Matcher

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
CREATININE, CALCIUM, ALBUMIN = "2160-0", "17861-6", "1751-7"
PLAN = read_plan(
    needs(
        "tumour_sizes",
        "conditions",
        "disease_status",
        analytes=["creatinine", "calcium"],
        near={"albumin": ("calcium", 7)},
    ),
    TERMINOLOGY,
)


def every_value(plan: ReadPlan) -> ReadPlan:
    """The plain reading: the same plan, every candidate of every slot validated."""
    return dataclasses.replace(plan, repeated=frozenset())


def days_ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def lab(oid: str, loinc: str, days: int, value: Any, unit: str, status: str = "final") -> dict[str, Any]:
    res = observation(oid, loinc, days_ago(days), status, valueQuantity=quantity(1.0, unit))
    res["valueQuantity"]["value"] = value
    return res


def read(resources: list[dict[str, Any]], plan: ReadPlan = PLAN) -> PatientFacts:
    return build_facts([patient(), *resources], TERMINOLOGY, TODAY, "p1", plan)


def refs(facts: PatientFacts, analyte: str) -> list[str]:
    return [value.ref for value in facts.labs.get(analyte, ())]


# --- what is validated --------------------------------------------------------------------------------------


def test_values_older_than_the_newest_usable_one_are_never_validated(caplog):
    chart = [lab("d3", CREATININE, 3, 1.1, "mg/dL"), lab("bad", CREATININE, 10, "not a number", "mg/dL")]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = read(chart)
    assert refs(facts, "creatinine") == ["Observation/d3"]
    assert facts.skipped == ()
    assert "Observation/bad" not in caplog.text
    assert read(chart, every_value(PLAN)).skipped == ("Observation/bad",)  # the plain reading validates it


def test_an_analyte_no_rule_reads_is_not_read_at_all(caplog):
    chart = [lab("cr", CREATININE, 3, 1.1, "mg/dL"), lab("height", "8302-2", 3, "tall", "cm")]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = read(chart)
    assert set(facts.labs) == {"creatinine"}
    assert facts.skipped == () and "height" not in caplog.text
    with_height = read_plan(PLAN.needs | needs(analytes=["height"]), TERMINOLOGY)
    assert read(chart, with_height).skipped == ("Observation/height",)


def test_unusable_newer_values_are_passed_over_until_a_usable_one(caplog):
    chart = [
        lab("invalid", CREATININE, 1, "not a number", "mg/dL"),
        lab("preliminary", CREATININE, 2, 1.0, "mg/dL", status="preliminary"),
        lab("bound", CREATININE, 3, 1.0, "mg/dL"),
        lab("usable", CREATININE, 4, 1.2, "mg/dL"),
        lab("older", CREATININE, 5, 1.3, "mg/dL"),
    ]
    chart[2]["valueQuantity"]["comparator"] = "<"
    facts = read(chart)
    assert refs(facts, "creatinine") == ["Observation/usable"]
    assert facts.skipped == ("Observation/invalid",)


def test_a_newer_value_in_an_unknown_unit_is_still_reported():
    chart = [lab("odd", CREATININE, 2, 1.1, "furlongs"), lab("usable", CREATININE, 6, 1.0, "mg/dL")]
    facts = read(chart)
    assert [v.ref for v in facts.unconverted_labs["creatinine"]] == ["Observation/odd"]
    result = compile_rule({"lab": {"analyte": "creatinine", "le": 1.5}}).evaluate(
        facts, EvaluationContext(terminology=TERMINOLOGY)
    )
    assert result.evidence == ("Observation/odd",)
    assert "unit cannot be converted" in result.reason


def test_the_newest_usable_value_is_read_whatever_its_age():
    stale = [lab("d40", CREATININE, 40, 1.1, "mg/dL"), lab("d50", CREATININE, 50, 1.1, "mg/dL")]
    assert refs(read([lab("bad", CREATININE, 5, "x", "mg/dL"), *stale]), "creatinine") == ["Observation/d40"]
    assert refs(read([lab("d5", CREATININE, 5, 1.0, "mg/dL"), *stale]), "creatinine") == ["Observation/d5"]


def test_the_albumin_closest_to_the_newest_calcium_is_read_too():
    chart = [
        lab("ca", CALCIUM, 10, 9.0, "mg/dL"),
        lab("alb-newest", ALBUMIN, 1, 3.5, "g/dL"),
        lab("alb-far", ALBUMIN, 20, 3.5, "g/dL"),
        lab("alb-near", ALBUMIN, 12, 3.0, "g/dL"),
        lab("alb-nearer-but-invalid", ALBUMIN, 11, "x", "g/dL"),
        lab("alb-next", ALBUMIN, 14, 3.1, "g/dL"),
    ]
    facts = read(chart)
    assert refs(facts, "albumin") == ["Observation/alb-newest", "Observation/alb-near"]
    every = read(chart, every_value(PLAN))
    assert corrected_calcium(facts) == corrected_calcium(every)
    assert corrected_calcium(facts) is not None


def size(oid: str, days: int, cm: Any, **about: Any) -> dict[str, Any]:
    value = {"value": cm, "unit": "cm", "code": "cm"}
    return observation(oid, "21889-1", days_ago(days), valueQuantity=value, **about)


def test_the_newest_usable_size_of_each_lesion_is_read_and_the_kidney_domain_picks_the_primary_tumour(caplog):
    kidney_cancer = condition("rcc", "http://snomed.info/sct", "254915003")
    lung = {"bodySite": concept("http://snomed.info/sct", "39607008")}
    primary = {"focus": [{"reference": "Condition/rcc"}]}
    chart = [
        kidney_cancer,
        size("lung-new", 5, 2.0, **lung),  # newest, of a metastasis: its own lesion
        size("lung-old", 50, "not read", **lung),  # older, of the same lesion: never validated
        size("kidney-bad", 20, "large", **primary),  # the primary's newest: invalid, skipped
        size("kidney", 40, 6.5, **primary),  # the primary's newest usable: the one the rules read
        size("kidney-old", 90, "not read", **primary),  # older: never validated
    ]
    with caplog.at_level(logging.WARNING, logger="cds_service.fhir"):
        facts = read(chart)
    assert [s.ref for s in facts.tumour_sizes] == ["Observation/lung-new", "Observation/kidney"]
    assert facts.skipped == ("Observation/kidney-bad",)
    assert "not read" not in caplog.text and "-old" not in caplog.text
    found = kidney.primary_tumour(facts, TERMINOLOGY)
    assert found is not None and found.ref == "Observation/kidney"
    every = read(chart, every_value(PLAN))
    assert kidney.primary_tumour(every, TERMINOLOGY) == found


def status(oid: str, days: int, value: Any) -> dict[str, Any]:
    coded = concept("http://snomed.info/sct", value) if isinstance(value, str) else value
    return observation(oid, "97509-4", days_ago(days), valueCodeableConcept=coded)


STABLE, METASTATIC = "359746009", "399409002"


def test_every_disease_status_is_read():
    chart = [
        status("unusable-new", 2, STABLE) | {"status": "preliminary"},  # newest, not usable: no fact
        status("latest", 10, STABLE),  # the latest status the rules read
        status("metastatic", 300, METASTATIC),  # when metastases were first seen
        status("odd", 400, {"coding": "not a list"}),  # invalid: skipped
    ]
    facts = read(chart)
    assert [(d.ref, d.status) for d in facts.disease_status] == [
        ("Observation/latest", "stable"),
        ("Observation/metastatic", "metastatic"),
    ]
    assert facts.skipped == ("Observation/odd",)
    assert [s.ref for s in facts.metastasis.statuses] == ["Observation/metastatic"]


# --- same results as reading every value --------------------------------------------------------------------


def assert_same_results(engine_of: Matcher, resources: list[Any], patient_id: str | None) -> None:
    engine = engine_of.engine
    args = (resources, engine_of.catalog.terminology, TODAY, patient_id)
    newest = build_facts(*args, engine.read_plan)
    every = build_facts(*args, every_value(engine.read_plan))
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
def measurement(draw: Any) -> dict[str, Any]:
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
