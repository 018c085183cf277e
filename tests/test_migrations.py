"""Schema migrations (Alembic) on SQLite and PostgreSQL: they build the tables `cds_service.storage` uses, a
database made before migrations is taken over as it is, workers opening a new database together all start,
and every revision can be undone."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from collections.abc import Callable
from datetime import datetime, timedelta

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
)
from sqlalchemy.schema import CreateIndex, CreateTable

from cds_service.storage import MIGRATIONS, Storage, metadata

WORKERS = 4
EARLIER = datetime(2026, 11, 20, 9, 0)  # naive UTC, as stored
AUDIT_ROW = {
    "hook_instance": "hi-1",
    "service_id": "mrcc-trials",
    "patient_id": "pt-1",
    "catalog_version": "v1",
    "duration_ms": 12,
}


def _open_storages(urls: list[str], barrier: multiprocessing.synchronize.Barrier) -> None:
    """A worker process: open each database the moment every other worker opens it too."""
    for url in urls:
        barrier.wait(timeout=60)
        Storage(url).close()


def test_workers_opening_a_new_database_together_all_start(new_database: Callable[[], str]) -> None:
    urls = [new_database() for _ in range(3)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    workers = [context.Process(target=_open_storages, args=(urls, barrier)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * WORKERS


def test_the_migrations_build_the_tables_the_storage_uses(database_url: str) -> None:
    storage = Storage(database_url)
    try:
        with storage.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        storage.close()


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def create_tables_as_before_migrations(url: str) -> None:
    """The four tables as the service made them before it had migrations (CREATE TABLE IF NOT EXISTS from
    these definitions at every start), with a row in each."""
    legacy = MetaData()
    feedback = Table(
        "feedback",
        legacy,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("item_hash", String(64), nullable=False, unique=True),
        Column("service_id", String(200), nullable=False),
        Column("card_uuid", String(256), nullable=False, index=True),
        Column("outcome", String(20), nullable=False),
        Column("override_reason", JSON),
        Column("user_comment", Text),
        Column("accepted_suggestions", JSON),
        Column("outcome_timestamp", String(64), nullable=False),
        Column("received_at", DateTime, nullable=False),
    )
    audit = Table(
        "audit",
        legacy,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("hook_instance", String(256), nullable=False, index=True),
        Column("service_id", String(200), nullable=False),
        Column("patient_id", String(64)),
        Column("cards", JSON, nullable=False),
        Column("catalog_version", String(128), nullable=False),
        Column("duration_ms", Integer, nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    audit_card = Table(
        "audit_card",
        legacy,
        Column("card_uuid", String(256), primary_key=True),
        Column("audit_id", Integer, nullable=False),
        Column("nct_id", String(64)),
        Column("verdict", String(40)),
    )
    seen_jti = Table(
        "seen_jti",
        legacy,
        Column("jti", String(256), primary_key=True),
        Column("expires_at", DateTime, nullable=False, index=True),
    )
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in legacy.sorted_tables:
            connection.execute(CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                connection.execute(CreateIndex(index, if_not_exists=True))
        card = {"uuid": "card-1", "nctId": "NCT06903312", "verdict": "possibly-eligible"}
        connection.execute(
            insert(audit),
            {**AUDIT_ROW, "cards": [card], "created_at": EARLIER},
        )
        connection.execute(
            insert(audit_card), {"card_uuid": "card-1", "audit_id": 1, "nct_id": card["nctId"]}
        )
        connection.execute(
            insert(feedback),
            {
                "item_hash": "0" * 64,
                "service_id": "mrcc-trials",
                "card_uuid": "card-1",
                "outcome": "overridden",
                "outcome_timestamp": "2026-11-20T09:00:00Z",
                "received_at": EARLIER,
            },
        )
        connection.execute(insert(seen_jti), {"jti": "jti-1", "expires_at": EARLIER + timedelta(days=1)})
    engine.dispose()


def test_a_database_made_before_migrations_is_stamped_and_upgraded_with_its_rows(database_url: str) -> None:
    create_tables_as_before_migrations(database_url)
    storage = Storage(database_url)
    try:
        assert storage.upgrade() == (head_revision(), head_revision())  # done when the storage opened it
        [item] = storage.iter_feedback()
        assert (item["card"], item["outcome"], item["nctId"]) == ("card-1", "overridden", "NCT06903312")
        assert storage.remember_jti("jti-1", EARLIER + timedelta(days=1), now=EARLIER) is False
        with storage.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        storage.close()


def test_a_new_database_is_upgraded_from_nothing_to_the_newest_revision(database_url: str) -> None:
    storage = Storage(database_url, upgrade=False)
    try:
        assert storage.upgrade() == (None, head_revision())
        assert storage.upgrade() == (head_revision(), head_revision())
    finally:
        storage.close()


def test_every_revision_downgrades_to_nothing_and_upgrades_again(database_url: str) -> None:
    storage = Storage(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with storage.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
            assert inspect(connection).get_table_names() == ["alembic_version"]
        assert storage.upgrade() == (None, head_revision())
        with storage.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        storage.close()
