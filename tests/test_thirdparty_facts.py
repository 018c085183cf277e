"""Real FHIR examples by others (shared/thirdparty-fhir, see its SOURCES.md): facts are read, none invented.

None of these patients has kidney cancer. Every file must build facts without an exception, and the facts that
can be read must be exactly what the files say.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date
from pathlib import Path

import pytest
from conftest_facts import THIRDPARTY, load_terminology, observation, quantity, read_everything

from cds_service.domains.kidney import imdc, primary_in_place_flag
from cds_service.facts import LabValue, PatientFacts, ReadPlan
from cds_service.facts.build import build_facts
from cds_service.fhir.bundles import resources
from cds_service.fhir.concepts import codes
from cds_service.fhir.reader import read_chart
from cds_service.terminology import LOINC, SNOMED

TODAY = date(2026, 11, 21)
TERMINOLOGY = load_terminology()
EVERYTHING = read_everything(TERMINOLOGY)  # of a repeated measurement: the newest usable value
# Also every Condition, Procedure and medication, not only those whose codes the catalog reads (the others
# are never validated, so a bad one is not skipped).
EVERY_CODED_RESOURCE = dataclasses.replace(
    EVERYTHING, selection=dataclasses.replace(EVERYTHING.selection, readable=lambda *_: True)
)
JSON_FILES = sorted(THIRDPARTY.rglob("*.json"))
NOT_R4 = {
    "condition-bundle.json",
    "condition-with-icd10.json",
}  # DSTU2-style Conditions (patient, string status)
SYNTHEA = "generated-sample-data/Micah_Schinner_d4d72610-ec40-42ed-b34f-09e286181ee9.json"
SYNTHEA_PATIENT = "720b9118-3153-40c8-b162-cd963506be0e"
WEIGHT = (LOINC, "29463-7")


def facts_of(relative: str, patient_id: str | None = None, plan: ReadPlan = EVERYTHING) -> PatientFacts:
    return build_facts(
        [json.loads((THIRDPARTY / relative).read_text())], TERMINOLOGY, TODAY, patient_id, plan
    )


def test_the_examples_are_there():
    assert len(JSON_FILES) >= 25


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.relative_to(THIRDPARTY).as_posix())
def test_every_file_builds_facts_without_inventing_a_kidney_cancer(path: Path):
    document = json.loads(path.read_text())
    facts = build_facts([document], TERMINOLOGY, TODAY, None, EVERYTHING)
    assert facts.today == TODAY
    assert not any("kidney-cancer" in c.valuesets for c in facts.conditions)
    assert not any("nephrectomy" in p.valuesets for p in facts.procedures)
    assert facts.therapy_lines == ()  # no RCC systemic therapy in any of them
    assert primary_in_place_flag(facts, TERMINOLOGY).value is None
    every_coded = build_facts([document], TERMINOLOGY, TODAY, None, EVERY_CODED_RESOURCE)
    assert bool(every_coded.skipped) == (path.name in NOT_R4)
    assert set(facts.skipped) <= set(every_coded.skipped)


def test_eom_patient_ecog_staging_status_and_metastasis():
    facts = facts_of("clinical-trial-matching-service/eom_patient_1.json")
    assert [(s.value, s.date, s.ref) for s in facts.ecog] == [
        (3, date(2022, 1, 2), "Observation/observation-id-1")
    ]
    assert [(s.metastatic, s.code) for s in facts.staging] == [(False, (SNOMED, "1229901006"))]
    assert [(d.status, d.date) for d in facts.disease_status] == [("improved", date(2024, 1, 1))]
    assert [c.display for c in facts.conditions if "metastatic-disease" in c.valuesets] == [
        "Metastatic malignant neoplasm to lung (disorder)"
    ]
    assert (facts.sex, facts.birth_date) == ("female", date(1987, 1, 1))
    assert all(not m.ingredients for m in facts.medications)  # alpelisib, abemaciclib: not in the catalog


def test_invalid_ecog_and_karnofsky_are_discarded_and_birth_date_stays_unknown():
    facts = facts_of(
        "clinical-trial-matching-service/patient_data_missing_birthdate_invalid_ecog_karnofsky.json"
    )
    assert (facts.ecog, facts.karnofsky, facts.birth_date, facts.age) == ((), (), None, None)
    assert imdc(facts, TERMINOLOGY).factors[1].abnormal is None


def test_ctm_service_patient_scores():
    facts = facts_of("clinical-trial-matching-service/patient_data.json")
    assert [s.value for s in facts.ecog] == [3]
    assert [s.value for s in facts.karnofsky] == [90]


@pytest.mark.parametrize(
    ("file", "attribute", "expected"),
    [
        ("fhir-mCODE-ig/Observation-mCODEECOGPerformanceStatusExample01.json", "ecog", 0),
        ("fhir-mCODE-ig/Observation-mCODEKarnofskyPerformanceStatusExample01.json", "karnofsky", 90),
        ("fhir-mCODE-ig/Observation-mCODECancerDiseaseStatusExample01.json", "disease_status", "improved"),
        (
            "mcode-extraction-framework/csv-cancer-disease-status-bundle.json",
            "disease_status",
            "complete-remission",
        ),
    ],
)
def test_single_mcode_observations(file, attribute, expected):
    (fact,) = getattr(facts_of(file), attribute)
    assert (fact.value if hasattr(fact, "value") else fact.status) == expected


def test_ajcc_system_m0_staging():
    for file in (
        "fhir-mCODE-ig/Observation-mCODETNMClinicalDistantMetastasesCategoryExample01.json",
        "mcode-extraction-framework/csv-staging-bundle.json",
    ):
        assert [(s.metastatic, s.code[1]) for s in facts_of(file).staging] == [(False, "cM0")]


def weights_one_by_one(relative: str) -> list[LabValue]:
    """Each body weight Observation of a file read on its own (a chart's facts hold only the newest)."""
    document = json.loads((THIRDPARTY / relative).read_text())
    weights = [
        r for r in resources(document) if r["resourceType"] == "Observation" and WEIGHT in codes(r["code"])
    ]
    return [v for r in weights for v in build_facts([r], TERMINOLOGY, TODAY, None, EVERYTHING).labs["weight"]]


def test_synthea_labs_in_canonical_units():
    facts = facts_of(SYNTHEA)
    weight, creatinine = facts.labs["weight"][0], facts.labs["creatinine"][0]
    sent_in_kg = ""  # nothing converted: no "sent as"
    assert (round(weight.value, 2), weight.date, weight.as_sent) == (76.88, date(2020, 6, 15), sent_in_kg)
    assert (round(creatinine.value, 3), creatinine.date) == (2.645, date(2018, 5, 31))
    assert facts.labs["weight"] == (weight,)  # the newest usable value only
    weights = weights_one_by_one(SYNTHEA)
    assert len(weights) == 10 and {w.unit for w in weights} == {"kg"}
    assert max(weights, key=lambda w: w.date) == weight
    assert facts.patient_ref == f"Patient/{SYNTHEA_PATIENT}"


def test_synthea_patient_filter_uses_the_bundle_full_url():
    document = json.loads((THIRDPARTY / SYNTHEA).read_text())

    def weights_selected(patient_id: str) -> int:
        chart = read_chart([document], EVERYTHING.selection, patient_id)
        return sum(WEIGHT in c.codes for c in chart.of("Observation"))

    # (its 5 conditions are in no value set of the catalog: read only when every coded resource is)
    mine = facts_of(SYNTHEA, SYNTHEA_PATIENT, EVERY_CODED_RESOURCE)
    assert weights_selected(SYNTHEA_PATIENT) == 10 and len(mine.conditions) == 5
    assert mine.labs["weight"][0].date == date(2020, 6, 15)
    other = facts_of(SYNTHEA, "someone-else", EVERY_CODED_RESOURCE)
    assert weights_selected("someone-else") == 0
    assert (other.labs, other.conditions, other.birth_date) == ({}, (), None)


def test_synthea_warfarin_is_an_anticoagulant_and_chemo_is_not_an_rcc_line():
    facts = facts_of("generated-sample-data/Sherman_McGlynn_8ef2ef98-48c5-427e-80d4-5e8f30ac8bf5.json")
    warfarin = [m for m in facts.medications if m.ingredients == {"warfarin"}]
    assert warfarin and all("anticoagulant" in m.valuesets for m in warfarin)
    assert facts.therapy_lines == ()


def test_dstu2_conditions_are_skipped_by_reference():
    facts = facts_of("mcode-extraction-framework/condition-bundle.json", plan=EVERY_CODED_RESOURCE)
    assert facts.conditions == () and len(facts.skipped) == 5
    assert all(ref.startswith("Condition/") for ref in facts.skipped)
    # no value set of the catalog holds their codes (hypertension, reflux...): the service never reads them
    assert facts_of("mcode-extraction-framework/condition-bundle.json").skipped == ()


def test_lb_weight_of_the_mcode_extended_example():
    """mCODE STU4 EX_ExtendedExample.fsh (FSH only, no JSON): its body weight in [lb_av], transcribed."""
    fsh = (THIRDPARTY / "fhir-mCODE-ig" / "EX_ExtendedExample.fsh").read_text()
    match = re.search(
        r"Instance: (bodyweight-jenny-m-[\d-]+).*?valueQuantity = ([\d.]+) '\[lb_av\]'", fsh, re.S
    )
    assert match is not None
    res = observation(match.group(1), "29463-7", valueQuantity=quantity(float(match.group(2)), "[lb_av]"))
    (weight,) = build_facts([res], TERMINOLOGY, TODAY, None, EVERYTHING).labs["weight"]
    assert weight.value == pytest.approx(155.0 * 0.45359237)
    assert weight.as_sent == "155 [lb_av]" and weight.unit == "kg"
