"""build_facts: conditions, observations, medications, therapy lines, procedures, demographics."""

from __future__ import annotations

from datetime import date

import pytest
from conftest_facts import (
    LOINC_URI,
    RXNORM_URI,
    SNOMED_URI,
    concept,
    condition,
    lab,
    load_terminology,
    med_statement,
    observation,
    patient,
    quantity,
    read_everything,
)

from cds_service.domains import kidney
from cds_service.facts.build import build_facts
from cds_service.terminology import ICD10CM, SNOMED

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
EVERYTHING = read_everything(TERMINOLOGY)
AJCC_URI = "http://cancerstaging.org"


def facts_of(*resources, patient_id=None):
    """Facts read with a plan reading every field and analyte (of a repeated measurement: the newest usable
    value)."""
    return build_facts(list(resources), TERMINOLOGY, TODAY, patient_id, EVERYTHING)


def status(code: str) -> dict:
    return {"coding": [{"code": code}]}


# --- patient ------------------------------------------------------------------------------------------------


def test_demographics_and_age():
    facts = facts_of(patient(birth="1966-11-22", gender="female"), patient_id="p1")
    assert (facts.patient_ref, facts.birth_date, facts.sex, facts.age) == (
        "Patient/p1",
        date(1966, 11, 22),
        "female",
        59,
    )


def test_no_patient_resource_leaves_demographics_unknown():
    facts = facts_of(lab("a", "2160-0", 1.0, "mg/dL"), patient_id="p1")
    assert (facts.patient_ref, facts.birth_date, facts.sex, facts.age) == ("Patient/p1", None, None, None)


# --- conditions ---------------------------------------------------------------------------------------------


def test_condition_valuesets_from_codes_and_histology():
    ext = {
        "url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
        "valueCodeableConcept": concept(SNOMED_URI, "30546008"),
    }
    facts = facts_of(condition("c1", ICD10CM, "C64.2", extension=[ext]))
    (fact,) = facts.conditions
    assert "kidney-cancer" in fact.valuesets and "rcc-clear-cell" in fact.valuesets
    assert (fact.onset, fact.current, fact.confirmed) == (date(2025, 1, 10), True, True)


def test_icd10_oid_form_matches_value_set():
    (fact,) = facts_of(condition("c1", "urn:oid:2.16.840.1.113883.6.90", "C64.1")).conditions
    assert "kidney-cancer" in fact.valuesets


@pytest.mark.parametrize("verification", ["entered-in-error", "refuted"])
def test_entered_in_error_and_refuted_conditions_are_dropped(verification):
    res = condition("c1", SNOMED_URI, "702391001", verificationStatus=status(verification))
    assert facts_of(res).conditions == ()


@pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
def test_resolved_conditions_are_history(clinical):
    (fact,) = facts_of(condition("c1", SNOMED_URI, "702391001", clinicalStatus=status(clinical))).conditions
    assert fact.current is False and "kidney-cancer" in fact.valuesets


def test_provisional_condition_is_not_confirmed():
    (fact,) = facts_of(
        condition("c1", SNOMED_URI, "702391001", verificationStatus=status("provisional"))
    ).conditions
    assert fact.confirmed is False


def test_onset_falls_back_to_recorded_date():
    (fact,) = facts_of(
        condition("c1", SNOMED_URI, "702391001", onset=None, recordedDate="2024-02-03")
    ).conditions
    assert fact.onset == date(2024, 2, 3)


# --- labs ---------------------------------------------------------------------------------------------------


def test_latest_value_comes_first_with_its_date_and_ref():
    facts = facts_of(
        lab("old", "2160-0", 1.4, "mg/dL", "2026-10-01"),
        lab("new", "14682-9", 97, "umol/L", "2026-11-16"),
        lab("mid", "2160-0", 1.2, "mg/dL", "2026-11-01"),
    )
    first = facts.labs["creatinine"][0]
    assert (first.ref, first.date, first.as_sent) == ("Observation/new", date(2026, 11, 16), "97 umol/L")
    # of a repeated measurement, the facts hold the newest usable value only (all that a rule reads)
    assert [v.ref for v in facts.labs["creatinine"]] == ["Observation/new"]


def test_reference_range_from_the_observation():
    res = lab(
        "a",
        "1975-2",
        1.0,
        "mg/dL",
        referenceRange=[{"low": quantity(0.3, "mg/dL"), "high": quantity(1.0, "mg/dL")}],
    )
    value = facts_of(res).labs["bilirubin"][0]
    assert (value.low, value.high) == (0.3, 1.0)


def test_population_specific_or_unitless_range_is_not_used():
    ranges = [
        {"high": quantity(1.5, "mg/dL"), "appliesTo": [concept(SNOMED_URI, "248153007")]},
        {"high": {"value": 1.3}},
    ]
    value = facts_of(lab("a", "2160-0", 1.0, "mg/dL", referenceRange=ranges)).labs["creatinine"][0]
    assert (value.low, value.high) == (None, None)


@pytest.mark.parametrize("obs_status", ["entered-in-error", "cancelled", "preliminary", "registered"])
def test_observation_status_not_usable(obs_status):
    assert facts_of(lab("a", "2160-0", 1.0, "mg/dL", status=obs_status)).labs == {}


@pytest.mark.parametrize("obs_status", ["final", "amended", "corrected"])
def test_observation_status_usable(obs_status):
    assert facts_of(lab("a", "2160-0", 1.0, "mg/dL", status=obs_status)).labs["creatinine"][0].value == 1.0


# --- scores, status, staging, size, blood pressure, pregnancy -----------------------------------------------


def test_ecog_minus_one_is_discarded():
    facts = facts_of(
        observation("e1", "89247-1", valueInteger=-1),
        observation("e2", "89247-1", "2026-01-01", valueInteger=2),
    )
    assert [(s.value, s.ref) for s in facts.ecog] == [(2, "Observation/e2")]


def test_ecog_from_answer_code_interpretation_or_quantity():
    readings = [
        observation("a", "89247-1", "2026-11-01", valueCodeableConcept=concept(LOINC_URI, "LA9623-5")),
        observation("b", "89247-1", "2026-10-01", interpretation=[concept(LOINC_URI, "LA9625-0")]),
        observation("c", "89247-1", "2026-09-01", valueQuantity={"value": 2}),
        observation("d", "89247-1", "2026-08-01", valueQuantity={"value": 1.5}),
    ]
    # facts hold the newest usable ECOG only: each way of sending it is read from a chart of its own
    assert [[s.value for s in facts_of(reading).ecog] for reading in readings] == [[1], [3], [2], []]
    assert [s.value for s in facts_of(*readings).ecog] == [1]


@pytest.mark.parametrize(("value", "kept"), [(90, True), (85, False), (110, False), (0, True), (-10, False)])
def test_karnofsky_must_be_a_step_of_ten(value, kept):
    facts = facts_of(observation("k", "89243-0", valueInteger=value))
    assert [s.value for s in facts.karnofsky] == ([value] if kept else [])


def test_karnofsky_from_answer_code():
    facts = facts_of(observation("k", "89243-0", valueCodeableConcept=concept(LOINC_URI, "LA29178-3")))
    assert facts.karnofsky[0].value == 70


@pytest.mark.parametrize(
    ("code_system", "loinc", "value", "expected"),
    [
        (SNOMED_URI, "97509-4", "271299001", "worsened"),
        (SNOMED_URI, "88040-1", "268910001", "improved"),
        (SNOMED_URI, "97509-4", "399409002", "metastatic"),
        (
            "http://hl7.org/fhir/us/mcode/CodeSystem/snomed-requested-cs",
            "97509-4",
            "USCRS-352236",
            "complete-remission",
        ),
    ],
)
def test_disease_status(code_system, loinc, value, expected):
    facts = facts_of(observation("s", loinc, valueCodeableConcept=concept(code_system, value)))
    assert [(d.status, d.ref) for d in facts.disease_status] == [(expected, "Observation/s")]


def test_unknown_disease_status_value_gives_no_fact():
    assert (
        facts_of(observation("s", "97509-4", valueCodeableConcept=concept(SNOMED_URI, "1234"))).disease_status
        == ()
    )


def test_m_category_staging_snomed_and_ajcc():
    m1 = observation("m1", "21907-1", "2026-05-01", valueCodeableConcept=concept(SNOMED_URI, "1229903009"))
    m0 = observation("m0", "21907-1", "2025-01-01", valueCodeableConcept=concept(AJCC_URI, "cM0"))
    snomed_code = observation("m2", "x", "2026-06-01", valueCodeableConcept=concept(AJCC_URI, "M1"))
    snomed_code["code"] = concept(SNOMED_URI, "399387003")
    mx = observation("mx", "21907-1", valueCodeableConcept=concept(AJCC_URI, "cMX"))
    facts = facts_of(m1, m0, snomed_code, mx)
    assert [(s.ref, s.metastatic) for s in facts.staging] == [
        ("Observation/m2", True),
        ("Observation/m1", True),
        ("Observation/m0", False),
    ]


def test_tumour_size_longest_component_focus_and_site():
    res = observation(
        "t1",
        "21889-1",
        component=[
            {"code": concept(LOINC_URI, "33728-7"), "valueQuantity": quantity(45, "mm")},
            {"code": concept(LOINC_URI, "33729-5"), "valueQuantity": quantity(6, "cm")},
        ],
        focus=[{"reference": "Condition/c1"}],
        bodySite=concept(SNOMED_URI, "64033007"),
    )
    (size,) = facts_of(res).tumour_sizes
    assert size.longest_cm == pytest.approx(4.5)
    assert size.focus == ("Condition/c1",) and size.body_sites == frozenset({(SNOMED, "64033007")})


def test_tumour_size_without_longest_component_takes_the_largest_dimension():
    res = observation(
        "t1",
        "21889-1",
        component=[
            {"code": concept(LOINC_URI, "33729-5"), "valueQuantity": quantity(2, "cm")},
            {"code": concept(LOINC_URI, "33729-5"), "valueQuantity": quantity(31, "mm")},
        ],
    )
    assert facts_of(res).tumour_sizes[0].longest_cm == pytest.approx(3.1)


def test_blood_pressure_panel_and_standalone_readings():
    panel = observation(
        "bp",
        "85354-9",
        "2026-11-10",
        component=[
            {"code": concept(LOINC_URI, "8480-6"), "valueQuantity": quantity(152, "mm[Hg]")},
            {"code": concept(LOINC_URI, "8462-4"), "valueQuantity": quantity(91, "mm[Hg]")},
        ],
    )
    systolic = observation("sys", "8480-6", "2026-11-12", valueQuantity=quantity(138, "mm[Hg]"))
    wrong_unit = observation("kpa", "8480-6", "2026-11-13", valueQuantity=quantity(18, "kPa"))

    def readings(*resources):
        return [(b.ref, b.systolic, b.diastolic) for b in facts_of(*resources).blood_pressure]

    # facts hold the newest usable reading only: the kPa one is not usable, the stand-alone systolic is
    assert readings(panel, systolic, wrong_unit) == [("Observation/sys", 138, None)]
    assert readings(panel) == [("Observation/bp", 152, 91)]
    assert readings(wrong_unit) == []


@pytest.mark.parametrize(
    ("loinc", "value", "positive"),
    [
        ("2106-3", {"valueCodeableConcept": concept(SNOMED_URI, "10828004")}, True),
        ("2106-3", {"valueCodeableConcept": concept(LOINC_URI, "LA6577-6")}, False),
        ("2112-1", {"valueCodeableConcept": concept(SNOMED_URI, "260373001")}, True),
        ("2106-3", {"valueString": "Negative"}, False),
        ("19080-1", {"valueQuantity": quantity(1200, "m[IU]/mL")}, True),
        ("19080-1", {"valueQuantity": quantity(2, "[IU]/L")}, False),
        ("19080-1", {"valueQuantity": quantity(12, "m[IU]/mL")}, None),
        ("21198-7", {"valueQuantity": quantity(850, "m[IU]/mL")}, True),  # beta hCG: an hcg analyte code
        ("2118-8", {"valueCodeableConcept": concept(SNOMED_URI, "10828004")}, True),  # serum, qualitative
        ("80385-8", {"valueCodeableConcept": concept(LOINC_URI, "LA6577-6")}, False),
        ("2107-1", {"valueQuantity": quantity(1200, "m[IU]/mL")}, None),  # urine [Moles/volume]: not read
        ("2106-3", {"valueString": "see note"}, None),
    ],
)
def test_pregnancy_tests(loinc, value, positive):
    facts = facts_of(observation("preg", loinc, **value))
    assert [t.positive for t in facts.pregnancy_tests] == ([] if positive is None else [positive])


# --- medications and lines ----------------------------------------------------------------------------------


def test_product_code_maps_to_ingredient_and_drug_class():
    (med,) = facts_of(med_statement("m1", "1657191", "2026-09-01", text="Opdivo injection")).medications
    assert med.ingredients == frozenset({"nivolumab"})
    assert "systemic-anticancer" in med.valuesets
    assert med.active is True and med.display == "Opdivo injection"


def test_uncoded_medication_matched_by_brand_name():
    (med,) = facts_of(med_statement("m1", None, "2026-09-01", text="WELIREG 40 mg tablet")).medications
    assert med.ingredients == frozenset({"belzutifan"})


@pytest.mark.parametrize("med_status", ["entered-in-error", "not-taken"])
def test_ignored_statement_statuses(med_status):
    assert facts_of(med_statement("m1", "1242999", "2026-09-01", status=med_status)).medications == ()


def test_cancelled_request_and_stopped_before_start_are_ignored():
    base = {
        "resourceType": "MedicationRequest",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": concept(RXNORM_URI, "1242999"),
    }
    cancelled = base | {"id": "r1", "status": "cancelled", "authoredOn": "2026-09-01"}
    stopped_unstarted = base | {"id": "r2", "status": "stopped"}
    stopped = base | {"id": "r3", "status": "stopped", "authoredOn": "2026-08-01"}
    facts = facts_of(cancelled, stopped_unstarted, stopped)
    assert [(m.ref, m.active) for m in facts.medications] == [("MedicationRequest/r3", False)]


@pytest.mark.parametrize(
    ("intent", "kept"), [("order", True), ("original-order", True), ("proposal", False), ("plan", False)]
)
def test_proposed_or_planned_requests_are_not_exposures(intent, kept):
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "intent": intent,
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": concept(RXNORM_URI, "1790173"),
        "authoredOn": "2026-11-01",
    }
    facts = facts_of(request)
    assert (len(facts.medications), len(facts.therapy_lines)) == ((1, 1) if kept else (0, 0))


@pytest.mark.parametrize(
    ("med_status", "end", "active"),
    [
        ("active", None, True),
        ("active", "2026-11-30", True),
        ("active", "2026-11-01", False),
        ("on-hold", None, True),
        ("completed", None, False),
        ("stopped", "2026-10-01", False),
    ],
)
def test_active_medication(med_status, end, active):
    (med,) = facts_of(med_statement("m1", "1242999", "2026-01-01", end, status=med_status)).medications
    assert med.active is active


def test_nivolumab_after_nivolumab_ipilimumab_is_one_line():
    facts = facts_of(
        condition("met", SNOMED_URI, "94391008", onset="2025-12-01"),
        med_statement("n1", "1597876", "2026-01-05", "2026-03-20", status="completed"),
        med_statement("i1", "1094833", "2026-01-05", "2026-03-20", status="completed"),
        med_statement("n2", "1657191", "2026-04-01"),
    )
    (line,) = facts.therapy_lines
    assert line.ingredients == frozenset({"nivolumab", "ipilimumab"})
    assert (line.number, line.start, line.end, line.ongoing, line.metastatic_setting) == (
        1,
        date(2026, 1, 5),
        None,
        True,
        True,
    )
    assert set(line.refs) == {"MedicationStatement/n1", "MedicationStatement/i1", "MedicationStatement/n2"}


def test_sunitinib_then_cabozantinib_are_two_lines():
    facts = facts_of(
        condition("met", SNOMED_URI, "94391008", onset="2024-06-01"),
        med_statement("s", "357977", "2024-07-01", "2025-05-01", status="completed"),
        med_statement("c", "1790173", "2025-05-20"),
    )
    first, second = facts.therapy_lines
    assert (first.ingredients, first.end, first.ongoing) == (
        frozenset({"sunitinib"}),
        date(2025, 5, 1),
        False,
    )
    assert (second.number, second.ingredients, second.ongoing) == (2, frozenset({"cabozantinib"}), True)


def test_drug_added_within_28_days_joins_the_line():
    facts = facts_of(
        med_statement("p", "1547545", "2026-01-01"),
        med_statement("a", "1242999", "2026-01-20"),
    )
    assert [line.ingredients for line in facts.therapy_lines] == [frozenset({"pembrolizumab", "axitinib"})]


def test_line_setting_depends_on_the_metastasis_date():
    adjuvant = med_statement("adj", "1547545", "2024-01-01", "2024-12-01", status="completed")
    metastatic = med_statement("met", "1242999", "2026-03-01")
    unknown = facts_of(adjuvant, metastatic).therapy_lines
    assert [line.metastatic_setting for line in unknown] == [None, None]
    known = facts_of(
        adjuvant, metastatic, condition("m", ICD10CM, "C78.01", onset="2026-03-15")
    ).therapy_lines
    assert [line.metastatic_setting for line in known] == [False, True]


def test_non_anticancer_drugs_do_not_make_lines():
    facts = facts_of(med_statement("w", "11289", "2026-01-01"))
    assert facts.therapy_lines == () and "anticoagulant" in facts.medications[0].valuesets


# --- procedures ---------------------------------------------------------------------------------------------


def test_only_completed_procedures_count():
    def procedure(pid, proc_status):
        return {
            "resourceType": "Procedure",
            "id": pid,
            "status": proc_status,
            "subject": {"reference": "Patient/p1"},
            "code": concept(SNOMED_URI, "116033007"),
            "performedPeriod": {"start": "2023-04-02"},
        }

    facts = facts_of(
        procedure("a", "completed"), procedure("b", "entered-in-error"), procedure("c", "not-done")
    )
    assert [(p.ref, p.date) for p in facts.procedures] == [("Procedure/a", date(2023, 4, 2))]
    assert "nephrectomy" in facts.procedures[0].valuesets


# --- robustness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [{"code": "final"}, ["final"]], ids=["object", "array"])
def test_an_observation_status_that_is_not_a_code_is_not_used_and_does_not_raise(sent):
    """A repeated measurement's candidates are picked by status before validation: a status of any JSON
    type must not make build_facts raise (found by test_facts_properties)."""
    facts = facts_of(
        lab("odd", "2160-0", 1.0, "mg/dL", status=sent), lab("ok", "2160-0", 1.2, "mg/dL", "2026-10-01")
    )
    assert [v.ref for v in facts.labs["creatinine"]] == ["Observation/ok"]


def test_skipped_resources_are_reported():
    # a kidney cancer (a code the rules read, so it is validated) with an onset that is not a dateTime
    bad = condition("bad", ICD10CM, "C64.1", onset="not a date")
    facts = facts_of(bad, condition("ok", ICD10CM, "C64.9"))
    assert facts.skipped == ("Condition/bad",)
    assert [c.ref for c in facts.conditions] == ["Condition/ok"]


def test_every_valueset_read_by_facts_exists_in_the_catalog():
    read_by_facts = EVERYTHING.needs.valuesets  # those the facts stage reads by name, for any field
    assert {"systemic-anticancer", "metastatic-disease", "staging-m1", "ecog-0"} <= read_by_facts
    assert read_by_facts <= set(TERMINOLOGY.valuesets)


@pytest.mark.parametrize("extreme", ["0001-01-01", "9999-12-31"])
def test_extreme_dates_do_not_overflow(extreme):
    facts = facts_of(
        condition("met", SNOMED_URI, "94391008", onset=extreme),
        condition("rcc", SNOMED_URI, "702391001", onset=extreme),
        med_statement("s", "357977", extreme),
    )
    assert facts.therapy_lines[0].metastatic_setting is True
    assert kidney.synchronous(facts).value is True
    assert kidney.imdc(facts, TERMINOLOGY).factors[0].abnormal is True
