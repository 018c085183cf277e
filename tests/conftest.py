"""Shared fixtures: a fresh sandbox app per test (own instance folder and database), its client, "today"."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

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
def app(clean_cds_env: None, tmp_path: Path, today: date, uuid_factory: Callable[[], str]) -> Iterator[Flask]:
    application = create_app(
        {
            "SANDBOX": True,
            "TODAY": today.isoformat(),
            "UUID_FACTORY": uuid_factory,
            "INSTANCE_PATH": tmp_path / "instance",
        }
    )
    yield application
    application.extensions["cds"].storage.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
