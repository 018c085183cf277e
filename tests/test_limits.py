"""Request limits: body size (413), JSON nesting depth (400), prefetched resources (413); always a JSON error.
(FHIR pages and the fetch deadline are tested in test_fhir_faults.py.)"""

from __future__ import annotations

import io
import json

import pytest
from auth_support import SERVICE_ID, app_config, feedback_body, hook_body

from cds_service.web import create_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")

SERVICE = f"/cds-services/{SERVICE_ID}"
MAX_BODY = 4096
MAX_DEPTH = 16
MAX_RESOURCES = 5


@pytest.fixture
def client(tmp_path):
    limits = {"max_body_bytes": MAX_BODY, "max_json_depth": MAX_DEPTH, "max_resources": MAX_RESOURCES}
    return create_app(app_config(tmp_path, sandbox=True, **limits)).test_client()


def _assert_json_error(response, status: int, error: str | None = None) -> None:
    assert response.status_code == status, response.get_data()[:300]
    assert response.is_json
    assert set(response.get_json()) == {"error", "message"}
    if error is not None:
        assert response.get_json()["error"] == error


def _padded(body: dict, size: int) -> bytes:
    body = {**body, "extension": {"org.example.padding": "x" * size}}
    return json.dumps(body).encode()


@pytest.mark.parametrize("path", [SERVICE, SERVICE + "/feedback"])
def test_body_over_the_limit_is_refused_with_413(client, path):
    data = _padded(hook_body(), MAX_BODY)
    _assert_json_error(client.post(path, data=data, content_type="application/json"), 413)


def test_body_over_the_limit_without_content_length_is_refused_with_413(client):
    data = _padded(hook_body(), MAX_BODY)
    response = client.post(
        SERVICE,
        input_stream=io.BytesIO(data),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn declares a chunked body
    )
    _assert_json_error(response, 413)


def test_body_just_under_the_limit_is_read(client):
    body = hook_body()
    data = _padded(body, MAX_BODY - len(_padded(body, 0)) - 1)
    assert len(data) < MAX_BODY
    assert client.post(SERVICE, data=data, content_type="application/json").status_code == 200


def _nested(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


@pytest.mark.parametrize("path", [SERVICE, SERVICE + "/feedback"])
def test_json_nested_deeper_than_the_limit_is_refused_with_400(client, path):
    body = {**hook_body(), **feedback_body(), "extension": _nested(MAX_DEPTH)}
    _assert_json_error(client.post(path, json=body), 400, "malformed-json")


def test_json_nested_beyond_the_parser_recursion_limit_is_refused_with_400(client):
    data = b"[" * (MAX_BODY - 10)
    _assert_json_error(
        client.post(SERVICE, data=data, content_type="application/json"), 400, "malformed-json"
    )


def test_json_at_the_depth_limit_is_read(client):
    body = {**hook_body(), "extension": _nested(MAX_DEPTH - 2)}  # body -> extension -> deep -> ...
    assert client.post(SERVICE, json=body).status_code == 200


def _observations(count: int) -> dict:
    entries = [
        {"resource": {"resourceType": "Observation", "id": f"obs-{i}", "status": "final"}}
        for i in range(count)
    ]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def test_more_prefetched_resources_than_the_limit_is_refused_with_413(client):
    body = hook_body()
    body["prefetch"]["observations"] = _observations(MAX_RESOURCES)  # + the Patient: one too many
    _assert_json_error(client.post(SERVICE, json=body), 413, "too-many-resources")


def test_prefetched_resources_at_the_limit_are_read(client):
    body = hook_body()
    body["prefetch"]["observations"] = _observations(MAX_RESOURCES - 1)
    assert client.post(SERVICE, json=body).status_code == 200
