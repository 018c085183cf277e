"""Cards built from hand-made trial results: shape, limits and wording."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.cards import CardBuilder, CardContext, load_card_texts, markdown_escape, outcome_label
from cds_service.catalog import ServiceDefinition
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


def test_a_possibly_card_says_what_to_check_then_the_key_facts_then_the_counts(builder: CardBuilder) -> None:
    detail = builder.build(result(), CardContext(patient_id="p1", notes=["Procedures (HTTP 500)"]))["detail"]
    assert detail.startswith("**Could not be read:** Procedures (HTTP 500). Criteria that depend on it are")
    assert "**To check**\n- no creatinine in the last 30 days\n" in detail
    assert detail.endswith(
        "Inclusion: 1 met. Exclusions: 1 not excluded (not recorded, or within limits). 1 to check, "
        "1 left to you. Recruiting · Phase 4."
    )
    assert "**Key facts**" not in detail  # age is decided from the Patient: not a measurement or treatment
    assert "\n\n\n" not in detail


def test_the_summary_tells_likely_from_possibly(builder: CardBuilder) -> None:
    possibly = builder.build(result(), CardContext(patient_id="p1"))["summary"]
    assert (
        possibly
        == "Possibly eligible, 1 to check: Primary tumour treatment in mRCC on immunotherapy (NCT06903312)"
    )
    decided = tuple(c for c in CRITERIA if c.outcome is not Outcome.UNKNOWN)
    likely = builder.build(result(Verdict.LIKELY, criteria=decided), CardContext(patient_id="p1"))
    assert likely["summary"].startswith("Likely eligible: Primary tumour treatment")
    assert "**To check**" not in likely["detail"] and "to check" not in likely["detail"]
    assert "Likely" not in likely["detail"]  # the verdict is the summary's; the detail does not repeat it


def criterion(cid: str, outcome: Outcome, reason: str, *evidence: str, kind: str = "inclusion", heading=None):
    return CriterionResult(cid, kind, f"Registry text of {cid}.", outcome, reason, evidence, heading=heading)


LABS = "Adequate organ function, as assessed by the following laboratory requirements:"
DECIDED = (
    criterion("consent", Outcome.CLINICIAN, "informed consent"),
    criterion("age", Outcome.MET, "age 64 (≥ 18)", "Patient/p1"),
    criterion(
        "metastatic", Outcome.MET, "Lung metastases since 2026-01-27", "Condition/c1", "Observation/o0"
    ),
    criterion("ecog", Outcome.MET, "ECOG 1 on 2026-10-28 (≤ 1)", "Observation/o1"),
    criterion(
        "regimen",
        Outcome.MET,
        "axitinib + pembrolizumab since 2026-04-25 (30 weeks); disease status improved on 2026-11-01",
        "MedicationRequest/m1",
        "Observation/o2",
    ),
    criterion(
        "creatinine",
        Outcome.MET,
        "creatinine 1.0 mg/dL on 2026-11-18 (< 2.5)",
        "Observation/o3",
        heading=LABS,
    ),
    criterion(
        "platelets", Outcome.MET, "platelets 228 on 2026-11-19 (≥ 100)", "Observation/o4", heading=LABS
    ),
    criterion("bilirubin", Outcome.MET, "bilirubin 0.7 mg/dL on 2026-11-18", "Observation/o5", heading=LABS),
    criterion("solitary-kidney", Outcome.MET, "no record of solitary kidney", kind="exclusion"),
    criterion(
        "hypertension",
        Outcome.MET,
        "blood pressure 132/82 mmHg on 2026-11-18",
        "Observation/o6",
        kind="exclusion",
    ),
    criterion("surgery-contraindication", Outcome.CLINICIAN, "contraindication to surgery", kind="exclusion"),
)


def test_key_facts_are_the_measurements_and_treatments_met(builder: CardBuilder) -> None:
    """Diagnoses, age and exclusions are no key facts; criteria under one heading make one line with dates."""
    card = builder.build(result(Verdict.LIKELY, criteria=DECIDED, arm="Primary ≤ 4 cm"), CardContext("p1"))
    assert card["detail"] == (
        "**Suggested cohort:** Primary ≤ 4 cm\n\n"
        "**Key facts**\n"
        "- ECOG 1 on 2026-10-28 (≤ 1)\n"
        "- axitinib + pembrolizumab since 2026-04-25 (30 weeks); disease status improved on 2026-11-01\n"
        "- Adequate organ function, as assessed by the…: all 3 met (2026-11-18 to 2026-11-19)\n\n"
        "Inclusion: 7 met. Exclusions: 2 not excluded (not recorded, or within limits). 2 left to you. "
        "Recruiting · Phase 4."
    )


def test_a_heading_line_counts_every_criterion_under_it_with_its_outcome(builder: CardBuilder) -> None:
    """A lab limit decided with a diagnosis (liver metastases raise the limit) is met, but no key fact: the
    heading's line still counts it among the met, and one still to check is listed on its own."""
    criteria = (
        *DECIDED[:5],
        criterion(
            "creatinine", Outcome.MET, "creatinine 1.0 mg/dL on 2026-11-18", "Observation/o3", heading=LABS
        ),
        criterion("platelets", Outcome.MET, "platelets 228 on 2026-11-19", "Observation/o4", heading=LABS),
        criterion(
            "alt", Outcome.MET, "liver metastases; ALT 60 U/L", "Condition/c2", "Observation/o5", heading=LABS
        ),
        criterion("inr", Outcome.UNKNOWN, "no INR in the last 30 days", heading=LABS),
    )
    detail = builder.build(result(criteria=criteria), CardContext("p1"))["detail"]
    assert "- Adequate organ function, as assessed by the…: 3 of 4 met (2026-11-18 to 2026-11-19)\n" in detail
    assert "**To check**\n- no INR in the last 30 days\n" in detail


def test_an_exclusion_that_does_not_apply_never_reads_met(builder: CardBuilder) -> None:
    card = builder.build(result(Verdict.LIKELY, criteria=DECIDED), CardContext("p1"))
    assert "blood pressure" not in card["detail"] and "solitary" not in card["detail"]
    assert "Exclusions: 2 not excluded" in card["detail"]
    texts = load_card_texts(DEFAULT_CARDS_DIR)
    assert outcome_label(texts, "exclusion", "met") == "Not excluded"
    assert outcome_label(texts, "exclusion", "not-met") == "Excluded"
    assert outcome_label(texts, "inclusion", "met") == "Met"
    assert outcome_label(texts, "anchor", "met") == "Met"  # an anchor reads as an inclusion
    for kind in ("inclusion", "exclusion"):
        assert outcome_label(texts, kind, "unknown") == "To check"


def test_at_most_five_lines_to_check_then_how_many_more(builder: CardBuilder) -> None:
    unknown = [criterion(f"c{i}", Outcome.UNKNOWN, f"no value {i} in the last 30 days") for i in range(6)]
    grouped = [
        criterion(
            f"lab{i}",
            Outcome.UNKNOWN,
            f"latest lab {i} on 2026-10-07 is older than 30 days; more",
            heading=LABS,
        )
        for i in range(3)
    ]
    excluded = criterion("dialysis", Outcome.UNKNOWN, "Procedures could not be read", kind="exclusion")
    card = builder.build(result(criteria=(*grouped, excluded, *unknown)), CardContext("p1"))
    assert card["summary"].startswith("Possibly eligible, 10 to check: ")
    to_check = card["detail"].split("**To check**\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert to_check == [
        "- Adequate organ function, as assessed by the…: 3 criteria, e.g. latest lab 0 on 2026-10-07 is "
        "older than 30 days",
        "- Exclusion: Procedures could not be read",
        "- no value 0 in the last 30 days",
        "- no value 1 in the last 30 days",
        "- no value 2 in the last 30 days",
        "- and 3 more",
    ]


PROPERTY_BUILDER = CardBuilder(DEFAULT_CARDS_DIR, lambda: "00000000-0000-4000-8000-000000000001")
long_text = st.text(alphabet=st.sampled_from("abc ;<*_2026-1"), min_size=0, max_size=400)


@settings(deadline=None)  # rendering runs again for long inputs; timings vary on a shared machine
@given(
    reasons=st.lists(
        st.tuples(st.sampled_from([o for o in Outcome if o is not Outcome.NOT_MET]), long_text), max_size=40
    ),
    notes=st.lists(long_text, max_size=6),
    arm=long_text,
)
def test_the_detail_never_exceeds_800_characters(reasons, notes, arm) -> None:
    criteria = tuple(
        criterion(f"c{i}", outcome, reason or "x", "Observation/o", heading=LABS if i % 3 else None)
        for i, (outcome, reason) in enumerate(reasons)
    )
    verdict = Verdict.POSSIBLY if any(c.outcome is Outcome.UNKNOWN for c in criteria) else Verdict.LIKELY
    card = PROPERTY_BUILDER.build(
        result(verdict, criteria=criteria, arm=arm or None), CardContext("p1", notes=notes)
    )
    assert len(card["detail"]) <= 800


def test_source_topic_is_the_trial_on_every_call(builder: CardBuilder) -> None:
    first = builder.build(result(), CardContext("p1"))
    again = builder.build(result(Verdict.LIKELY), CardContext("p2"))
    assert first["uuid"] != again["uuid"]
    topic = {"system": "urn:trialmatch:trial", "code": "NCT06903312", "display": "Trial NCT06903312"}
    assert first["source"]["topic"] == again["source"]["topic"] == topic
    other = TrialInfo(**{**INFO.__dict__, "key": "NCT04299646", "nct_id": "NCT04299646"})
    assert builder.build(result(info=other), CardContext("p1"))["source"]["topic"]["code"] == "NCT04299646"


NON_ADHERENCE = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
# Codes of the CDS Hooks 3.0 ballot's code system (research/cds-hooks-orders-and-feedback.md, section 4c)
BALLOT_CODES = {
    "patient-ineligible", "indication-order-exists", "action-completed", "action-unsuccessful",
    "action-performed-no-adverse-effect", "action-not-priority", "limited-time", "wrong-time-workflow",
    "inappropriate-recipient", "need-more-info", "does-not-align-latest-evidence", "expert-contradicts",
    "policy-contradicts", "recipient-does-not-trust", "risk-benefit-ratio", "mitigate-risk-negative-outcome",
    "likely-negative-health-outcomes", "patient-contraindication", "patient-fears-discomfort",
    "patient-does-not-want-change", "cultural-religious-reason", "prefers-alternative", "patient-refuses",
    "inadequate-support", "service-not-available", "implementation-challenges", "too-costly-uncovered",
    "recipient-does-not-understand", "comorbidity-disability",
}  # fmt: skip


def test_override_reasons_use_the_ballot_codes_where_they_fit(builder: CardBuilder) -> None:
    reasons = builder.build(result(), CardContext("p1"))["overrideReasons"]
    codes = {(r["system"], r["code"]) for r in reasons}
    assert {(NON_ADHERENCE, c) for c in ("patient-ineligible", "patient-refuses", "need-more-info")} <= codes
    assert {("urn:trialmatch:override-reason", c) for c in ("already-screened", "data-out-of-date")} <= codes
    for reason in reasons:
        assert reason["system"] in (NON_ADHERENCE, "urn:trialmatch:override-reason")
        if reason["system"] == NON_ADHERENCE:
            assert reason["code"] in BALLOT_CODES
        assert 0 < len(reason["display"]) <= 35, reason  # short: an EHR shows them in a drop-down
    assert len(codes) == len(reasons)


def test_the_source_label_is_the_card_service_title() -> None:
    def service(hook: str, title: str) -> ServiceDefinition:
        return ServiceDefinition("s", hook, title, "description", None, {})

    services = [service("order-sign", "Order checks"), service("patient-view", "Lung cancer trial finder")]
    labelled = CardBuilder(DEFAULT_CARDS_DIR, lambda: "00000000-0000-4000-8000-000000000001", services)
    assert labelled.build(result(), CardContext("p1"))["source"]["label"] == "Lung cancer trial finder"
    unlabelled = CardBuilder(DEFAULT_CARDS_DIR, lambda: "00000000-0000-4000-8000-000000000001")
    assert unlabelled.build(result(), CardContext("p1"))["source"]["label"] == "Clinical trial matching"


def test_the_card_texts_know_no_disease() -> None:
    """Cards are generic: the disease is the catalog's business (trial texts, service title)."""
    for path in DEFAULT_CARDS_DIR.iterdir():
        text = path.read_text(encoding="utf-8").lower()
        for word in ("renal", "rcc", "kidney", "nephrectomy", "carcinoma"):
            assert word not in text, (path.name, word)


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
