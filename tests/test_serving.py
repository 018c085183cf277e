"""A gunicorn worker's life (cds_service/web/serving.py): warm-up on the shipped chart, then the GC policy."""

from __future__ import annotations

import ast
import gc
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from cds_service import hooks
from cds_service.bundle_file import hook_request_for
from cds_service.config import load_settings
from cds_service.storage import Storage
from cds_service.web import create_worker_app, serving

CONF_PATH = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@pytest.fixture
def restored_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def _warm_up_call(app: Flask) -> hooks.HookCall:
    state = app.extensions["cds"]
    service = state.catalog.services[0]
    chart, today = serving.warm_up_chart()
    request = hook_request_for(service.hook, service.prefetch, chart, serving.WARM_UP_INSTANCE)
    return hooks.prepare(request, [service], state.settings, today, lambda _: None)


def test_the_warm_up_chart_reaches_every_stage_without_a_skipped_resource(app: Flask) -> None:
    state = app.extensions["cds"]
    call = _warm_up_call(app)
    output = state.runtime.matcher.match(
        call.data.resources, call.request.patient_id, call.today, call.data.notes, call.data.unavailable
    )
    chart, _ = serving.warm_up_chart()

    assert call.data.notes == ()
    assert {r["resourceType"] for r in call.data.resources} == {r["resourceType"] for r in chart}
    assert output.facts.skipped == ()
    facts = output.facts
    assert facts.conditions and facts.labs and facts.ecog and facts.medications and facts.therapy_lines
    assert output.cards  # the card templates are rendered too


def test_warm_up_skips_an_app_that_is_not_the_service() -> None:
    assert serving.warm_up(Flask("other")) is False


def test_worker_init_warms_up_then_freezes_and_leaves_collection_to_post_request(
    app: Flask, restored_gc: None, caplog: pytest.LogCaptureFixture
) -> None:
    worker = SimpleNamespace(wsgi=app, log=logging.getLogger("test.gunicorn"), nr=1)

    with caplog.at_level(logging.INFO, logger="test.gunicorn"):
        serving.post_worker_init(worker)

    assert "warm-up done" in caplog.text
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
    serving.post_request(worker, None, {}, None)  # collects the young generations without enabling the GC
    assert not gc.isenabled()


def test_a_call_leaves_no_fhir_resource_in_a_reference_cycle(app: Flask) -> None:
    """Workers collect only after the response: what a call parsed must be freed by reference counting."""
    state = app.extensions["cds"]
    gc.collect()
    gc.disable()  # as in a worker: only the collection below may find what the call left in cycles
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        call = _warm_up_call(app)
        cards = hooks.answer(call, state.runtime)
        assert cards
        del call, cards
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, dict) and "resourceType" in o]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []


def test_gunicorn_conf_holds_server_settings_and_installs_the_worker_hooks() -> None:
    tree = ast.parse(CONF_PATH.read_text(encoding="utf-8"))
    assigned = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    imported = {
        a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names
    }
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)]

    assert functions == []  # no application logic in the server settings
    assert {"bind", "workers", "worker_class", "timeout", "logger_class", "accesslog"} <= assigned
    assert {
        "post_worker_init",
        "post_request",
        "child_exit",
        "on_exit",
        "on_starting",
        "on_reload",
        "JsonLogger",
    } <= imported
    # prometheus_client picks its multiprocess mode when first imported: the folder is set before any import
    # of the service
    folder_set = next(
        n.lineno
        for n in tree.body
        if isinstance(n, ast.Assign) and "PROMETHEUS_MULTIPROC_DIR" in ast.unparse(n)
    )
    service_imports = [
        n.lineno for n in tree.body if isinstance(n, ast.ImportFrom) and n.module.startswith("cds_")
    ]
    assert service_imports and folder_set < min(service_imports)


@pytest.mark.parametrize(
    ("host", "metrics_port", "expected"),
    [
        ("127.0.0.1", None, ["127.0.0.1:8080"]),
        ("0.0.0.0", 9464, ["0.0.0.0:8080", "0.0.0.0:9464"]),
        ("::1", None, ["[::1]:8080"]),
    ],
)
def test_gunicorn_listens_on_the_port_and_the_metrics_port(host, metrics_port, expected) -> None:
    settings = load_settings({"host": host, "port": 8080, "metrics_port": metrics_port}, environ={})
    assert serving.listen_addresses(settings) == expected


def test_the_warm_up_chart_is_valid_json_shipped_inside_the_package() -> None:
    chart, today = serving.warm_up_chart()
    assert {r["resourceType"] for r in chart} >= {"Patient", "Condition", "Observation", "Procedure"}
    assert (
        today.isoformat()
        == json.loads(
            (Path(serving.__file__).parent.parent / serving.WARM_UP_CHART).read_text(encoding="utf-8")
        )["timestamp"][:10]
    )


def test_a_worker_app_builds_and_warms_up_without_the_database(
    clean_cds_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (re)started while the database is down: its app needs no connection, nor does its warm-up."""
    app = create_worker_app(
        {"SANDBOX": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'gone' / 'cds.sqlite3'}"}
    )
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO):
            assert serving.warm_up(app) is True
        assert app.test_client().get("/healthz").status_code == 503
    finally:
        app.extensions["cds"].storage.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class FakeArbiter:
    def __init__(self) -> None:
        self.halted: tuple[str, int] | None = None
        self.log = logging.getLogger("gunicorn.error")

    def halt(self, reason: str, exit_status: int) -> None:
        self.halted = (reason, exit_status)


@pytest.mark.parametrize("master_hook", [serving.on_starting, serving.on_reload])
def test_gunicorns_master_brings_the_schema_up_before_any_worker_starts(
    clean_cds_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master_hook: Callable[[Any], None]
) -> None:
    """At start (`on_starting`) and on SIGHUP (`on_reload`: a deployment's new code, same master)."""
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    master = FakeArbiter()
    master_hook(master)
    assert master.halted is None
    storage = Storage(url, upgrade=False)
    try:
        before, after = storage.upgrade()
    finally:
        storage.close()
    assert before is not None and before == after  # made by the master: nothing was left to do


def test_gunicorns_master_stops_with_one_line_when_the_database_cannot_be_reached(
    clean_cds_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'gone' / 'cds.sqlite3'}")
    master = FakeArbiter()
    serving.on_starting(master)
    assert master.halted is not None
    reason, status = master.halted
    assert reason.startswith("CDS_DATABASE_URL: cannot open sqlite:///") and "\n" not in reason
    assert status == 1


def test_a_reload_while_the_database_is_down_logs_and_keeps_the_master(
    clean_cds_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'gone' / 'cds.sqlite3'}")
    master = FakeArbiter()
    with caplog.at_level(logging.ERROR, logger="gunicorn.error"):
        serving.on_reload(master)
    assert master.halted is None
    (record,) = [r for r in caplog.records if r.name == "gunicorn.error"]
    assert record.getMessage().startswith("schema not upgraded on reload: CDS_DATABASE_URL: cannot open")
