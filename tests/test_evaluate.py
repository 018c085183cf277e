"""The engine: criterion outcomes, verdicts, anchors, arms, sorting, and evaluating shared rules once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest_facts import facts_of
from factories import KIDNEY_CANCER_ANCHOR, METASTATIC_ANCHOR, Patient, catalog, criterion, trial

from bench.generate import PATIENT_ID, TODAY, chart, generate_catalog
from cds_service.catalog import Anchor, load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.domains import kidney
from cds_service.engine import rules
from cds_service.engine.evaluate import Engine, EvaluationPolicy, outcome_of, verdict_of
from cds_service.errors import RuleError
from cds_service.terminology import ICD10CM, SNOMED, Code, normalize_code
from cds_service.verdicts import ANCHOR, CriterionResult, Outcome, TrialResult, Truth, Verdict

RCC = criterion("rcc", {"condition": {"valueset": "kidney-cancer"}})
ADULT = criterion("adult", {"age": {"min": 18}})
ECOG = criterion("ecog", {"ecog": {"le": 1}})
CONSENT = criterion("consent", clinician="informed consent")
HIV = criterion("hiv", {"condition": {"valueset": "hiv-hepatitis"}}, type="exclusion")


def rcc_patient() -> Patient:
    return Patient().aged(60).sex("male").condition("kidney-cancer", ref="Condition/rcc", display="RCC")


def by_key(results: tuple[TrialResult, ...]) -> dict[str, TrialResult]:
    return {r.trial.key: r for r in results}


def outcomes(result: TrialResult) -> dict[str, Outcome]:
    return {c.id: c.outcome for c in result.criteria}


# --- outcome and verdict tables -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("criterion_type", "truth", "outcome"),
    [
        ("inclusion", Truth.TRUE, Outcome.MET),
        ("inclusion", Truth.FALSE, Outcome.NOT_MET),
        ("inclusion", Truth.UNKNOWN, Outcome.UNKNOWN),
        ("inclusion", Truth.CLINICIAN, Outcome.CLINICIAN),
        ("exclusion", Truth.TRUE, Outcome.NOT_MET),
        ("exclusion", Truth.FALSE, Outcome.MET),
        ("exclusion", Truth.UNKNOWN, Outcome.UNKNOWN),
        ("exclusion", Truth.CLINICIAN, Outcome.CLINICIAN),
    ],
)
def test_outcome_of(criterion_type: str, truth: Truth, outcome: Outcome) -> None:
    assert outcome_of(criterion_type, truth) is outcome


M, N, U, C = Outcome.MET, Outcome.NOT_MET, Outcome.UNKNOWN, Outcome.CLINICIAN


@pytest.mark.parametrize(
    ("status", "anchors_met", "criteria", "verdict"),
    [
        ("RECRUITING", True, [M, M], Verdict.LIKELY),
        ("RECRUITING", True, [M, C], Verdict.LIKELY),
        ("RECRUITING", True, [C], Verdict.LIKELY),
        ("RECRUITING", True, [M, U, C], Verdict.POSSIBLY),
        ("NOT_YET_RECRUITING", True, [M, U], Verdict.POSSIBLY),
        ("RECRUITING", True, [M, U, N], Verdict.NOT_ELIGIBLE),
        ("RECRUITING", True, [N, C], Verdict.NOT_ELIGIBLE),
        ("RECRUITING", False, [U], Verdict.NOT_CONSIDERED),
        ("RECRUITING", False, [N], Verdict.NOT_CONSIDERED),
        ("COMPLETED", True, [M, M], Verdict.NOT_RECRUITING),
        ("ACTIVE_NOT_RECRUITING", True, [M, U], Verdict.NOT_RECRUITING),
        ("SUSPENDED", False, [U], Verdict.NOT_RECRUITING),
    ],
)
def test_verdict_of(status: str, anchors_met: bool, criteria: list[Outcome], verdict: Verdict) -> None:
    assert verdict_of(status, anchors_met, criteria) is verdict


# --- whole trials -------------------------------------------------------------------------------------------


def test_likely_when_every_criterion_is_met_or_left_to_the_clinician() -> None:
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT, CONSENT, HIV])))
    (result,) = engine.evaluate(rcc_patient().build())
    assert result.verdict is Verdict.LIKELY
    assert result.gets_card
    assert outcomes(result) == {"rcc": M, "adult": M, "consent": C, "hiv": M}
    consent = result.criteria[2]
    assert consent == CriterionResult(
        "consent", "inclusion", "registry text of consent", C, "informed consent"
    )
    assert result.criteria[0].evidence == ("Condition/rcc",)
    assert result.catalog_version == "test-version"


def test_possibly_when_something_is_unknown() -> None:
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT, ECOG])))
    (result,) = engine.evaluate(rcc_patient().build())
    assert result.verdict is Verdict.POSSIBLY
    assert outcomes(result)["ecog"] is U
    assert result.criteria[2].reason == "no ECOG in the last 60 days"


def test_exclusion_that_applies_is_not_met() -> None:
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT, HIV])))
    (result,) = engine.evaluate(rcc_patient().condition("hiv-hepatitis", ref="Condition/hiv").build())
    assert result.verdict is Verdict.NOT_ELIGIBLE
    assert not result.gets_card
    hiv = result.criteria[2]
    assert (hiv.type, hiv.outcome, hiv.evidence) == ("exclusion", N, ("Condition/hiv",))


def test_anchors_not_met_make_the_trial_not_considered_and_its_result_lists_the_anchors(
    leaf_calls: Counter[str],
) -> None:
    engine = Engine(catalog(trial("NCT00000001", [ADULT, RCC, ECOG, CONSENT], cohorts=COHORTS)))
    (result,) = engine.evaluate(Patient().aged(60).build())
    assert result.verdict is Verdict.NOT_CONSIDERED
    assert not result.gets_card
    assert result.criteria == (
        CriterionResult("anchor:1", ANCHOR, "kidney cancer documented", N, "no record of kidney cancer"),
    )
    assert result.arm is None
    assert leaf_calls == Counter({"condition": 1})  # no criterion and no cohort rule is evaluated


def test_unknown_anchor_is_not_enough() -> None:
    anchors = (KIDNEY_CANCER_ANCHOR, METASTATIC_ANCHOR)
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT], anchors=anchors)))
    (result,) = engine.evaluate(rcc_patient().build())
    assert result.verdict is Verdict.NOT_CONSIDERED
    assert [(c.id, c.type, c.text, c.outcome) for c in result.criteria] == [
        ("anchor:1", ANCHOR, "kidney cancer documented", M),
        ("anchor:2", ANCHOR, "metastatic disease documented", U),
    ]
    assert result.criteria[0].evidence == ("Condition/rcc",)


def test_trials_sharing_anchor_rules_keep_their_own_labels_and_status_when_not_considered(
    leaf_calls: Counter[str],
) -> None:
    relabelled = Anchor("renal cell carcinoma on record", KIDNEY_CANCER_ANCHOR.rule)
    engine = Engine(
        catalog(
            trial("NCT00000001", [ADULT]),
            trial("NCT00000002", [ECOG], anchors=(relabelled,)),
            trial("NCT00000003", [RCC], status="COMPLETED"),
        )
    )
    results = by_key(engine.evaluate(Patient().aged(60).build()))
    assert {key: (r.verdict, [c.text for c in r.criteria]) for key, r in results.items()} == {
        "NCT00000001": (Verdict.NOT_CONSIDERED, ["kidney cancer documented"]),
        "NCT00000002": (Verdict.NOT_CONSIDERED, ["renal cell carcinoma on record"]),
        "NCT00000003": (Verdict.NOT_RECRUITING, ["kidney cancer documented"]),
    }
    assert {c.reason for r in results.values() for c in r.criteria} == {"no record of kidney cancer"}
    assert leaf_calls == Counter({"condition": 1})  # one anchor evaluation for the three trials


def test_a_considered_trial_lists_its_registry_criteria_only() -> None:
    anchors = (KIDNEY_CANCER_ANCHOR, METASTATIC_ANCHOR)
    engine = Engine(catalog(trial("NCT00000001", [ADULT, CONSENT], anchors=anchors)))
    (result,) = engine.evaluate(rcc_patient().staging(True).build())
    assert result.verdict is Verdict.LIKELY
    assert outcomes(result) == {"adult": M, "consent": C}


def test_a_clinician_anchor_is_never_true_so_the_trial_is_never_considered() -> None:
    """How `import-ctgov` drafts stay without a card until a person encodes their disease and stage."""
    draft = Anchor("not yet encoded: disease and stage", {"clinician": "encode the disease and stage"})
    engine = Engine(catalog(trial("NCT00000001", [CONSENT], anchors=(draft,))))
    (result,) = engine.evaluate(rcc_patient().staging(True).build())
    assert result.verdict is Verdict.NOT_CONSIDERED
    assert [(c.id, c.outcome, c.reason) for c in result.criteria] == [
        ("anchor:1", C, "encode the disease and stage")
    ]


@pytest.mark.parametrize("status", ["COMPLETED", "ACTIVE_NOT_RECRUITING", "WITHDRAWN", "UNKNOWN"])
def test_non_recruiting_trial_is_evaluated_but_never_gets_a_card(status: str) -> None:
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT, CONSENT], status=status)))
    (result,) = engine.evaluate(rcc_patient().build())
    assert result.verdict is Verdict.NOT_RECRUITING
    assert not result.gets_card
    assert outcomes(result) == {"rcc": M, "adult": M, "consent": C}


def test_results_are_sorted_likely_then_possibly_then_the_rest_by_key() -> None:
    engine = Engine(
        catalog(
            trial("NCT00000009", [RCC, ADULT]),  # likely
            trial("NCT00000002", [RCC, ECOG]),  # possibly
            trial("NCT00000001", [RCC, HIV]),  # not eligible
            trial("NCT00000003", [RCC, ADULT]),  # likely
            trial("NCT00000004", [RCC, ADULT], status="COMPLETED"),
            trial("NCT00000005", [RCC, ECOG]),  # possibly
        )
    )
    results = engine.evaluate(rcc_patient().condition("hiv-hepatitis").build())
    assert [(r.trial.key, r.verdict) for r in results] == [
        ("NCT00000003", Verdict.LIKELY),
        ("NCT00000009", Verdict.LIKELY),
        ("NCT00000002", Verdict.POSSIBLY),
        ("NCT00000005", Verdict.POSSIBLY),
        ("NCT00000001", Verdict.NOT_ELIGIBLE),
        ("NCT00000004", Verdict.NOT_RECRUITING),
    ]


COHORTS = (
    ("small primary", {"primary_tumour_size": {"le_cm": 4}}),
    ("large primary", {"primary_tumour_size": {"gt_cm": 4}}),
    ("anyone", {"age": {"min": 18}}),
)


@pytest.mark.parametrize(("size", "arm"), [(3.0, "small primary"), (6.0, "large primary"), (None, "anyone")])
def test_arm_is_the_first_cohort_whose_rule_is_true(size: float | None, arm: str) -> None:
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT], cohorts=COHORTS)))
    patient = rcc_patient()
    if size is not None:
        patient.tumour_size(size, focus=("Condition/rcc",))
    (result,) = engine.evaluate(patient.build())
    assert result.arm == arm


def test_no_arm_when_no_cohort_rule_is_true() -> None:
    engine = Engine(catalog(trial("NCT00000001", [RCC, ADULT], cohorts=COHORTS[:2])))
    (result,) = engine.evaluate(rcc_patient().build())
    assert result.verdict is Verdict.LIKELY
    assert result.arm is None


def test_policy_sets_the_recency_windows() -> None:
    patient = rcc_patient().ecog(1, days=45).build()
    cat = catalog(trial("NCT00000001", [RCC, ECOG]))
    assert Engine(cat).evaluate(patient)[0].verdict is Verdict.LIKELY
    strict = Engine(cat, EvaluationPolicy(lab_max_age_days=30, performance_max_age_days=40))
    assert strict.evaluate(patient)[0].verdict is Verdict.POSSIBLY


# --- compilation --------------------------------------------------------------------------------------------


def test_bad_rule_is_reported_with_trial_and_criterion() -> None:
    bad = criterion("ecog", {"ecog": {"le": 1, "within": 30}})
    with pytest.raises(RuleError, match=r"NCT00000001/criteria/ecog/rule/ecog/within: unknown parameter"):
        Engine(catalog(trial("NCT00000001", [RCC, bad])))


def test_bad_anchor_rule_is_reported_with_trial_and_anchor() -> None:
    bad = Anchor("metastatic", {"metastatic": {"since": 30}})
    with pytest.raises(RuleError, match=r"NCT00000001/anchors/1/rule/metastatic/since: unknown parameter"):
        Engine(catalog(trial("NCT00000001", [ADULT], anchors=(KIDNEY_CANCER_ANCHOR, bad))))


# --- shared evaluation --------------------------------------------------------------------------------------


@pytest.fixture
def leaf_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count leaf evaluations by operator name."""
    calls: Counter[str] = Counter()
    original = rules.Leaf.evaluate

    def counting(self: rules.Leaf, facts: Any, context: Any) -> Any:
        calls[self.operator.name] += 1
        return original(self, facts, context)

    monkeypatch.setattr(rules.Leaf, "evaluate", counting)
    return calls


ANCHOR_SETS = ((KIDNEY_CANCER_ANCHOR,), (KIDNEY_CANCER_ANCHOR, METASTATIC_ANCHOR))


def _many_trials(count: int) -> list[Any]:
    """Trials whose anchors are one of two sets (sharing the kidney cancer anchor), with shared criteria."""
    return [
        trial(
            f"T{i:04d}",
            [ADULT, ECOG, criterion("alt", {"lab": {"analyte": "alt", "le_uln": 2 + i % 3}})],
            anchors=ANCHOR_SETS[i % 2],
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("patient", "verdicts"),
    [
        (Patient().aged(60), {Verdict.NOT_CONSIDERED}),
        (Patient().aged(60).condition("kidney-cancer"), {Verdict.NOT_CONSIDERED, Verdict.POSSIBLY}),
        (Patient().aged(60).condition("kidney-cancer").staging(True), {Verdict.POSSIBLY}),
    ],
    ids=["no kidney cancer", "not metastatic", "metastatic kidney cancer"],
)
def test_anchors_are_evaluated_once_for_1000_trials_sharing_them(
    leaf_calls: Counter[str], patient: Patient, verdicts: set[Verdict]
) -> None:
    engine = Engine(catalog(*_many_trials(1000)))
    results = engine.evaluate(patient.build())
    assert len(results) == 1000
    assert {r.verdict for r in results} == verdicts
    assert leaf_calls["condition"] == 1 and leaf_calls["metastatic"] == 1
    for result in results:
        assert (result.verdict is Verdict.NOT_CONSIDERED) == (result.criteria[0].type == ANCHOR)


def test_equal_rules_are_evaluated_once_per_patient(leaf_calls: Counter[str]) -> None:
    engine = Engine(catalog(*_many_trials(30)))
    assert engine.distinct_rules == 2 + 2 + 3  # two anchors, adult and ecog, three ALT limits
    results = engine.evaluate(rcc_patient().staging(True).lab("alt", 50, "U/L", high=40).build())
    assert len(results) == 30
    assert leaf_calls == Counter({"condition": 1, "metastatic": 1, "age": 1, "ecog": 1, "lab": 3})
    leaf_calls.clear()
    engine.evaluate(rcc_patient().build())  # a new patient: everything again, once
    assert leaf_calls["age"] == 1


def test_an_equal_leaf_inside_different_rules_is_evaluated_once_per_patient(leaf_calls: Counter[str]) -> None:
    adult_rcc = criterion(
        "adult-rcc", {"all": [{"age": {"min": 18}}, {"condition": {"valueset": "kidney-cancer"}}]}
    )
    adult_ecog = criterion("adult-ecog", {"any": [{"age": {"min": 18}}, {"ecog": {"le": 1}}]})
    engine = Engine(catalog(trial("NCT00000001", [adult_rcc]), trial("NCT00000002", [adult_ecog, ADULT])))
    results = by_key(engine.evaluate(rcc_patient().build()))
    assert leaf_calls == Counter({"condition": 1, "age": 1, "ecog": 1})
    assert [c.outcome for c in results["NCT00000002"].criteria] == [M, M]


def test_each_derived_value_is_computed_once_per_patient(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    original = kidney.imdc

    def counting(*args: Any) -> Any:
        calls["imdc"] += 1
        return original(*args)

    monkeypatch.setattr(kidney, "imdc", counting)
    trials = [
        trial("NCT00000001", [RCC, criterion("imdc", {"imdc_risk": {"in": ["favorable", "intermediate"]}})]),
        trial("NCT00000002", [RCC, criterion("imdc", {"imdc_risk": {"in": ["poor"]}})]),
        trial("NCT00000003", [RCC, criterion("imdc", {"not": {"imdc_risk": {"in": ["favorable"]}}})]),
    ]
    engine = Engine(catalog(*trials))
    engine.evaluate(rcc_patient().build())
    assert calls["imdc"] == 1
    engine.evaluate(rcc_patient().build())
    assert calls["imdc"] == 2


# --- the bundled kidney trials: anchored on documented metastatic kidney cancer -----------------------------

CLEAR_CELL_TRIALS = ("NCT06903312", "NCT04299646")
NAMECAR = "NCT06882486"


@pytest.fixture(scope="module")
def bundled() -> Engine:
    return Engine(load_catalog(DEFAULT_MAPPINGS_DIR))


def coded(engine: Engine, patient: Patient, code: Code, onset: int | None, ref: str) -> Patient:
    """Add a condition coded `code`, in the value sets the bundled catalog puts that code in."""
    valuesets = engine.catalog.terminology.memberships([code])
    return patient.condition(*valuesets, codes=[code], onset=onset, ref=ref)


def metastatic_kidney_cancer(
    engine: Engine, primary: Code, primary_onset: int = 300, metastasis_onset: int | None = 290
) -> Patient:
    patient = Patient().aged(61).sex("male")
    coded(engine, patient, primary, primary_onset, "Condition/primary")
    return coded(engine, patient, normalize_code(ICD10CM, "C78.00"), metastasis_onset, "Condition/lung-mets")


def criterion_of(result: TrialResult, criterion_id: str) -> CriterionResult:
    return next(c for c in result.criteria if c.id == criterion_id)


def test_kidney_cancer_coded_c64_1_alone_is_considered_with_histology_to_check(bundled: Engine) -> None:
    patient = metastatic_kidney_cancer(bundled, normalize_code(ICD10CM, "C64.1")).build()
    results = by_key(bundled.evaluate(patient))
    for key in (*CLEAR_CELL_TRIALS, NAMECAR):
        assert results[key].verdict is not Verdict.NOT_CONSIDERED, key
        registry_ids = [c.id for c in next(t for t in bundled.catalog.trials if t.info.key == key).criteria]
        assert [c.id for c in results[key].criteria] == registry_ids
    for key in CLEAR_CELL_TRIALS:
        histology = criterion_of(results[key], "clear-cell-rcc")
        assert (histology.outcome, histology.reason) == (U, "histology not recorded"), key
    synchronous = criterion_of(results[NAMECAR], "synchronous-metastatic-kidney-cancer")
    assert synchronous.outcome is M


def test_papillary_rcc_is_considered_and_not_eligible_for_the_clear_cell_trials(bundled: Engine) -> None:
    patient = metastatic_kidney_cancer(bundled, (SNOMED, "733608000")).build()  # papillary RCC
    results = by_key(bundled.evaluate(patient))
    for key in CLEAR_CELL_TRIALS:
        assert results[key].verdict is Verdict.NOT_ELIGIBLE, key
        histology = criterion_of(results[key], "clear-cell-rcc")
        assert (histology.outcome, histology.evidence) == (N, ("Condition/primary",)), key


@pytest.mark.parametrize(
    ("metastasis_onset", "outcome", "verdict"),
    [
        (400, N, Verdict.NOT_ELIGIBLE),  # metastases three years after the diagnosis: metachronous
        (None, U, Verdict.POSSIBLY),  # undated: synchronicity to check
    ],
    ids=["metachronous", "metastasis undated"],
)
def test_namecar_considers_any_metastatic_kidney_cancer_and_checks_synchronicity(
    bundled: Engine, metastasis_onset: int | None, outcome: Outcome, verdict: Verdict
) -> None:
    patient = metastatic_kidney_cancer(bundled, (SNOMED, "254915003"), 1500, metastasis_onset).build()
    result = by_key(bundled.evaluate(patient))[NAMECAR]
    assert result.verdict is verdict
    assert criterion_of(result, "synchronous-metastatic-kidney-cancer").outcome is outcome
    assert [c.id for c in result.criteria if c.outcome is N] == (
        ["synchronous-metastatic-kidney-cancer"] if outcome is N else []
    )


@pytest.mark.parametrize(
    ("patient", "outcomes_of_anchors"),
    [
        (Patient().aged(61).staging(True), [N, M]),
        (Patient().aged(61).condition("kidney-cancer", "rcc-clear-cell").staging(False), [M, N]),
    ],
    ids=["metastatic without kidney cancer", "localized clear-cell RCC"],
)
def test_bundled_kidney_trials_need_kidney_cancer_and_metastatic_disease(
    bundled: Engine, patient: Patient, outcomes_of_anchors: list[Outcome]
) -> None:
    for result in bundled.evaluate(patient.build()):
        assert not result.gets_card
        if result.trial.status != "COMPLETED":
            assert result.verdict is Verdict.NOT_CONSIDERED
        assert [c.outcome for c in result.criteria] == outcomes_of_anchors


def test_equal_criteria_of_different_trials_share_one_result_per_patient() -> None:
    engine = Engine(catalog(*_many_trials(30)))
    results = engine.evaluate(rcc_patient().staging(True).lab("alt", 50, "U/L", high=40).build())
    adult = {id(c) for r in results for c in r.criteria if c.id == "adult"}
    alt = {c.reason: id(c) for r in results for c in r.criteria if c.id == "alt"}
    assert len(adult) == 1  # built once, shared by the 30 trials
    assert len(alt) == len({id(c) for r in results for c in r.criteria if c.id == "alt"}) == 3  # 3 limits
    older = engine.evaluate(rcc_patient().aged(17).staging(True).build())
    assert {c.outcome for r in older for c in r.criteria if c.id == "adult"} == {N}  # a new patient, anew


def test_results_of_trials_not_considered_follow_each_patient() -> None:
    """They are reused while the anchors' values repeat, and rebuilt as soon as they differ."""
    engine = Engine(catalog(*_many_trials(10)))
    first = engine.evaluate(Patient().aged(60).build())
    again = engine.evaluate(Patient().aged(70).build())
    assert first == again
    not_metastatic = [
        r for r in engine.evaluate(rcc_patient().build()) if r.verdict is Verdict.NOT_CONSIDERED
    ]
    assert len(not_metastatic) == 5  # the trials with both anchors
    assert {c.outcome for r in not_metastatic for c in r.criteria if c.id == "anchor:1"} == {M}
    assert engine.evaluate(Patient().aged(60).build()) == first


def test_with_cards_only_the_results_are_those_that_get_a_card_in_the_same_order(tmp_path) -> None:
    generated = load_catalog(generate_catalog(tmp_path / "catalog", 60))
    engine = Engine(generated)
    kidney_cancer = facts_of(chart(240), generated.terminology, TODAY, PATIENT_ID)
    no_cancer = facts_of([{"resourceType": "Patient", "id": "p1"}], generated.terminology, TODAY, "p1")
    verdicts = Counter()
    for facts in (kidney_cancer, no_cancer):
        every = engine.evaluate(facts)
        verdicts.update(r.verdict for r in every)
        assert engine.evaluate(facts, cards_only=True) == tuple(r for r in every if r.gets_card)
    # trials left out for each reason, and cards kept
    assert {Verdict.NOT_CONSIDERED, Verdict.NOT_RECRUITING, Verdict.NOT_ELIGIBLE, Verdict.POSSIBLY} <= set(
        verdicts
    )
