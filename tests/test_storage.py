"""Storage on SQLite and PostgreSQL: idempotent feedback, audit trail, JWT replay cache, several writers at
once; and what SQLite needs besides (WAL, busy timeout, synchronous levels)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Table, event, select
from sqlalchemy.pool import Pool

from cds_service.storage import (
    DATABASE_FILE,
    Storage,
    audit,
    audit_card,
    default_database_url,
    enable_wal,
    order_warning,
    seen_jti,
)

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
CARD_UUID = "00000000-0000-4000-8000-000000000001"
REASON = {"system": "http://example.org/override", "code": "not-interested", "display": "Not interested"}
OVERRIDDEN = {
    "card": CARD_UUID,
    "outcome": "overridden",
    "overrideReason": {
        "reason": REASON,
        "userComment": "Patient prefers local treatment",
    },
    "outcomeTimestamp": "2026-11-21T09:05:31Z",
}


@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Iterator[Storage]:
    store = Storage(default_database_url(tmp_path / "instance"))
    yield store
    store.close()


def rows(storage: Storage, table: Table) -> list[tuple]:
    """Every row of a table as the database returns it through SQLAlchemy, in key order."""
    with storage.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key))]


def card(uuid: str, nct_id: str, verdict: str = "possibly-eligible", criteria: tuple = ()) -> dict:
    """A trial card; `criteria` as (id, outcome) pairs."""
    eligibility = {
        "nctId": nct_id,
        "verdict": verdict,
        "criteria": [
            {"id": id_, "text": "t", "outcome": outcome, "reason": "r"} for id_, outcome in criteria
        ],
    }
    return {"uuid": uuid, "summary": "s", "extension": {"org.trialmatch.eligibility": eligibility}}


def test_default_database_is_a_file_in_a_created_instance_folder(tmp_path: Path):
    url = default_database_url(tmp_path / "a" / "instance")
    assert url == f"sqlite:///{tmp_path / 'a' / 'instance' / DATABASE_FILE}"
    assert (tmp_path / "a" / "instance").is_dir()


def test_sqlite_runs_in_wal_mode(sqlite_storage: Storage, tmp_path: Path):
    assert sqlite_storage.ping()
    with sqlite3.connect(tmp_path / "instance" / DATABASE_FILE) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_repeated_feedback_item_is_stored_once(storage: Storage):
    accepted = {
        "card": "c-2",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "s-1"}],
        "outcomeTimestamp": "2026-11-21T09:06:00Z",
    }
    assert storage.record_feedback("mrcc-trials", [OVERRIDDEN, accepted, OVERRIDDEN]) == 2
    assert storage.record_feedback("mrcc-trials", [OVERRIDDEN]) == 0
    assert [item["card"] for item in storage.iter_feedback()] == [CARD_UUID, "c-2"]


def test_the_same_item_for_another_service_is_another_item(storage: Storage):
    assert storage.record_feedback("mrcc-trials", [OVERRIDDEN]) == 1
    assert storage.record_feedback("other-service", [OVERRIDDEN]) == 1


def test_feedback_export_names_the_trial_of_the_card(storage: Storage):
    storage.record_audit(
        hook_instance="hi-1",
        service_id="mrcc-trials",
        hook="patient-view",
        patient_id="pt-1",
        cards=[card(CARD_UUID, "NCT06903312"), card("c-9", "NCT04299646", "likely-eligible")],
        catalog_version="v1",
        duration_ms=12,
    )
    storage.record_feedback("mrcc-trials", [OVERRIDDEN, {**OVERRIDDEN, "card": "unknown-card"}])
    exported = list(storage.iter_feedback())
    assert exported[0] == {
        "card": CARD_UUID,
        "outcome": "overridden",
        "reason": REASON,
        "comment": "Patient prefers local treatment",
        "acceptedSuggestions": None,
        "timestamp": "2026-11-21T09:05:31Z",
        "serviceId": "mrcc-trials",
        "nctId": "NCT06903312",
    }
    assert exported[1]["nctId"] is None


def test_the_audit_row_holds_ids_and_verdicts_only(storage: Storage):
    storage.record_audit(
        hook_instance="hi-1",
        service_id="mrcc-trials",
        hook="patient-view",
        patient_id="pt-1",
        cards=[card(CARD_UUID, "NCT06903312")],
        catalog_version="v1",
        duration_ms=12,
    )
    [row] = rows(storage, audit)
    assert row[1:-2] == (
        "hi-1",
        "mrcc-trials",
        "pt-1",
        [{"uuid": CARD_UUID, "nctId": "NCT06903312", "verdict": "possibly-eligible"}],
        "v1",
        12,
    )
    assert row[-1] == "patient-view"  # the hook


def test_the_audit_row_is_json_text_with_ids_and_verdicts_only_on_sqlite(sqlite_storage: Storage, tmp_path):
    audit_once(sqlite_storage, "hi-1", [card(CARD_UUID, "NCT06903312")])
    with sqlite3.connect(tmp_path / "instance" / DATABASE_FILE) as connection:
        [(cards,)] = connection.execute("SELECT cards FROM audit").fetchall()
    assert cards == f'[{{"uuid": "{CARD_UUID}", "nctId": "NCT06903312", "verdict": "possibly-eligible"}}]'


def test_an_order_warning_is_audited_with_its_hook_trial_and_draft_order_ids_only(storage: Storage):
    impact = {
        "nctId": "NCT06882486",
        "orders": ["ServiceRequest/draft-1"],
        "criteria": [{"id": "prior-nephrectomy", "text": "Prior nephrectomy", "reason": "Nephrectomy 50545"}],
    }
    warning = {
        "uuid": "w-1",
        "summary": "Nephrectomy may end...",
        "extension": {"org.trialmatch.order-impact": impact},
    }
    storage.record_audit(
        hook_instance="hi-2",
        service_id="mrcc-trials-order-sign",
        hook="order-sign",
        patient_id="pt-1",
        cards=[warning],
        catalog_version="v1",
        duration_ms=30,
    )
    [row] = rows(storage, audit)
    assert row[1:4] == ("hi-2", "mrcc-trials-order-sign", "pt-1")
    assert row[4] == [{"uuid": "w-1", "nctId": "NCT06882486", "orders": ["ServiceRequest/draft-1"]}]
    assert row[-1] == "order-sign"
    assert rows(storage, audit_card) == [
        ("w-1", row[0], "NCT06882486", None, [], "order-warning", ["ServiceRequest/draft-1"])
    ]
    stored = repr(rows(storage, audit) + rows(storage, audit_card))
    assert "Nephrectomy" not in stored and "50545" not in stored  # never what was ordered


def test_an_order_warning_shown_is_remembered_for_its_day_only(storage: Storage):
    day = date(2026, 11, 21)
    storage.remember_warnings("pt-1", day, [("NCT06882486", "d1"), ("NCT06903312", "d1")])
    storage.remember_warnings("pt-1", day, [("NCT06882486", "d1")])  # shown again: one row
    storage.remember_warnings("pt-2", day, [("NCT06882486", "d2")])
    assert storage.warned("pt-1", day) == {("NCT06882486", "d1"), ("NCT06903312", "d1")}
    assert storage.warned("pt-1", day + timedelta(days=1)) == frozenset()
    storage.remember_warnings("pt-3", day + timedelta(days=1), [("NCT06882486", "d3")])
    assert [row[:4] for row in rows(storage, order_warning)] == [  # earlier days are let go
        ("pt-3", "NCT06882486", "d3", day + timedelta(days=1))
    ]


def test_a_jti_is_accepted_once_until_it_expires(storage: Storage):
    expires = NOW + timedelta(minutes=5)
    assert storage.remember_jti("jti-1", expires, now=NOW) is True
    assert storage.remember_jti("jti-1", expires, now=NOW + timedelta(minutes=4)) is False
    assert storage.remember_jti("jti-2", expires, now=NOW) is True
    later = NOW + timedelta(minutes=6)
    assert storage.remember_jti("jti-1", later + timedelta(minutes=5), now=later) is True


def test_expired_jtis_are_purged(storage: Storage):
    storage.remember_jti("old", NOW, now=NOW - timedelta(minutes=1))
    storage.remember_jti("new", NOW + timedelta(hours=1), now=NOW)
    assert rows(storage, seen_jti) == [("new", (NOW + timedelta(hours=1)).replace(tzinfo=None))]


def test_several_storages_write_the_same_database_at_once(database_url: str):
    stores = [Storage(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(store: Storage, worker: int) -> None:
        try:
            for i in range(25):
                items = [{**OVERRIDDEN, "card": f"card-{worker}-{i}"}, OVERRIDDEN]
                store.record_feedback("mrcc-trials", items)
        except BaseException as exc:  # collected and asserted below: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(store, n)) for n, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list(stores[0].iter_feedback())) == 4 * 25 + 1
    for store in stores:
        store.close()


SYNCHRONOUS_FULL, SYNCHRONOUS_NORMAL = 2, 1


@pytest.fixture
def inserts_seen() -> Iterator[list[tuple[str, sqlite3.Connection]]]:
    """(table, DB-API connection) of each INSERT SQLite runs on a connection opened while this is active.

    A trace callback on every new pooled connection of every engine sees the statements SQLite runs.
    """
    seen: list[tuple[str, sqlite3.Connection]] = []

    def trace(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        def statement(sql: str) -> None:
            if sql.startswith("INSERT INTO"):
                seen.append((sql.split()[2], dbapi_connection))

        dbapi_connection.set_trace_callback(statement)

    event.listen(Pool, "connect", trace)
    yield seen
    event.remove(Pool, "connect", trace)


def settings(connection: sqlite3.Connection) -> tuple[int, int, str]:
    """synchronous, busy_timeout and journal_mode of a connection."""
    names = ("synchronous", "busy_timeout", "journal_mode")
    return tuple(connection.execute(f"PRAGMA {name}").fetchone()[0] for name in names)  # type: ignore[return-value]


def audit_once(storage: Storage, hook_instance: str, cards: list[dict]) -> None:
    storage.record_audit(
        hook_instance=hook_instance,
        service_id="trials",
        hook="patient-view",
        patient_id="p1",
        cards=cards,
        catalog_version="v1",
        duration_ms=3,
    )


def test_feedback_and_jtis_commit_durably_the_audit_row_with_normal_sync(
    tmp_path: Path, inserts_seen: list[tuple[str, sqlite3.Connection]]
):
    storage = Storage(default_database_url(tmp_path / "instance"))  # its connections open under the spy
    for round_ in range(2):  # pooled connections are reused: each keeps its own level
        audit_once(storage, f"h-{round_}", [card(f"u-{round_}", "NCT06903312"), card(f"v-{round_}", "NCT1")])
        storage.record_feedback("trials", [{**OVERRIDDEN, "card": f"c-{round_}"}])
        audit_once(storage, f"i-{round_}", [card(f"w-{round_}", "NCT06903312")])
        storage.remember_jti(f"jti-{round_}", NOW + timedelta(minutes=5), now=NOW)
    level = {"audit": SYNCHRONOUS_NORMAL, "audit_card": SYNCHRONOUS_NORMAL}
    level |= {"feedback": SYNCHRONOUS_FULL, "seen_jti": SYNCHRONOUS_FULL, "alembic_version": SYNCHRONOUS_FULL}
    tables = ["alembic_version"]  # the schema, created when the storage opens the database
    tables += ["audit", "audit_card", "audit_card", "feedback", "audit", "audit_card", "seen_jti"] * 2
    assert [(table, *settings(connection)) for table, connection in inserts_seen] == [
        (table, level[table], 30000, "wal") for table in tables
    ]
    storage.close()


def test_closing_the_storage_closes_every_connection(tmp_path: Path):
    storage = Storage(default_database_url(tmp_path / "instance"))
    audit_once(storage, "h-1", [card(CARD_UUID, "NCT06903312")])
    storage.record_feedback("trials", [OVERRIDDEN])
    storage.close()
    # Leaving WAL needs the only connection to the file: an open pooled connection makes it "locked".
    with sqlite3.connect(tmp_path / "instance" / DATABASE_FILE, timeout=0.1) as connection:
        assert connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"


def test_each_shown_card_gets_one_audit_card_row_and_a_repeated_uuid_keeps_the_first(storage: Storage):
    before = datetime.now(UTC).replace(tzinfo=None)
    to_check = (("ecog", "unknown"), ("age", "met"), ("hemoglobin", "unknown"), ("consent", "clinician"))
    audit_once(
        storage, "h-1", [card(CARD_UUID, "NCT06903312", criteria=to_check), card("u-2", "NCT04394975")]
    )
    no_extension = {"uuid": "u-4", "summary": "no eligibility extension"}
    audit_once(storage, "h-2", [card(CARD_UUID, "NCT06903312", "likely-eligible"), {"summary": "no uuid"}])
    audit_once(storage, "h-3", [no_extension])
    after = datetime.now(UTC).replace(tzinfo=None)
    audits = rows(storage, audit)
    assert [(row[0], row[1], row[4]) for row in audits] == [
        (
            1,
            "h-1",
            [
                {"uuid": CARD_UUID, "nctId": "NCT06903312", "verdict": "possibly-eligible"},
                {"uuid": "u-2", "nctId": "NCT04394975", "verdict": "possibly-eligible"},
            ],
        ),
        (2, "h-2", [{"uuid": CARD_UUID, "nctId": "NCT06903312", "verdict": "likely-eligible"}, {}]),
        (3, "h-3", [{"uuid": "u-4"}]),
    ]
    created = [row[-2] for row in audits]  # created_at, before the hook
    assert before <= created[0] <= created[1] <= created[2] <= after  # naive UTC
    assert rows(storage, audit_card) == [  # ids of the criteria still to check, never a value
        (CARD_UUID, 1, "NCT06903312", "possibly-eligible", ["ecog", "hemoglobin"], None, None),
        ("u-2", 1, "NCT04394975", "possibly-eligible", [], None, None),  # kind, orders: a trial card
        ("u-4", 3, None, None, [], None, None),
    ]


class LockedOnce:
    """A DB-API cursor whose journal-mode switch fails with "database is locked", as in a boot race."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.mode = "delete"
        self.statements: list[str] = []

    def execute(self, statement: str) -> LockedOnce:
        self.statements.append(statement)
        if statement == "PRAGMA journal_mode=WAL":
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            self.mode = "wal"
        return self

    def fetchone(self) -> tuple[str]:
        return (self.mode,)


def test_wal_switch_retries_when_another_worker_holds_the_file() -> None:
    cursor = LockedOnce(failures=2)
    enable_wal(cursor, patience_seconds=5)
    assert cursor.mode == "wal"
    assert cursor.statements.count("PRAGMA journal_mode=WAL") == 3


def test_wal_switch_gives_up_after_its_patience() -> None:
    with pytest.raises(sqlite3.OperationalError):
        enable_wal(LockedOnce(failures=10_000), patience_seconds=0.2)


def test_wal_switch_is_skipped_when_the_file_is_already_in_wal() -> None:
    cursor = LockedOnce(failures=10_000)
    cursor.mode = "wal"
    enable_wal(cursor, patience_seconds=0.2)
    assert "PRAGMA journal_mode=WAL" not in cursor.statements


def test_a_postgresql_url_without_a_driver_is_served_by_psycopg(postgresql_server):
    name = postgresql_server.create_database()
    storage = Storage(
        postgresql_server.url(name, driver="postgresql")
    )  # SQLAlchemy alone would pick psycopg2
    try:
        assert (storage.engine.dialect.driver, storage.ping()) == ("psycopg", True)
        assert storage.remember_jti("jti-1", NOW + timedelta(minutes=5), now=NOW) is True
    finally:
        storage.close()
        postgresql_server.drop_database(name)
