"""FhirFetcher against a fake FHIR server: pagination, bearer token, same-origin links, faults, deadline."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
import requests
import responses
from fake_fhir import BASE, TOKEN, bearer_headers

from cds_service.fhir_fetch import FetchJob, FhirFetcher, next_link

SEARCH = "Condition?patient=pt-1"


def page(ids: list[str], next_url: str | None = None) -> dict:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Condition", "id": i}} for i in ids],
    }
    if next_url:
        bundle["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": next_url}]
    return bundle


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def fetch(url: str = SEARCH, max_pages: int = 10, token: str | None = TOKEN, **kwargs) -> tuple:
    fetcher = FhirFetcher(BASE, token, deadline_seconds=5, **kwargs)
    result = fetcher.fetch_all({"conditions": FetchJob(url, max_pages)})["conditions"]
    ids = [entry["resource"]["id"] for p in result.pages for entry in p.get("entry", ())]
    return result, ids


def test_follows_next_links_with_the_bearer_token_on_every_page(rsps):
    rsps.get(f"{BASE}/{SEARCH}", json=page(["c1", "c2"], f"{BASE}/{SEARCH}&_page=2"))
    rsps.get(f"{BASE}/{SEARCH}&_page=2", json=page(["c3"], f"{BASE}/{SEARCH}&_page=3"))
    rsps.get(f"{BASE}/{SEARCH}&_page=3", json=page(["c4"]))
    result, ids = fetch()
    assert (ids, result.problem) == (["c1", "c2", "c3", "c4"], None)
    assert bearer_headers(rsps) == [f"Bearer {TOKEN}"] * 3


def test_stops_at_the_page_limit_and_says_so(rsps):
    rsps.get(f"{BASE}/{SEARCH}", json=page(["c1"], f"{BASE}/{SEARCH}&_page=2"))
    rsps.get(f"{BASE}/{SEARCH}&_page=2", json=page(["c2"], f"{BASE}/{SEARCH}&_page=3"))
    result, ids = fetch(max_pages=2)
    assert ids == ["c1", "c2"]
    assert result.problem == "stopped after 2 pages"
    assert len(rsps.calls) == 2


def test_a_next_link_on_the_base_itself_is_followed(rsps):
    """HAPI writes `next` as `{base}?_getpages=...`; the host may differ in case."""
    rsps.get(
        f"{BASE}/{SEARCH}", json=page(["c1"], "https://FHIR.example.org/r4?_getpages=abc&_getpagesoffset=1")
    )
    rsps.get(f"{BASE}?_getpages=abc&_getpagesoffset=1", json=page(["c2"]))
    result, ids = fetch()
    assert (ids, result.problem) == (["c1", "c2"], None)
    assert bearer_headers(rsps) == [f"Bearer {TOKEN}"] * 2


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example.com/r4/Condition?page=2",
        "https://fhir.example.org/other/Condition?page=2",
        "https://fhir.example.org/r4x/Condition?page=2",
        "https://fhir.example.org/r4/../admin/Condition?page=2",
        "http://fhir.example.org/r4/Condition?page=2",
        "https://fhir.example.org@evil.example.com/r4/Condition?page=2",
        "https://fhir.example.org:8443/r4/Condition?page=2",
    ],
)
def test_a_next_link_off_the_fhir_server_is_not_followed(rsps, next_url):
    rsps.get(f"{BASE}/{SEARCH}", json=page(["c1"], next_url))
    result, ids = fetch()
    assert ids == ["c1"]
    assert "outside the FHIR server" in result.problem
    assert [call.request.url for call in rsps.calls] == [f"{BASE}/{SEARCH}"]


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (401, "HTTP 401: access token refused"),
        (403, "HTTP 403: access not permitted"),
        (404, "HTTP 404: not found"),
        (500, "HTTP 500"),
        (503, "HTTP 503"),
    ],
)
def test_http_faults_give_no_data_and_a_problem(rsps, status, problem):
    rsps.get(f"{BASE}/{SEARCH}", status=status, json={"resourceType": "OperationOutcome"})
    result, _ = fetch()
    assert (result.pages, result.problem) == ((), problem)


def test_a_fault_on_a_later_page_keeps_the_earlier_pages(rsps):
    rsps.get(f"{BASE}/{SEARCH}", json=page(["c1"], f"{BASE}/{SEARCH}&_page=2"))
    rsps.get(f"{BASE}/{SEARCH}&_page=2", status=500)
    result, ids = fetch()
    assert (ids, result.problem) == (["c1"], "HTTP 500")


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"body": "<html>Tomcat error</html>", "content_type": "text/html"}, "the answer was not FHIR JSON"),
        ({"json": {"entry": []}}, "the answer was not FHIR JSON"),
        ({"json": ["Condition"]}, "the answer was not FHIR JSON"),
        ({"json": {"resourceType": "OperationOutcome"}}, "the server answered with an OperationOutcome"),
    ],
)
def test_answers_that_are_not_fhir_data_give_no_data(rsps, answer, problem):
    rsps.get(f"{BASE}/{SEARCH}", **answer)
    result, _ = fetch()
    assert (result.pages, result.problem) == ((), problem)


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (requests.ReadTimeout("slow"), "no answer within 5 s"),
        (requests.ConnectionError("refused"), "the server could not be reached"),
    ],
)
def test_network_failures_give_no_data(rsps, error, problem):
    rsps.get(f"{BASE}/{SEARCH}", body=error)
    result, _ = fetch()
    assert (result.pages, result.problem) == ((), problem)


def test_no_request_starts_after_the_deadline(rsps):
    rsps.get(f"{BASE}/{SEARCH}", json=page(["c1"], f"{BASE}/{SEARCH}&_page=2"))
    worker_reads = itertools.count()

    def clock() -> float:
        """The caller's thread stays at 0 s; the reading thread is at 6 s (past the deadline) after page 1."""
        if threading.current_thread() is threading.main_thread():
            return 0.0
        return 0.0 if next(worker_reads) == 0 else 6.0

    result, ids = fetch(clock=clock)
    assert (ids, result.problem) == (["c1"], "no answer within 5 s")
    assert len(rsps.calls) == 1


def test_without_a_token_no_authorization_header_is_sent(rsps):
    rsps.get(f"{BASE}/Patient/pt-1", json={"resourceType": "Patient", "id": "pt-1"})
    result, _ = fetch("Patient/pt-1", token=None)
    assert result.pages == ({"resourceType": "Patient", "id": "pt-1"},)
    assert bearer_headers(rsps) == [None]


def test_keys_are_fetched_independently(rsps):
    rsps.get(f"{BASE}/Patient/pt-1", json={"resourceType": "Patient", "id": "pt-1"})
    rsps.get(f"{BASE}/Procedure?patient=pt-1", status=500)
    fetcher = FhirFetcher(BASE, TOKEN, deadline_seconds=5)
    results = fetcher.fetch_all(
        {"patient": FetchJob("Patient/pt-1", 10), "procedures": FetchJob("Procedure?patient=pt-1", 10)}
    )
    assert [len(results["patient"].pages), results["patient"].problem] == [1, None]
    assert [len(results["procedures"].pages), results["procedures"].problem] == [0, "HTTP 500"]


def test_next_link_reads_only_bundles():
    assert next_link(page(["c1"], "https://x/next")) == "https://x/next"
    assert next_link(page(["c1"])) is None
    assert next_link({"resourceType": "Patient", "link": [{"relation": "next", "url": "https://x"}]}) is None
