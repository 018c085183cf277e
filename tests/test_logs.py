"""Logs are JSON lines with allowlisted fields: never a token, a name or a clinical value."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import uuid

import pytest
import responses
from auth_support import (
    FHIR_SERVER,
    PUBLIC_BASE_URL,
    SERVICE_ID,
    bearer_header,
    claims_for,
    fhir_authorization,
    new_ec_key,
    pinned_issuer,
    secure_app_config,
    sign,
)
from fake_fhir import load_request

from cds_service.logs import JsonLineFormatter, bind_request_id, configure_logging
from cds_service.web import create_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")


KEY = new_ec_key("ec-1")
SERVICE = f"/cds-services/{SERVICE_ID}"
PATIENT_NAME = ("Zebulon", "Quixote-Marchetti")
LAB_VALUE = 246.813  # seconds in a timestamp never exceed 59, so "246.813" cannot appear by chance
FHIR_TOKEN = "fhir-access-token-8f3a9c"
COMMENT = "Patient Zebulon declined: travel"


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    configure_logging("INFO")


def _hook_body() -> dict:
    """The mRCC stub with a name, an extra lab value, a FHIR token; procedures must be fetched from FHIR."""
    body = load_request("full-prefetch")
    body["hookInstance"] = str(uuid.uuid4())
    body["fhirServer"] = FHIR_SERVER
    body["fhirAuthorization"] = fhir_authorization(FHIR_TOKEN)
    body["prefetch"]["patient"]["name"] = [{"given": [PATIENT_NAME[0]], "family": PATIENT_NAME[1]}]
    creatinine = {
        "resourceType": "Observation",
        "id": "cr-secret",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "subject": {"reference": f"Patient/{body['context']['patientId']}"},
        "effectiveDateTime": "2026-11-20",
        "valueQuantity": {
            "value": LAB_VALUE,
            "unit": "umol/L",
            "system": "http://unitsofmeasure.org",
            "code": "umol/L",
        },
    }
    body["prefetch"]["observations"].setdefault("entry", []).append({"resource": creatinine})
    del body["prefetch"]["procedures"]
    return body


def test_a_full_hook_call_logs_no_token_name_or_clinical_value(tmp_path, capsys, caplog):
    app = create_app(secure_app_config(tmp_path, pinned_issuer(KEY), log_level="DEBUG"))
    client = app.test_client()
    body = _hook_body()
    jwt_token = sign(claims_for(PUBLIC_BASE_URL + SERVICE), KEY)
    feedback_token = sign(claims_for(PUBLIC_BASE_URL + SERVICE + "/feedback"), KEY)
    with caplog.at_level(logging.DEBUG), responses.RequestsMock(assert_all_requests_are_fired=True) as fhir:
        fhir.get(
            re.compile(re.escape(FHIR_SERVER) + r"/Procedure\?.*"),
            status=500,
            body=f"error for {PATIENT_NAME[1]}",
        )
        answered = client.post(SERVICE, json=body, headers=bearer_header(jwt_token))
        replayed = client.post(SERVICE, json=body, headers=bearer_header(jwt_token))
        card = answered.get_json()["cards"][0]["uuid"]
        feedback = {
            "feedback": [
                {
                    "card": card,
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-21T10:05:31Z",
                    "overrideReason": {"userComment": COMMENT},
                }
            ]
        }
        fed = client.post(SERVICE + "/feedback", json=feedback, headers=bearer_header(feedback_token))
    assert (answered.status_code, replayed.status_code, fed.status_code) == (200, 401, 200)

    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any(json.loads(line).get("request_id") == body["hookInstance"] for line in lines)
    assert any(json.loads(line).get("reason") == "jti_replayed" for line in lines)
    formatted = [JsonLineFormatter().format(record) for record in caplog.records]
    raw = [repr(record.__dict__) for record in caplog.records]
    secrets = [
        jwt_token,
        jwt_token.split(".")[2],
        feedback_token,
        FHIR_TOKEN,
        *PATIENT_NAME,
        str(LAB_VALUE),
        COMMENT,
    ]
    for text in lines + formatted + raw:
        for secret in secrets:
            assert secret not in text
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)


def _record(message: str = "hello", **extra) -> logging.LogRecord:
    record = logging.LogRecord("cds_service.test", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_formatter_keeps_only_allowlisted_fields():
    line = json.loads(
        JsonLineFormatter().format(_record(patient_id="p-1", status=200, name="Jane Doe", value=5.2))
    )
    assert line["patient_id"] == "p-1" and line["status"] == 200
    assert "name" not in line and "value" not in line


def test_formatter_logs_the_exception_type_and_frames_but_not_its_message():
    try:
        raise ValueError("creatinine 246.813 for Zebulon")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonLineFormatter().format(record)
    assert json.loads(line)["exc_type"] == "ValueError"
    assert "Zebulon" not in line and "246.813" not in line


def test_one_line_per_record_and_request_id_until_unbound():
    stream = io.StringIO()
    configure_logging("INFO", stream)
    log = logging.getLogger("cds_service.test")
    bind_request_id("hook-1")
    log.info("two\nlines")
    bind_request_id(None)
    log.info("after")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "hook-1" and first["message"] == "two\nlines"
    assert "request_id" not in second


def test_configure_logging_twice_keeps_one_handler():
    stream = io.StringIO()
    configure_logging("INFO", stream)
    configure_logging("INFO", stream)
    logging.getLogger("cds_service.test").warning("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_unknown_log_level_is_refused():
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD")
