"""The benchmark's generators: catalogs that load, and charts of exactly the requested size that validate."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest_facts import facts_of, read_everything

from bench.generate import (
    BENCH_VALUESETS_FILE,
    PATIENT_ID,
    SERVICE_ID,
    TODAY,
    chart,
    count_resources,
    generate_catalog,
    hook_request,
    variant_id,
)
from cds_service.catalog import load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.fhir.reader import read_chart
from cds_service.terminology import LOINC


@pytest.fixture(scope="module")
def seed_ids() -> set[str]:
    return {p.stem for p in (DEFAULT_MAPPINGS_DIR / "trials").glob("*.yaml")}


def test_seed_sized_catalog_is_the_seed_catalog(tmp_path: Path, seed_ids: set[str]) -> None:
    catalog = load_catalog(generate_catalog(tmp_path / "catalog", len(seed_ids)))

    assert {t.info.key for t in catalog.trials} == seed_ids
    assert not (tmp_path / "catalog" / "valuesets" / BENCH_VALUESETS_FILE).exists()


def test_larger_catalog_loads_with_kidney_and_other_cancer_variants(
    tmp_path: Path, seed_ids: set[str]
) -> None:
    catalog = load_catalog(generate_catalog(tmp_path / "catalog", 40))

    keys = [t.info.key for t in catalog.trials]
    assert len(keys) == len(set(keys)) == 40
    assert seed_ids <= set(keys)
    labels = Counter(
        t.info.short_title[1:].split(" ")[0] for t in catalog.trials if t.info.key not in seed_ids
    )
    assert labels["kidney"] == 2
    assert sum(labels.values()) - labels["kidney"] == 40 - len(seed_ids) - 2


def test_other_cancer_variants_anchor_on_their_own_value_set(tmp_path: Path) -> None:
    folder = generate_catalog(tmp_path / "catalog", 30)

    variants = [
        yaml.safe_load(p.read_text(encoding="utf-8")) for p in (folder / "trials").glob("NCT99*.yaml")
    ]
    lung = next(t for t in variants if t["short_title"].startswith("[lung "))
    anchor = lung["anchors"][0]
    assert "bench-lung-cancer" in str(anchor["rule"])
    assert "histology" not in str(anchor["rule"]) and "kidney-cancer" not in str(anchor["rule"])


def test_kidney_variants_change_thresholds_only(tmp_path: Path) -> None:
    folder = generate_catalog(tmp_path / "catalog", 100)

    variant = yaml.safe_load((folder / "trials" / f"{variant_id(1)}.yaml").read_text(encoding="utf-8"))
    template = next(
        yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted((folder / "trials").glob("*.yaml"))
        if not p.stem.startswith("NCT99")
    )
    assert variant["anchors"] == template["anchors"]
    assert [c["id"] for c in variant["criteria"]] == [c["id"] for c in template["criteria"]]
    assert [c.get("rule") for c in variant["criteria"]] != [c.get("rule") for c in template["criteria"]]


@pytest.mark.parametrize("size", [1, 20, 240, 1000])
def test_request_prefetch_holds_exactly_the_requested_resources(size: int) -> None:
    request = hook_request(size)

    assert request["hook"] == "patient-view"
    assert request["context"]["patientId"] == PATIENT_ID
    assert count_resources(request) == size
    references = [f"{r['resourceType']}/{r['id']}" for r in chart(size)]
    assert len(set(references)) == size


def test_request_answers_every_prefetch_key_of_the_service() -> None:
    catalog = load_catalog(DEFAULT_MAPPINGS_DIR)
    service = next(s for s in catalog.services if s.id == SERVICE_ID)

    assert set(hook_request(20)["prefetch"]) == set(service.prefetch)


def test_large_chart_is_valid_fhir_and_mostly_history() -> None:
    catalog = load_catalog(DEFAULT_MAPPINGS_DIR)
    resources = chart(240)

    # every resource a plan reading everything selects, and every coded one (not only those a rule reads)
    selection = replace(read_everything(catalog.terminology).selection, readable=lambda *_: True)
    records = read_chart(resources, selection, PATIENT_ID)
    for candidate in (c for group in records.candidates.values() for c in group):
        candidate.valid()
    facts = facts_of(resources, catalog.terminology, TODAY, PATIENT_ID)

    assert records.skipped() == ()
    assert facts.skipped == ()
    assert facts.sex == "male" and facts.ecog and facts.therapy_lines
    creatinine = facts.labs["creatinine"]  # the newest value only
    assert creatinine[0].date is not None and (TODAY - creatinine[0].date).days <= 30
    assert sum((LOINC, "2160-0") in c.codes for c in records.of("Observation")) > 5
