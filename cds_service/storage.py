"""Durable storage (SQLAlchemy Core): feedback, the audit trail of cards shown, and seen JWT ids.

Works on SQLite (default; WAL and a busy timeout so several gunicorn workers can write) and PostgreSQL, with
one code path: every read and write is a SQLAlchemy Core statement on an engine; what SQLite needs besides
(WAL, busy timeout, synchronous level) is set once per connection when the pool opens it. The schema is
made and changed by the Alembic revisions of `cds_service/migrations`, applied when a Storage opens the
database (`upgrade`); the tables below are what the statements use, and a test checks that the two agree.
Nothing here stores names, clinical values or tokens: only ids, codes, verdicts and clinicians' feedback.

Durability on SQLite: feedback and seen JWT ids are committed with synchronous=FULL (an acknowledged item
survives a power loss); the audit row of a hook call (and the order warnings order-select showed) with
synchronous=NORMAL, the usual WAL trade-off: it
survives a crash of the process, but the last rows before a power loss or OS crash may roll back (the
database stays consistent). NORMAL is kept because the audit row is written on every hook call before it is
answered: FULL adds an fsync of the WAL to each call's time, for rows that only record what was shown. The
feedback loses nothing by it: a FULL commit syncs the whole WAL up to it, so once feedback on a card is
durable, so is the earlier audit row that showed the card (its patient and trial). The two levels are two
engines on the same file, running the same statements (no PRAGMA per transaction). PostgreSQL commits every
transaction durably: there both names are one engine.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

WAL_SWITCH_PATIENCE_SECONDS = 10.0
MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE_REVISION = "0001"  # the tables as the service created them before it had migrations
SCHEMA_LOCK_KEY = int.from_bytes(b"cdstrial", "big")  # PostgreSQL advisory lock (bigint) of schema changes

DATABASE_FILE = "cds.sqlite3"
ELIGIBILITY_EXTENSION = "org.trialmatch.eligibility"
ORDER_IMPACT_EXTENSION = "org.trialmatch.order-impact"
ORDER_WARNING = "order-warning"  # audit_card.kind of an order warning (NULL: a trial card)
QUIETING_OUTCOMES = ("accepted", "overridden")  # an answered card stays quiet (contract: "Quiet cards")
VERDICT_RANKS = {"possibly-eligible": 1, "likely-eligible": 2}  # of two verdicts of a trial, the better one
# Override reason codes that mean "chart data out of date": the code of cards/card.yaml, and the code it may
# be renamed to (a CDS Hooks 3.0 ballot code) added beside it, as feedback stored under the old one remains.
OUT_OF_DATE_REASON_CODES = frozenset({"data-out-of-date"})

metadata = MetaData()

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_hash", String(64), nullable=False, unique=True),  # sha256 of service id + item
    Column("service_id", String(200), nullable=False),
    Column("card_uuid", String(256), nullable=False, index=True),
    Column("outcome", String(20), nullable=False),
    Column("override_reason", JSON),  # Coding {system, code, display}
    Column("user_comment", Text),
    Column("accepted_suggestions", JSON),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("received_at", DateTime, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hook_instance", String(256), nullable=False, index=True),
    Column("service_id", String(200), nullable=False),
    Column("patient_id", String(64), index=True),
    Column("cards", JSON, nullable=False),  # [{uuid, nctId, verdict}]; a warning: [{uuid, nctId, orders}]
    Column("catalog_version", String(128), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("hook", String(100)),  # NULL: a call recorded before revision 0004
)

# One row per card shown, so feedback (which names only the card uuid) finds its trial without scanning JSON.
audit_card = Table(
    "audit_card",
    metadata,
    Column("card_uuid", String(256), primary_key=True),
    Column("audit_id", Integer, nullable=False, index=True),
    Column("nct_id", String(64)),
    Column("verdict", String(40)),
    Column("unknown_criteria", JSON),  # ids of the card's criteria still to check; NULL: shown before 0003
    Column("kind", String(20)),  # ORDER_WARNING, or NULL: a trial card
    Column("orders", JSON(none_as_null=True)),  # an order warning: the ids of the draft orders it is about
)

# The order warnings shown at order-select, so that order-sign does not repeat them the same day for the same
# draft orders (`orders_digest`: a hash of their ids and of what they would do, never the orders themselves).
order_warning = Table(
    "order_warning",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("nct_id", String(64), primary_key=True),
    Column("orders_digest", String(64), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("shown_at", DateTime, nullable=False),
)

# An operator's lift of a patient's quiet cards (one trial, or every trial when nct_id is NULL): feedback
# received up to lifted_at no longer quiets them. Feedback itself is never deleted.
quiet_lift = Table(
    "quiet_lift",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False, index=True),
    Column("nct_id", String(64)),
    Column("lifted_at", DateTime, nullable=False),
)

seen_jti = Table(
    "seen_jti",
    metadata,
    Column("jti", String(256), primary_key=True),
    Column("expires_at", DateTime, nullable=False, index=True),
)


def default_database_url(instance_path: str | Path) -> str:
    """Return the SQLite URL of the database file in the instance folder, creating the folder."""
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / DATABASE_FILE}"


@dataclass
class TrialFeedback:
    """What became of one trial's cards: each count is of cards (a card answered twice counts once)."""

    nct_id: str
    shown: int = 0
    accepted: int = 0
    overridden: dict[str, int] = field(default_factory=dict)  # by reason code ("" when none was given)
    quieted_patients: int = 0  # patients for whom the trial's card is quiet now
    out_of_date: int = 0  # cards overridden with a reason of OUT_OF_DATE_REASON_CODES
    # of those, how many had each criterion still to check (cards shown before revision 0003 have none)
    still_to_check: dict[str, int] = field(default_factory=dict)
    # Order warnings of the trial (order-select, order-sign), counted apart: their feedback quiets no card.
    warnings: int = 0
    warnings_accepted: int = 0
    warnings_overridden: dict[str, int] = field(default_factory=dict)  # by reason code ("" when none)


# Built once: a statement built per call costs more CPU in SQLAlchemy than the INSERT costs in SQLite.
AUDIT_INSERT = audit.insert()  # its id: lastrowid on SQLite, RETURNING on PostgreSQL


class Storage:
    """Feedback, audit trail and JWT replay cache in one database."""

    def __init__(self, database_url: str, *, upgrade: bool = True) -> None:
        """Open the database; with `upgrade`, bring its schema to the newest revision (see `upgrade`)."""
        self.engine = _engine(database_url, durable=True)  # feedback, seen JWT ids, reads
        # The audit rows: on SQLite the same file with synchronous=NORMAL (see the module docstring).
        self._audit_engine = (
            _engine(database_url, durable=False) if self.engine.dialect.name == "sqlite" else self.engine
        )
        dialect = self.engine.dialect.name
        # Whether a row was new is told by the key it RETURNs, never by rowcount: drivers differ there
        # (psycopg reports -1 for an INSERT run as executemany).
        self._insert_new = {
            table: _insert_ignore_statement(dialect, table).returning(*table.primary_key.columns)
            for table in (feedback, seen_jti)
        }
        self._insert_cards = _insert_ignore_statement(dialect, audit_card)
        self._insert_warnings = _insert_ignore_statement(dialect, order_warning)
        if upgrade:
            self.upgrade()

    def upgrade(self) -> tuple[str | None, str | None]:
        """Bring the schema to the newest revision; return the revisions before and after.

        Workers starting together on a new database must not both create the tables: the version check and
        the migrations run in one transaction that holds a lock until it commits (see `_lock_schema`). A
        database made before migrations (its tables, no alembic_version) is stamped at the baseline first.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        with self.engine.connect() as connection:
            _lock_schema(connection)
            config.attributes["connection"] = connection  # env.py runs the revisions on it
            before = MigrationContext.configure(connection).get_current_revision()
            if before is None and inspect(connection).has_table(feedback.name):
                command.stamp(config, BASELINE_REVISION)
                before = BASELINE_REVISION
            if before != head:
                command.upgrade(config, "head")
            connection.commit()
        return before, head

    def _inserted(self, connection: Connection, table: Table, row: Mapping[str, Any]) -> bool:
        """Insert a row unless its unique key exists; tell whether it was inserted."""
        return connection.execute(self._insert_new[table], row).first() is not None

    def close(self) -> None:
        self.engine.dispose()
        self._audit_engine.dispose()

    def ping(self) -> bool:
        """Tell whether the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def record_feedback(self, service_id: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Store validated CDS Hooks feedback items; return how many were new (a repeated item is ignored)."""
        received_at = _utc_naive(datetime.now(UTC))
        rows = [_feedback_row(service_id, item, received_at) for item in items]
        with self.engine.begin() as connection:
            return sum(self._inserted(connection, feedback, row) for row in rows)

    def record_audit(
        self,
        *,
        hook_instance: str,
        service_id: str,
        hook: str,
        patient_id: str | None,
        cards: Sequence[Mapping[str, Any]],
        catalog_version: str,
        duration_ms: int,
    ) -> None:
        """Record which cards a hook call showed (uuid, trial, verdict; for an order warning, the ids of its
        draft orders): ids only, no patient values and no order details."""
        shown = [_card_summary(card) for card in cards]
        row = {
            "hook_instance": hook_instance,
            "service_id": service_id,
            "hook": hook,
            "patient_id": patient_id,
            "cards": shown,
            "catalog_version": catalog_version,
            "duration_ms": duration_ms,
            "created_at": _utc_naive(datetime.now(UTC)),
        }
        with self._audit_engine.begin() as connection:
            audit_id = connection.execute(AUDIT_INSERT, row).inserted_primary_key[0]
            rows = _audit_card_rows(cards, audit_id)
            if rows:  # one statement for every card of the call
                connection.execute(self._insert_cards, rows)

    def remember_warnings(self, patient_id: str, day: date, shown: Iterable[tuple[str, str]]) -> None:
        """Remember the order warnings shown to this patient on `day`, each as (NCT id, orders digest); those
        of earlier days are let go (a warning is not repeated within the same day only). Written like the
        audit rows (on SQLite, synchronous=NORMAL): order-select writes them before it answers, and the
        worst a lost row does is let order-sign show a warning again."""
        rows = [
            {
                "patient_id": patient_id,
                "nct_id": nct_id,
                "orders_digest": digest,
                "day": day,
                "shown_at": _utc_naive(datetime.now(UTC)),
            }
            for nct_id, digest in shown
        ]
        with self._audit_engine.begin() as connection:
            connection.execute(delete(order_warning).where(order_warning.c.day < day))
            if rows:
                connection.execute(self._insert_warnings, rows)

    def warned(self, patient_id: str, day: date) -> frozenset[tuple[str, str]]:
        """The order warnings shown to this patient on `day`: (NCT id, orders digest) of each."""
        query = select(order_warning.c.nct_id, order_warning.c.orders_digest).where(
            order_warning.c.patient_id == patient_id, order_warning.c.day == day
        )
        with self.engine.connect() as connection:
            return frozenset((nct_id, digest) for nct_id, digest in connection.execute(query))

    def remember_jti(self, jti: str, expires_at: datetime, now: datetime | None = None) -> bool:
        """Record a JWT id; False when it was already seen and has not expired (a replay)."""
        current = _utc_naive(now or datetime.now(UTC))
        with self.engine.begin() as connection:
            connection.execute(delete(seen_jti).where(seen_jti.c.expires_at <= current))
            row = {"jti": jti, "expires_at": _utc_naive(expires_at)}
            return self._inserted(connection, seen_jti, row)

    def quieted(self, patient_id: str, now: datetime, quiet_days: int) -> dict[str, str]:
        """The trials whose card for this patient must stay away from patient-view, each with its verdict.

        A trial is quiet when feedback `accepted` or `overridden` on a card of it shown to this patient was
        received within the `quiet_days` days before `now`, and no lift (`lift_quiet`) came after it. The
        verdict is the one the answered card had (of several, the best): the caller shows the trial's card
        again only when its verdict now is better than that one.
        """
        quiet: dict[str, str] = {}
        parameters = {**_quiet_window(now, quiet_days), "patient_id": patient_id}
        with self.engine.connect() as connection:
            for _, nct_id, verdict in connection.execute(QUIET_CARDS_OF_PATIENT, parameters):
                quiet[nct_id] = max(quiet.get(nct_id, verdict), verdict, key=_verdict_rank)
        return quiet

    def lift_quiet(self, patient_id: str, nct_id: str | None, now: datetime) -> None:
        """Let this patient's quieted card for one trial (`nct_id`), or for every trial (None), show again.

        Feedback received up to `now` no longer quiets it; later feedback does. The feedback stays stored.
        """
        row = {"patient_id": patient_id, "nct_id": nct_id, "lifted_at": _utc_naive(now)}
        with self.engine.begin() as connection:
            connection.execute(insert(quiet_lift), row)

    def feedback_stats(self, now: datetime, quiet_days: int) -> list[TrialFeedback]:
        """Per trial (by NCT id): cards shown, accepted, overridden by reason, patients quieted at `now`, and
        which criteria were still to check on the cards dismissed as "chart data out of date"; the same
        counts of its order warnings apart."""
        quiet = QUIET_CARDS.subquery()
        with self.engine.connect() as connection:
            shown = connection.execute(
                select(audit_card.c.nct_id, audit_card.c.kind, func.count())
                .where(audit_card.c.nct_id.is_not(None))
                .group_by(audit_card.c.nct_id, audit_card.c.kind)
            ).all()
            patients = select(quiet.c.nct_id, func.count(func.distinct(quiet.c.patient_id)))
            window = _quiet_window(now, quiet_days)
            quieted = connection.execute(patients.group_by(quiet.c.nct_id), window).all()
            answered = connection.execute(
                select(
                    audit_card.c.nct_id,
                    audit_card.c.kind,
                    audit_card.c.card_uuid,
                    audit_card.c.unknown_criteria,
                    feedback.c.outcome,
                    feedback.c.override_reason,
                )
                .select_from(feedback.join(audit_card, audit_card.c.card_uuid == feedback.c.card_uuid))
                .where(audit_card.c.nct_id.is_not(None))
            ).all()
        trials: dict[str, TrialFeedback] = {}

        def trial(nct_id: str) -> TrialFeedback:
            return trials.setdefault(nct_id, TrialFeedback(nct_id))

        for nct_id, kind, count in shown:
            if kind == ORDER_WARNING:
                trial(nct_id).warnings = count
            else:
                trial(nct_id).shown = count
        for nct_id, count in quieted:
            trial(nct_id).quieted_patients = count
        # Counts are of cards: (trial, kind, outcome, reason code, card) once, however often it was answered.
        answers: set[tuple[str, str, str, str, str]] = set()
        out_of_date: dict[tuple[str, str], list[str]] = {}  # (trial, card) -> its criteria still to check
        for nct_id, kind, card_uuid, unknown_criteria, outcome, reason in answered:
            code = (reason or {}).get("code", "") if outcome == "overridden" else ""
            answers.add((nct_id, kind or "", outcome, code, card_uuid))
            if code in OUT_OF_DATE_REASON_CODES and kind != ORDER_WARNING:
                out_of_date[nct_id, card_uuid] = unknown_criteria or []
        for nct_id, kind, outcome, code, _ in sorted(answers):
            entry = trial(nct_id)
            warning = kind == ORDER_WARNING
            if outcome == "accepted" and warning:
                entry.warnings_accepted += 1
            elif outcome == "accepted":
                entry.accepted += 1
            else:
                overridden = entry.warnings_overridden if warning else entry.overridden
                overridden[code] = overridden.get(code, 0) + 1
        for (nct_id, _), unknown in out_of_date.items():
            entry = trial(nct_id)
            entry.out_of_date += 1
            for criterion in set(unknown):
                entry.still_to_check[criterion] = entry.still_to_check.get(criterion, 0) + 1
        for entry in trials.values():  # the criteria most often still to check first
            entry.still_to_check = dict(
                sorted(entry.still_to_check.items(), key=lambda item: (-item[1], item[0]))
            )
        return [trials[nct_id] for nct_id in sorted(trials)]

    def iter_feedback(self) -> Iterator[dict[str, Any]]:
        """Yield stored feedback, oldest first, with the trial of the card when the audit trail knows it."""
        query = (
            select(feedback, audit_card.c.nct_id)
            .select_from(feedback.outerjoin(audit_card, audit_card.c.card_uuid == feedback.c.card_uuid))
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                yield {
                    "card": row.card_uuid,
                    "outcome": row.outcome,
                    "reason": row.override_reason,
                    "comment": row.user_comment,
                    "acceptedSuggestions": row.accepted_suggestions,
                    "timestamp": row.outcome_timestamp,
                    "serviceId": row.service_id,
                    "nctId": row.nct_id,
                }


def _engine(database_url: str, *, durable: bool) -> Engine:
    """An engine; on SQLite its connections commit with synchronous=FULL if `durable`, else NORMAL."""
    url = make_url(database_url)
    if url.drivername == "postgresql":  # SQLAlchemy's default driver for this name is psycopg2
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    synchronous = "FULL" if durable else "NORMAL"

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")  # wait for another worker's write instead of failing
        enable_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous}")  # per connection, outside any transaction
        cursor.close()

    return engine


def enable_wal(cursor: Any, patience_seconds: float = WAL_SWITCH_PATIENCE_SECONDS) -> None:
    """Put the SQLite file in WAL mode (readers and one writer at a time, across processes).

    The mode is stored in the file, so it is switched once. Two workers switching a new file at the same
    moment can get "database is locked" without SQLite calling its busy handler: retry briefly instead of
    failing to boot.
    """
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _quiet_cards() -> Select[tuple[str, str, str]]:
    """(patient id, NCT id, verdict) of each card whose feedback quiets its trial for its patient at the
    parameter `until`: feedback received after `since` (`until` minus the quiet days), not lifted since."""
    until = bindparam("until", type_=DateTime)
    lifted = exists().where(
        quiet_lift.c.patient_id == audit.c.patient_id,
        or_(quiet_lift.c.nct_id.is_(None), quiet_lift.c.nct_id == audit_card.c.nct_id),
        quiet_lift.c.lifted_at >= feedback.c.received_at,
        quiet_lift.c.lifted_at <= until,
    )
    return (
        select(audit.c.patient_id, audit_card.c.nct_id, audit_card.c.verdict)
        .select_from(
            audit.join(audit_card, audit_card.c.audit_id == audit.c.id).join(
                feedback, feedback.c.card_uuid == audit_card.c.card_uuid
            )
        )
        .where(
            feedback.c.outcome.in_(QUIETING_OUTCOMES),
            feedback.c.received_at > bindparam("since", type_=DateTime),
            feedback.c.received_at <= until,
            audit_card.c.nct_id.is_not(None),
            audit_card.c.verdict.is_not(None),
            ~lifted,
        )
    )


def _quiet_window(now: datetime, quiet_days: int) -> dict[str, datetime]:
    """The parameters of QUIET_CARDS at `now`."""
    until = _utc_naive(now)
    return {"until": until, "since": until - timedelta(days=quiet_days)}


# Built once, like AUDIT_INSERT: patient-view reads the quiet cards on every call.
QUIET_CARDS = _quiet_cards()
QUIET_CARDS_OF_PATIENT = QUIET_CARDS.where(audit.c.patient_id == bindparam("patient_id"))


def _verdict_rank(verdict: str) -> int:
    return VERDICT_RANKS.get(verdict, 0)


def _lock_schema(connection: Connection) -> None:
    """Begin the transaction of a schema change with a lock that keeps other processes waiting until it ends.

    PostgreSQL: a transaction-level advisory lock (released by the commit or rollback, even if the process
    dies). SQLite: BEGIN IMMEDIATE takes the database's write lock at once (others wait in the busy timeout).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _insert_ignore_statement(dialect: str, table: Table) -> Insert:
    """INSERT that skips a row whose unique key exists (SQLite and PostgreSQL)."""
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"insert-or-ignore is not implemented for {dialect}")


def _feedback_row(service_id: str, item: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    """The row of a validated feedback item. Its override reason is under overrideReason (CDS Hooks 2.0), or
    under overrideReasons as some EHRs send it (one such object or a list): the first reason coding and the
    first comment are kept."""
    canonical = json.dumps({"serviceId": service_id, "item": item}, sort_keys=True, separators=(",", ":"))
    given = item.get("overrideReason") or item.get("overrideReasons") or {}
    overrides = given if isinstance(given, list) else [given]  # overrideReasons may be a list
    return {
        "item_hash": hashlib.sha256(canonical.encode()).hexdigest(),
        "service_id": service_id,
        "card_uuid": item["card"],
        "outcome": item["outcome"],
        "override_reason": next((o["reason"] for o in overrides if "reason" in o), None),
        "user_comment": next((o["userComment"] for o in overrides if "userComment" in o), None),
        "accepted_suggestions": [s["id"] for s in item.get("acceptedSuggestions") or ()] or None,
        "outcome_timestamp": item["outcomeTimestamp"],
        "received_at": received_at,
    }


def _eligibility(card: Mapping[str, Any]) -> Mapping[str, Any]:
    return (card.get("extension") or {}).get(ELIGIBILITY_EXTENSION) or {}


def _order_impact(card: Mapping[str, Any]) -> Mapping[str, Any]:
    return (card.get("extension") or {}).get(ORDER_IMPACT_EXTENSION) or {}


def _card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    eligibility, impact = _eligibility(card), _order_impact(card)
    summary = {"uuid": card.get("uuid"), "nctId": eligibility.get("nctId") or impact.get("nctId")}
    summary["verdict"] = eligibility.get("verdict")
    summary["orders"] = impact.get("orders")
    return {key: value for key, value in summary.items() if value is not None}


def _audit_card_rows(cards: Sequence[Mapping[str, Any]], audit_id: int | None) -> list[dict[str, Any]]:
    """One row per shown card with a uuid: feedback names only the card, this row names its trial (and the
    ids of its criteria still to check; for an order warning, of its draft orders)."""
    rows = []
    for card in cards:
        if not card.get("uuid"):
            continue
        eligibility, impact = _eligibility(card), _order_impact(card)
        criteria = eligibility.get("criteria") or ()
        unknown = [criterion["id"] for criterion in criteria if criterion.get("outcome") == "unknown"]
        rows.append(
            {
                "card_uuid": card["uuid"],
                "audit_id": audit_id,
                "nct_id": eligibility.get("nctId") or impact.get("nctId"),
                "verdict": eligibility.get("verdict"),
                "unknown_criteria": unknown,
                "kind": ORDER_WARNING if impact else None,
                "orders": impact.get("orders"),
            }
        )
    return rows


def _utc_naive(moment: datetime) -> datetime:
    """Store UTC without tzinfo: SQLite has no time zones, and comparisons must agree on both databases."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
