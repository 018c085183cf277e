"""Shared fixtures: a fresh sandbox app per test (own instance folder and database), its client, "today";
a new database (and a Storage on it) on SQLite and on a PostgreSQL server started for the session."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from postgres_server import PostgresServer, PostgresUnavailable

from cds_service.storage import Storage
from cds_service.web import create_app

TODAY = date(2026, 11, 21)


@pytest.fixture
def today() -> date:
    return TODAY


@pytest.fixture
def uuid_factory() -> Callable[[], str]:
    """Deterministic card uuids: 00000000-0000-4000-8000-000000000001, ...002, ..."""
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


@pytest.fixture
def clean_cds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every CDS_* variable: the developer's environment must not change test results."""
    for name in [name for name in os.environ if name.startswith("CDS_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def make_sandbox_app(clean_cds_env: None, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """create_app in sandbox mode, own instance folder, `config` on top; storage closed at teardown."""
    made: list[Flask] = []

    def make(**config: object) -> Flask:
        made.append(create_app({"SANDBOX": True, "INSTANCE_PATH": tmp_path / "instance", **config}))
        return made[-1]

    yield make
    for application in made:
        application.extensions["cds"].storage.close()


@pytest.fixture
def app(make_sandbox_app: Callable[..., Flask], today: date, uuid_factory: Callable[[], str]) -> Flask:
    return make_sandbox_app(TODAY=today.isoformat(), UUID_FACTORY=uuid_factory)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session; one that cannot start fails the tests (never skips them)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL could not be started for the tests: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Make new, empty databases: SQLite files, then databases of the session's PostgreSQL server (dropped
    after the test: a database is several megabytes)."""
    if request.param == "sqlite":
        names = itertools.count(1)
        yield lambda: f"sqlite:///{tmp_path / f'cds-{next(names)}.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    made: list[str] = []

    def make() -> str:
        made.append(server.create_database())
        return server.url(made[-1])

    yield make
    for name in made:
        server.drop_database(name)


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    """A new, empty database on SQLite, then on PostgreSQL."""
    return new_database()


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """A Storage on a new database, SQLite then PostgreSQL; closed after the test."""
    store = Storage(database_url)
    yield store
    store.close()
