"""The sandbox page and its example-patient gallery: only files named in the manifest are served."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [{"resource": {"resourceType": "Patient", "id": "g1"}}],
}


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """An examples folder: two listed patients, one unlisted file, a secret next to the folder."""
    patients = tmp_path / "examples" / "patients"
    patients.mkdir(parents=True)
    (patients / "listed.json").write_text(json.dumps(BUNDLE), encoding="utf-8")
    (patients / "second.json").write_text(json.dumps(BUNDLE), encoding="utf-8")
    (patients / "unlisted.json").write_text(json.dumps(BUNDLE), encoding="utf-8")
    (tmp_path / "examples" / "secret.json").write_text('{"secret": true}', encoding="utf-8")
    manifest = [
        {
            "file": "listed.json",
            "title": "Listed patient",
            "description": "fits a trial",
            "expected": {"NCT04299646": "possibly-eligible"},
        },
        {"file": "second.json", "title": "Second patient", "description": "fits none", "expected": {}},
        {"file": "../secret.json", "title": "Outside the folder", "description": "never served"},
        {"title": "An entry without a file"},
    ]
    (patients / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return tmp_path / "examples"


@pytest.fixture
def sandbox_app(make_sandbox_app: Callable[..., Flask], examples: Path) -> Flask:
    return make_sandbox_app(TODAY="2026-11-21", EXAMPLES_DIR=examples)


@pytest.fixture
def sandbox_client(sandbox_app: Flask) -> FlaskClient:
    return sandbox_app.test_client()


def test_page_is_html_with_a_strict_content_security_policy(sandbox_client: FlaskClient) -> None:
    with sandbox_client.get("/sandbox") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        page = response.get_data(as_text=True)
    assert '<label for="gallery">' in page and '<label for="bundle">' in page
    assert 'src="static/sandbox.js"' in page
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy
    assert "unsafe-inline" not in policy


@pytest.mark.parametrize(
    "path",
    [
        "/static/sandbox.js",
        "/static/cards.js",
        "/static/prefetch.js",
        "/static/chart.js",
        "/static/sandbox.css",
        "/static/vendor/marked.esm.js",
        "/static/vendor/purify.min.js",
    ],
)
def test_page_assets_are_served(sandbox_client: FlaskClient, path: str) -> None:
    with sandbox_client.get(path) as response:
        assert response.status_code == 200
        assert len(response.get_data()) > 100


def test_vendored_libraries_ship_with_their_licences() -> None:
    vendor = Path(__file__).resolve().parent.parent / "cds_service" / "web" / "static" / "vendor"
    assert "MIT" in (vendor / "marked.LICENSE.md").read_text(encoding="utf-8")
    assert "Apache License" in (vendor / "dompurify.LICENSE").read_text(encoding="utf-8")


def test_settings_give_the_page_the_service_today_and_the_outcome_wording(
    sandbox_client: FlaskClient,
) -> None:
    settings = sandbox_client.get("/sandbox/settings").get_json()
    assert settings["today"] == "2026-11-21"
    assert settings["outcomeLabels"]["exclusion"]["met"] == "Not excluded"
    assert settings["outcomeLabels"]["exclusion"]["not-met"] == "Excluded"
    assert settings["outcomeLabels"]["inclusion"]["met"] == "Met"
    assert settings["verdictLabels"]["possibly-eligible"] == "Possibly eligible"


def test_patients_lists_the_manifest_entries_that_name_a_file(sandbox_client: FlaskClient) -> None:
    response = sandbox_client.get("/sandbox/patients")
    assert response.status_code == 200
    entries = response.get_json()
    assert [entry["file"] for entry in entries] == ["listed.json", "second.json", "../secret.json"]
    assert entries[0] == {
        "file": "listed.json",
        "title": "Listed patient",
        "description": "fits a trial",
        "expected": {"NCT04299646": "possibly-eligible"},
    }


def test_a_listed_patient_is_served_as_fhir_json(sandbox_client: FlaskClient) -> None:
    with sandbox_client.get("/sandbox/patients/listed.json") as response:
        assert response.status_code == 200
        assert response.mimetype == "application/fhir+json"
        assert json.loads(response.get_data()) == BUNDLE


@pytest.mark.parametrize(
    "path",
    [
        "/sandbox/patients/unlisted.json",  # in the folder, not in the manifest
        "/sandbox/patients/manifest.yaml",
        "/sandbox/patients/../secret.json",  # listed, but outside the folder
        "/sandbox/patients/..%2Fsecret.json",
        "/sandbox/patients/%2e%2e/secret.json",
        "/sandbox/patients/..%2F..%2Fpyproject.toml",
        "/sandbox/patients//etc/passwd",
    ],
)
def test_files_outside_the_manifest_or_folder_are_refused(sandbox_client: FlaskClient, path: str) -> None:
    response = sandbox_client.get(path, follow_redirects=True)
    assert response.status_code == 404
    assert "secret" not in response.get_data(as_text=True)
    assert response.get_json()["error"]


def test_without_a_manifest_the_gallery_is_empty(
    tmp_path: Path, make_sandbox_app: Callable[..., Flask]
) -> None:
    application = make_sandbox_app(EXAMPLES_DIR=tmp_path)
    assert application.test_client().get("/sandbox/patients").get_json() == []


def test_the_bundled_gallery_lists_only_files_that_exist(client: FlaskClient) -> None:
    entries = client.get("/sandbox/patients").get_json()
    for entry in entries:
        with client.get(f"/sandbox/patients/{entry['file']}") as response:
            assert response.status_code == 200, entry["file"]
            assert json.loads(response.get_data())["resourceType"]


def test_the_bundled_draft_orders_are_listed_and_served(client: FlaskClient) -> None:
    entries = client.get("/sandbox/orders").get_json()
    assert len(entries) >= 5
    for entry in entries:
        assert entry["title"] and entry["description"]
        with client.get(f"/sandbox/orders/{entry['file']}") as response:
            assert response.status_code == 200, entry["file"]
            order = json.loads(response.get_data())
        assert order["resourceType"] in ("ServiceRequest", "MedicationRequest") and order["status"] == "draft"
        assert "subject" not in order  # the page makes it the chosen patient's


@pytest.mark.parametrize(
    "path", ["/sandbox/orders/manifest.yaml", "/sandbox/orders/..%2Fpatients%2Fmanifest.yaml"]
)
def test_files_outside_the_order_list_are_refused(client: FlaskClient, path: str) -> None:
    response = client.get(path, follow_redirects=True)
    assert response.status_code == 404
    assert response.get_json()["error"]
