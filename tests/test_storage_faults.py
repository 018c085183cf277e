"""The database gone while serving: feedback gets 503 with a JSON error and is stored once the client retries;
hook calls still answer with cards (their audit row is only logged as lost); with security on, the JWT replay
check cannot run, so calls get 503 rather than a 500 or a 401. A worker's app built while it is gone serves
the same way, and uses the database once it is back.

The database is made unreachable the way a stopped server is: its pooled connections are closed and a new one
cannot be opened (on SQLite: its folder replaced by a file).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from auth_support import (
    PUBLIC_BASE_URL,
    SERVICE_ID,
    bearer_header,
    claims_for,
    feedback_body,
    hook_body,
    new_ec_key,
    pinned_issuer,
    secure_app_config,
    sign,
)
from flask import Flask

from cds_service.storage import Storage
from cds_service.web import create_app, create_worker_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")

KEY = new_ec_key("ec-1")
SERVICE = f"/cds-services/{SERVICE_ID}"
FEEDBACK = f"{SERVICE}/feedback"


@contextmanager
def folder_gone(folder: Path) -> Iterator[None]:
    """Make the database file impossible to open, then put it back."""
    away = folder.with_name(folder.name + "-away")
    folder.rename(away)
    folder.write_text("not a folder", encoding="utf-8")
    try:
        yield
    finally:
        folder.unlink()
        away.rename(folder)


@contextmanager
def database_gone(app: Flask, folder: Path) -> Iterator[None]:
    """Close the pooled connections and make the database file impossible to open, then put it back."""
    app.extensions["cds"].storage.close()
    with folder_gone(folder):
        yield


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "db").mkdir()
    return tmp_path / "db"


def test_feedback_gets_503_while_the_database_is_gone_and_is_stored_once_on_retry(make_sandbox_app, folder):
    app = make_sandbox_app(DATABASE_URL=f"sqlite:///{folder / 'cds.sqlite3'}", TODAY="2026-11-21")
    client = app.test_client()
    item = feedback_body()
    with database_gone(app, folder):
        refused = client.post(FEEDBACK, json=item)
        assert client.get("/healthz").status_code == 503
        cards = client.post(SERVICE, json=hook_body("pat-gone"))
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "storage-unavailable"
    assert cards.status_code == 200  # the audit row could not be written: logged, the call answered
    assert client.post(FEEDBACK, json=item).status_code == 200  # the client retries
    assert client.post(FEEDBACK, json=item).status_code == 200  # and once more: still one row
    stored = list(app.extensions["cds"].storage.iter_feedback())
    assert [row["card"] for row in stored] == [item["feedback"][0]["card"]]


def test_a_worker_app_built_while_the_database_is_gone_serves_and_uses_it_once_back(folder):
    """A worker (re)started during an outage (the schema was made by the master before): no restart needed."""
    url = f"sqlite:///{folder / 'cds.sqlite3'}"
    Storage(url).close()  # the master's preflight
    item = feedback_body()
    with folder_gone(folder):
        app = create_worker_app({"SANDBOX": True, "DATABASE_URL": url, "TODAY": "2026-11-21"})
        client = app.test_client()
        try:
            health = client.get("/healthz").status_code
            cards = client.post(SERVICE, json=hook_body("pat-gone"))
            refused = client.post(FEEDBACK, json=item)
        except BaseException:
            app.extensions["cds"].storage.close()
            raise
    try:
        assert (health, cards.status_code, refused.status_code) == (503, 200, 503)
        assert client.get("/healthz").status_code == 200  # back: the next connection opens
        assert client.post(FEEDBACK, json=item).status_code == 200
        stored = list(app.extensions["cds"].storage.iter_feedback())
        assert [row["card"] for row in stored] == [item["feedback"][0]["card"]]
    finally:
        app.extensions["cds"].storage.close()


def test_with_security_on_a_call_gets_503_when_the_replay_check_cannot_run(tmp_path, folder, caplog):
    config = secure_app_config(
        tmp_path, pinned_issuer(KEY), database_url=f"sqlite:///{folder / 'cds.sqlite3'}"
    )
    app = create_app(config)
    client = app.test_client()
    try:
        with database_gone(app, folder), caplog.at_level(logging.ERROR):
            answer = client.post(
                SERVICE,
                json=hook_body(),
                headers=bearer_header(sign(claims_for(PUBLIC_BASE_URL + SERVICE), KEY)),
            )
        assert answer.status_code == 503
        assert answer.get_json()["error"] == "storage-unavailable"
        assert not [r for r in caplog.records if r.getMessage() == "internal error"]
    finally:
        app.extensions["cds"].storage.close()
