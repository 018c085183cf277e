"""gunicorn.conf.py: a worker's warm-up runs every stage on a synthetic patient, then hands the GC over."""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from flask import Flask

from cds_service.hook_request import parse_hook_request
from cds_service.patient_data import gather_patient_data

CONF_PATH = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@pytest.fixture(scope="module")
def conf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gunicorn_conf", CONF_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restored_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_synthetic_patient_reaches_every_stage_without_a_skipped_resource(
    app: Flask, conf: ModuleType
) -> None:
    state = app.extensions[conf.STATE_KEY]
    service = state.catalog.services[0]

    body = json.dumps(conf.synthetic_request(service.hook, service.prefetch)).encode()
    request = parse_hook_request(body, {service.hook}, max_depth=state.settings.max_json_depth)
    data = gather_patient_data(request, service.prefetch, state.settings)
    output = state.matcher.match(data.resources, request.patient_id, data.notes, data.unavailable)

    assert data.notes == ()
    assert {r["resourceType"] for r in data.resources} == {
        r["resourceType"] for r in conf.synthetic_resources()
    }
    assert output.facts.skipped == ()
    assert output.facts.conditions and output.facts.labs and output.facts.ecog and output.facts.medications
    assert output.cards  # the card templates are rendered too


def test_warm_up_skips_an_app_that_is_not_the_service(conf: ModuleType) -> None:
    assert conf.warm_up(Flask("other")) is False


def test_worker_init_warms_up_then_freezes_and_leaves_collection_to_post_request(
    app: Flask, conf: ModuleType, restored_gc: None, caplog: pytest.LogCaptureFixture
) -> None:
    worker = SimpleNamespace(wsgi=app, log=logging.getLogger("test.gunicorn"), nr=1)

    with caplog.at_level(logging.INFO, logger="test.gunicorn"):
        conf.post_worker_init(worker)

    assert "warm-up done" in caplog.text
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
    conf.post_request(worker, None, {}, None)  # collects the young generations without enabling the GC
    assert not gc.isenabled()


def test_a_call_leaves_no_fhir_resource_in_a_reference_cycle(app: Flask, conf: ModuleType) -> None:
    """Workers collect only after the response: what a call parsed must be freed by reference counting."""
    state = app.extensions[conf.STATE_KEY]
    service = state.catalog.services[0]
    body = json.dumps(conf.synthetic_request(service.hook, service.prefetch)).encode()
    gc.collect()
    gc.disable()  # as in a worker: only the collection below may find what the call left in cycles
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        request = parse_hook_request(body, {service.hook}, max_depth=state.settings.max_json_depth)
        data = gather_patient_data(request, service.prefetch, state.settings)
        output = state.matcher.match(data.resources, request.patient_id, data.notes, data.unavailable)
        assert output.cards
        del request, data, output
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, dict) and "resourceType" in o]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []
