"""The database's failures as the service's errors, around `storage.Storage` (kept beside it, not in it, while
storage.py is being rewritten).

- `open_storage`: a URL that cannot be used, a missing driver, or (when it brings the schema up) a database
  that cannot be reached raises ConfigError naming CDS_DATABASE_URL, so the start stops with one line;
- `GuardedStorage`: a lost or refused connection while storing feedback or a JWT id raises StorageUnavailable
  (503: nothing was stored; feedback is stored once per distinct item, so the client's retry is safe).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cds_service.errors import ConfigError, StorageUnavailable
from cds_service.storage import Storage


def _unreachable(exc: Exception) -> bool:
    """Tell whether a database error means "cannot reach it now" rather than a wrong statement."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextmanager
def _unavailable_as_error() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        if _unreachable(exc):
            raise StorageUnavailable("the database does not answer; nothing was stored: retry later") from exc
        raise


class GuardedStorage(Storage):
    """Storage whose feedback and JWT-id writes raise StorageUnavailable when the database cannot be reached
    (the audit row's failure is logged by the view and the cards are answered all the same)."""

    def record_feedback(self, service_id: str, items: Iterable[Mapping[str, Any]]) -> int:
        with _unavailable_as_error():
            return super().record_feedback(service_id, items)

    def remember_jti(self, jti: str, expires_at: datetime, now: datetime | None = None) -> bool:
        with _unavailable_as_error():
            return super().remember_jti(jti, expires_at, now)


def _shown(database_url: str) -> str:
    """The URL without its password, or nothing of it when it cannot be parsed (it might hold one)."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def open_storage(database_url: str, *, upgrade: bool = True) -> GuardedStorage:
    """Open the database; ConfigError naming CDS_DATABASE_URL when it cannot be.

    With `upgrade`, its schema is brought to the newest revision now, which needs the database. Without, no
    connection is made here: the first statement that needs one opens it, and fails (see GuardedStorage) for
    as long as the database cannot be reached.
    """
    try:
        return GuardedStorage(database_url, upgrade=upgrade)
    except (SQLAlchemyError, ImportError) as exc:
        cause = getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"CDS_DATABASE_URL: cannot open {_shown(database_url)}: {reason}") from exc
