"""Derived values on plain PatientFacts: worked examples, missing inputs, evidence references."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from conftest_facts import load_terminology

from cds_service.domains.kidney import (
    imdc,
    imdc_groups_possible,
    primary_in_place_flag,
    primary_tumour,
    synchronous,
)
from cds_service.engine.derived import (
    corrected_calcium,
    creatinine_clearance,
    limit_multiple,
    limit_of_normal,
    weeks_on_current_regimen,
)
from cds_service.facts import (
    ConditionFact,
    LabValue,
    PatientFacts,
    ProcedureFact,
    ScoreFact,
    StagingFact,
    TherapyLine,
    TumourSizeFact,
)
from cds_service.facts.conditions import metastasis_evidence
from cds_service.terminology import SNOMED

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
RECENT = date(2026, 11, 16)


def lab(analyte: str, value: float, ref: str | None = None, when: date = RECENT, **limits) -> LabValue:
    unit = TERMINOLOGY.analytes[analyte].unit
    return LabValue(analyte, value, unit, when, ref or f"Observation/{analyte}", **limits)


def with_labs(facts: PatientFacts, *values: LabValue) -> PatientFacts:
    labs = dict(facts.labs)
    for value in values:
        labs[value.analyte] = (value, *labs.get(value.analyte, ()))
    return replace(facts, labs=labs)


def kidney_cancer(onset: date = date(2023, 1, 1), ref: str = "Condition/rcc") -> ConditionFact:
    return ConditionFact(ref, frozenset(), frozenset({"kidney-cancer"}), "RCC", onset, True, True)


def metastasis(onset: date, ref: str = "Condition/met") -> ConditionFact:
    return ConditionFact(ref, frozenset(), frozenset({"metastatic-disease"}), "lung mets", onset, True, True)


def line(
    number: int, start: date, ingredients: set[str], ongoing: bool = True, metastatic=True
) -> TherapyLine:
    return TherapyLine(
        number,
        frozenset(ingredients),
        start,
        None if ongoing else start,
        ongoing,
        (f"MedicationStatement/{number}",),
        metastatic,
    )


MAN = PatientFacts(today=TODAY, birth_date=date(1966, 1, 1), sex="male")  # 60 years old


def with_evidence(facts: PatientFacts, **fields) -> PatientFacts:
    """`facts` with `fields` replaced and the evidence of metastasis built from them, as build_facts does."""
    changed = replace(facts, **fields)
    evidence = metastasis_evidence(changed.conditions, changed.staging, changed.disease_status, TERMINOLOGY)
    return replace(changed, metastasis=evidence)


# --- Cockcroft-Gault


def test_cockcroft_gault_worked_example_man():
    facts = with_labs(MAN, lab("creatinine", 1.0, "Observation/cr"), lab("weight", 72, "Observation/wt"))
    result = creatinine_clearance(facts)
    assert result.value == pytest.approx(80.0)
    assert result.refs == ("Observation/cr", "Observation/wt") and result.oldest == RECENT


def test_cockcroft_gault_woman_is_085_times():
    facts = with_labs(replace(MAN, sex="female"), lab("creatinine", 1.0), lab("weight", 72))
    assert creatinine_clearance(facts).value == pytest.approx(68.0)


@pytest.mark.parametrize("missing", ["creatinine", "weight", "age", "sex"])
def test_cockcroft_gault_missing_input_is_none(missing):
    facts = with_labs(MAN, *(lab(a, v) for a, v in (("creatinine", 1.0), ("weight", 72)) if a != missing))
    if missing == "age":
        facts = replace(facts, birth_date=None)
    if missing == "sex":
        facts = replace(facts, sex="unknown")
    assert creatinine_clearance(facts) is None


def test_cockcroft_gault_ignores_creatinine_older_than_since():
    facts = with_labs(MAN, lab("creatinine", 1.0, when=date(2026, 9, 1)), lab("weight", 72))
    assert creatinine_clearance(facts, since=date(2026, 10, 22)) is None


# --- limits of normal


def test_uln_from_the_observation_range_first():
    value = lab("bilirubin", 2.0, high=1.0)
    multiple = limit_multiple(value, TERMINOLOGY.analytes["bilirubin"], "male")
    assert (multiple.multiple, multiple.limit, multiple.source) == (2.0, 1.0, "observation")


def test_uln_from_the_documented_default_otherwise():
    analyte = TERMINOLOGY.analytes["alt"]
    multiple = limit_multiple(lab("alt", 112), analyte, None)
    assert multiple.source == "default" and multiple.limit == analyte.default_range.high
    assert multiple.multiple == pytest.approx(112 / analyte.default_range.high)


def test_limit_of_normal_names_its_source_and_never_falls_back_from_an_unusable_own_range():
    bilirubin = TERMINOLOGY.analytes["bilirubin"]
    assert limit_of_normal(lab("bilirubin", 2.0, high=1.0), bilirubin, None) == (1.0, "observation")
    default = bilirubin.default_range.high
    assert limit_of_normal(lab("bilirubin", 2.0), bilirubin, None) == (default, "default")
    assert limit_of_normal(lab("bilirubin", 2.0, high=0.0), bilirubin, None) is None
    hemoglobin = TERMINOLOGY.analytes["hemoglobin"]
    assert limit_of_normal(lab("hemoglobin", 12.6), hemoglobin, "male", "low") == (13.5, "default")
    assert limit_of_normal(lab("hemoglobin", 12.6), hemoglobin, None, "low") is None


def test_lln_uses_the_sex_specific_default():
    analyte = TERMINOLOGY.analytes["hemoglobin"]
    assert limit_multiple(lab("hemoglobin", 12.6), analyte, "female", "low").limit == 12.0
    assert limit_multiple(lab("hemoglobin", 12.6), analyte, "male", "low").limit == 13.5
    assert limit_multiple(lab("hemoglobin", 12.6), analyte, None, "low") is None


# --- corrected calcium


def test_corrected_calcium_worked_example():
    facts = with_labs(MAN, lab("calcium", 9.0, "Observation/ca"), lab("albumin", 3.0, "Observation/alb"))
    result = corrected_calcium(facts)
    assert result.value == pytest.approx(9.8)
    assert result.refs == ("Observation/ca", "Observation/alb")


def test_corrected_calcium_needs_an_albumin_close_in_time():
    facts = with_labs(MAN, lab("calcium", 9.0), lab("albumin", 3.0, when=date(2026, 10, 1)))
    assert corrected_calcium(facts) is None


# --- treatment history


def test_weeks_on_current_regimen():
    facts = replace(
        MAN,
        therapy_lines=(
            line(1, date(2025, 1, 1), {"sunitinib"}, ongoing=False),
            line(2, date(2026, 10, 24), {"cabozantinib"}),
        ),
    )
    result = weeks_on_current_regimen(facts)
    assert result.value == pytest.approx(4.0) and result.refs == ("MedicationStatement/2",)


def test_no_ongoing_regimen_is_none():
    facts = replace(MAN, therapy_lines=(line(1, date(2025, 1, 1), {"sunitinib"}, ongoing=False),))
    assert weeks_on_current_regimen(facts) is None


# --- disease history


def test_synchronous_when_metastasis_within_90_days():
    facts = with_evidence(MAN, conditions=(kidney_cancer(date(2025, 1, 10)), metastasis(date(2025, 3, 1))))
    flag = synchronous(facts)
    assert flag.value is True and flag.refs == ("Condition/rcc", "Condition/met")


def test_synchronous_from_m1_staging_at_diagnosis():
    m1 = StagingFact(True, (SNOMED, "1229903009"), date(2025, 2, 1), "Observation/m1")
    facts = with_evidence(MAN, conditions=(kidney_cancer(date(2025, 1, 10)),), staging=(m1,))
    assert synchronous(facts).value is True


def test_metachronous_from_a_later_metastasis_condition():
    facts = with_evidence(MAN, conditions=(kidney_cancer(date(2023, 1, 10)), metastasis(date(2026, 1, 1))))
    assert synchronous(facts).value is False


def test_late_m1_staging_alone_is_unknown_but_m0_at_diagnosis_decides():
    m1 = StagingFact(True, (SNOMED, "1229903009"), date(2026, 1, 1), "Observation/m1")
    m0 = StagingFact(False, (SNOMED, "1229901006"), date(2023, 1, 20), "Observation/m0")
    base = replace(MAN, conditions=(kidney_cancer(date(2023, 1, 10)),))
    assert synchronous(with_evidence(base, staging=(m1,))).value is None
    flag = synchronous(with_evidence(base, staging=(m1, m0)))
    assert flag.value is False and "Observation/m0" in flag.refs


def test_synchronous_unknown_without_primary_date():
    assert synchronous(with_evidence(MAN, conditions=(metastasis(date(2025, 3, 1)),))).value is None


def size(cm: float, focus: tuple[str, ...] = ("Condition/rcc",), sites=frozenset()) -> TumourSizeFact:
    return TumourSizeFact(cm, date(2026, 11, 1), f"Observation/size-{cm}", focus, sites)


def test_primary_in_place():
    nephrectomy = ProcedureFact(
        "Procedure/nx", frozenset(), frozenset({"nephrectomy"}), None, date(2024, 1, 1)
    )
    base = replace(MAN, conditions=(kidney_cancer(),))
    assert primary_in_place_flag(replace(base, tumour_sizes=(size(5.0),)), TERMINOLOGY).value is True
    removed = primary_in_place_flag(
        replace(base, tumour_sizes=(size(5.0),), procedures=(nephrectomy,)), TERMINOLOGY
    )
    assert (removed.value, removed.refs) == (False, ("Procedure/nx",))
    assert primary_in_place_flag(base, TERMINOLOGY).value is None
    lung_lesion = size(2.0, focus=("Condition/met",))
    assert primary_in_place_flag(replace(base, tumour_sizes=(lung_lesion,)), TERMINOLOGY).value is None


def test_primary_size_found_by_body_site():
    kidney_site = size(6.0, focus=(), sites=frozenset({(SNOMED, "64033007")}))
    facts = replace(MAN, tumour_sizes=(kidney_site,))
    assert primary_tumour(facts, TERMINOLOGY).ref == "Observation/size-6.0"
    assert primary_tumour(replace(MAN, tumour_sizes=(size(6.0, focus=()),)), TERMINOLOGY) is None


# --- IMDC ---------------------------------------------------------------------------------------------------

KPS_90 = ScoreFact("karnofsky", 90, RECENT, "Observation/kps")
FAVOURABLE = with_labs(
    replace(
        MAN,
        conditions=(kidney_cancer(date(2023, 1, 1)),),
        therapy_lines=(line(1, date(2024, 6, 1), {"sunitinib"}),),
        karnofsky=(KPS_90,),
    ),
    lab("hemoglobin", 14.0),
    lab("calcium-corrected", 9.5),
    lab("neutrophils", 4.0),
    lab("platelets", 250),
)


def abnormal_count(risk) -> int:
    return sum(f.abnormal is True for f in risk.factors)


def test_imdc_zero_factors_is_favorable():
    risk = imdc(FAVOURABLE, TERMINOLOGY)
    assert [f.abnormal for f in risk.factors] == [False] * 6
    assert risk.possible == {"favorable"}
    assert "Observation/kps" in risk.refs and "Condition/rcc" in risk.refs


@pytest.mark.parametrize(
    ("changes", "count", "group"),
    [
        ([lab("platelets", 450, "Observation/plt2")], 1, "intermediate"),
        ([lab("platelets", 450), lab("hemoglobin", 11.0)], 2, "intermediate"),
        ([lab("platelets", 450), lab("hemoglobin", 11.0), lab("neutrophils", 9.0)], 3, "poor"),
    ],
)
def test_imdc_worked_examples(changes, count, group):
    risk = imdc(with_labs(FAVOURABLE, *changes), TERMINOLOGY)
    assert abnormal_count(risk) == count and risk.possible == {group}


def test_imdc_uses_the_observation_range_before_the_default():
    low_by_default_only = lab("hemoglobin", 13.0, low=12.0, high=16.0)
    risk = imdc(with_labs(FAVOURABLE, low_by_default_only), TERMINOLOGY)
    assert risk.factors[2].abnormal is False and "lab's range" in risk.factors[2].text


def test_imdc_time_to_therapy_and_performance_status():
    early = replace(FAVOURABLE, therapy_lines=(line(1, date(2023, 6, 1), {"sunitinib"}),))
    assert imdc(early, TERMINOLOGY).factors[0].abnormal is True
    untreated_recent = replace(FAVOURABLE, conditions=(kidney_cancer(date(2026, 6, 1)),), therapy_lines=())
    assert imdc(untreated_recent, TERMINOLOGY).factors[0].abnormal is True
    ecog2 = replace(FAVOURABLE, karnofsky=(), ecog=(ScoreFact("ecog", 2, RECENT, "Observation/ecog"),))
    assert imdc(ecog2, TERMINOLOGY).factors[1].abnormal is True
    ecog0 = replace(ecog2, ecog=(ScoreFact("ecog", 0, RECENT, "Observation/ecog"),))
    assert imdc(ecog0, TERMINOLOGY).factors[1].abnormal is False


def test_imdc_computed_corrected_calcium():
    facts = replace(FAVOURABLE, labs={k: v for k, v in FAVOURABLE.labs.items() if k != "calcium-corrected"})
    high = with_labs(facts, lab("calcium", 10.0, high=10.2), lab("albumin", 3.0))  # corrected 10.8
    factor = imdc(high, TERMINOLOGY).factors[3]
    assert factor.abnormal is True and factor.refs == ("Observation/calcium", "Observation/albumin")


def test_imdc_three_known_factors_decide_poor_whatever_the_rest():
    facts = with_labs(
        replace(MAN, ecog=(ScoreFact("ecog", 2, RECENT, "Observation/ecog"),)),
        lab("hemoglobin", 10.0),
        lab("platelets", 500),
    )
    risk = imdc(facts, TERMINOLOGY)
    assert [f.abnormal for f in risk.factors] == [None, True, True, None, None, True]
    assert risk.possible == {"poor"}


def test_imdc_unknown_factor_keeps_several_groups_possible():
    ecog1 = replace(FAVOURABLE, karnofsky=(), ecog=(ScoreFact("ecog", 1, RECENT, "Observation/ecog"),))
    assert imdc(ecog1, TERMINOLOGY).possible == {"favorable", "intermediate"}
    ecog1_kps = replace(ecog1, karnofsky=(ScoreFact("karnofsky", 70, date(2026, 11, 1), "Observation/k"),))
    assert imdc(ecog1_kps, TERMINOLOGY).possible == {"intermediate"}


def test_imdc_stale_labs_are_unknown():
    risk = imdc(FAVOURABLE, TERMINOLOGY, lab_since=date(2026, 11, 20))
    assert [f.abnormal for f in risk.factors[2:]] == [None] * 4
    assert risk.possible == {"favorable", "intermediate", "poor"}


@pytest.mark.parametrize(
    ("factors", "groups"),
    [
        ([False] * 6, {"favorable"}),
        ([False] * 5 + [None], {"favorable", "intermediate"}),
        ([True, True] + [None] * 4, {"intermediate", "poor"}),
        ([True] * 3 + [None] * 3, {"poor"}),
        ([None] * 6, {"favorable", "intermediate", "poor"}),
        ([True, False, False, False, False, None], {"intermediate"}),
    ],
)
def test_imdc_groups_possible(factors, groups):
    assert imdc_groups_possible(factors) == groups


@pytest.mark.parametrize(
    ("diagnosed", "treated", "abnormal"),
    [
        (date(2024, 2, 29), date(2025, 2, 27), True),
        (date(2024, 2, 29), date(2025, 2, 28), False),
        (date(2024, 3, 1), date(2025, 2, 28), True),
        (date(2024, 3, 1), date(2025, 3, 1), False),
    ],
)
def test_imdc_time_to_therapy_one_year_boundary(diagnosed, treated, abnormal):
    facts = replace(
        MAN, conditions=(kidney_cancer(diagnosed),), therapy_lines=(line(1, treated, {"sunitinib"}),)
    )
    assert imdc(facts, TERMINOLOGY).factors[0].abnormal is abnormal
