"""The only module that talks to FHIR servers (through fhirclient).

All reads of one hook call run concurrently under a single deadline. A failed read never raises to the caller:
it becomes a `FetchResult` with the pages that did arrive and a short `problem` for the card's note.

A `FetchError` (cds_service.errors: DeadlineExceeded, NotFhir) stays inside one read and becomes
`FetchResult.problem`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from fhirclient.server import (
    FHIRNotFoundException,
    FHIRPermissionDeniedException,
    FHIRServer,
    FHIRUnauthorizedException,
)

from cds_service.errors import DeadlineExceeded, FetchError, NotFhir
from cds_service.metrics import FHIR_FETCH_FAILURES

Clock = Callable[[], float]


@dataclass(frozen=True)
class FetchJob:
    url: str  # relative to the FHIR base, or an absolute URL on it (a `next` link)
    max_pages: int


@dataclass(frozen=True)
class FetchResult:
    pages: tuple[dict[str, Any], ...] = ()  # FHIR JSON documents read, in order
    problem: str | None = None  # why reading failed or stopped early; None when complete
    reason: str | None = None  # the problem as a short code (a metrics label), e.g. "deadline", "http-503"


def next_link(document: Mapping[str, Any]) -> str | None:
    """Return the `next` link of a Bundle, if any."""
    if document.get("resourceType") != "Bundle":
        return None
    links = document.get("link")
    for link in links if isinstance(links, list) else ():
        url = link.get("url") if isinstance(link, Mapping) and link.get("relation") == "next" else None
        if isinstance(url, str):
            return url
    return None


class _DeadlineSession(requests.Session):
    """A Session that sends the bearer token and never waits past the call's deadline."""

    def __init__(self, access_token: str | None, deadline: float, clock: Clock) -> None:
        super().__init__()
        self._deadline = deadline
        self._clock = clock
        self.max_redirects = 3  # requests drops Authorization when a redirect changes host
        if access_token:
            self.headers["Authorization"] = f"Bearer {access_token}"

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline of this call has passed")
        kwargs["timeout"] = remaining
        return super().request(method, url, *args, **kwargs)


class FhirFetcher:
    """Reads FHIR searches and reads from one server, with an optional bearer token."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        *,
        deadline_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._access_token = access_token
        self._deadline_seconds = deadline_seconds
        self._clock = clock

    @property
    def _too_late(self) -> str:
        return f"no answer within {self._deadline_seconds:g} s"

    def owns(self, url: str) -> bool:
        """Tell whether an absolute URL lies under this server's base (the only place the token may go).

        Same scheme and host, and a path at or below the base path: `{base}/Condition?...`, or
        `{base}?_getpages=...` as HAPI writes its `next` links. A `..` segment could climb out: refused.
        """
        base, target = urlsplit(self.base_url), urlsplit(url)
        if (target.scheme.lower(), target.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
            return False
        base_path = base.path.rstrip("/")
        below = target.path == base_path or target.path.startswith(base_path + "/")
        return below and ".." not in target.path.split("/")

    def fetch_all(self, jobs: Mapping[str, FetchJob]) -> dict[str, FetchResult]:
        """Run every job concurrently; jobs unfinished at the deadline come back without data."""
        if not jobs:
            return {}
        deadline = self._clock() + self._deadline_seconds
        timed_out = FetchResult(problem=self._too_late, reason="deadline")
        executor = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="fhir-fetch")
        try:
            futures = {key: executor.submit(self._read, job, deadline) for key, job in jobs.items()}
            wait(futures.values(), timeout=max(0.0, deadline - self._clock()))
            results = {
                key: future.result() if future.done() else timed_out for key, future in futures.items()
            }
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        for result in results.values():
            if result.reason is not None:
                FHIR_FETCH_FAILURES.labels(result.reason).inc()
        return results

    def _read(self, job: FetchJob, deadline: float) -> FetchResult:
        """Read one search or resource, following `next` links on this server up to `job.max_pages` pages."""
        server = FHIRServer(None, base_uri=self.base_url)
        server.session = _DeadlineSession(self._access_token, deadline, self._clock)
        pages: list[dict[str, Any]] = []
        url: str | None = job.url
        while url is not None:
            absolute = urljoin(self.base_url, url)
            if not self.owns(absolute):
                return FetchResult(
                    tuple(pages),
                    "a link pointing outside the FHIR server was not followed",
                    "link-outside-server",
                )
            try:
                page = _fhir_document(server.request_json(absolute))
            except DeadlineExceeded:
                return FetchResult(tuple(pages), self._too_late, "deadline")
            except FetchError as exc:
                return FetchResult(tuple(pages), str(exc), "not-fhir")
            except requests.RequestException as exc:
                problem, reason = _describe_request_error(exc)
                return FetchResult(tuple(pages), problem or self._too_late, reason)
            except (FHIRUnauthorizedException, FHIRPermissionDeniedException, FHIRNotFoundException) as exc:
                status = exc.response.status_code
                return FetchResult(tuple(pages), _http_problem(status), f"http-{status}")
            pages.append(page)
            url = next_link(page)
            if url is not None and len(pages) >= job.max_pages:
                return FetchResult(tuple(pages), f"stopped after {job.max_pages} pages", "page-limit")
        return FetchResult(tuple(pages))


def _fhir_document(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise NotFhir("the answer was not FHIR JSON")
    if document["resourceType"] == "OperationOutcome":
        raise NotFhir("the server answered with an OperationOutcome")
    return document


def _describe_request_error(exc: requests.RequestException) -> tuple[str | None, str]:
    """Describe a failed request and give its reason code; no description for a timeout (the caller words it
    with its deadline)."""
    if isinstance(exc, requests.JSONDecodeError):
        return "the answer was not FHIR JSON", "not-fhir"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return _http_problem(exc.response.status_code), f"http-{exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return None, "deadline"
    if isinstance(exc, requests.ConnectionError):
        return "the server could not be reached", "unreachable"
    return "the request failed", "request-failed"


_HTTP_MEANINGS = {401: "access token refused", 403: "access not permitted", 404: "not found"}


def _http_problem(status: int) -> str:
    meaning = _HTTP_MEANINGS.get(status)
    return f"HTTP {status}: {meaning}" if meaning else f"HTTP {status}"
