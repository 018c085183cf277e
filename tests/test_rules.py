"""Leaf operators of the rule language (mappings/README.md): both sides of each threshold, the threshold
itself, missing and stale data, units, limits of normal, modifiers, evidence; and rule compilation errors."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from factories import TODAY, Patient, context, terminology
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service import operators  # noqa: F401 (registers every operator)
from cds_service.engine.registry import OPERATORS, Bounds, Labels, LeafResult
from cds_service.engine.rules import compile_rule
from cds_service.errors import RuleParameterError, UnknownOperatorError
from cds_service.facts import PatientFacts
from cds_service.facts.plan import closed
from cds_service.terminology import ICD10CM, SNOMED
from cds_service.verdicts import NO_TREATMENT_HISTORY, Truth

REPO = Path(__file__).resolve().parents[1]
T, F, U, C = Truth.TRUE, Truth.FALSE, Truth.UNKNOWN, Truth.CLINICIAN


def run(rule: dict[str, Any], patient: Patient | PatientFacts, **windows: int) -> LeafResult:
    facts = patient.build() if isinstance(patient, Patient) else patient
    return compile_rule(rule).evaluate(facts, context(**windows))


def iso(days: int) -> str:
    return date.fromordinal(TODAY.toordinal() - days).isoformat()


# --- registry and compilation -------------------------------------------------------------------------------


def test_registry_matches_the_readme_operator_table() -> None:
    readme = (REPO / "mappings" / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Leaf operators", 1)[1]
    documented = set()
    for line in table.splitlines():
        match = re.match(r"\| `([a-z_]+)`( / `([a-z_]+)`)? \|", line)
        if match:
            documented.update(name for name in (match.group(1), match.group(3)) if name)
    assert documented == set(OPERATORS)


def test_registry_matches_the_trial_schema() -> None:
    schema = json.loads((REPO / "cds_service" / "schemas" / "trial.schema.json").read_text(encoding="utf-8"))
    leaves = set(schema["$defs"]["rule"]["properties"]) - {"all", "any", "not"}
    assert leaves == set(OPERATORS)


def test_valuesets_read_by_rules_are_the_ones_operators_name() -> None:
    """The value sets operators read by name, not through a rule parameter, are declared in their needs."""
    read_by_name = {
        valueset
        for operator in OPERATORS.values()
        for valueset in closed(operator.needs({"analyte": "alt"})).valuesets
    }
    assert {"kidney-cancer", "metastatic-disease", "pregnancy", "other-malignancy"} <= read_by_name
    assert {"nephrectomy", "tumour-site-kidney"} <= read_by_name


def test_unknown_operator_is_named_with_its_path() -> None:
    with pytest.raises(UnknownOperatorError, match=r"rule/all/1: unknown operator 'ecgo'"):
        compile_rule({"all": [{"age": {"min": 18}}, {"ecgo": {"le": 1}}]})


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"age": {"min": 18, "maximum": 80}}, r"rule/age/maximum: unknown parameter"),
        ({"condition": {"within_days": 3}}, r"rule/condition: missing parameter 'valueset'"),
        ({"lab": {"analyte": "alt"}}, r"give at least one of"),
        ({"lab": {"analyte": "alt", "le": 40, "le_uln": 2}}, r"one kind of bound"),
        ({"ecog": {"le": "1"}}, r"rule/ecog/le: wrong type|a bound must be a number"),
        ({"condition": {"valueset": "x", "current_only": "yes"}}, r"current_only: wrong type"),
        ({"condition": {"valueset": "x", "if_true": "false"}}, r"if_true: must be unknown or clinician"),
        ({"sex": "other"}, r"sex must be female or male"),
        ({"clinician": {"text": "consent"}}, r"rule/clinician: expected a string"),
        ({"all": []}, r"rule/all: expected a non-empty list"),
        ({"age": {"min": 18}, "sex": "male"}, r"exactly one key"),
        ({"imdc_risk": {"in": ["good"]}}, r"unknown IMDC group"),
        ({"disease_status": {"true_if": ["stable"], "false_if": ["stable"]}}, r"both true_if and false_if"),
        ({"current_regimen": {"one_of": [[]]}}, r"non-empty ingredient lists"),
        ({"blood_pressure": {"max_age_days": 10}}, r"systolic_gt or diastolic_gt"),
    ],
)
def test_compile_errors(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleParameterError, match=message):
        compile_rule(rule)


def test_equal_rules_have_equal_keys_whatever_the_key_order() -> None:
    first = compile_rule({"lab": {"analyte": "alt", "le_uln": 2, "max_age_days": 7}})
    second = compile_rule({"lab": {"max_age_days": 7, "le_uln": 2, "analyte": "alt"}})
    assert first.key == second.key
    assert first.key != compile_rule({"lab": {"analyte": "alt", "le_uln": 3}}).key


# --- demographics -------------------------------------------------------------------------------------------


def test_clinician_is_always_clinician_with_its_text() -> None:
    assert run({"clinician": "informed consent"}, Patient()) == LeafResult(C, "informed consent")


@pytest.mark.parametrize(("years", "truth"), [(17, F), (18, T), (19, T)])
def test_age_minimum(years: int, truth: Truth) -> None:
    result = run({"age": {"min": 18}}, Patient().aged(years))
    assert result.truth is truth
    assert result.reason == f"age {years} (≥ 18)"
    assert result.evidence == ("Patient/p1",)


def test_age_the_day_before_the_birthday() -> None:
    born = date(TODAY.year - 18, TODAY.month, TODAY.day + 1)
    assert run({"age": {"min": 18}}, Patient().born(born)).truth is F
    assert run({"age": {"min": 18, "max": 80}}, Patient().aged(81)).truth is F


def test_age_without_birth_date_is_unknown() -> None:
    assert run({"age": {"min": 18}}, Patient()) == LeafResult(U, "no birth date recorded", ("Patient/p1",))


@pytest.mark.parametrize(
    ("sex", "truth"), [("female", T), ("male", F), ("other", F), ("unknown", U), (None, U)]
)
def test_sex(sex: str | None, truth: Truth) -> None:
    patient = Patient().sex(sex) if sex else Patient()
    assert run({"sex": "female"}, patient).truth is truth


# --- conditions and procedures ------------------------------------------------------------------------------


def test_condition_recorded_is_true_with_its_reference() -> None:
    patient = Patient().condition("hiv-hepatitis", display="HIV infection", onset=3000, ref="Condition/hiv")
    result = run({"condition": {"valueset": "hiv-hepatitis"}}, patient)
    assert result == LeafResult(T, f"HIV infection since {iso(3000)}", ("Condition/hiv",))


def test_condition_not_recorded_is_false_or_unknown_when_asked() -> None:
    assert run({"condition": {"valueset": "hiv-hepatitis"}}, Patient()) == LeafResult(
        F, "no record of HIV or chronic hepatitis B/C"
    )
    assert run({"condition": {"valueset": "hiv-hepatitis", "absent": "unknown"}}, Patient()).truth is U


def test_condition_absence_proves_nothing_when_conditions_could_not_be_read() -> None:
    result = run({"condition": {"valueset": "hiv-hepatitis"}}, Patient().unavailable("Condition"))
    assert result == LeafResult(U, "Condition could not be read")


@pytest.mark.parametrize(("onset", "truth"), [(182, T), (183, T), (184, F), (None, U)])
def test_condition_within_days(onset: int | None, truth: Truth) -> None:
    patient = Patient().condition("heart-failure", onset=onset)
    result = run({"condition": {"valueset": "heart-failure", "within_days": 183}}, patient)
    assert result.truth is truth
    assert result.evidence == ("Condition/1",)


def test_condition_current_only_ignores_history() -> None:
    patient = Patient().condition("heart-failure", current=False, display="Heart failure")
    assert run({"condition": {"valueset": "heart-failure"}}, patient).truth is T
    result = run({"condition": {"valueset": "heart-failure", "current_only": True}}, patient)
    assert result == LeafResult(F, "Heart failure resolved or inactive (history only)", ("Condition/1",))


def test_unconfirmed_condition_is_unknown() -> None:
    patient = Patient().condition("brain-metastasis", confirmed=False, display="Brain metastasis?")
    result = run({"condition": {"valueset": "brain-metastasis"}}, patient)
    assert result == LeafResult(U, "Brain metastasis? recorded but not confirmed", ("Condition/1",))
    assert run({"condition": {"valueset": "brain-metastasis", "within_days": 30}}, patient).truth is F


@pytest.mark.parametrize(("days", "truth"), [(27, T), (28, T), (29, F), (None, U)])
def test_procedure_within_days(days: int | None, truth: Truth) -> None:
    patient = Patient().procedure("major-surgery", days=days, display="Hemicolectomy")
    assert run({"procedure": {"valueset": "major-surgery", "within_days": 28}}, patient).truth is truth


def test_procedure_absent_is_false_unless_procedures_could_not_be_read() -> None:
    assert run({"procedure": {"valueset": "nephrectomy"}}, Patient()) == LeafResult(
        F, "no record of nephrectomy"
    )
    assert run({"procedure": {"valueset": "nephrectomy"}}, Patient().unavailable("Procedure")).truth is U


# --- disease ------------------------------------------------------------------------------------------------

HISTOLOGY = {"histology": {"valueset": "rcc-clear-cell", "contrary": "rcc-non-clear-cell"}}


def test_histology() -> None:
    clear = Patient().condition(
        "kidney-cancer", "rcc-clear-cell", display="Clear cell RCC", ref="Condition/rcc"
    )
    assert run(HISTOLOGY, clear) == LeafResult(
        T, "Clear cell RCC (clear cell renal cell carcinoma)", ("Condition/rcc",)
    )
    papillary = Patient().condition("kidney-cancer", "rcc-non-clear-cell", display="Papillary RCC")
    assert run(HISTOLOGY, papillary).truth is F
    assert run(HISTOLOGY, Patient().condition("kidney-cancer")) == LeafResult(
        U, "histology not recorded", ("Condition/1",)
    )
    # a clear cell histology elsewhere than on a kidney cancer does not count
    assert run(HISTOLOGY, Patient().condition("rcc-clear-cell")).truth is U


def test_metastatic_from_condition_staging_or_status() -> None:
    site = Patient().condition("metastatic-disease", display="Lung metastasis", onset=50, ref="Condition/m")
    assert run({"metastatic": {}}, site) == LeafResult(
        T, f"Lung metastasis since {iso(50)}", ("Condition/m",)
    )
    assert run({"metastatic": {}}, Patient().staging(True, days=10)) == LeafResult(
        T, f"M1 on {iso(10)}", ("Observation/1",)
    )
    assert run({"metastatic": {}}, Patient().disease_status("metastatic")).truth is T


def test_metastatic_false_only_with_m0_and_no_metastasis() -> None:
    assert run({"metastatic": {}}, Patient().staging(False, days=30)) == LeafResult(
        F, f"latest M category M0 on {iso(30)}; no metastasis recorded", ("Observation/1",)
    )
    assert run({"metastatic": {}}, Patient()) == LeafResult(U, "no metastasis or M category recorded")
    assert run({"metastatic": {}}, Patient().staging(False).unavailable("Condition")).truth is U
    assert run({"metastatic": {}}, Patient().condition("metastatic-disease", confirmed=False)).truth is U


@pytest.mark.parametrize(("metastasis_onset", "truth"), [(400, T), (311, T), (300, F)])
def test_metastases_synchronous(metastasis_onset: int, truth: Truth) -> None:
    patient = (
        Patient()
        .condition("kidney-cancer", onset=400)
        .condition("metastatic-disease", onset=metastasis_onset)
    )
    result = run({"metastases_synchronous": {}}, patient)
    assert result.truth is truth
    assert set(result.evidence) == {"Condition/1", "Condition/2"}


def test_metastases_synchronous_without_diagnosis_date_is_unknown() -> None:
    patient = Patient().condition("kidney-cancer", onset=None).condition("metastatic-disease", onset=10)
    assert run({"metastases_synchronous": {"days": 90}}, patient).truth is U


def test_primary_in_place() -> None:
    measured = (
        Patient().condition("kidney-cancer", ref="Condition/k").tumour_size(5.2, focus=("Condition/k",))
    )
    result = run({"primary_in_place": {}}, measured)
    assert result.truth is T
    assert result.evidence == ("Observation/1",)
    assert run({"primary_in_place": {}}, measured.procedure("nephrectomy", ref="Procedure/n")) == LeafResult(
        F, "nephrectomy recorded", ("Procedure/n",)
    )
    assert run({"primary_in_place": {}}, Patient().condition("kidney-cancer")).truth is U


def test_primary_in_place_is_unknown_when_procedures_could_not_be_read() -> None:
    patient = Patient().condition("kidney-cancer", ref="Condition/k").tumour_size(5.2, focus=("Condition/k",))
    assert run({"primary_in_place": {}}, patient.unavailable("Procedure")).truth is U


@pytest.mark.parametrize(("size", "le_4", "gt_4"), [(3.9, T, F), (4.0, T, F), (4.1, F, T)])
def test_primary_tumour_size(size: float, le_4: Truth, gt_4: Truth) -> None:
    patient = (
        Patient()
        .condition("kidney-cancer", ref="Condition/k")
        .tumour_size(size, days=20, focus=("Condition/k",))
    )
    result = run({"primary_tumour_size": {"le_cm": 4}}, patient)
    assert result == LeafResult(le_4, f"primary tumour {size:g} cm on {iso(20)} (≤ 4 cm)", ("Observation/1",))
    assert run({"primary_tumour_size": {"gt_cm": 4}}, patient).truth is gt_4


def test_primary_tumour_size_unknown_without_a_kidney_tumour_size() -> None:
    other = Patient().condition("kidney-cancer").tumour_size(2.0, focus=("Condition/elsewhere",))
    assert run({"primary_tumour_size": {"le_cm": 4}}, other).truth is U


# --- labs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "lt", "le"), [(2.4, T, T), (2.5, F, T), (2.6, F, F)], ids=["below", "at", "above"]
)
def test_lab_absolute_bound_on_both_sides(value: float, lt: Truth, le: Truth) -> None:
    patient = Patient().lab("creatinine", value, "mg/dL", days=5, ref="Observation/cr")
    result = run({"lab": {"analyte": "creatinine", "lt": 2.5}}, patient)
    assert result == LeafResult(lt, f"creatinine {value:g} mg/dL on {iso(5)} (< 2.5)", ("Observation/cr",))
    assert run({"lab": {"analyte": "creatinine", "le": 2.5}}, patient).truth is le


@pytest.mark.parametrize(
    ("comparator", "value", "rule", "truth"),
    [
        ("<", 0.2, {"le": 1.5}, T),  # every value below 0.2 is within
        ("<", 2.0, {"le": 1.5}, U),  # below 2.0: maybe within, maybe not
        (">", 2.0, {"le": 1.5}, F),  # above 2.0: never within
        ("<=", 1.5, {"le": 1.5}, T),
        (">=", 1.5, {"lt": 1.5}, F),
        (">", 1.5, {"le": 1.5}, F),
        ("<", 1.5, {"lt": 1.5}, T),
        ("<", 0.2, {"ge": 0.5}, F),
        ("<", 0.2, {"ge": 0.1}, U),
    ],
)
def test_lab_value_known_only_as_a_bound(comparator: str, value: float, rule: dict, truth: Truth) -> None:
    patient = Patient().lab("creatinine", value, "mg/dL", days=3, ref="Observation/b", comparator=comparator)
    result = run({"lab": {"analyte": "creatinine", **rule}}, patient)
    assert result.truth is truth
    assert result.reason.startswith(f"creatinine {comparator}{value:g} mg/dL on {iso(3)}")
    assert result.evidence == ("Observation/b",)


def test_lab_bound_against_a_multiple_of_the_upper_limit() -> None:
    below = Patient().lab("bilirubin", 0.2, "mg/dL", days=2, high=1.2, comparator="<")
    assert run({"lab": {"analyte": "bilirubin", "le_uln": 1.5}}, below).truth is T
    above = Patient().lab("bilirubin", 3.0, "mg/dL", days=2, high=1.2, comparator=">")
    assert run({"lab": {"analyte": "bilirubin", "le_uln": 1.5}}, above).truth is F
    assert "= >2.5 x ULN" in run({"lab": {"analyte": "bilirubin", "le_uln": 1.5}}, above).reason


LIMIT_CMPS = st.sampled_from(["lt", "le", "gt", "ge"])
SMALL = st.integers(0, 6).map(lambda n: n / 2)
HALF_LINE = {
    "<": lambda x, v: x < v,
    "<=": lambda x, v: x <= v,
    ">": lambda x, v: x > v,
    ">=": lambda x, v: x >= v,
}


@settings(max_examples=400, deadline=None)
@given(
    limits=st.lists(st.tuples(LIMIT_CMPS, SMALL), min_size=1, max_size=3),
    comparator=st.sampled_from(sorted(HALF_LINE)),
    value=SMALL,
)
def test_a_bound_decides_as_every_value_it_allows_would(limits: list, comparator: str, value: float) -> None:
    """Checked against the plain definition: every limit and bound sits on a half-step, so the values a
    quarter-step apart (and far out on either side) stand for every value the bound allows."""
    bounds = Bounds(tuple(limits))
    allowed = [x / 4 for x in range(-40, 41) if HALF_LINE[comparator](x / 4, value)]
    assert bounds.decide_bound(comparator, value) is bounds.decide(allowed)


def test_lab_missing_or_stale_is_unknown() -> None:
    rule = {"lab": {"analyte": "creatinine", "lt": 2.5}}
    assert run(rule, Patient()) == LeafResult(U, "no creatinine in the last 30 days")
    assert run(rule, Patient().lab("creatinine", 1.1, "mg/dL", days=30)).truth is T
    stale = run(rule, Patient().lab("creatinine", 1.1, "mg/dL", days=31, ref="Observation/old"))
    assert stale == LeafResult(
        U, f"latest creatinine 1.1 mg/dL on {iso(31)} is older than 30 days", ("Observation/old",)
    )
    assert run(rule, Patient().lab("creatinine", 1.1, "mg/dL", days=None)).truth is U


def test_lab_recency_window_from_policy_or_rule() -> None:
    patient = Patient().lab("creatinine", 1.1, "mg/dL", days=10)
    assert run({"lab": {"analyte": "creatinine", "lt": 2.5}}, patient, lab_max_age_days=7).truth is U
    assert run({"lab": {"analyte": "creatinine", "lt": 2.5, "max_age_days": 7}}, patient).truth is U
    assert run({"lab": {"analyte": "creatinine", "lt": 2.5, "max_age_days": 10}}, patient).truth is T


def test_lab_uses_the_latest_value() -> None:
    patient = Patient().lab("creatinine", 3.0, "mg/dL", days=20).lab("creatinine", 1.0, "mg/dL", days=2)
    assert run({"lab": {"analyte": "creatinine", "lt": 2.5}}, patient).truth is T


def test_lab_converted_value_says_what_was_sent() -> None:
    patient = Patient().lab("creatinine", 97 * 0.0113096584, "mg/dL", as_sent="97 umol/L", days=3)
    result = run({"lab": {"analyte": "creatinine", "lt": 2.5}}, patient)
    assert result.truth is T
    assert result.reason == f"creatinine 1.1 mg/dL (sent as 97 umol/L) on {iso(3)} (< 2.5)"


def test_lab_in_a_unit_that_cannot_be_converted_is_unknown_and_says_so() -> None:
    patient = (
        Patient()
        .lab("creatinine", 1.0, "mg/dL", days=20)
        .unconverted_lab("creatinine", 97, "mmol/dL", days=2)
    )
    result = run({"lab": {"analyte": "creatinine", "lt": 2.5}}, patient)
    assert result == LeafResult(
        U, f"creatinine 97 mmol/dL on {iso(2)}: unit cannot be converted to mg/dL", ("Observation/2",)
    )
    # an older unconvertible value does not hide a newer usable one
    newer = (
        Patient()
        .unconverted_lab("creatinine", 97, "mmol/dL", days=20)
        .lab("creatinine", 1.0, "mg/dL", days=2)
    )
    assert run({"lab": {"analyte": "creatinine", "lt": 2.5}}, newer).truth is T


@pytest.mark.parametrize(("alt", "truth"), [(79, T), (80, T), (81, F)])
def test_lab_uln_multiple_uses_the_observation_range(alt: float, truth: Truth) -> None:
    patient = Patient().lab("alt", alt, "U/L", days=11, high=40, ref="Observation/alt")
    result = run({"lab": {"analyte": "alt", "le_uln": 2}}, patient)
    assert result.truth is truth
    assert result.evidence == ("Observation/alt",)
    if alt == 80:
        assert result.reason == f"ALT 80 U/L on {iso(11)} = 2.0 x ULN 40 (lab's range; ≤ 2 x ULN)"


def test_lab_uln_multiple_falls_back_on_the_default_range() -> None:
    result = run({"lab": {"analyte": "alt", "le_uln": 2}}, Patient().lab("alt", 80, "U/L", days=1))
    assert result.truth is T  # 80 / 56 = 1.43
    assert result.reason == f"ALT 80 U/L on {iso(1)} = 1.43 x ULN 56 (default range; ≤ 2 x ULN)"


def test_lab_uln_multiple_at_the_limit_despite_float_rounding() -> None:
    # 1.8 / 1.2 is 1.5000000000000002 in binary floating point
    patient = Patient().lab("bilirubin", 1.8, "mg/dL", high=1.2)
    assert run({"lab": {"analyte": "bilirubin", "le_uln": 1.5}}, patient).truth is T
    assert run({"lab": {"analyte": "bilirubin", "lt_uln": 1.5}}, patient).truth is F


def test_lab_lln_uses_the_sex_specific_default_and_is_unknown_without_one() -> None:
    rule = {"lab": {"analyte": "hemoglobin", "ge_lln": 1}}
    assert run(rule, Patient().sex("female").lab("hemoglobin", 12.5, "g/dL")).truth is T
    assert run(rule, Patient().sex("male").lab("hemoglobin", 12.5, "g/dL")).truth is F
    no_limit = run(rule, Patient().lab("hemoglobin", 12.5, "g/dL", days=4))
    assert no_limit.truth is U
    assert no_limit.reason.endswith("no LLN (no range from the lab, no default range)")


LIVER_CONDITIONAL = {
    "any": [
        {"lab": {"analyte": "alt", "le_uln": 2}},
        {"all": [{"condition": {"valueset": "liver-metastasis"}}, {"lab": {"analyte": "alt", "le_uln": 5}}]},
    ]
}


@pytest.mark.parametrize(
    ("alt", "liver_metastasis", "truth"),
    [(80, False, T), (120, False, F), (120, True, T), (200, True, T), (240, True, F)],
)
def test_transaminase_limit_depends_on_liver_metastasis(
    alt: float, liver_metastasis: bool, truth: Truth
) -> None:
    patient = Patient().lab("alt", alt, "U/L", high=40)
    if liver_metastasis:
        patient.condition("liver-metastasis", display="Liver metastasis")
    assert run(LIVER_CONDITIONAL, patient).truth is truth


def test_transaminase_limit_unknown_without_alt() -> None:
    assert run(LIVER_CONDITIONAL, Patient().condition("liver-metastasis")).truth is U


ANTICOAGULANT_EXCEPTION = {
    "any": [
        {"lab": {"analyte": "inr", "le_uln": 1.5}},
        {
            "medication": {
                "valueset": "anticoagulant",
                "if_true": "clinician",
                "note": "on anticoagulation: allowed if no prior abnormality in coagulation parameters",
            }
        },
    ]
}


def test_inr_within_limit_is_true() -> None:
    assert run(ANTICOAGULANT_EXCEPTION, Patient().lab("inr", 1.1, "{INR}", high=1.1)).truth is T


def test_high_inr_on_anticoagulant_is_left_to_the_clinician() -> None:
    patient = (
        Patient().lab("inr", 2.5, "{INR}", high=1.1).medication("anticoagulant", display="Warfarin 5 mg")
    )
    result = run(ANTICOAGULANT_EXCEPTION, patient)
    assert result.truth is C
    note = ANTICOAGULANT_EXCEPTION["any"][1]["medication"]["note"]
    assert result.reason == f"Warfarin 5 mg since {iso(100)}; {note}"
    assert result.evidence == ("MedicationStatement/2",)


def test_high_inr_without_anticoagulant_is_false() -> None:
    result = run(ANTICOAGULANT_EXCEPTION, Patient().lab("inr", 2.5, "{INR}", high=1.1))
    assert result.truth is F
    assert "no record of anticoagulant" in result.reason


def test_missing_inr_on_anticoagulant_stays_unknown() -> None:
    assert run(ANTICOAGULANT_EXCEPTION, Patient().medication("anticoagulant")).truth is U


# --- creatinine clearance -----------------------------------------------------------------------------------


def _renal(creatinine: float, days: int = 3) -> Patient:
    return (
        Patient()
        .aged(60)
        .sex("male")
        .lab("weight", 80, "kg", days=40)
        .lab("creatinine", creatinine, "mg/dL", days=days)
    )


@pytest.mark.parametrize(("creatinine", "truth"), [(2.9, T), (3.0, F)])  # (140-60)*80/(72*cr): 30.7 / 29.6
def test_creatinine_clearance_cockcroft_gault(creatinine: float, truth: Truth) -> None:
    result = run({"creatinine_clearance": {"gt": 30}}, _renal(creatinine))
    assert result.truth is truth
    assert result.evidence == ("Observation/2", "Observation/1")
    assert result.reason.startswith("Cockcroft-Gault") and result.reason.endswith("(> 30 mL/min)")


def test_creatinine_clearance_needs_every_input() -> None:
    no_weight = Patient().aged(60).sex("male").lab("creatinine", 1.0, "mg/dL")
    assert run({"creatinine_clearance": {"gt": 30}}, no_weight) == LeafResult(
        U, "Cockcroft-Gault clearance not computable: no weight"
    )
    stale = run({"creatinine_clearance": {"gt": 30}}, _renal(1.0, days=31))
    assert stale.truth is U
    assert "no creatinine in the last 30 days" in stale.reason


# --- performance status and blood pressure ------------------------------------------------------------------


@pytest.mark.parametrize(("score", "truth"), [(0, T), (1, T), (2, F)])
def test_ecog_bound(score: int, truth: Truth) -> None:
    result = run({"ecog": {"le": 1}}, Patient().ecog(score, days=10, ref="Observation/e"))
    assert result == LeafResult(truth, f"ECOG {score} on {iso(10)} (≤ 1)", ("Observation/e",))


def test_ecog_stale_or_missing_is_unknown() -> None:
    assert run({"ecog": {"le": 1}}, Patient().ecog(2, days=60)).truth is F
    stale = run({"ecog": {"le": 1}}, Patient().ecog(2, days=61))
    assert stale == LeafResult(U, f"latest ECOG 2 on {iso(61)} is older than 60 days", ("Observation/1",))
    assert run({"ecog": {"le": 1}}, Patient()) == LeafResult(U, "no ECOG in the last 60 days")
    assert run({"ecog": {"le": 1, "max_age_days": 90}}, Patient().ecog(1, days=61)).truth is T


@pytest.mark.parametrize(
    ("karnofsky", "truth"), [(100, T), (90, T), (80, T), (70, U), (60, F)], ids=lambda v: str(v)
)
def test_ecog_read_from_karnofsky_only_where_the_mapping_decides(karnofsky: int, truth: Truth) -> None:
    result = run({"ecog": {"le": 1}}, Patient().karnofsky(karnofsky, days=5))
    assert result.truth is truth
    assert result.reason.startswith(f"Karnofsky {karnofsky} on {iso(5)} = ECOG ")


def test_native_score_wins_over_the_other_scale() -> None:
    patient = Patient().ecog(2, days=20).karnofsky(90, days=1)
    assert run({"ecog": {"le": 1}}, patient).truth is F


@pytest.mark.parametrize(("ecog", "truth"), [(0, T), (1, U), (2, F)])
def test_karnofsky_read_from_ecog(ecog: int, truth: Truth) -> None:
    assert run({"karnofsky": {"ge": 80}}, Patient().ecog(ecog)).truth is truth


@pytest.mark.parametrize(
    ("systolic", "diastolic", "truth"),
    [(151, 80, T), (140, 91, T), (150, 90, F), (120, 70, F), (140, None, U), (160, None, T)],
)
def test_blood_pressure_above_either_limit(systolic: float, diastolic: float | None, truth: Truth) -> None:
    patient = Patient().blood_pressure(systolic, diastolic, days=2, ref="Observation/bp")
    result = run({"blood_pressure": {"systolic_gt": 150, "diastolic_gt": 90}}, patient)
    assert result.truth is truth
    assert result.evidence == ("Observation/bp",)


def test_blood_pressure_stale_is_unknown() -> None:
    result = run({"blood_pressure": {"systolic_gt": 150}}, Patient().blood_pressure(180, 100, days=31))
    assert result.truth is U
    assert result.reason == f"latest blood pressure 180/100 mmHg on {iso(31)} is older than 30 days"


# --- pregnancy ----------------------------------------------------------------------------------------------


def test_pregnant() -> None:
    female = Patient().sex("female")
    assert run({"pregnant": {}}, Patient().sex("male").condition("pregnancy")) == LeafResult(
        F, "sex male", ("Patient/p1",)
    )
    assert run({"pregnant": {}}, Patient().sex("female")) == LeafResult(F, "no record of pregnancy")
    assert run({"pregnant": {}}, Patient().sex("female").condition("pregnancy", onset=40)).truth is T
    assert run({"pregnant": {}}, Patient().sex("female").condition("pregnancy", current=False)).truth is F
    assert run({"pregnant": {}}, female.pregnancy_test(True, days=30, ref="Observation/hcg")) == LeafResult(
        T, f"positive pregnancy test on {iso(30)}", ("Observation/hcg",)
    )


def test_pregnancy_test_counts_for_30_days_and_the_latest_wins() -> None:
    assert run({"pregnant": {}}, Patient().sex("female").pregnancy_test(True, days=31)).truth is F
    later_negative = Patient().sex("female").pregnancy_test(True, days=20).pregnancy_test(False, days=2)
    assert run({"pregnant": {}}, later_negative).truth is F
    assert run({"pregnant": {}}, Patient().sex("female").unavailable("Observation")).truth is U


# --- medications and therapy lines --------------------------------------------------------------------------


def test_medication_current_or_within_days() -> None:
    stopped = Patient().medication("anticoagulant", start=100, end=10, active=False, display="Apixaban")
    assert run({"medication": {"valueset": "anticoagulant"}}, stopped).truth is F
    assert run({"medication": {"valueset": "anticoagulant", "within_days": 10}}, stopped).truth is T
    assert run({"medication": {"valueset": "anticoagulant", "within_days": 9}}, stopped).truth is F
    assert run({"medication": {"valueset": "anticoagulant", "current": False}}, stopped).truth is T
    assert (
        run({"medication": {"valueset": "anticoagulant"}}, Patient().medication("anticoagulant")).truth is T
    )
    unreadable = Patient().unavailable("MedicationRequest")
    assert run({"medication": {"valueset": "anticoagulant"}}, unreadable).truth is U


def test_received_with_and_without_combination() -> None:
    alone = Patient().line("nivolumab", start=300)
    combined = Patient().line("nivolumab", "ipilimumab", start=300)
    rule = {"received": {"valueset": "immune-checkpoint-inhibitor"}}
    combination = {"received": {"valueset": "immune-checkpoint-inhibitor", "combination": True}}
    assert run(rule, alone).truth is T
    assert run(combination, alone).truth is F
    result = run(combination, combined)
    assert result == LeafResult(
        T, f"line 1: ipilimumab + nivolumab from {iso(300)} (ongoing)", ("MedicationStatement/1",)
    )
    assert run(rule, Patient().line("sunitinib", start=300)) == LeafResult(
        F,
        "no therapy line with immune checkpoint inhibitor; "
        f"recorded: line 1: sunitinib from {iso(300)} (ongoing)",
        ("MedicationStatement/1",),
    )
    assert run(rule, Patient()) == LeafResult(U, NO_TREATMENT_HISTORY)
    assert run(rule, Patient().unavailable("MedicationRequest")).truth is U


REGIMENS = {"current_regimen": {"one_of": [["axitinib", "pembrolizumab"], ["nivolumab", "ipilimumab"]]}}


def test_current_regimen() -> None:
    assert run(REGIMENS, Patient().line("pembrolizumab", "axitinib")).truth is T
    assert run(REGIMENS, Patient().line("pembrolizumab", "lenvatinib")).truth is F
    assert run(REGIMENS, Patient().line("pembrolizumab").unavailable("MedicationRequest")).truth is U
    assert run(REGIMENS, Patient().line("axitinib", "pembrolizumab", start=300, end=10)) == LeafResult(
        F,
        f"no ongoing systemic therapy; recorded: line 1: axitinib + pembrolizumab from {iso(300)} "
        f"(until {iso(10)})",
        ("MedicationStatement/1",),
    )
    assert run(REGIMENS, Patient()) == LeafResult(U, NO_TREATMENT_HISTORY)


@pytest.mark.parametrize(
    ("days", "truth"),
    [(161, F), (167, F), (168, T), (364, T), (365, F), (371, F)],
    ids=["23 weeks", "23 weeks 6 days", "24 weeks", "52 weeks", "52 weeks 1 day", "53 weeks"],
)
def test_regimen_weeks(days: int, truth: Truth) -> None:
    result = run(
        {"regimen_weeks": {"min": 24, "max": 52}}, Patient().line("axitinib", "pembrolizumab", start=days)
    )
    assert result.truth is truth
    assert result.reason.endswith("(≥ 24 weeks and ≤ 52 weeks)")
    assert result.evidence == ("MedicationStatement/1",)


def test_regimen_weeks_without_ongoing_line_follows_the_treatment_history() -> None:
    assert run({"regimen_weeks": {"min": 24}}, Patient().line("sunitinib", start=300, end=100)).truth is F
    assert run({"regimen_weeks": {"min": 24}}, Patient()) == LeafResult(U, NO_TREATMENT_HISTORY)


@pytest.mark.parametrize(("lines", "truth"), [(0, U), (1, F), (2, T), (3, T)])
def test_therapy_lines_minimum(lines: int, truth: Truth) -> None:
    patient = Patient()
    for i in range(lines):
        patient.line(f"drug-{i}", start=600 - 100 * i, end=None if i == lines - 1 else 550 - 100 * i)
    result = run({"therapy_lines": {"min": 2}}, patient)
    assert result.truth is truth
    assert len(result.evidence) == lines


def test_therapy_lines_of_unknown_setting_count_only_when_it_matters() -> None:
    patient = Patient().line("sunitinib", start=500, end=300).line("nivolumab", start=200, metastatic=None)
    assert run({"therapy_lines": {"min": 2}}, patient).truth is U
    assert run({"therapy_lines": {"min": 3}}, patient).truth is F
    assert run({"therapy_lines": {"min": 1}}, patient).truth is T
    assert run({"therapy_lines": {"min": 2, "metastatic_only": False}}, patient).truth is T


def test_therapy_lines_adjuvant_line_does_not_count() -> None:
    patient = Patient().line("sunitinib", start=900, end=700, metastatic=False).line("nivolumab", start=100)
    assert run({"therapy_lines": {"min": 2}}, patient).truth is F
    assert run({"therapy_lines": {"max": 1, "ongoing": True}}, patient).truth is T


def test_therapy_lines_ongoing() -> None:
    second_line = Patient().line("sunitinib", start=500, end=300).line("cabozantinib", start=200)
    assert run({"therapy_lines": {"min": 1, "max": 2, "ongoing": True}}, second_line).truth is T
    finished = Patient().line("sunitinib", start=500, end=300)
    assert run({"therapy_lines": {"min": 1, "max": 2, "ongoing": True}}, finished).truth is F
    assert run({"therapy_lines": {"min": 1, "ongoing": False}}, finished).truth is T
    assert run({"therapy_lines": {"min": 1}}, Patient().unavailable("MedicationStatement")).truth is U
    partly_read = second_line.unavailable("MedicationRequest")
    assert run({"therapy_lines": {"min": 2}}, partly_read).truth is T
    assert run({"therapy_lines": {"max": 2}}, partly_read).truth is U
    assert run({"therapy_lines": {"min": 3}}, partly_read).reason.endswith(
        f"MedicationRequest could not be read: line 1: sunitinib from {iso(500)} (until {iso(300)}); "
        f"line 2: cabozantinib from {iso(200)} (ongoing)"
    )


# --- disease status, other malignancy, IMDC -----------------------------------------------------------------

STATUS = {"disease_status": {"true_if": ["stable", "improved"], "false_if": ["worsened"]}}


@pytest.mark.parametrize(("status", "truth"), [("stable", T), ("worsened", F), ("undetermined", U)])
def test_disease_status(status: str, truth: Truth) -> None:
    result = run(STATUS, Patient().disease_status(status, days=12, ref="Observation/ds"))
    assert result == LeafResult(truth, f"disease status {status} on {iso(12)}", ("Observation/ds",))


def test_disease_status_recency() -> None:
    assert run(STATUS, Patient().disease_status("stable", days=90)).truth is T
    assert run(STATUS, Patient().disease_status("stable", days=91)).truth is U
    assert run(STATUS, Patient()) == LeafResult(U, "no disease status in the last 90 days")
    assert (
        run(
            {"disease_status": {"true_if": ["stable"], "max_age_days": 30}},
            Patient().disease_status("stable", days=40),
        ).truth
        is U
    )


def test_note_without_modifier_is_always_appended() -> None:
    rule = {"disease_status": {"true_if": ["complete-remission"], "note": "a major response needs RECIST"}}
    result = run(rule, Patient().disease_status("partial-remission", days=3))
    assert result == LeafResult(
        U, f"disease status partial-remission on {iso(3)}; a major response needs RECIST", ("Observation/1",)
    )


PROSTATE = (ICD10CM, "C61")
SKIN = (ICD10CM, "C44.91".replace(".", ""))


@pytest.mark.parametrize(
    ("onset", "current", "truth"), [(365 * 2, False, T), (365 * 4, False, F), (365 * 4, True, T)]
)
def test_other_malignancy_window(onset: int, current: bool, truth: Truth) -> None:
    patient = Patient().condition(codes=[PROSTATE], onset=onset, current=current, display="Prostate cancer")
    result = run({"other_malignancy": {"within_years": 3}}, patient)
    assert result.truth is truth
    assert result.evidence == ("Condition/1",)


def test_other_malignancy_exceptions_and_what_is_not_another_cancer() -> None:
    patient = (
        Patient()
        .condition("kidney-cancer", codes=[(ICD10CM, "C641")])
        .condition("metastatic-disease", codes=[(ICD10CM, "C7800")])
        .condition(codes=[(ICD10CM, "C7951")])  # secondary, even without the value set
        .condition("skin-exceptions", codes=[SKIN], onset=100, display="Basal cell carcinoma")
    )
    rule = {"primary": "kidney-cancer", "within_years": 3}
    result = run({"other_malignancy": {**rule, "except": "skin-exceptions"}}, patient)
    assert result == LeafResult(
        F,
        "no record of another cancer in the last 3 years (excepted: Basal cell carcinoma)",
        ("Condition/4",),
    )
    assert run({"other_malignancy": rule}, patient).truth is T
    # the trial's primary cancer is a parameter: without it, a kidney cancer is another cancer
    without_primary = Patient().condition("kidney-cancer", codes=[(ICD10CM, "C641")], onset=100)
    assert run({"other_malignancy": {"within_years": 3}}, without_primary).truth is T
    assert run({"other_malignancy": rule}, without_primary).truth is F


def test_other_malignancy_from_the_snomed_value_set_and_in_situ_codes() -> None:
    snomed = Patient().condition("other-malignancy", codes=[(SNOMED, "399068003")], onset=100)
    assert run({"other_malignancy": {"within_years": 5}}, snomed).truth is T
    in_situ = Patient().condition(codes=[(ICD10CM, "D051")], onset=100)
    assert run({"other_malignancy": {"within_years": 5}}, in_situ).truth is T
    benign = Patient().condition(codes=[(ICD10CM, "D179")], onset=100)
    assert run({"other_malignancy": {"within_years": 5}}, benign).truth is F


def test_other_malignancy_undated_or_unconfirmed_is_unknown() -> None:
    undated = Patient().condition(codes=[PROSTATE], onset=None, current=False)
    assert run({"other_malignancy": {"within_years": 3}}, undated).truth is U
    unconfirmed = Patient().condition(codes=[PROSTATE], onset=100, confirmed=False)
    assert run({"other_malignancy": {"within_years": 3}}, unconfirmed).truth is U
    long_ago = Patient().condition(codes=[PROSTATE], onset=4000, current=False, confirmed=False)
    assert run({"other_malignancy": {"within_years": 3}}, long_ago).truth is F


IMDC = {"imdc_risk": {"in": ["favorable", "intermediate"]}}


def test_imdc_favorable_with_every_factor_known() -> None:
    patient = (
        Patient()
        .sex("female")
        .condition("kidney-cancer", onset=800)
        .line("sunitinib", start=300)  # more than a year after diagnosis
        .karnofsky(90)
        .lab("hemoglobin", 13.0, "g/dL")
        .lab("calcium", 9.5, "mg/dL")
        .lab("albumin", 4.0, "g/dL")
        .lab("neutrophils", 4.0, "10*3/uL")
        .lab("platelets", 250, "10*3/uL")
    )
    result = run(IMDC, patient)
    assert result.truth is T
    assert result.reason.startswith("IMDC favorable: 0 of 6 risk factors")
    assert "unknown" not in result.reason
    assert len(result.evidence) >= 6


def test_imdc_decides_poor_early_from_three_known_factors() -> None:
    patient = (
        Patient().sex("female").condition("kidney-cancer", onset=100).ecog(2).lab("hemoglobin", 10.0, "g/dL")
    )
    result = run(IMDC, patient)
    assert result.truth is F
    assert result.reason.startswith("IMDC poor: 3 of 6 risk factors (")
    assert result.reason.endswith(", 3 unknown")


def test_imdc_unknown_while_groups_remain_open() -> None:
    patient = Patient().sex("female").condition("kidney-cancer", onset=100).ecog(0)
    result = run(IMDC, patient)
    assert result.truth is U
    assert "unknown: " in result.reason
    assert run({"imdc_risk": {"in": ["favorable", "intermediate", "poor"]}}, patient).truth is T


# --- modifiers and nodes ------------------------------------------------------------------------------------


def test_if_true_softens_and_appends_the_note_only_when_it_applies() -> None:
    rule = {"condition": {"valueset": "heart-failure", "if_true": "unknown", "note": "check the NYHA class"}}
    result = run(rule, Patient().condition("heart-failure", display="Heart failure", onset=None))
    assert result == LeafResult(U, "Heart failure; check the NYHA class", ("Condition/1",))
    assert run(rule, Patient()) == LeafResult(F, "no record of heart failure")


def test_if_false_softens_absence() -> None:
    rule = {
        "procedure": {"valueset": "nephrectomy", "if_false": "unknown", "note": "check the surgical history"}
    }
    assert run(rule, Patient()) == LeafResult(U, "no record of nephrectomy; check the surgical history")
    assert run(rule, Patient().procedure("nephrectomy")).truth is T


def test_nodes_cite_the_children_that_decided() -> None:
    patient = (
        Patient().aged(70).ecog(3, ref="Observation/e").lab("creatinine", 1.0, "mg/dL", ref="Observation/c")
    )
    rule = {
        "all": [
            {"age": {"min": 18}},
            {"ecog": {"le": 1}},
            {"lab": {"analyte": "creatinine", "lt": 2.5}},
        ]
    }
    result = run(rule, patient)
    assert result == LeafResult(F, f"ECOG 3 on {iso(10)} (≤ 1)", ("Observation/e",))
    passing = run({"all": [{"age": {"min": 18}}, {"lab": {"analyte": "creatinine", "lt": 2.5}}]}, patient)
    assert passing.truth is T
    assert passing.evidence == ("Patient/p1", "Observation/c")
    assert passing.reason == f"age 70 (≥ 18); creatinine 1 mg/dL on {iso(5)} (< 2.5)"
    negated = run({"not": {"ecog": {"le": 1}}}, patient)
    assert negated == LeafResult(T, f"ECOG 3 on {iso(10)} (≤ 1)", ("Observation/e",))


def test_nodes_cite_each_leaf_reason_once() -> None:
    rule = {
        "any": [
            {"all": [{"sex": "female"}, {"pregnant": {}}]},
            {"all": [{"sex": "female"}, {"clinician": "x"}]},
        ]
    }
    assert run(rule, Patient().sex("male")) == LeafResult(F, "sex male", ("Patient/p1",))


def test_a_node_cites_the_references_of_a_single_deciding_leaf_once() -> None:
    both = Patient().condition("kidney-cancer", "metastatic-disease", onset=100, ref="Condition/mrcc")
    leaf = run({"metastases_synchronous": {}}, both)
    assert leaf.truth is T and leaf.evidence == ("Condition/mrcc", "Condition/mrcc")
    node = run({"all": [{"metastases_synchronous": {}}, {"clinician": "x"}]}, both)
    assert node == LeafResult(C, "x")
    node = run({"any": [{"metastases_synchronous": {}}, {"clinician": "x"}]}, both)
    assert node == LeafResult(T, leaf.reason, ("Condition/mrcc",))


def test_labels_name_value_sets_as_inside_a_sentence_and_analytes_by_their_abbreviation() -> None:
    labels = Labels(terminology())
    assert labels.valueset("heart-failure") == "heart failure"
    assert labels.valueset("hiv-hepatitis") == "HIV or chronic hepatitis B/C"
    assert labels.valueset("not-in-the-catalog") == "not in the catalog"
    assert labels.analyte("alt") == "ALT"
    assert labels.analyte("inr") == "INR"
    assert labels.analyte("creatinine") == "creatinine"
    assert labels.analyte("not-in-the-catalog") == "not in the catalog"


def test_annotation_units_are_not_shown_and_mixed_case_abbreviations_are_kept() -> None:
    result = run(
        {"lab": {"analyte": "inr", "le_uln": 1.5}}, Patient().lab("inr", 1.0, "{INR}", days=2, high=1.1)
    )
    assert result.reason == f"INR 1 on {iso(2)} = 0.91 x ULN 1.1 (lab's range; ≤ 1.5 x ULN)"


def test_procedure_reason_gives_its_date_and_histology_is_not_repeated() -> None:
    surgery = Patient().procedure("nephrectomy", days=100, display="Radical nephrectomy, left")
    assert (
        run({"procedure": {"valueset": "nephrectomy"}}, surgery).reason
        == f"Radical nephrectomy, left on {iso(100)}"
    )
    named = Patient().condition(
        "kidney-cancer", "rcc-clear-cell", display="Clear cell renal cell carcinoma, left"
    )
    assert run(HISTOLOGY, named).reason == "Clear cell renal cell carcinoma, left"


def test_medication_not_started_or_stopped_at_an_unknown_date() -> None:
    planned = Patient().medication("anticoagulant", start=-5)
    assert run({"medication": {"valueset": "anticoagulant"}}, planned).truth is F
    assert run({"medication": {"valueset": "anticoagulant", "within_days": 30}}, planned).truth is F
    stopped_long_ago = Patient().medication("anticoagulant", start=200, active=False, display="Warfarin")
    result = run({"medication": {"valueset": "anticoagulant", "within_days": 30}}, stopped_long_ago)
    assert result == LeafResult(
        U,
        f"Warfarin since {iso(200)}: not known whether taken in the last 30 days",
        ("MedicationStatement/1",),
    )
    assert run({"medication": {"valueset": "anticoagulant", "within_days": 365}}, stopped_long_ago).truth is T
