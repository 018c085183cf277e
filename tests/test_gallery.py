"""The example gallery (examples/patients): the engine agrees with the clinician-reviewed manifest.

For every patient of examples/patients/manifest.yaml: the verdict and arm of every trial equal the
manifest's expectation, the hook response equals examples/golden/<slug>.cards.json (through the Matcher,
and through the web service with the request of examples/requests/), every carded criterion explains
itself and cites resources of the chart, and the patient's name never reaches the logs. The real FHIR
examples by others in shared/thirdparty-fhir (none with kidney cancer) give no card at all.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hook_checks import assert_valid_hook_response

from cds_service.pipeline import MatchOutput
from cds_service.verdicts import Outcome, Verdict

REPO_ROOT = Path(__file__).resolve().parents[1]
THIRDPARTY = Path(__file__).resolve().parents[2] / "shared" / "thirdparty-fhir"
EXTENSION_KEY = "org.trialmatch.eligibility"
CARD_VERDICTS = frozenset({Verdict.LIKELY.value, Verdict.POSSIBLY.value})
# Patients without the trials' disease or stage: no card, whatever the manifest says
WITHOUT_THE_DISEASE = ("not-kidney-cancer", "localized-rcc", "metastasis-entered-in-error")


def _load_gallery() -> ModuleType:
    """examples/build_examples.py, which builds the requests and goldens these tests check."""
    path = REPO_ROOT / "examples" / "build_examples.py"
    spec = importlib.util.spec_from_file_location("build_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gallery = _load_gallery()
ENTRIES = {gallery.slug_of(entry): entry for entry in gallery.manifest()}
SLUGS = sorted(ENTRIES)


@cache
def _matcher_for() -> Any:
    return gallery.gallery_matchers()


@cache
def output_of(slug: str) -> MatchOutput:
    """The Matcher's output for a gallery patient, with the golden files' card uuids."""
    bundle = gallery.load_bundle(ENTRIES[slug])
    matcher = _matcher_for()(gallery.card_uuids())
    return matcher.match(gallery.resources_of(bundle), gallery.patient_of(bundle)["id"], gallery.today())


def golden(slug: str) -> dict[str, Any]:
    return json.loads((gallery.GOLDEN_DIR / f"{slug}.cards.json").read_text(encoding="utf-8"))


def chart_references(slug: str) -> set[str]:
    bundle = gallery.load_bundle(ENTRIES[slug])
    return {f"{r['resourceType']}/{r['id']}" for r in gallery.resources_of(bundle)}


def test_the_gallery_has_a_fit_and_an_exclusion_for_every_recruiting_trial() -> None:
    assert len(ENTRIES) >= 12
    recruiting = {r.trial.key for r in output_of(SLUGS[0]).results if r.verdict != Verdict.NOT_RECRUITING}
    for key in recruiting:
        verdicts = {entry["expected"][key] for entry in ENTRIES.values()}
        assert Verdict.LIKELY.value in verdicts and Verdict.NOT_ELIGIBLE.value in verdicts, key
    assert len({gallery.patient_of(gallery.load_bundle(e))["id"] for e in ENTRIES.values()}) == len(ENTRIES)


@pytest.mark.parametrize("slug", SLUGS)
def test_verdicts_and_arms_are_the_manifests(slug: str) -> None:
    entry = ENTRIES[slug]
    results = {r.trial.key: r for r in output_of(slug).results}
    verdicts = {key: r.verdict.value for key, r in results.items()}
    expected = dict(entry["expected"])
    # every trial the manifest does not name is one that never gets a card (RESORT: completed)
    expected.update({key: Verdict.NOT_RECRUITING.value for key in verdicts.keys() - expected.keys()})
    assert verdicts == expected
    arms = {key: r.arm for key, r in results.items() if r.gets_card}
    assert arms == {key: entry.get("arm", {}).get(key) for key in arms}


@pytest.mark.parametrize("slug", SLUGS)
def test_the_hook_response_is_the_golden_file(slug: str) -> None:
    response = {"cards": output_of(slug).cards}
    assert_valid_hook_response(json.loads(json.dumps(response)))
    assert response == golden(slug)
    carded = {card["extension"][EXTENSION_KEY]["nctId"] for card in response["cards"]}
    manifest_cards = {key for key, verdict in ENTRIES[slug]["expected"].items() if verdict in CARD_VERDICTS}
    assert carded == manifest_cards


@pytest.mark.parametrize("slug", SLUGS)
def test_the_chart_says_the_day_it_is_written_for(slug: str) -> None:
    """The sandbox page evaluates a chart as of its Bundle's timestamp, else meta.lastUpdated: for the
    gallery, the day of its golden cards, so the page shows them on any day."""
    bundle = gallery.load_bundle(ENTRIES[slug])
    stamp = bundle.get("timestamp") or bundle["meta"]["lastUpdated"]
    assert stamp[:10] == gallery.TODAY


@pytest.mark.parametrize("slug", SLUGS)
def test_every_card_is_short(slug: str) -> None:
    """A card an oncologist reads in ten seconds: the full criterion list is in the extension."""
    for card in output_of(slug).cards:
        assert len(card["detail"]) <= 800, card["summary"]


@pytest.mark.parametrize("slug", WITHOUT_THE_DISEASE)
def test_no_card_for_a_patient_without_metastatic_kidney_cancer(slug: str) -> None:
    output = output_of(slug)
    assert output.cards == []
    assert {r.verdict for r in output.results} <= {Verdict.NOT_CONSIDERED, Verdict.NOT_RECRUITING}


@pytest.mark.parametrize("slug", SLUGS)
def test_every_carded_criterion_has_a_reason_and_cites_the_chart(slug: str) -> None:
    references = chart_references(slug)
    for card in output_of(slug).cards:
        for criterion in card["extension"][EXTENSION_KEY]["criteria"]:
            assert criterion["type"] in ("inclusion", "exclusion"), criterion["id"]  # never an anchor
            assert criterion["reason"].strip(), criterion["id"]
            evidence = criterion.get("evidence", [])
            assert set(evidence) <= references, criterion["id"]
            if criterion["outcome"] in (Outcome.MET.value, Outcome.NOT_MET.value):
                # a decided criterion rests on resources, or on their documented absence
                assert evidence or "no record of" in criterion["reason"], criterion["id"]


@pytest.mark.parametrize("slug", SLUGS)
def test_the_request_file_is_built_from_the_chart(slug: str) -> None:
    path = gallery.REQUESTS_DIR / f"patient-view-{slug}.json"
    built = gallery.hook_request(slug, gallery.load_bundle(ENTRIES[slug]))
    assert json.loads(path.read_text(encoding="utf-8")) == built


@pytest.mark.parametrize("slug", SLUGS)
def test_the_service_answers_the_request_with_the_golden_cards_and_logs_no_name(
    slug: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    request = json.loads((gallery.REQUESTS_DIR / f"patient-view-{slug}.json").read_text(encoding="utf-8"))
    with caplog.at_level(logging.DEBUG):
        response = client.post("/cds-services/mrcc-trials", json=request)
    assert response.status_code == 200
    assert response.get_json() == golden(slug)
    (name,) = request["prefetch"]["patient"]["name"]
    logged = "\n".join(str(record.__dict__) for record in caplog.records)
    assert caplog.records
    for part in (name["family"], *name["given"]):
        assert part not in logged


def test_every_call_gives_a_trial_card_the_same_topic(client: Any) -> None:
    """New uuids on every call, one stable source.topic per trial: an EHR can suppress a trial on its side."""
    request = json.loads((gallery.REQUESTS_DIR / "patient-view-fit-ablation-small-primary.json").read_bytes())
    first, second = (client.post("/cds-services/mrcc-trials", json=request).get_json()["cards"] for _ in "12")
    assert {card["uuid"] for card in first}.isdisjoint(card["uuid"] for card in second)
    topics = [card["source"]["topic"] for card in first]
    assert topics == [card["source"]["topic"] for card in second]
    assert [topic["code"] for topic in topics] == [
        card["extension"][EXTENSION_KEY]["nctId"] for card in first
    ]


def _thirdparty_bundles() -> list[Path]:
    paths = []
    for path in sorted(THIRDPARTY.rglob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            paths.append(path)
    return paths


THIRDPARTY_BUNDLES = _thirdparty_bundles()


def test_the_thirdparty_bundles_are_there() -> None:
    assert len(THIRDPARTY_BUNDLES) >= 10


@pytest.mark.parametrize("path", THIRDPARTY_BUNDLES, ids=lambda p: p.relative_to(THIRDPARTY).as_posix())
def test_a_thirdparty_bundle_gets_no_card(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    matcher = _matcher_for()(gallery.card_uuids())
    output = matcher.match([bundle], None, gallery.today())
    assert {"cards": output.cards} == {"cards": []}
    assert all(
        r.verdict in (Verdict.NOT_CONSIDERED, Verdict.NOT_RECRUITING, Verdict.DECEASED)
        for r in output.results
    )
