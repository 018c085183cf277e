"""GET /metrics in one process: what each call counts, that no label carries patient data, the metrics port.

The counts across gunicorn workers (prometheus_client's multiprocess mode) are tested in test_serve.py.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
import responses
from auth_support import (
    FHIR_SERVER,
    PUBLIC_BASE_URL,
    SERVICE_ID,
    app_config,
    bearer_header,
    claims_for,
    fhir_authorization,
    new_ec_key,
    pinned_issuer,
    secure_app_config,
    sign,
)
from fake_fhir import load_request
from prometheus_client import REGISTRY

from cds_service.catalog import load_catalog
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.web import create_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")

KEY = new_ec_key("ec-1")
SERVICE = f"/cds-services/{SERVICE_ID}"
PATIENT_ID = "pt-Zq7-metrics-probe"
PATIENT_NAME = "Quixote-Marchetti"
SAMPLE = re.compile(r"(?P<name>\w+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
# Every label of the service's metrics and the values it may take: nothing a patient's chart could put there.
ALLOWED_LABELS = {
    "service": lambda v: v in SERVICE_IDS | {"(other)"},
    "status": lambda v: re.fullmatch(r"[1-5]\d\d", v) is not None,
    "nct_id": lambda v: re.fullmatch(r"NCT\d{8}", v) is not None or v == "(other)",
    "verdict": lambda v: v in {"likely-eligible", "possibly-eligible", "(other)"},
    "reason": lambda v: re.fullmatch(r"[a-z0-9_-]+", v) is not None and len(v) < 40,
    "outcome": lambda v: v in {"accepted", "overridden"},
    "route": lambda v: v == "(no route)" or v.startswith("/"),
    "method": lambda v: v in {"GET", "POST", "OPTIONS", "HEAD"},
    "le": lambda v: re.fullmatch(r"[0-9.]+|\+Inf", v) is not None,
}
SERVICE_IDS = {s.id for s in load_catalog(DEFAULT_MAPPINGS_DIR).services}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def hook_body() -> dict:
    """The full-prefetch stub as another patient, with a name; procedures left to fetch from FHIR."""
    stub = load_request("full-prefetch")
    body = json.loads(json.dumps(stub).replace(stub["context"]["patientId"], PATIENT_ID))
    body["hookInstance"] = str(uuid.uuid4())
    body["prefetch"]["patient"]["name"] = [{"family": PATIENT_NAME}]
    body["fhirServer"] = FHIR_SERVER
    body["fhirAuthorization"] = fhir_authorization()
    del body["prefetch"]["procedures"]
    return body


@pytest.fixture
def secure_client(tmp_path):
    app = create_app(secure_app_config(tmp_path, pinned_issuer(KEY)))
    yield app.test_client()
    app.extensions["cds"].storage.close()


def token(path: str) -> dict[str, str]:
    return bearer_header(sign(claims_for(PUBLIC_BASE_URL + path), KEY))


def test_metrics_need_no_jwt_and_are_the_prometheus_text_format(secure_client):
    response = secure_client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE cds_hook_duration_seconds histogram" in response.get_data(as_text=True)


def test_a_call_counts_hook_latency_cards_fetch_failures_and_feedback_without_patient_data(secure_client):
    before = {
        "calls": value("cds_hook_calls_total", service=SERVICE_ID, status="200"),
        "latency": value("cds_hook_duration_seconds_count", service=SERVICE_ID),
        "fetch": value("cds_fhir_fetch_failures_total", reason="http-503"),
        "feedback": value("cds_feedback_items_total", service=SERVICE_ID, outcome="overridden"),
        "rejected": value("cds_jwt_rejections_total", reason="jti_replayed"),
    }
    cards_before = {
        (s.labels["nct_id"], s.labels["verdict"]): s.value
        for m in REGISTRY.collect()
        if m.name == "cds_cards"
        for s in m.samples
        if s.name == "cds_cards_total"
    }
    body, headers = hook_body(), token(SERVICE)
    with responses.RequestsMock() as fhir:
        fhir.get(re.compile(re.escape(FHIR_SERVER) + r"/Procedure\?.*"), status=503)
        answered = secure_client.post(SERVICE, json=body, headers=headers)
    assert answered.status_code == 200
    assert secure_client.post(SERVICE, json=body, headers=headers).status_code == 401  # the same jti again
    cards = answered.get_json()["cards"]
    feedback = {
        "feedback": [
            {"card": cards[0]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z"}
        ]
    }
    path = SERVICE + "/feedback"
    assert secure_client.post(path, json=feedback, headers=token(path)).status_code == 200

    assert value("cds_hook_calls_total", service=SERVICE_ID, status="200") == before["calls"] + 1
    assert (
        value("cds_hook_duration_seconds_count", service=SERVICE_ID) == before["latency"] + 2
    )  # the 401 too
    assert value("cds_fhir_fetch_failures_total", reason="http-503") == before["fetch"] + 1
    assert (
        value("cds_feedback_items_total", service=SERVICE_ID, outcome="overridden") == before["feedback"] + 1
    )
    assert value("cds_jwt_rejections_total", reason="jti_replayed") == before["rejected"] + 1
    for card in cards:
        eligibility = card["extension"]["org.trialmatch.eligibility"]
        labels = {"service": SERVICE_ID, "nct_id": eligibility["nctId"], "verdict": eligibility["verdict"]}
        previous = cards_before.get((labels["nct_id"], labels["verdict"]), 0.0)
        assert value("cds_cards_total", **labels) == previous + 1

    exposition = secure_client.get("/metrics").get_data(as_text=True)
    for forbidden in (PATIENT_ID, PATIENT_NAME, body["hookInstance"], "fhir-token", FHIR_SERVER):
        assert forbidden not in exposition
    for line in exposition.splitlines():
        sample = SAMPLE.fullmatch(line)
        if line.startswith("#") or sample is None or not sample["name"].startswith("cds_"):
            continue
        for label, label_value in re.findall(r'(\w+)="([^"]*)"', sample["labels"] or ""):
            assert ALLOWED_LABELS[label](label_value), line


def test_a_service_id_a_client_made_up_is_not_a_label(client):
    made_up = f"/cds-services/{PATIENT_ID}"
    before = value("cds_hook_calls_total", service="(other)", status="404")
    assert client.post(made_up, json={}).status_code == 404
    assert value("cds_hook_calls_total", service="(other)", status="404") == before + 1
    assert PATIENT_ID not in client.get("/metrics").get_data(as_text=True)


def test_with_a_metrics_port_metrics_are_served_there_only(make_sandbox_app):
    app = make_sandbox_app(METRICS_PORT=9464)
    client = app.test_client()
    assert client.get("/metrics", base_url="http://cds.local:9464").status_code == 200
    assert client.get("/metrics", base_url="http://cds.local:8080").status_code == 404
    assert client.get("/healthz", base_url="http://cds.local:9464").status_code == 404
    assert client.get("/healthz", base_url="http://cds.local:8080").status_code == 200


def test_a_metrics_port_equal_to_the_port_is_refused(tmp_path):
    with pytest.raises(ValueError, match="^CDS_METRICS_PORT: "):
        create_app(app_config(tmp_path, sandbox=True, port=8080, metrics_port=8080))
