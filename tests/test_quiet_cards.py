"""Quiet cards, the storage side (contract: "Quiet cards"), on SQLite and PostgreSQL: which trials a patient's
answered cards keep quiet, with which verdict, for how long, and an operator's lift of a quiet."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from cds_service.storage import Storage

POSSIBLY, LIKELY = "possibly-eligible", "likely-eligible"
DAYS = 30


def show(storage: Storage, patient_id: str, *cards: tuple[str, str, str]) -> None:
    """Record a hook call for this patient that showed these (uuid, NCT id, verdict) cards."""
    storage.record_audit(
        hook_instance=f"call-{cards[0][0]}",
        service_id="mrcc-trials",
        hook="patient-view",
        patient_id=patient_id,
        cards=[
            {"uuid": uuid, "extension": {"org.trialmatch.eligibility": {"nctId": nct_id, "verdict": verdict}}}
            for uuid, nct_id, verdict in cards
        ],
        catalog_version="v1",
        duration_ms=5,
    )


def answer(storage: Storage, card: str, outcome: str = "overridden") -> datetime:
    """Post feedback on a card now; return the moment just after it was received."""
    item = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-21T10:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s-1"}]
    assert storage.record_feedback("mrcc-trials", [item]) == 1
    return datetime.now(UTC)


def test_an_accepted_or_overridden_card_quiets_its_trial_for_that_patient_only(storage: Storage):
    show(storage, "pt-1", ("a", "NCT1", POSSIBLY), ("b", "NCT2", LIKELY), ("c", "NCT3", LIKELY))
    show(storage, "pt-2", ("d", "NCT1", POSSIBLY))
    answer(storage, "a", "overridden")
    now = answer(storage, "b", "accepted")
    assert storage.quieted("pt-1", now, DAYS) == {"NCT1": POSSIBLY, "NCT2": LIKELY}
    assert storage.quieted("pt-2", now, DAYS) == {}
    assert storage.quieted("pt-3", now, DAYS) == {}


def test_of_several_answered_cards_of_a_trial_the_best_verdict_is_kept(storage: Storage):
    show(storage, "pt-1", ("a", "NCT1", POSSIBLY))
    show(storage, "pt-1", ("b", "NCT1", LIKELY))
    show(storage, "pt-1", ("c", "NCT1", POSSIBLY))
    for card in ("a", "b", "c"):
        now = answer(storage, card)
    assert storage.quieted("pt-1", now, DAYS) == {"NCT1": LIKELY}


def test_a_quiet_lasts_quiet_days_from_the_feedback(storage: Storage):
    show(storage, "pt-1", ("a", "NCT1", POSSIBLY))
    before = datetime.now(UTC)
    after = answer(storage, "a")  # received between the two
    second = timedelta(seconds=1)
    assert storage.quieted("pt-1", before + timedelta(days=DAYS) - second, DAYS) == {"NCT1": POSSIBLY}
    assert storage.quieted("pt-1", after + timedelta(days=DAYS) + second, DAYS) == {}
    assert storage.quieted("pt-1", after + timedelta(days=7) + second, 7) == {}
    assert storage.quieted("pt-1", after, 0) == {}
    assert storage.quieted("pt-1", before - second, DAYS) == {}  # not yet answered then


def test_a_card_shown_but_not_answered_or_unknown_to_the_audit_trail_quiets_nothing(storage: Storage):
    show(storage, "pt-1", ("a", "NCT1", POSSIBLY))
    now = answer(storage, "never-shown")
    assert storage.quieted("pt-1", now, DAYS) == {}


def test_a_lift_for_one_trial_lets_its_card_back_until_new_feedback(storage: Storage):
    show(storage, "pt-1", ("a", "NCT1", POSSIBLY), ("b", "NCT2", POSSIBLY))
    answer(storage, "a")
    answered = answer(storage, "b")
    lifted_at = answered + timedelta(milliseconds=1)
    storage.lift_quiet("pt-1", "NCT1", lifted_at)
    assert storage.quieted("pt-1", lifted_at, DAYS) == {"NCT2": POSSIBLY}
    assert storage.quieted("pt-1", answered, DAYS) == {"NCT1": POSSIBLY, "NCT2": POSSIBLY}  # before the lift
    time.sleep(0.01)  # the next feedback is received after the lift
    show(storage, "pt-1", ("c", "NCT1", LIKELY))
    now = answer(storage, "c")  # answered again after the lift: quiet again
    assert storage.quieted("pt-1", now, DAYS) == {"NCT1": LIKELY, "NCT2": POSSIBLY}


def test_a_lift_for_every_trial_touches_only_that_patient(storage: Storage):
    show(storage, "pt-1", ("a", "NCT1", POSSIBLY), ("b", "NCT2", LIKELY))
    show(storage, "pt-2", ("c", "NCT1", POSSIBLY))
    for card in ("a", "b"):
        answer(storage, card)
    now = answer(storage, "c")
    storage.lift_quiet("pt-1", None, now)
    assert storage.quieted("pt-1", now, DAYS) == {}
    assert storage.quieted("pt-2", now, DAYS) == {"NCT1": POSSIBLY}
    assert len(list(storage.iter_feedback())) == 3  # the feedback stays: it is what clinicians said


def test_quiets_and_lifts_are_seen_by_every_worker_and_after_a_restart(database_url: str):
    worker_a, worker_b = Storage(database_url), Storage(database_url)
    show(worker_a, "pt-1", ("a", "NCT1", POSSIBLY), ("b", "NCT2", LIKELY))
    answer(worker_a, "a")
    now = answer(worker_b, "b")
    worker_b.lift_quiet("pt-1", "NCT2", now)
    assert worker_a.quieted("pt-1", now, DAYS) == {"NCT1": POSSIBLY}
    worker_a.close()
    worker_b.close()
    restarted = Storage(database_url)
    try:
        assert restarted.quieted("pt-1", now, DAYS) == {"NCT1": POSSIBLY}
    finally:
        restarted.close()
