"""POST /cds-services/{id}/feedback: validated, stored durably and idempotently, answered 200 {}; on SQLite
and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fake_fhir import load_request
from flask import Flask

FEEDBACK = "/cds-services/mrcc-trials/feedback"
OVERRIDDEN = {
    "card": "00000000-0000-4000-8000-000000000001",
    "outcome": "overridden",
    "overrideReason": {
        "reason": {
            "system": "http://example.org/override",
            "code": "not-eligible",
            "display": "Not eligible",
        },
        "userComment": "Declined",
    },
    "outcomeTimestamp": "2026-11-21T10:05:31Z",
}


@pytest.fixture
def app(
    make_sandbox_app: Callable[..., Flask], today: date, uuid_factory: Callable[[], str], database_url: str
) -> Flask:
    return make_sandbox_app(TODAY=today.isoformat(), UUID_FACTORY=uuid_factory, DATABASE_URL=database_url)


def post(client, body: Any, path: str = FEEDBACK):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, content_type="application/json")


def stored(app) -> list[dict[str, Any]]:
    return list(app.extensions["cds"].storage.iter_feedback())


def test_feedback_on_a_card_shown_is_stored_with_its_trial(app, client):
    hook = client.post("/cds-services/mrcc-trials", json=load_request("full-prefetch"))
    card = hook.get_json()["cards"][0]
    response = post(client, {"feedback": [{**OVERRIDDEN, "card": card["uuid"]}]})
    assert (response.status_code, response.get_json()) == (200, {})
    [item] = stored(app)
    assert item["card"] == card["uuid"]
    assert item["nctId"] == card["extension"]["org.trialmatch.eligibility"]["nctId"]
    assert (item["outcome"], item["comment"], item["reason"]["code"]) == (
        "overridden",
        "Declined",
        "not-eligible",
    )


def test_feedback_on_a_card_shown_quiets_its_trial_for_that_patient(app, client):
    request = load_request("full-prefetch")
    card = client.post("/cds-services/mrcc-trials", json=request).get_json()["cards"][0]
    eligibility = card["extension"]["org.trialmatch.eligibility"]
    storage = app.extensions["cds"].storage
    patient = request["context"]["patientId"]
    assert storage.quieted(patient, datetime.now(UTC), 30) == {}
    assert post(client, {"feedback": [{**OVERRIDDEN, "card": card["uuid"]}]}).status_code == 200
    assert storage.quieted(patient, datetime.now(UTC), 30) == {eligibility["nctId"]: eligibility["verdict"]}
    assert storage.quieted("another-patient", datetime.now(UTC), 30) == {}


def test_a_repeated_item_is_stored_once(app, client):
    accepted = {
        "card": "00000000-0000-4000-8000-000000000002",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "00000000-0000-4000-8000-000000000003"}],
        "outcomeTimestamp": "2026-11-21T10:06:00.250+01:00",
    }
    assert post(client, {"feedback": [OVERRIDDEN, accepted]}).status_code == 200
    assert post(client, {"feedback": [OVERRIDDEN]}).status_code == 200
    assert post(client, {"feedback": [accepted, accepted]}).status_code == 200
    assert [(item["card"], item["outcome"]) for item in stored(app)] == [
        (OVERRIDDEN["card"], "overridden"),
        (accepted["card"], "accepted"),
    ]
    assert stored(app)[1]["acceptedSuggestions"] == ["00000000-0000-4000-8000-000000000003"]


NOT_INTERESTED = {"system": "urn:trialmatch:override-reason", "code": "not-interested"}
OUT_OF_DATE = {
    "system": "urn:trialmatch:override-reason",
    "code": "data-out-of-date",
    "display": "Out of date",
}
OVERRIDE_FORMS = [
    pytest.param(
        {"overrideReason": {"reason": NOT_INTERESTED, "userComment": "No"}},
        (NOT_INTERESTED, "No"),
        id="overrideReason (CDS Hooks 2.0)",
    ),
    pytest.param(
        {"overrideReasons": {"reason": NOT_INTERESTED, "userComment": "No"}},
        (NOT_INTERESTED, "No"),
        id="overrideReasons object",
    ),
    pytest.param(
        {"overrideReasons": [{"reason": OUT_OF_DATE}, {"reason": NOT_INTERESTED, "userComment": "No"}]},
        (OUT_OF_DATE, "No"),
        id="overrideReasons array: the first reason",
    ),
    pytest.param(
        {"overrideReasons": [{"userComment": "Labs from May"}, {"reason": OUT_OF_DATE}]},
        (OUT_OF_DATE, "Labs from May"),
        id="overrideReasons array: a first item with only a comment",
    ),
]


@pytest.mark.parametrize(("override", "expected"), OVERRIDE_FORMS)
def test_the_override_reason_is_stored_from_either_form(app, client, override, expected):
    item = {"card": "card-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z", **override}
    assert post(client, {"feedback": [item]}).status_code == 200
    [row] = stored(app)
    assert (row["reason"], row["comment"]) == expected


def _item(**changes: Any) -> dict[str, Any]:
    item = {**OVERRIDDEN, **changes}
    return {"feedback": [{k: v for k, v in item.items() if v is not None}]}


INVALID = [
    pytest.param(b"{feedback", "malformed-json", "not valid JSON", id="malformed JSON"),
    pytest.param({"feedback": []}, "invalid-request", "$.feedback: must not be empty", id="no items"),
    pytest.param(
        {"feedback": {"card": "x"}}, "invalid-request", "$.feedback: must be of type array", id="not a list"
    ),
    pytest.param(_item(card=None), "invalid-request", "'card' is a required property", id="no card"),
    pytest.param(
        _item(outcome="ignored"), "invalid-request", "$.feedback[0].outcome: must be one of", id="outcome"
    ),
    pytest.param(
        _item(outcome="accepted", overrideReason=None),
        "invalid-request",
        "'acceptedSuggestions' is a required property",
        id="accepted without acceptedSuggestions",
    ),
    pytest.param(
        _item(outcomeTimestamp="21/11/2026 10:05"),
        "invalid-request",
        "$.feedback[0].outcomeTimestamp: has an invalid format",
        id="timestamp not RFC 3339",
    ),
    pytest.param(
        _item(overrideReason={}), "invalid-request", "$.feedback[0].overrideReason", id="empty overrideReason"
    ),
    pytest.param(
        _item(overrideReason={"reason": {"code": "x", "display": "X"}}),
        "invalid-request",
        "'system' is a required property",
        id="reason Coding without system",
    ),
    pytest.param(
        _item(overrideReason=None, overrideReasons=[]),
        "invalid-request",
        "$.feedback[0].overrideReasons",
        id="empty overrideReasons list",
    ),
    pytest.param(
        _item(overrideReason=None, overrideReasons=[{"reason": NOT_INTERESTED}, {}]),
        "invalid-request",
        "$.feedback[0].overrideReasons",
        id="an empty item in overrideReasons",
    ),
    pytest.param(
        _item(overrideReason=None, overrideReasons="not-interested"),
        "invalid-request",
        "$.feedback[0].overrideReasons",
        id="overrideReasons a string",
    ),
]


@pytest.mark.parametrize(("body", "code", "names"), INVALID)
def test_invalid_feedback_is_400_and_nothing_is_stored(app, client, body, code, names):
    response = post(client, body)
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    assert names in response.get_json()["message"]
    assert stored(app) == []


def test_feedback_for_an_unknown_service_is_404(app, client):
    response = post(client, {"feedback": [OVERRIDDEN]}, "/cds-services/no-such-service/feedback")
    assert response.status_code == 404
    assert stored(app) == []
