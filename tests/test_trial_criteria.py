"""Every computable criterion of every trial, on both sides of its threshold, from synthetic FHIR charts.

The cases live in tests/data/criterion_cases/<trial>.yaml, one file per trial of mappings/trials/:

    trial: NCT06903312
    sides: {hypertension: {not-met: unknown}}   # optional: the outcome standing for a side its rule softens
    base: [<FHIR resource>, ...]                # documented kidney cancer + metastatic disease (the anchors)
    cases:
      - criterion: ecog                         # criterion id in the trial's mapping
        description: ECOG exactly 1
        expect: met                             # met | not-met | unknown | clinician
        tags: [threshold]                       # optional: threshold, missing, stale, units, own-range
        ignored: [Observation/ecog]             # optional: records that must not be cited
        reason_contains: lab's range      # optional
        resources: [<FHIR resource>, ...]       # added to the base; same type and id replaces a base resource

Resources are FHIR R4 JSON as EHRs send them; `{days_ago: N}` in place of a date stands for today
(2026-11-21) minus N days. Each chart goes through the real pipeline on the real catalog (`Matcher`:
build_facts, then the Engine). A criterion whose rule is one of the trial's anchors (metastatic disease) can
only be false in a trial that is not considered: its outcome is then read from that anchor's evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.catalog import Catalog, Trial, load_catalog
from cds_service.config import load_settings
from cds_service.pipeline import Matcher
from cds_service.verdicts import RECRUITING_STATUSES, CriterionResult, Outcome, Verdict

TODAY = date(2026, 11, 21)
CASES_DIR = Path(__file__).resolve().parent / "data" / "criterion_cases"
PATIENT_ID = "p1"
CASE_KEYS = frozenset(
    {"criterion", "description", "expect", "resources", "tags", "ignored", "reason_contains"}
)
TAGS = frozenset({"threshold", "missing", "stale", "units", "own-range"})
# Leaves comparing a measurement or a count with a limit: their criteria need a case at the threshold and a
# case where the measurement is missing or stale.
THRESHOLD_OPERATORS = frozenset(
    {
        "lab",
        "ecog",
        "karnofsky",
        "age",
        "regimen_weeks",
        "therapy_lines",
        "primary_tumour_size",
        "creatinine_clearance",
        "blood_pressure",
    }
)
DECIDED = (Outcome.MET, Outcome.NOT_MET)


@dataclass(frozen=True)
class Case:
    trial: str
    criterion: str
    description: str
    expect: Outcome
    resources: tuple[Mapping[str, Any], ...]
    tags: frozenset[str]
    ignored: frozenset[str]
    reason_contains: str | None

    @property
    def refs(self) -> set[str]:
        return {reference(r) for r in self.resources}


def resolve_dates(value: Any) -> Any:
    """Replace every `{days_ago: N}` by the ISO date N days before TODAY."""
    if isinstance(value, Mapping):
        if set(value) == {"days_ago"}:
            return (TODAY - timedelta(days=value["days_ago"])).isoformat()
        return {key: resolve_dates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_dates(item) for item in value]
    return value


def reference(resource: Mapping[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _case(trial: str, raw: Mapping[str, Any]) -> Case:
    assert set(raw) <= CASE_KEYS, f"{trial}: unknown keys {set(raw) - CASE_KEYS}"
    tags = frozenset(raw.get("tags", ()))
    assert tags <= TAGS, f"{trial}/{raw['criterion']}: unknown tags {tags - TAGS}"
    return Case(
        trial=trial,
        criterion=raw["criterion"],
        description=raw["description"],
        expect=Outcome(raw["expect"]),
        resources=tuple(resolve_dates(raw["resources"])),
        tags=tags,
        ignored=frozenset(raw.get("ignored", ())),
        reason_contains=raw.get("reason_contains"),
    )


def _case_files() -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(CASES_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert path.stem == document["trial"], path.name
        document["base"] = resolve_dates(document["base"])
        document["cases"] = [_case(document["trial"], raw) for raw in document["cases"]]
        files[document["trial"]] = document
    return files


FILES = _case_files()
CASES = [case for document in FILES.values() for case in document["cases"]]


def _case_id(case: Case) -> str:
    return f"{case.trial}:{case.criterion}:{case.description}"


@cache
def matcher() -> Matcher:
    """The real catalog and pipeline, built once for the module; "today" fixed."""
    settings = load_settings({"today": TODAY.isoformat()}, environ={})
    return Matcher(
        load_catalog(settings.mappings_dir), settings, lambda: "00000000-0000-4000-8000-000000000000"
    )


def catalog() -> Catalog:
    return matcher().catalog


def trial_of(key: str) -> Trial:
    return next(t for t in catalog().trials if t.info.key == key)


def chart(case: Case) -> list[Mapping[str, Any]]:
    """The trial's base chart, each base resource replaced by a case resource of the same type and id."""
    replaced = case.refs
    base = [r for r in FILES[case.trial]["base"] if reference(r) not in replaced]
    return [*base, *case.resources]


def criterion_result(case: Case, resources: list[Mapping[str, Any]]) -> CriterionResult:
    """The criterion's result; in a trial not considered, the result of the anchor with the same rule."""
    results = matcher().match(resources, PATIENT_ID, TODAY).results
    (result,) = [r for r in results if r.trial.key == case.trial]
    trial = trial_of(case.trial)
    (criterion,) = [c for c in trial.criteria if c.id == case.criterion]
    if result.verdict is not Verdict.NOT_CONSIDERED:
        (found,) = [c for c in result.criteria if c.id == case.criterion]
        return found
    same_rule = [n for n, a in enumerate(trial.anchors, start=1) if a.rule == criterion.rule]
    assert same_rule, f"trial not considered: {[(c.id, c.outcome.value, c.reason) for c in result.criteria]}"
    (found,) = [c for c in result.criteria if c.id == f"anchor:{same_rule[0]}"]
    return found


def states_an_absence(reason: str) -> bool:
    """A reason resting on what is not recorded ("no record of ...", "no ongoing systemic therapy ...")."""
    return reason.startswith("no ") or "no record of" in reason


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_the_criterion_has_the_expected_outcome_and_explains_it(case: Case) -> None:
    resources = chart(case)
    found = criterion_result(case, resources)
    assert found.outcome is case.expect, found.reason
    assert found.reason.strip()
    chart_refs = {reference(r) for r in resources}
    assert set(found.evidence) <= chart_refs
    assert not set(found.evidence) & case.ignored, "an ignored record was cited"
    if case.reason_contains:
        assert case.reason_contains in found.reason
    if found.outcome in DECIDED and case.resources and not states_an_absence(found.reason):
        # decided from the case's data: the evidence cites it
        assert set(found.evidence) & case.refs, found.reason


# --- coverage --------------------------------------------------------------------------------------------


def _operators(rule: Mapping[str, Any]) -> Iterator[str]:
    ((name, value),) = rule.items()
    if name in ("all", "any"):
        for child in value:
            yield from _operators(child)
    elif name == "not":
        yield from _operators(value)
    else:
        yield name


def _softens(rule: Mapping[str, Any]) -> bool:
    text = json.dumps(rule)
    return any(word in text for word in ('"if_true"', '"if_false"', '"clinician"'))


def test_every_trial_has_a_case_file_and_every_case_names_a_rule_criterion() -> None:
    assert set(FILES) == {t.info.key for t in catalog().trials}
    for case in CASES:
        rules = {c.id: c.rule for c in trial_of(case.trial).criteria}
        assert rules.get(case.criterion) is not None, f"{case.trial}/{case.criterion}: no such rule criterion"


RECRUITING = sorted(t.info.key for t in catalog().trials if t.info.status in RECRUITING_STATUSES)


@pytest.mark.parametrize("trial", RECRUITING)
def test_every_rule_criterion_of_a_recruiting_trial_is_covered_on_both_sides(trial: str) -> None:
    """Met and not-met (or the outcome its rule softens that side to), and for a threshold criterion a case at
    the threshold and a missing or stale one (unknown)."""
    source = trial_of(trial)
    document = FILES[trial]
    sides: Mapping[str, Mapping[str, str]] = document.get("sides") or {}
    for criterion in source.criteria:
        if criterion.rule is None:
            assert criterion.id not in sides
            continue
        cases = [c for c in document["cases"] if c.criterion == criterion.id]
        expected = {c.expect for c in cases}
        softened = sides.get(criterion.id, {})
        if softened:
            assert _softens(criterion.rule), f"{criterion.id}: 'sides' given but the rule softens nothing"
        for side in (Outcome.MET, Outcome.NOT_MET):
            stand_in = Outcome(softened.get(side.value, side.value))
            assert stand_in in expected, f"{trial}/{criterion.id}: no case for the {side.value} side"
        if THRESHOLD_OPERATORS & set(_operators(criterion.rule)):
            assert any("threshold" in c.tags for c in cases), f"{trial}/{criterion.id}: no threshold case"
            assert any(c.tags & {"missing", "stale"} and c.expect is Outcome.UNKNOWN for c in cases), (
                f"{trial}/{criterion.id}: no missing or stale case"
            )


def _quantities(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        if "value" in value and "code" in value and "system" in value:
            yield value
        for item in value.values():
            yield from _quantities(item)
    elif isinstance(value, list):
        for item in value:
            yield from _quantities(item)


def _status_codes(resource: Mapping[str, Any]) -> set[str]:
    codes = {resource.get("status")}
    verification = resource.get("verificationStatus") or {}
    codes |= {coding.get("code") for coding in verification.get("coding", ())}
    return {c for c in codes if c}


def test_the_cases_send_other_units_own_ranges_and_records_that_must_not_count() -> None:
    resources = [r for case in CASES for r in case.resources]
    units = {q["code"] for r in resources if r["resourceType"] == "Observation" for q in _quantities(r)}
    assert {"umol/L", "g/L", "10*9/L", "[lb_av]"} <= units
    own_range = [c for c in CASES if "own-range" in c.tags]
    assert own_range and all(
        any("referenceRange" in r for r in c.resources) and c.expect in DECIDED for c in own_range
    )
    ignored = {
        code
        for case in CASES
        for r in case.resources
        if reference(r) in case.ignored
        for code in _status_codes(r)
    }
    assert {"entered-in-error", "refuted"} <= ignored
