"""Quiet cards through the service (contract, "Quiet cards"): once a clinician has answered a patient's card
for a trial, patient-view shows no card for that patient and trial for CDS_QUIET_DAYS days, unless the verdict
has improved since. Two apps on one database stand for two gunicorn workers, or the service before and after a
restart; every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service.storage import Storage

REQUESTS = Path(__file__).resolve().parents[1] / "examples" / "requests"
SERVICE = "/cds-services/mrcc-trials"
# A possibly-eligible NCT06903312 card (histology to check) ...
POSSIBLY = json.loads((REQUESTS / "patient-view-histology-not-coded.json").read_text(encoding="utf-8"))
TRIAL = "NCT06903312"


def likely_version() -> dict[str, Any]:
    """... and the same chart once the clear-cell histology is coded: the card becomes likely-eligible."""
    request = copy.deepcopy(POSSIBLY)
    for entry in request["prefetch"]["conditions"]["entry"]:
        condition = entry["resource"]
        if any(c.get("code") == "C64.1" for c in condition["code"].get("coding", [])):
            condition["code"]["coding"].append({"system": "http://snomed.info/sct", "code": "254915003"})
    return request


def cards(app: Flask, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    response = app.test_client().post(SERVICE, json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {
        card["extension"]["org.trialmatch.eligibility"]["nctId"]: card
        for card in response.get_json()["cards"]
    }


def answer(app: Flask, card: dict[str, Any], outcome: str = "overridden") -> None:
    item: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": outcome,
        "outcomeTimestamp": "2026-11-21T09:00:00Z",
    }
    if outcome == "overridden":
        item["overrideReason"] = {"reason": card["overrideReasons"][0]}
    else:
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    response = app.test_client().post(f"{SERVICE}/feedback", json={"feedback": [item]})
    assert response.status_code == 200


@pytest.fixture
def two_workers(make_sandbox_app, database_url: str) -> tuple[Flask, Flask]:
    config = {"DATABASE_URL": database_url, "TODAY": "2026-11-21"}
    return make_sandbox_app(**config), make_sandbox_app(**config)


@pytest.mark.parametrize("outcome", ["overridden", "accepted"])
def test_an_answered_card_stays_away_on_the_other_worker(two_workers, outcome: str) -> None:
    first, second = two_workers
    shown = cards(first, POSSIBLY)
    assert shown[TRIAL]["extension"]["org.trialmatch.eligibility"]["verdict"] == "possibly-eligible"
    answer(first, shown[TRIAL], outcome)
    assert TRIAL not in cards(second, POSSIBLY)
    assert TRIAL not in cards(first, POSSIBLY)


def test_the_card_is_back_when_its_verdict_improves(two_workers) -> None:
    first, second = two_workers
    answer(first, cards(first, POSSIBLY)[TRIAL])
    assert TRIAL not in cards(second, POSSIBLY)
    improved = cards(second, likely_version())
    assert improved[TRIAL]["extension"]["org.trialmatch.eligibility"]["verdict"] == "likely-eligible"


def test_the_card_is_back_after_the_quiet_days_and_after_a_lift(make_sandbox_app, database_url: str) -> None:
    app = make_sandbox_app(DATABASE_URL=database_url, TODAY="2026-11-21", QUIET_DAYS=30)
    answer(app, cards(app, POSSIBLY)[TRIAL])
    assert TRIAL not in cards(app, POSSIBLY)
    one_day = make_sandbox_app(DATABASE_URL=database_url, TODAY="2026-11-21", QUIET_DAYS=0)  # a restart
    assert TRIAL in cards(one_day, POSSIBLY)  # no quiet days: every card is shown
    storage = Storage(database_url)
    try:
        later = datetime.now(UTC) + timedelta(days=31)
        patient = POSSIBLY["context"]["patientId"]
        assert storage.quieted(patient, later, 30) == {}
        assert storage.quieted(patient, datetime.now(UTC), 30) == {TRIAL: "possibly-eligible"}
        storage.lift_quiet(patient, TRIAL, datetime.now(UTC))
        assert TRIAL in cards(app, POSSIBLY)
    finally:
        storage.close()


def test_the_audit_trail_records_only_the_cards_shown(two_workers, database_url: str) -> None:
    first, _ = two_workers
    answer(first, cards(first, POSSIBLY)[TRIAL])
    assert TRIAL not in cards(first, POSSIBLY)
    storage = Storage(database_url)
    try:
        stats = {row.nct_id: row for row in storage.feedback_stats(datetime.now(UTC), 30)}
        assert stats[TRIAL].shown == 1  # the second call showed nothing of it
    finally:
        storage.close()
