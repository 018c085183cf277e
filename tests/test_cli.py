"""The `cds-trials` command line, run through click's CliRunner with a clean CDS_* environment."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from cds_service.cards import load_card_texts
from cds_service.catalog import load_catalog
from cds_service.cli import main, seeded_uuids
from cds_service.config import DEFAULT_CARDS_DIR, DEFAULT_MAPPINGS_DIR, load_settings
from cds_service.pipeline import Matcher
from cds_service.storage import MIGRATIONS
from cds_service.verdicts import Verdict

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PATIENT_FILE = DATA / "cli" / "mrcc-oligoprogression.json"
STUDY_FILE = DATA / "ctgov" / "NCT04299646.json"
SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "NCT04299646-SRT-oligoprogression.txt"
TODAY = "2026-11-21"
NEW_NCT = "NCT09999990"  # a fictional NCT number no trial of the catalog has
SEED = 7


pytestmark = pytest.mark.usefixtures("clean_cds_env")


def run(*args: str, columns: int = 200, **env: str) -> Result:
    """Invoke the command line with CDS_* variables (wide output by default, so rich wraps less)."""
    environment = {"COLUMNS": str(columns), **{f"CDS_{k.upper()}": v for k, v in env.items()}}
    return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)


@pytest.fixture
def uuid_factory() -> Callable[[], str]:
    """The app fixture's card uuids: the same sequence as `cds-trials evaluate --uuid-seed 7`."""
    return seeded_uuids(SEED)


def bundle_resources() -> list[dict[str, Any]]:
    return [entry["resource"] for entry in json.loads(PATIENT_FILE.read_text(encoding="utf-8"))["entry"]]


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def hook_request_body(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The patient-view request an EHR sends for this patient, written out key by key."""
    of_type = {
        t: [r for r in resources if r["resourceType"] == t] for t in {r["resourceType"] for r in resources}
    }
    patient = of_type["Patient"][0]
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": {
            "patient": patient,
            "conditions": searchset(of_type.get("Condition", [])),
            "observations": searchset(of_type.get("Observation", [])),
            "medicationStatements": searchset(of_type.get("MedicationStatement", [])),
            "medicationRequests": searchset(of_type.get("MedicationRequest", [])),
            "medicationAdministrations": searchset(of_type.get("MedicationAdministration", [])),
            "procedures": searchset(of_type.get("Procedure", [])),
        },
    }


def expected_results() -> dict[str, Verdict]:
    """Verdicts computed by the pipeline itself, to check what the command prints."""
    settings = load_settings({"today": TODAY})
    catalog = load_catalog(settings.mappings_dir)
    output = Matcher(catalog, settings).match(bundle_resources(), "cli-mrcc-1", settings.current_date())
    return {result.trial.nct_id or result.trial.key: result.verdict for result in output.results}


# --- help


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["evaluate"],
        ["trials"],
        ["check-mappings"],
        ["import-ctgov"],
        ["serve"],
        ["feedback"],
        ["feedback", "export"],
        ["feedback", "unquiet"],
        ["feedback", "stats"],
        ["db"],
        ["db", "upgrade"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")


# --- evaluate


def test_evaluate_prints_each_trial_verdict_and_its_criteria() -> None:
    result = run("evaluate", str(PATIENT_FILE), "--today", TODAY)
    assert result.exit_code == 0, result.output
    verdicts = expected_results()
    labels = load_card_texts(DEFAULT_CARDS_DIR)["verdict_labels"]
    for key, verdict in verdicts.items():
        assert re.search(rf"{re.escape(key)}.*\n\s*verdict: {labels[verdict.value]}", result.output), key
    # the fixture is an oligoprogressive clear-cell mRCC on first-line therapy: the SRT trial may fit
    assert verdicts["NCT04299646"] in (Verdict.LIKELY, Verdict.POSSIBLY)
    trial = next(t for t in load_catalog(DEFAULT_MAPPINGS_DIR).trials if t.info.key == "NCT04299646")
    for criterion in trial.criteria:
        assert criterion.id in result.output
    assert "Observation/cli-ecog" in result.output  # evidence of the ECOG criterion
    for outcome in ("Met", "Not excluded", "For the clinician"):
        assert re.search(rf"│ {outcome}\s", result.output)
    flat = " ".join(result.output.replace("│", " ").split())
    assert all(c.text[:40] in flat for c in trial.criteria)  # wide: the registry text is shown


def criterion_rows(output: str) -> dict[str, str]:
    """Criterion id -> its outcome, from the compact table (outcome | "id (type)" on the row's first line)."""
    rows = re.findall(r"^│ ([A-Za-z ]+?)\s+│ ([a-z0-9-]+) \((inclusion|exclusion)\)", output, re.MULTILINE)
    return {f"{cid} ({kind})": outcome for outcome, cid, kind in rows}


def test_evaluate_fits_80_columns_and_says_not_excluded() -> None:
    result = run("evaluate", str(PATIENT_FILE), "--today", TODAY, columns=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    rows = criterion_rows(result.output)
    catalog = load_catalog(DEFAULT_MAPPINGS_DIR)
    trial = next(t for t in catalog.trials if t.info.key == "NCT04299646")
    for criterion in trial.criteria:
        assert f"{criterion.id} ({criterion.type})" in rows, criterion.id
    exclusions = {row: outcome for row, outcome in rows.items() if row.endswith("(exclusion)")}
    assert "Not excluded" in exclusions.values()
    assert set(exclusions.values()) <= {"Not excluded", "Excluded", "To check", "For the clinician"}
    inclusions = {row: outcome for row, outcome in rows.items() if row.endswith("(inclusion)")}
    assert "Met" in inclusions.values() and "Not excluded" not in inclusions.values()
    assert "Observation/cli-ecog" in result.output  # evidence, under the reason
    flat = " ".join(result.output.replace("│", " ").split())
    assert not any(c.text[:40] in flat for c in trial.criteria)  # no registry text when narrow


def test_evaluate_reads_a_cds_hooks_request_file(tmp_path: Path) -> None:
    """The gallery's request gives the cards of its chart, and the golden cards but for the uuids."""
    request = EXAMPLES / "requests" / "patient-view-fit-ablation-small-primary.json"
    chart = EXAMPLES / "patients" / "fit-ablation-small-primary.json"
    from_request = run("evaluate", str(request), "--json", "--uuid-seed", "1", "--today", TODAY)
    from_chart = run("evaluate", str(chart), "--json", "--uuid-seed", "1", "--today", TODAY)
    assert from_request.exit_code == 0, from_request.output
    assert json.loads(from_request.output) == json.loads(from_chart.output)
    golden = json.loads((EXAMPLES / "golden" / "fit-ablation-small-primary.cards.json").read_text("utf-8"))
    assert without_uuids(json.loads(from_request.output)) == without_uuids(golden)
    table = run("evaluate", str(request), "--today", TODAY, columns=80)
    assert table.exit_code == 0, table.output
    assert "verdict: Likely eligible" in table.output


def without_uuids(response: dict[str, Any]) -> dict[str, Any]:
    for card in response["cards"]:
        card.pop("uuid")
        for suggestion in card["suggestions"]:
            suggestion.pop("uuid")
    return response


def test_evaluate_names_what_is_wrong_in_a_request_file(tmp_path: Path) -> None:
    request = json.loads((EXAMPLES / "requests" / "patient-view-minimal.json").read_text("utf-8"))
    path = tmp_path / "request.json"
    path.write_text(json.dumps({**request, "hook": "order-sign"}), encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert "not a request this service answers: $.hook: this service answers patient-view" in result.output


def test_evaluate_json_is_the_hooks_response_for_the_same_data(client: FlaskClient) -> None:
    response = client.post("/cds-services/mrcc-trials", json=hook_request_body(bundle_resources()))
    assert response.status_code == 200
    result = run("evaluate", str(PATIENT_FILE), "--json", "--today", TODAY, "--uuid-seed", str(SEED))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == response.get_json()
    assert list(printed) == ["cards"]
    assert any(card["summary"].find("NCT04299646") >= 0 for card in printed["cards"])


def test_evaluate_json_with_a_seed_is_reproducible_and_reads_cds_today() -> None:
    first = run("evaluate", str(PATIENT_FILE), "--json", "--uuid-seed", "3", today=TODAY)
    second = run("evaluate", str(PATIENT_FILE), "--json", "--uuid-seed", "3", today=TODAY)
    assert first.exit_code == 0 and first.output == second.output
    other_seed = run("evaluate", str(PATIENT_FILE), "--json", "--uuid-seed", "4", today=TODAY)
    assert json.loads(other_seed.output)["cards"][0]["uuid"] != json.loads(first.output)["cards"][0]["uuid"]


@pytest.mark.parametrize("shape", ["resource-list", "transaction", "searchset"])
def test_evaluate_accepts_other_bundle_shapes(tmp_path: Path, shape: str) -> None:
    resources = bundle_resources()
    if shape == "resource-list":
        data: Any = resources
    else:
        entries = [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources
        ]
        data = {"resourceType": "Bundle", "type": shape, "entry": entries}
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    reference = run("evaluate", str(PATIENT_FILE), "--json", "--uuid-seed", "1", "--today", TODAY)
    result = run("evaluate", str(path), "--json", "--uuid-seed", "1", "--today", TODAY)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(reference.output)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read JSON"),
        (
            '{"hello": "world"}',
            "expected a FHIR Bundle, a FHIR resource or a list of resources (each with a ",
        ),
        (
            '[{"hello": "world"}]',
            "or a CDS Hooks request (an object with hook, hookInstance, context and prefetch)",
        ),
        ('{"resourceType": "Bundle", "type": "collection", "entry": []}', "exactly one Patient"),
    ],
)
def test_evaluate_refuses_files_it_cannot_use(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert message in result.output


# --- trials and check-mappings


def test_trials_lists_every_trial_with_its_status_and_criteria_counts() -> None:
    result = run("trials")
    assert result.exit_code == 0, result.output
    catalog = load_catalog(DEFAULT_MAPPINGS_DIR)
    assert len(catalog.trials) == 4
    for trial in catalog.trials:
        inclusion = sum(c.type == "inclusion" for c in trial.criteria)
        row = next(
            line for line in result.output.splitlines() if (trial.info.nct_id or trial.info.key) in line
        )
        assert trial.info.status in row
        assert re.search(rf"│ {inclusion} \(\d+\+\d+\)", row)
        if trial.info.acronym:
            assert trial.info.acronym in result.output


def test_trials_follows_cds_mappings_dir(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, catalog)
    (catalog / "trials" / "RESORT.yaml").unlink()
    result = run("trials", mappings_dir=str(catalog))
    assert result.exit_code == 0, result.output
    assert "RESORT" not in result.output and "NCT06903312" in result.output


def test_check_mappings_accepts_the_bundled_catalog() -> None:
    result = run("check-mappings")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ")


def test_check_mappings_names_the_file_and_path_of_each_problem(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, catalog)
    trial_file = catalog / "trials" / "NCT06903312.yaml"
    trial = yaml.safe_load(trial_file.read_text(encoding="utf-8"))
    trial["anchors"][0]["rule"] = {"condition": {"valueset": "no-such-set"}}
    trial_file.write_text(yaml.safe_dump(trial, sort_keys=False, allow_unicode=True), encoding="utf-8")
    result = run("check-mappings", str(catalog))
    assert result.exit_code == 1
    assert "trials/NCT06903312.yaml" in result.output
    assert "anchors/0/rule/condition/valueset" in result.output
    assert "no-such-set" in result.output


def test_check_mappings_reads_cds_mappings_dir(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, catalog)
    (catalog / "services.yaml").write_text("services: []\n", encoding="utf-8")
    result = run("check-mappings", mappings_dir=str(catalog))
    assert result.exit_code == 1
    assert "services.yaml" in result.output


# --- import-ctgov


def seed_criteria() -> dict[str, list[str]]:
    """The bullet items of the registry text, by section, as the seed shows them."""
    sections: dict[str, list[str]] = {"inclusion": [], "exclusion": []}
    current = None
    for line in SEED_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() in ("Inclusion Criteria", "Exclusion Criteria"):
            current = line.strip().split()[0].lower()
        elif line.strip() == "Study & Design":
            current = None
        elif current and line.strip().startswith("•"):
            sections[current].append(line.strip().removeprefix("•").strip())
    return sections


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    result = run("import-ctgov", str(STUDY_FILE), "--out", str(tmp_path / "drafts"))
    assert result.exit_code == 0, result.output
    return tmp_path / "drafts" / "NCT04299646.yaml"


def test_import_ctgov_keeps_metadata_and_every_criterion_verbatim(imported: Path) -> None:
    draft = yaml.safe_load(imported.read_text(encoding="utf-8"))
    assert draft["id"] == draft["nct_id"] == "NCT04299646"
    assert draft["status"] == "RECRUITING" and draft["phase"] == "PHASE2"
    assert draft["sponsor"] == "Centre Francois Baclesse"
    assert draft["url"] == "https://clinicaltrials.gov/study/NCT04299646"
    assert draft["title"].startswith("A Phase II Study Assessing Stereotactic Radiotherapy")
    assert len(draft["short_title"]) <= 100
    assert "Centre François Baclesse, Caen, France" in draft["sites"]
    seed = seed_criteria()
    assert len(seed["inclusion"]) == 15 and len(seed["exclusion"]) == 14
    for kind, texts in seed.items():
        assert [c["text"] for c in draft["criteria"] if c["type"] == kind] == texts
    assert all("rule" not in c and c["clinician"] for c in draft["criteria"])
    # one anchor, left to the clinician (never true): the draft is not considered until a person encodes it
    (anchor,) = draft["anchors"]
    assert anchor["label"].startswith("not yet encoded: disease and stage")
    assert "Metastatic Renal Cell Carcinoma" in anchor["label"]  # the registry's conditions, as a hint
    assert set(anchor["rule"]) == {"clinician"}


@pytest.fixture
def catalog_with_new_draft(tmp_path: Path) -> Path:
    """The bundled catalog plus the draft of a trial it does not hold yet (the record, another NCT number).

    (Replacing the hand-encoded NCT04299646 by its draft would leave value sets that only it used unused.)
    """
    study = json.loads(STUDY_FILE.read_text(encoding="utf-8"))
    study["protocolSection"]["identificationModule"]["nctId"] = NEW_NCT
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study), encoding="utf-8")
    catalog = tmp_path / "catalog"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, catalog)
    result = run("import-ctgov", str(path), "--out", str(catalog / "trials"))
    assert result.exit_code == 0, result.output
    return catalog


def test_import_ctgov_output_passes_check_mappings(catalog_with_new_draft: Path) -> None:
    result = run("check-mappings", str(catalog_with_new_draft))
    assert result.exit_code == 0, result.output
    assert (
        len(load_catalog(catalog_with_new_draft).trials) == len(load_catalog(DEFAULT_MAPPINGS_DIR).trials) + 1
    )


def test_an_imported_draft_never_gets_a_card(catalog_with_new_draft: Path) -> None:
    """Until a person encodes its anchors, a draft is not considered, even for a patient who fits it."""
    result = run(
        "evaluate", str(PATIENT_FILE), "--json", today=TODAY, mappings_dir=str(catalog_with_new_draft)
    )
    assert result.exit_code == 0, result.output
    summaries = [card["summary"] for card in json.loads(result.output)["cards"]]
    assert any("NCT04299646" in summary for summary in summaries)  # the encoded trial still gets its card
    assert all(NEW_NCT not in summary for summary in summaries)
    table = run("evaluate", str(PATIENT_FILE), today=TODAY, mappings_dir=str(catalog_with_new_draft))
    assert re.search(rf"{NEW_NCT}.*\n\s*verdict: Not considered", table.output)
    draft_part = table.output.split(NEW_NCT, 1)[1].split("verdict:", 2)[1]
    assert "anchor:1" in draft_part and "clinician" in draft_part  # why: the anchor left to the clinician


def test_import_ctgov_refuses_to_overwrite_without_force(imported: Path) -> None:
    again = run("import-ctgov", str(STUDY_FILE), "--out", str(imported.parent))
    assert again.exit_code == 1 and "--force" in again.output
    forced = run("import-ctgov", str(STUDY_FILE), "--out", str(imported.parent), "--force")
    assert forced.exit_code == 0


def test_import_ctgov_splits_numbered_and_nested_items_under_their_heading(tmp_path: Path) -> None:
    study = json.loads(STUDY_FILE.read_text(encoding="utf-8"))
    study["protocolSection"]["identificationModule"]["acronym"] = "STORM"
    study["protocolSection"]["designModule"]["phases"] = ["PHASE1", "PHASE2"]
    study["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = (
        "Key Inclusion Criteria:\n\n1. Age ≥ 18 years\n2. Adequate organ function:\n"
        "   * Creatinine clearance \\> 30 mL/min\n   * Bilirubin ≤ 1.5 x ULN, or\n"
        "     ≤ 3 x ULN with Gilbert's syndrome\n3. Signed consent\n\n"
        "Exclusion Criteria:\n\n* Prior radiotherapy to \\[a target lesion\\]\n"
    )
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study), encoding="utf-8")
    assert run("import-ctgov", str(path), "--out", str(tmp_path / "out")).exit_code == 0
    draft = yaml.safe_load((tmp_path / "out" / "NCT04299646.yaml").read_text(encoding="utf-8"))
    assert draft["acronym"] == "STORM" and draft["phase"] == "PHASE1_PHASE2"
    assert [(c["type"], c["text"], c.get("heading")) for c in draft["criteria"]] == [
        ("inclusion", "Age ≥ 18 years", None),
        ("inclusion", "Creatinine clearance > 30 mL/min", "Adequate organ function:"),
        (
            "inclusion",
            "Bilirubin ≤ 1.5 x ULN, or ≤ 3 x ULN with Gilbert's syndrome",
            "Adequate organ function:",
        ),
        ("inclusion", "Signed consent", None),
        ("exclusion", "Prior radiotherapy to [a target lesion]", None),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("protocolSection"), "protocolSection"),
        (lambda s: s["protocolSection"]["identificationModule"].pop("nctId"), "nctId"),
        (
            lambda s: s["protocolSection"]["eligibilityModule"].update(eligibilityCriteria="Adults only."),
            "Inclusion",
        ),
    ],
)
def test_import_ctgov_names_what_the_record_lacks(
    tmp_path: Path, change: Callable[[dict], Any], message: str
) -> None:
    study = json.loads(STUDY_FILE.read_text(encoding="utf-8"))
    change(study)
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study), encoding="utf-8")
    result = run("import-ctgov", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


# --- feedback export


@pytest.fixture
def feedback_app(tmp_path: Path) -> Iterator[Flask]:
    from cds_service.web import create_app

    application = create_app(
        {"SANDBOX": True, "TODAY": TODAY, "DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}"}
    )
    yield application
    application.extensions["cds"].storage.close()


def test_feedback_export_prints_stored_feedback_as_json_lines(feedback_app: Flask, tmp_path: Path) -> None:
    client = feedback_app.test_client()
    cards = client.post("/cds-services/mrcc-trials", json=hook_request_body(bundle_resources())).get_json()[
        "cards"
    ]
    reason = {"system": "https://trialmatch.example.org/override-reason", "code": "not-interested"}
    items = [
        {
            "card": cards[0]["uuid"],
            "outcome": "overridden",
            "overrideReason": {"reason": reason},
            "outcomeTimestamp": "2026-11-21T10:05:31Z",
        },
        {
            "card": "3f1c2f0e-8f4e-4bb1-9df0-6a2d9b1c0d11",
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "c3c6b0a5-1d7e-4c55-a2a6-8f0e1c9b7a21"}],
            "outcomeTimestamp": "2026-11-21T10:06:00Z",
        },
    ]
    assert client.post("/cds-services/mrcc-trials/feedback", json={"feedback": items}).status_code == 200
    result = run("feedback", "export", database_url=f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(line["card"], line["outcome"], line["timestamp"]) for line in lines] == [
        (cards[0]["uuid"], "overridden", "2026-11-21T10:05:31Z"),
        ("3f1c2f0e-8f4e-4bb1-9df0-6a2d9b1c0d11", "accepted", "2026-11-21T10:06:00Z"),
    ]
    assert lines[0]["reason"] == reason
    assert lines[0]["nctId"] == cards[0]["extension"]["org.trialmatch.eligibility"]["nctId"]


def test_feedback_export_of_an_empty_store_prints_nothing(tmp_path: Path) -> None:
    result = run("feedback", "export", database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert result.exit_code == 0
    assert result.output == ""


# --- feedback unquiet


@pytest.fixture
def app_on_database(database_url: str) -> Iterator[Flask]:
    """The sandbox app on a new database, SQLite then PostgreSQL."""
    from cds_service.web import create_app

    application = create_app({"SANDBOX": True, "TODAY": TODAY, "DATABASE_URL": database_url})
    yield application
    application.extensions["cds"].storage.close()


def test_feedback_unquiet_lets_a_patients_answered_card_show_again(
    app_on_database: Flask, database_url: str
) -> None:
    client = app_on_database.test_client()
    body = hook_request_body(bundle_resources())
    card = client.post("/cds-services/mrcc-trials", json=body).get_json()["cards"][0]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z"}
    assert client.post("/cds-services/mrcc-trials/feedback", json={"feedback": [item]}).status_code == 200
    patient, trial = body["context"]["patientId"], card["extension"]["org.trialmatch.eligibility"]["nctId"]
    storage = app_on_database.extensions["cds"].storage
    assert list(storage.quieted(patient, datetime.now(UTC), 30)) == [trial]
    other = run(
        "feedback", "unquiet", "--patient", patient, "--trial", "NCT00000000", database_url=database_url
    )
    assert (other.exit_code, other.output) == (0, f"Patient/{patient}: no card was quiet\n")
    assert list(storage.quieted(patient, datetime.now(UTC), 30)) == [trial]
    lifted = run("feedback", "unquiet", "--patient", patient, "--trial", trial, database_url=database_url)
    assert (lifted.exit_code, lifted.output) == (0, f"Patient/{patient}: quiet lifted for {trial}\n")
    assert storage.quieted(patient, datetime.now(UTC), 30) == {}


def test_feedback_unquiet_without_a_trial_lifts_every_trial_of_the_patient(
    app_on_database: Flask, database_url: str
) -> None:
    storage = app_on_database.extensions["cds"].storage
    cards = [
        {
            "uuid": uuid,
            "extension": {"org.trialmatch.eligibility": {"nctId": nct, "verdict": "likely-eligible"}},
        }
        for uuid, nct in (("u-1", "NCT1"), ("u-2", "NCT2"))
    ]
    storage.record_audit(
        hook_instance="h",
        service_id="mrcc-trials",
        hook="patient-view",
        patient_id="pt-9",
        cards=cards,
        catalog_version="v",
        duration_ms=1,
    )
    items = [
        {"card": c["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z"}
        for c in cards
    ]
    storage.record_feedback("mrcc-trials", items)
    result = run("feedback", "unquiet", "--patient", "pt-9", database_url=database_url, quiet_days="7")
    assert (result.exit_code, result.output) == (0, "Patient/pt-9: quiet lifted for NCT1, NCT2\n")
    assert storage.quieted("pt-9", datetime.now(UTC), 7) == {}


# --- feedback stats


def dismiss_as_out_of_date(app: Flask) -> dict[str, Any]:
    """Show the CLI patient's card, dismiss it as "chart data out of date"; return the card's eligibility."""
    client = app.test_client()
    card = client.post("/cds-services/mrcc-trials", json=hook_request_body(bundle_resources())).get_json()[
        "cards"
    ][0]
    reason = {"system": "urn:trialmatch:override-reason", "code": "data-out-of-date"}
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReasons": [{"reason": reason}],
        "outcomeTimestamp": "2026-11-21T10:05:31Z",
    }
    assert client.post("/cds-services/mrcc-trials/feedback", json={"feedback": [item]}).status_code == 200
    return card["extension"]["org.trialmatch.eligibility"]


def test_feedback_stats_json_counts_per_trial_and_the_criteria_still_to_check(
    app_on_database: Flask, database_url: str
) -> None:
    eligibility = dismiss_as_out_of_date(app_on_database)
    unknown = [c["id"] for c in eligibility["criteria"] if c["outcome"] == "unknown"]
    assert unknown  # the CLI patient's card has criteria still to check
    result = run("feedback", "stats", "--json", database_url=database_url, quiet_days="10")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "quietDays": 10,
        "trials": [
            {
                "nctId": eligibility["nctId"],
                "shown": 1,
                "accepted": 0,
                "overridden": {"data-out-of-date": 1},
                "quietedPatients": 1,
                "outOfDate": 1,
                "stillToCheck": dict.fromkeys(sorted(unknown), 1),
                "orderWarnings": {"shown": 0, "accepted": 0, "overridden": {}},
            }
        ],
    }


def test_feedback_stats_prints_tables(app_on_database: Flask, database_url: str) -> None:
    eligibility = dismiss_as_out_of_date(app_on_database)
    result = run("feedback", "stats", database_url=database_url)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if eligibility["nctId"] in line]
    assert len(rows) == 2
    assert re.search(r"\b1\b.*\b0\b.*1: data-out-of-date 1.*\b1\b", rows[0]), rows[0]
    unknown = [c["id"] for c in eligibility["criteria"] if c["outcome"] == "unknown"]
    assert all(criterion in result.output for criterion in unknown)


def test_feedback_stats_count_the_order_warnings_apart(app_on_database: Flask, database_url: str) -> None:
    client = app_on_database.test_client()
    request = json.loads((EXAMPLES / "requests" / "order-sign-nephrectomy-cpt-fit-namecar.json").read_text())
    (warning,) = client.post("/cds-services/mrcc-trials-order-sign", json=request).get_json()["cards"]
    item = {
        "card": warning["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": warning["overrideReasons"][0]},
        "outcomeTimestamp": "2026-11-21T10:05:31Z",
    }
    assert (
        client.post("/cds-services/mrcc-trials-order-sign/feedback", json={"feedback": [item]}).status_code
        == 200
    )
    result = run("feedback", "stats", "--json", database_url=database_url)
    (trial,) = json.loads(result.output)["trials"]
    assert (trial["nctId"], trial["shown"]) == ("NCT06882486", 0)
    assert trial["orderWarnings"] == {"shown": 1, "accepted": 0, "overridden": {"order-needed-now": 1}}
    table = run("feedback", "stats", database_url=database_url)
    assert "Order warnings by trial" in table.output
    (row,) = [line for line in table.output.splitlines() if "order-needed-now" in line]
    assert re.search(r"NCT06882486.*\b1\b.*\b0\b.*1: order-needed-now 1", row), row


def test_feedback_stats_of_an_empty_store(tmp_path: Path) -> None:
    result = run("feedback", "stats", database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert result.exit_code == 0
    assert "No card was dismissed because the chart data was out of date." in result.output
    assert "No order warning was shown." in result.output
    empty = run("feedback", "stats", "--json", database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert json.loads(empty.output) == {"quietDays": 30, "trials": []}


# --- db upgrade


def test_db_upgrade_brings_a_new_database_to_the_newest_revision(database_url: str) -> None:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    first = run("db", "upgrade", database_url=database_url)
    assert (first.exit_code, first.output) == (0, f"database schema at revision {head} (was empty)\n")
    again = run("db", "upgrade", database_url=database_url)
    assert (again.exit_code, again.output) == (0, f"database schema at revision {head}\n")


def test_evaluate_says_why_a_deceased_patient_gets_no_trial(tmp_path: Path) -> None:
    resources = bundle_resources()
    for resource in resources:
        if resource["resourceType"] == "Patient":
            resource["deceasedDateTime"] = "2026-11-01"
    path = tmp_path / "deceased.json"
    path.write_text(
        json.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
        )
    )
    table = run("evaluate", str(path), "--today", TODAY)
    assert table.exit_code == 0, table.output
    assert "recorded as deceased: no trial is offered" in table.output
    assert "verdict: Not offered (the patient is recorded as deceased)" in table.output
    assert "no card" in table.output
    assert json.loads(run("evaluate", str(path), "--json", "--today", TODAY).output) == {"cards": []}
