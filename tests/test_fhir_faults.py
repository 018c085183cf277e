"""Failing FHIR servers never break a hook call: each fault ends within the fetch deadline (plus a generous
margin, a behaviour bound and not a speed goal) in the documented answer, never a 500.

Documented outcomes: required data (Patient, Conditions) that can be neither prefetched nor fetched ->
412 with a JSON error; optional data (observations, medications, procedures) that cannot be fetched -> 200
with cards, whose notes say what could not be read.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests
import responses
from auth_support import FHIR_SERVER, PREFETCH_KEYS, SERVICE_ID, app_config, fhir_authorization
from fake_fhir import bundled_service, load_request
from hung_server import hung_server

from cds_service.web import create_app

pytestmark = pytest.mark.usefixtures("clean_cds_env")

DEADLINE = 1.0
MARGIN = 2.0  # generous: the bound proves "answers within the deadline", it must never be flaky
MAX_PAGES = 3
SERVICE = f"/cds-services/{SERVICE_ID}"
FHIR_AUTH = fhir_authorization()
REQUIRED = bundled_service().required_prefetch
OPTIONAL = tuple(key for key in PREFETCH_KEYS if key not in REQUIRED)
ANY_SEARCH = re.compile(re.escape(FHIR_SERVER) + r"/[A-Za-z]+\?.*")
PATIENT_READ = f"{FHIR_SERVER}/Patient/pt-rcc-1"

# fault name -> keyword arguments of responses.add (one answer for every FHIR call)
FAULTS = {
    "401": {"status": 401, "json": {"resourceType": "OperationOutcome", "issue": []}},
    "403": {"status": 403, "body": "forbidden"},
    "404": {"status": 404, "json": {"resourceType": "OperationOutcome", "issue": []}},
    "500": {"status": 500, "body": "<html>Internal Server Error</html>"},
    "502": {"status": 502, "body": ""},
    "503": {"status": 503, "body": "unavailable"},
    "timeout": {"body": requests.exceptions.ReadTimeout("read timed out")},
    "connect-timeout": {"body": requests.exceptions.ConnectTimeout("connect timed out")},
    "connection-refused": {"body": requests.exceptions.ConnectionError("refused")},
    "malformed-json": {
        "body": '{"resourceType": "Bundle", "entry": [',
        "content_type": "application/fhir+json",
    },
    "html-page": {"body": "<html><body>Login</body></html>", "content_type": "text/html"},
    "non-fhir-json": {"json": {"hello": "world"}},
    "json-array": {"json": [1, 2, 3]},
    "operation-outcome-200": {"json": {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}},
    "wrong-resource-type-number": {"json": {"resourceType": 7}},
}


@pytest.fixture
def client(tmp_path):
    settings = {"sandbox": True, "fetch_deadline_seconds": DEADLINE, "fhir_max_pages": MAX_PAGES}
    return create_app(app_config(tmp_path, **settings)).test_client()


def _body(fhir_server: str = FHIR_SERVER, prefetched: tuple[str, ...] = ()) -> dict:
    """The mRCC patient of the `full-prefetch` stub, prefetching only `prefetched` keys; every other key must
    come from `fhir_server`."""
    stub = load_request("full-prefetch")
    body = {
        **stub,
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "fhirAuthorization": FHIR_AUTH,
    }
    body["prefetch"] = {key: stub["prefetch"][key] for key in prefetched}
    return body


def _timed_post(client, body) -> tuple[object, float]:
    started = time.monotonic()
    response = client.post(SERVICE, json=body)
    return response, time.monotonic() - started


def _assert_answered(response, elapsed: float, status: int) -> None:
    assert elapsed < DEADLINE + MARGIN
    assert response.status_code == status, response.get_data()[:500]
    assert response.is_json


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_required_data_gives_412(client, fault):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(PATIENT_READ, **FAULTS[fault])
        mock.get(ANY_SEARCH, **FAULTS[fault])
        response, elapsed = _timed_post(client, _body())
        assert mock.calls, "the FHIR server was asked"
    _assert_answered(response, elapsed, 412)
    assert response.get_json()["error"] == "precondition-failed"


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_optional_data_gives_cards(client, fault):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(ANY_SEARCH, **FAULTS[fault])
        response, elapsed = _timed_post(client, _body(prefetched=REQUIRED))
        assert len(mock.calls) >= len(OPTIONAL)
    _assert_answered(response, elapsed, 200)
    cards = response.get_json()["cards"]
    assert cards, "the mRCC patient still gets trial cards"
    assert all("could not be read" in card["detail"] for card in cards)


SLOW_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 60\r\n\r\n"
    + b'{"resourceType": "Bundle", "type": "searchset", "entry": []}'
)


@pytest.mark.parametrize("drip", [None, SLOW_ANSWER], ids=["silent", "drip-feed"])
def test_hung_fhir_server_required_data_gives_412_within_deadline(client, drip):
    with hung_server(drip) as url:
        response, elapsed = _timed_post(client, _body(fhir_server=url))
    _assert_answered(response, elapsed, 412)


@pytest.mark.parametrize("drip", [None, SLOW_ANSWER], ids=["silent", "drip-feed"])
def test_hung_fhir_server_optional_data_gives_cards_within_deadline(client, drip):
    with hung_server(drip) as url:
        response, elapsed = _timed_post(client, _body(fhir_server=url, prefetched=REQUIRED))
    _assert_answered(response, elapsed, 200)


def _endless_pages(request):
    """Every search page links to one more page of the same resource type."""
    resource_type = urlsplit(request.url).path.rsplit("/", 1)[-1]
    page = int(request.params.get("page", "1"))
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": resource_type, "id": f"{resource_type}-{page}"}}],
        "link": [{"relation": "next", "url": f"{FHIR_SERVER}/{resource_type}?page={page + 1}"}],
    }
    return 200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle)


def test_pages_are_followed_up_to_the_cap(client):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.GET, ANY_SEARCH, callback=_endless_pages)
        response, elapsed = _timed_post(client, _body(prefetched=REQUIRED))
        pages = Counter(urlsplit(c.request.url).path.rsplit("/", 1)[-1] for c in mock.calls)
    _assert_answered(response, elapsed, 200)
    assert len(pages) == len(OPTIONAL)
    assert set(pages.values()) == {MAX_PAGES}


def test_next_link_to_another_server_is_not_followed(client):
    other = "https://elsewhere.test/r4/Observation?page=2"
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [],
        "link": [{"relation": "next", "url": other}],
    }
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(ANY_SEARCH, json=bundle)
        response, elapsed = _timed_post(client, _body(prefetched=REQUIRED))
        assert not [c for c in mock.calls if "elsewhere.test" in c.request.url]
    _assert_answered(response, elapsed, 200)
