"""`Storage.feedback_stats` on SQLite and PostgreSQL: per trial, cards shown, accepted, overridden by reason,
patients quieted now, and the criteria still to check on cards dismissed as "chart data out of date"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import null, update

from cds_service import storage as storage_module
from cds_service.storage import Storage, TrialFeedback, audit_card

REASONS = "urn:trialmatch:override-reason"
DAYS = 30


def show(storage: Storage, patient_id: str, uuid: str, nct_id: str, *unknown: str) -> None:
    """A hook call that showed this patient one card, with these criteria still to check (and one met)."""
    criteria = [{"id": criterion, "outcome": "unknown"} for criterion in unknown]
    criteria.append({"id": "histology", "outcome": "met"})
    eligibility = {"nctId": nct_id, "verdict": "possibly-eligible", "criteria": criteria}
    storage.record_audit(
        hook_instance=f"call-{uuid}",
        service_id="mrcc-trials",
        hook="patient-view",
        patient_id=patient_id,
        cards=[{"uuid": uuid, "extension": {"org.trialmatch.eligibility": eligibility}}],
        catalog_version="v1",
        duration_ms=5,
    )


def overridden(card: str, code: str | None, timestamp: str = "2026-11-21T10:00:00Z") -> dict:
    reason = {"reason": {"system": REASONS, "code": code}} if code else {"userComment": "no reason given"}
    return {"card": card, "outcome": "overridden", "overrideReason": reason, "outcomeTimestamp": timestamp}


def accepted(card: str) -> dict:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "s-1"}],
        "outcomeTimestamp": "2026-11-21T10:00:00Z",
    }


def test_cards_shown_answered_and_quieted_per_trial(storage: Storage):
    show(storage, "pt-1", "a", "NCT1", "ecog", "hemoglobin")
    show(storage, "pt-1", "b", "NCT2")
    show(storage, "pt-2", "c", "NCT1", "ecog")
    show(storage, "pt-3", "d", "NCT1", "creatinine")
    show(storage, "pt-2", "e", "NCT2")  # shown, never answered
    show(storage, "pt-4", "f", "NCT3")
    items = [
        overridden("a", "data-out-of-date"),
        overridden("a", "data-out-of-date", "2026-11-21T10:01:00Z"),  # the same card answered twice
        overridden("c", "not-interested"),
        overridden("d", None),
        accepted("b"),
        accepted("f"),
        overridden("not-shown", "not-interested"),
    ]
    assert storage.record_feedback("mrcc-trials", items) == len(items)
    storage.lift_quiet("pt-4", None, datetime.now(UTC))
    assert storage.feedback_stats(datetime.now(UTC), DAYS) == [
        TrialFeedback(
            "NCT1",
            shown=3,
            overridden={"": 1, "data-out-of-date": 1, "not-interested": 1},
            quieted_patients=3,
            out_of_date=1,
            still_to_check={"ecog": 1, "hemoglobin": 1},
        ),
        TrialFeedback("NCT2", shown=2, accepted=1, quieted_patients=1),
        TrialFeedback("NCT3", shown=1, accepted=1),  # its quiet was lifted
    ]
    assert storage.feedback_stats(datetime.now(UTC), 0)[0].quieted_patients == 0


def test_out_of_date_matches_the_codes_of_the_constant_and_counts_each_criterion_per_card(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(
        storage_module, "OUT_OF_DATE_REASON_CODES", frozenset({"data-out-of-date", "outdated"})
    )
    show(storage, "pt-1", "a", "NCT1", "ecog", "hemoglobin")
    show(storage, "pt-2", "b", "NCT1", "ecog")
    show(storage, "pt-3", "c", "NCT1", "creatinine")
    show(storage, "pt-4", "d", "NCT1", "platelets")
    items = [overridden("a", "data-out-of-date"), overridden("b", "outdated"), overridden("c", "outdated")]
    storage.record_feedback("mrcc-trials", [*items, overridden("d", "not-interested")])
    [trial] = storage.feedback_stats(datetime.now(UTC), DAYS)
    assert (trial.out_of_date, trial.still_to_check) == (3, {"ecog": 2, "creatinine": 1, "hemoglobin": 1})
    assert trial.overridden == {"data-out-of-date": 1, "not-interested": 1, "outdated": 2}


def test_a_card_shown_before_its_criteria_were_recorded_counts_as_dismissed_without_criteria(
    storage: Storage,
):
    show(storage, "pt-1", "a", "NCT1", "ecog")
    with storage.engine.begin() as connection:  # as revision 0003 leaves the cards shown before it
        connection.execute(update(audit_card).values(unknown_criteria=null()))
    storage.record_feedback("mrcc-trials", [overridden("a", "data-out-of-date")])
    [trial] = storage.feedback_stats(datetime.now(UTC), DAYS)
    assert (trial.out_of_date, trial.still_to_check) == (1, {})


def warn(storage: Storage, patient_id: str, uuid: str, nct_id: str, hook: str = "order-sign") -> None:
    """An order hook call that showed this patient one warning about a trial."""
    impact = {"nctId": nct_id, "orders": ["ServiceRequest/draft-1"], "criteria": []}
    storage.record_audit(
        hook_instance=f"call-{uuid}",
        service_id=f"mrcc-trials-{hook}",
        hook=hook,
        patient_id=patient_id,
        cards=[{"uuid": uuid, "extension": {"org.trialmatch.order-impact": impact}}],
        catalog_version="v1",
        duration_ms=5,
    )


def test_order_warnings_are_counted_apart_and_quiet_no_trial_card(storage: Storage):
    show(storage, "pt-1", "a", "NCT1", "ecog")
    warn(storage, "pt-1", "w1", "NCT1", "order-select")
    warn(storage, "pt-2", "w2", "NCT1")
    warn(storage, "pt-3", "w3", "NCT1")
    warn(storage, "pt-4", "w4", "NCT2")
    items = [
        accepted("w1"),
        overridden("w2", "order-needed-now"),
        overridden("w2", "order-needed-now", "2026-11-21T10:05:00Z"),  # the same warning answered twice
        overridden("w3", "data-out-of-date"),  # a warning has no criterion still to check
    ]
    storage.record_feedback("mrcc-trials-order-sign", items)
    assert storage.feedback_stats(datetime.now(UTC), DAYS) == [
        TrialFeedback(
            "NCT1",
            shown=1,
            warnings=3,
            warnings_accepted=1,
            warnings_overridden={"data-out-of-date": 1, "order-needed-now": 1},
        ),
        TrialFeedback("NCT2", warnings=1),
    ]
    assert storage.quieted("pt-1", datetime.now(UTC), DAYS) == {}  # feedback on a warning quiets nothing
