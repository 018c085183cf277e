"""The application shell: discovery, settings layering, CORS, health, JSON errors for routes, wsgi."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hook_checks import empty_values
from sqlalchemy import create_engine

from cds_service.config import REPO_ROOT
from cds_service.web import create_app
from cds_service.web.cors import CORS_HEADERS

SERVICES = yaml.safe_load((REPO_ROOT / "mappings" / "services.yaml").read_text(encoding="utf-8"))["services"]


def test_discovery_lists_the_catalog_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert [(s["id"], s["hook"], s["title"]) for s in services] == [
        (s["id"], s["hook"], s["title"]) for s in SERVICES
    ]
    service = services[0]
    assert service["description"] == SERVICES[0]["description"]
    assert service["usageRequirements"] == SERVICES[0]["usageRequirements"]
    written = dict(SERVICES[0]["prefetch"])
    observation_codes = service["prefetch"]["observations"].split("code=")[1].split("&")[0]
    token = "{{catalog.observationCodes}}"
    written["observations"] = written["observations"].replace(token, observation_codes)
    assert service["prefetch"] == written  # as written, the catalog's token replaced by the codes read
    assert "2160-0" in observation_codes.split(",") and "{{catalog" not in json.dumps(services)
    assert empty_values(response.get_json()) == []


def test_discovery_prefetches_every_resource_type_the_contract_names(client):
    templates = client.get("/cds-services").get_json()["services"][0]["prefetch"].values()
    types = {template.split("?")[0].split("/")[0] for template in templates}
    expected = {
        "Patient",
        "Condition",
        "Observation",
        "MedicationStatement",
        "MedicationRequest",
        "Procedure",
    }
    assert types >= expected


def test_config_overrides_environment_which_overrides_defaults(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CDS_SANDBOX", "1")
    monkeypatch.setenv("CDS_TODAY", "2020-01-01")
    monkeypatch.setenv("CDS_FHIR_MAX_PAGES", "3")
    app = create_app({"TODAY": "2026-11-21", "INSTANCE_PATH": tmp_path / "instance"})
    settings = app.extensions["cds"].settings
    assert (settings.today.isoformat(), settings.fhir_max_pages, settings.fetch_deadline_seconds) == (
        "2026-11-21",
        3,
        5.0,
    )
    assert (tmp_path / "instance" / "cds.sqlite3").is_file()
    app.extensions["cds"].storage.close()


@pytest.mark.parametrize(
    "path", ["/cds-services", "/cds-services/mrcc-trials", "/cds-services/mrcc-trials/feedback"]
)
def test_preflight_is_answered_204_with_cors_headers(client, path):
    response = client.options(
        path,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    for name, value in CORS_HEADERS.items():
        assert response.headers[name] == value
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/cds-services", 200),
        ("get", "/healthz", 200),
        ("get", "/nowhere", 404),
        ("post", "/cds-services", 405),
    ],
)
def test_every_response_allows_any_origin(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_healthz_reports_the_catalog(client, app):
    response = client.get("/healthz")
    catalog = app.extensions["cds"].catalog
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "catalogVersion": catalog.version,
        "trials": len(catalog.trials),
    }


def test_healthz_is_503_when_the_database_does_not_answer(client, app, tmp_path: Path):
    storage = app.extensions["cds"].storage
    storage.engine.dispose()
    storage.engine = create_engine(f"sqlite:///{tmp_path / 'missing-folder' / 'cds.sqlite3'}")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("get", "/no/such/route", 404, "not-found"),
        ("get", "/cds-services/mrcc-trials", 405, "method-not-allowed"),
        ("put", "/cds-services", 405, "method-not-allowed"),
        ("get", "/cds-services/mrcc-trials/feedback", 405, "method-not-allowed"),
    ],
)
def test_routing_errors_are_json(client, method, path, status, error):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["error"] == error
    assert response.get_json()["message"]
    if status == 405:
        assert "POST" in response.headers["Allow"] or "GET" in response.headers["Allow"]


def test_wsgi_exposes_the_app(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CDS_SANDBOX", "1")
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'cds.sqlite3'}")
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    sys.modules.pop("wsgi", None)
    wsgi = importlib.import_module("wsgi")
    try:
        assert wsgi.app.test_client().get("/cds-services").status_code == 200
    finally:
        wsgi.app.extensions["cds"].storage.close()
        sys.modules.pop("wsgi", None)


def test_catalog_warnings_are_logged_at_start(make_sandbox_app, tmp_path, caplog):
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO_ROOT / "mappings", catalog)
    conditions = catalog / "valuesets" / "conditions.yaml"
    doc = yaml.safe_load(conditions.read_text(encoding="utf-8"))
    unused = {
        "id": "not-used",
        "title": "unused",
        "source": "test",
        "include": [{"system": "http://snomed.info/sct", "codes": ["22298006"]}],
    }
    doc["valuesets"].append(unused)
    conditions.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with caplog.at_level("WARNING", logger="cds_service.web"):
        app = make_sandbox_app(MAPPINGS_DIR=str(catalog))
    assert app.test_client().get("/healthz").status_code == 200  # a warning does not stop the service
    assert any("'not-used' is used by no rule" in r.getMessage() for r in caplog.records)
