"""Cards built from hand-made trial results: shape, limits and wording."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_service.cards import CardBuilder, CardContext, markdown_escape
from cds_service.config import DEFAULT_CARDS_DIR
from cds_service.verdicts import CriterionResult, Outcome, TrialInfo, TrialResult, Verdict

INFO = TrialInfo(
    key="NCT06903312",
    nct_id="NCT06903312",
    acronym=None,
    short_title="Primary tumour treatment in mRCC on immunotherapy",
    title="Primary Tumor Ablation and Outcome in Metastatic Renal Cell Carcinoma Treated With Immunotherapy",
    status="RECRUITING",
    phase="PHASE4",
    sponsor="Fondazione Policlinico Universitario Agostino Gemelli IRCCS",
    url="https://clinicaltrials.gov/study/NCT06903312",
)

CRITERIA = (
    CriterionResult(
        "age",
        "inclusion",
        "Male or female patient ≥18 years of age.",
        Outcome.MET,
        "age 64 on 2026-11-21 (≥ 18)",
        ("Patient/p1",),
    ),
    CriterionResult(
        "creatinine",
        "inclusion",
        "Creatinine value <2.5 mg/dl and creatinine clearance > 30 ml/min",
        Outcome.UNKNOWN,
        "no creatinine in the last 30 days",
        (),
        heading="Adequate ... function:",
    ),
    CriterionResult(
        "consent",
        "inclusion",
        "Informed consent obtained before any study-specific procedures.",
        Outcome.CLINICIAN,
        "informed consent",
    ),
    CriterionResult(
        "hiv", "exclusion", "Known history of HIV", Outcome.MET, "no record of HIV or chronic hepatitis"
    ),
)


def result(
    verdict: Verdict = Verdict.POSSIBLY, info: TrialInfo = INFO, arm: str | None = None, criteria=CRITERIA
) -> TrialResult:
    return TrialResult(trial=info, verdict=verdict, criteria=criteria, arm=arm, catalog_version="abc123")


@pytest.fixture
def builder() -> CardBuilder:
    counter = itertools.count(1)
    return CardBuilder(DEFAULT_CARDS_DIR, lambda: f"00000000-0000-4000-8000-{next(counter):012d}")


def walk(value, path="$"):
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")


def test_card_follows_the_contract(builder: CardBuilder) -> None:
    card = builder.build(result(arm="Primary tumour ≤ 4 cm"), CardContext(patient_id="p1"))
    assert card["indicator"] == "info"
    assert card["uuid"] == "00000000-0000-4000-8000-000000000001"
    assert "NCT06903312" in card["summary"] and "Primary tumour treatment" in card["summary"]
    assert len(card["summary"]) < 140
    assert card["links"] == [
        {
            "label": "NCT06903312 on ClinicalTrials.gov",
            "url": "https://clinicaltrials.gov/study/NCT06903312",
            "type": "absolute",
        }
    ]
    ext = card["extension"]["org.trialmatch.eligibility"]
    assert ext["nctId"] == "NCT06903312" and ext["verdict"] == "possibly-eligible"
    assert ext["recruitmentStatus"] == "RECRUITING" and ext["catalogVersion"] == "abc123"
    assert ext["arm"] == "Primary tumour ≤ 4 cm"
    assert [c["outcome"] for c in ext["criteria"]] == ["met", "unknown", "clinician", "met"]
    assert ext["criteria"][0]["evidence"] == ["Patient/p1"]
    assert "evidence" not in ext["criteria"][1]  # empty lists are omitted, never []
    assert card["selectionBehavior"] == "at-most-one"
    assert all(reason["display"] for reason in card["overrideReasons"])
    referral = card["suggestions"][0]
    assert referral["actions"][0]["resource"]["subject"] == {"reference": "Patient/p1"}
    assert referral["actions"][0]["resource"]["status"] == "draft"


def test_card_never_holds_empty_values(builder: CardBuilder) -> None:
    card = builder.build(result(), CardContext(patient_id=None))
    for path, value in walk(card):
        assert value not in (None, "", [], {}), path
    assert "subject" not in card["suggestions"][0]["actions"][0]["resource"]


def test_detail_groups_criteria_for_a_clinician(builder: CardBuilder) -> None:
    detail = builder.build(result(), CardContext(patient_id="p1", notes=["Procedures (HTTP 500)"]))["detail"]
    assert detail.startswith("**Possibly eligible**: 1 criterion to check.")
    to_check = detail.index("**To check**")
    met = detail.index("\n\n**Met**\n- age 64")
    not_excluded = detail.index("\n\n**Not excluded**\n- no record of HIV")
    assert to_check < met < not_excluded < detail.index("\n\n**For the clinician:** informed consent.")
    assert "\n\n\n" not in detail
    assert "no creatinine in the last 30 days — _Creatinine value \\<2.5 mg/dl" in detail
    assert "**Could not be read:** Procedures (HTTP 500)." in detail
    assert "older than 30 days" in detail and "Catalog abc123" in detail


def test_likely_card_has_no_to_check_section(builder: CardBuilder) -> None:
    decided = tuple(c for c in CRITERIA if c.outcome is not Outcome.UNKNOWN)
    card = builder.build(result(Verdict.LIKELY, criteria=decided), CardContext(patient_id="p1"))
    assert card["summary"].startswith("Likely eligible")
    assert card["detail"].startswith("**Likely eligible**. Recruiting · Phase 4 · Fondazione")
    assert "Gemelli IRCCS\n\n**Met**\n- age 64" in card["detail"]
    assert "**To check**" not in card["detail"]


def test_long_title_is_cut_below_140_characters(builder: CardBuilder) -> None:
    long_info = TrialInfo(**{**INFO.__dict__, "short_title": "A very long short title " * 10})
    card = builder.build(result(info=long_info), CardContext(patient_id="p1"))
    assert len(card["summary"]) < 140
    assert card["summary"].endswith("… (NCT06903312)")


@pytest.mark.parametrize("verdict", [Verdict.NOT_ELIGIBLE, Verdict.NOT_CONSIDERED, Verdict.NOT_RECRUITING])
def test_no_card_without_a_possible_fit(builder: CardBuilder, verdict: Verdict) -> None:
    with pytest.raises(ValueError):
        builder.build(result(verdict), CardContext(patient_id="p1"))


def test_markdown_escape_neutralises_html_and_emphasis() -> None:
    assert markdown_escape("<script>*x*_y_ [a](b)") == "\\<script\\>\\*x\\*\\_y\\_ \\[a\\](b)"


@given(st.text(alphabet=st.sampled_from("\\`*_{}[]<>#|ab ≤\n"), max_size=30) | st.text(max_size=30))
def test_markdown_escape_puts_one_backslash_before_each_special_character(text: str) -> None:
    """The escape replaces character by character; this is what one pass of a regular expression does."""
    assert markdown_escape(text) == re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text)


def test_cards_built_together_equal_cards_built_one_by_one(builder: CardBuilder) -> None:
    """build_all gives, in order, the cards that build gives one by one for the results that get one."""
    results = [result(), result(Verdict.LIKELY), result(Verdict.NOT_ELIGIBLE), result(arm="Arm <A>")]
    together = builder.build_all(results, CardContext(patient_id="p1"))
    alone = [builder.build(r, CardContext(patient_id="p1")) for r in results if r.gets_card]
    strip = [{k: v for k, v in card.items() if k != "uuid"} for card in together]
    assert len(together) == 3
    for card in [*strip, *alone]:
        card.pop("uuid", None)
        card["suggestions"][0].pop("uuid")
    assert strip == alone
    assert "Arm \\<A\\>" in together[2]["detail"]
