"""Unit conversion of Observation values to each analyte's canonical unit (mappings/analytes.yaml)."""

from __future__ import annotations

from datetime import date

import pytest
from conftest_facts import facts_of, lab, load_terminology, observation, patient, quantity

from cds_service.engine.text import unit_text

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
ANALYTES = sorted(TERMINOLOGY.analytes.values(), key=lambda a: a.id)
CODES = [(a.id, code) for a in ANALYTES for code in sorted(a.loinc)]
UNITS = [(a.id, min(a.loinc), unit, factor) for a in ANALYTES for unit, factor in a.factors.items()]


def _single(analyte: str, loinc: str, value: float, unit: str) -> float | None:
    facts = facts_of([patient(), lab("o1", loinc, value, unit)], TERMINOLOGY, TODAY, "p1")
    values = facts.labs.get(analyte, ())
    return values[0].value if values else None


@pytest.mark.parametrize(
    ("analyte", "loinc", "value", "unit", "expected"),
    [
        ("creatinine", "2160-0", 1.1, "mg/dL", 1.1),
        ("creatinine", "38483-4", 0.9, "mg/dL", 0.9),
        ("creatinine", "14682-9", 100, "umol/L", 1.1312),
        ("creatinine", "59826-8", 200, "umol/L", 2.2624),
        ("creatinine", "77140-2", 0.1, "mmol/L", 1.1312),
        ("creatinine", "2160-0", 9, "mg/L", 0.9),
        ("hemoglobin", "718-7", 13.2, "g/dL", 13.2),
        ("hemoglobin", "718-7", 132, "g/L", 13.2),
        ("hemoglobin", "718-7", 8.0, "mmol/L", 12.8912),
        ("bilirubin", "1975-2", 1.2, "mg/dL", 1.2),
        ("bilirubin", "1975-2", 100, "umol/L", 5.8466),
        ("bilirubin", "14631-6", 20, "umol/L", 1.16932),
        ("bilirubin", "54363-7", 50, "µmol/L", 2.9233),
        ("bilirubin", "77137-8", 10, "umol/l", 0.58466),
        ("hemoglobin", "718-7", 13.5, "g/dl", 13.5),
        ("hemoglobin", "59260-0", 8.0, "mmol/L", 12.8912),
        ("hemoglobin", "30313-1", 14.1, "g/dL", 14.1),
        ("platelets", "778-1", 180, "K/uL", 180),
        ("neutrophils", "753-4", 1.8, "10*9/L", 1.8),
        ("calcium", "2000-8", 2.5, "mmol/L", 10.02),
        ("calcium", "17861-6", 5, "mEq/L", 10.02),
        ("calcium", "1996-8", 2.25, "mmol/l", 9.018),
        ("calcium-corrected", "46099-8", 9.6, "mg/dL", 9.6),
        ("albumin", "54347-0", 600, "umol/L", 3.98622),
        ("albumin", "61151-7", 38, "g/L", 3.8),
        ("alt", "1743-4", 0.5, "ukat/L", 30),
        ("ast", "30239-8", 750, "nkat/L", 45),
        ("alkaline-phosphatase", "77141-0", 2, "µkat/L", 120),
        ("inr", "38875-1", 1.3, "{INR}", 1.3),
        ("aptt", "14979-9", 28, "sec", 28),
        ("weight", "3141-9", 81.5, "kg", 81.5),
        ("height", "3137-7", 1725, "mm", 172.5),
        ("hcg", "21198-7", 12, "[IU]/L", 12),
        ("platelets", "777-3", 250, "10*3/uL", 250),
        ("platelets", "26515-7", 250, "10*9/L", 250),
        ("platelets", "777-3", 250000, "/mm3", 250),
        ("platelets", "777-3", 250000, "/uL", 250),
        ("neutrophils", "751-8", 4.2, "10*3/uL", 4.2),
        ("neutrophils", "26499-4", 4.2, "10*9/L", 4.2),
        ("neutrophils", "751-8", 4200, "/mm3", 4.2),
        ("neutrophils", "751-8", 4200, "{cells}/uL", 4.2),
        ("weight", "29463-7", 72, "kg", 72),
        ("weight", "29463-7", 155.0, "[lb_av]", 70.30681735),
        ("weight", "29463-7", 72000, "g", 72),
        ("height", "8302-2", 170, "cm", 170),
        ("height", "8302-2", 65, "[in_i]", 165.1),
        ("height", "8302-2", 1.7, "m", 170),
        ("calcium", "17861-6", 2.5, "mmol/L", 10.02),
        ("calcium-corrected", "29265-6", 2.5, "mmol/L", 10.02),
        ("albumin", "1751-7", 40, "g/L", 4.0),
        ("alt", "1742-6", 30, "U/L", 30),
        ("ast", "1920-8", 30, "[IU]/L", 30),
        ("alkaline-phosphatase", "6768-6", 90, "IU/L", 90),
        ("inr", "6301-6", 1.1, "{INR}", 1.1),
        ("inr", "34714-6", 1.1, "1", 1.1),
        ("aptt", "3173-2", 31, "s", 31),
    ],
)
def test_value_is_converted_to_the_canonical_unit(analyte, loinc, value, unit, expected):
    assert _single(analyte, loinc, value, unit) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("analyte", "loinc", "unit"),
    [
        ("creatinine", "2160-0", "mg/(24.h)"),
        ("albumin", "1751-7", "mg/dL"),
        ("hemoglobin", "718-7", "%"),
        ("weight", "29463-7", "stone"),
        ("platelets", "777-3", "10*6/uL"),
    ],
)
def test_unknown_unit_is_not_used(analyte, loinc, unit):
    assert _single(analyte, loinc, 5, unit) is None


@pytest.mark.parametrize(("analyte", "loinc"), CODES)
def test_every_code_of_an_analyte_is_read_as_that_analyte(analyte, loinc):
    unit = TERMINOLOGY.analytes[analyte].unit
    assert _single(analyte, loinc, 1.5, unit) == 1.5


@pytest.mark.parametrize(("analyte", "loinc", "unit", "factor"), UNITS)
def test_every_unit_of_an_analyte_converts_by_its_factor(analyte, loinc, unit, factor):
    assert _single(analyte, loinc, 3, unit) == pytest.approx(3 * factor)


# Equivalences published independently of analytes.yaml: the value in the first unit equals the value in the
# second within 0.1 % (the published figures are rounded).
@pytest.mark.parametrize(
    ("analyte", "loinc", "value", "unit", "expected"),
    [
        ("creatinine", "14682-9", 88.4, "umol/L", 1.0),  # JAMA SI table: mg/dL x 88.4 = umol/L
        ("bilirubin", "14631-6", 17.1, "umol/L", 1.0),  # JAMA SI table: mg/dL x 17.1 = umol/L
        ("calcium", "2000-8", 0.2495, "mmol/L", 1.0),  # JAMA SI table: mg/dL x 0.2495 = mmol/L
        ("hemoglobin", "59260-0", 0.6206, "mmol/L", 1.0),  # medicalalgorithms.com: g/dL x 0.6206 = mmol/L
        ("albumin", "54347-0", 527, "umol/L", 3.5),  # Tietz interval limit: 3.5 g/dL = 527 umol/L
        ("alt", "1742-6", 16.67, "nkat/L", 1.0),  # 1 U = 16.67 nkat
        ("ast", "1920-8", 0.01667, "ukat/L", 1.0),  # the same in ukat/L
    ],
)
def test_factors_agree_with_published_equivalences(analyte, loinc, value, unit, expected):
    assert _single(analyte, loinc, value, unit) == pytest.approx(expected, rel=1e-3)


def test_printed_unit_is_tried_when_the_ucum_code_is_unknown():
    q = {"value": 97, "unit": "umol/L", "code": "umol/l-typo", "system": "http://unitsofmeasure.org"}
    facts = facts_of([observation("o1", "14682-9", valueQuantity=q)], TERMINOLOGY, TODAY)
    assert facts.labs["creatinine"][0].value == pytest.approx(97 * 0.011312)
    assert facts.labs["creatinine"][0].as_sent == "97 umol/L"


def test_value_with_a_comparator_is_kept_as_a_bound_converted_like_a_value():
    q = quantity(5, "umol/L") | {"comparator": "<"}
    facts = facts_of([observation("o1", "1975-2", valueQuantity=q)], TERMINOLOGY, TODAY)
    (bound,) = facts.labs["bilirubin"]
    assert (bound.comparator, bound.value, bound.as_sent) == ("<", pytest.approx(5 * 0.058466), "<5 umol/L")


def test_an_inr_sent_without_a_unit_is_read_and_a_creatinine_is_not():
    inr = {"value": 1.1}
    facts = facts_of([observation("o1", "6301-6", valueQuantity=inr)], TERMINOLOGY, TODAY)
    assert facts.labs["inr"][0].value == 1.1
    creatinine = facts_of([observation("o2", "2160-0", valueQuantity={"value": 1.1})], TERMINOLOGY, TODAY)
    assert "creatinine" not in creatinine.labs
    assert creatinine.unconverted_labs["creatinine"][0].ref == "Observation/o2"


def test_reference_range_is_converted_too():
    res = lab("o1", "14682-9", 97, "umol/L")
    res["referenceRange"] = [{"low": quantity(53, "umol/L"), "high": quantity(106.1, "umol/L")}]
    value = facts_of([res], TERMINOLOGY, TODAY).labs["creatinine"][0]
    assert value.low == pytest.approx(53 * 0.011312)
    assert value.high == pytest.approx(1.2, abs=0.001)


def test_tumour_size_in_mm_and_cm():
    cm = observation(
        "t1", "21889-1", "2026-10-01", valueQuantity=quantity(3.5, "cm"), focus=[{"reference": "x"}]
    )
    mm = observation("t2", "33728-7", "2026-11-01", valueQuantity=quantity(52, "mm"))  # another lesion
    sizes = facts_of([cm, mm], TERMINOLOGY, TODAY).tumour_sizes
    assert [(s.ref, s.longest_cm) for s in sizes] == [
        ("Observation/t2", pytest.approx(5.2)),
        ("Observation/t1", 3.5),
    ]


def test_tumour_size_in_an_unknown_unit_is_not_used():
    res = observation("t1", "21889-1", valueQuantity=quantity(3, "[in_i]"))
    assert facts_of([res], TERMINOLOGY, TODAY).tumour_sizes == ()


@pytest.mark.parametrize(
    ("ucum", "shown"),
    [
        ("10*3/uL", "x10^3/uL"),
        ("10*9/L", "x10^9/L"),
        ("m[IU]/mL", "mIU/mL"),
        ("umol/L", "umol/L"),
        ("{INR}", ""),
    ],
)
def test_units_are_shown_as_clinicians_write_them(ucum: str, shown: str) -> None:
    assert unit_text(ucum) == shown


def test_a_value_sent_in_another_spelling_of_the_unit_does_not_say_sent_as():
    facts = facts_of([lab("o1", "777-3", 228, "K/uL")], TERMINOLOGY, TODAY)
    assert (facts.labs["platelets"][0].value, facts.labs["platelets"][0].as_sent) == (228, "")
