"""The catalog's codes as data: what the prefetch asks for, how LOINC codes are merged into analytes."""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from conftest_facts import MAPPINGS, load_terminology

from cds_service.catalog import load_catalog
from cds_service.config import load_settings
from cds_service.pipeline import OBSERVATION_CODES, Matcher
from cds_service.terminology import CPT, ICD10PCS, LOINC, normalize_code

TERMINOLOGY = load_terminology()
SERVICES = yaml.safe_load((MAPPINGS / "services.yaml").read_text(encoding="utf-8"))["services"]
MATCHER = Matcher(load_catalog(MAPPINGS), load_settings({}, environ={}))


def _observation_template_codes(template: str) -> list[str]:
    query = parse_qs(urlsplit(template).query)
    (codes,) = query["code"]
    return codes.split(",")


def test_the_observation_prefetch_is_written_with_the_token_not_a_hand_kept_list() -> None:
    for service in SERVICES:
        assert _observation_template_codes(service["prefetch"]["observations"]) == [OBSERVATION_CODES]


@pytest.mark.parametrize("service", MATCHER.catalog.services, ids=lambda s: s.id)
def test_the_observation_prefetch_asks_for_exactly_the_codes_the_rules_read(service) -> None:
    codes = _observation_template_codes(service.prefetch["observations"])
    assert [code for code, n in Counter(codes).items() if n > 1] == []
    read = {code for _, code in MATCHER.engine.read_plan.selection.observation_elements}
    assert set(codes) == read
    analytes_read = {"creatinine", "bilirubin", "alt", "ast", "platelets", "hemoglobin", "albumin", "calcium"}
    every_code_of_them = {code for a in analytes_read for code in TERMINOLOGY.analytes[a].loinc}
    assert every_code_of_them <= read  # every code an EHR may use for an analyte the rules read
    assert {"89247-1", "21889-1", "97509-4", "21907-1"} <= read  # ECOG, tumour size, disease status, M
    assert all(
        system == LOINC or code in {"277208005", "399387003", "371497001"}
        for system, code in MATCHER.engine.read_plan.selection.observation_elements
    )


def test_no_loinc_code_belongs_to_two_analytes() -> None:
    counts = Counter(code for analyte in TERMINOLOGY.analytes.values() for code in analyte.loinc)
    assert [code for code, n in counts.items() if n > 1] == []


# Codes of the same tests that are never read as the analyte (mappings/README.md, "Analytes"): another
# property (a percentage, a ratio, a presence), a part of the analyte, another specimen or timing.
NOT_THE_ANALYTE = [
    ("1968-7", "direct bilirubin, not total"),
    ("11041-1", "creatinine --post dialysis"),
    ("11042-9", "creatinine --pre dialysis"),
    ("51619-5", "creatinine [Moles/volume] --pre dialysis"),
    ("51620-3", "creatinine [Moles/volume] --post dialysis"),
    ("44785-4", "ALT maximum value during study"),
    ("100738-4", "macromolecular ALT, presence"),
    ("16412-9", "AST in red blood cells"),
    ("54500-4", "macromolecular AST fraction"),
    ("1779-8", "liver alkaline phosphatase isoenzyme"),
    ("52129-4", "INR after heparin neutralization"),
    ("63561-5", "aPTT actual/normal ratio"),
    ("13488-2", "aPTT of a control specimen"),
    ("48386-7", "large platelets per 100 platelets"),
    ("34167-7", "large platelets, presence"),
    ("770-8", "neutrophils per 100 leukocytes (automated)"),
    ("26511-6", "neutrophils per 100 leukocytes"),
    ("23761-0", "neutrophils per 100 leukocytes (manual)"),
    ("26507-4", "band neutrophils only"),
    ("24360-0", "hemoglobin and hematocrit panel"),
    ("1995-0", "ionized calcium"),
    ("17863-2", "ionized calcium, mass"),
    ("1754-1", "albumin in urine"),
    ("18833-4", "first body weight"),
    ("19180-9", "free beta hCG, a tumour marker"),
]


@pytest.mark.parametrize(("loinc", "why"), NOT_THE_ANALYTE)
def test_a_code_of_another_property_or_specimen_is_read_as_no_analyte(loinc: str, why: str) -> None:
    assert TERMINOLOGY.analyte_for_loinc(loinc) is None, why


def test_every_nephrectomy_code_is_a_major_surgery_code() -> None:
    valuesets = TERMINOLOGY.valuesets
    assert valuesets["nephrectomy"].codes - valuesets["major-surgery"].codes == frozenset()


@pytest.mark.parametrize(
    ("system", "code", "canonical"),
    [
        ("http://www.ama-assn.org/go/cpt", "50545", CPT),
        ("urn:oid:2.16.840.1.113883.6.12", "50545", CPT),
        ("http://www.cms.gov/Medicare/Coding/ICD10", "0TT00ZZ", ICD10PCS),
        ("urn:oid:2.16.840.1.113883.6.4", "0TT00ZZ", ICD10PCS),
        ("http://terminology.hl7.org/CodeSystem/icd10PCS", "0TT00ZZ", ICD10PCS),
    ],
)
def test_a_procedure_code_is_read_under_each_name_of_its_system(
    system: str, code: str, canonical: str
) -> None:
    normalized = normalize_code(system, code)
    assert normalized == (canonical, code)
    assert "nephrectomy" in TERMINOLOGY.memberships([normalized])
