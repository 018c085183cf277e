"""The service's Prometheus metrics: every definition, and their text exposition (served by web/metrics.py).

Under gunicorn each worker writes its values to files in `PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py makes a
fresh folder before the service's modules are imported: prometheus_client picks its mode when it is first
imported), and an exposition adds up the files of every worker, those of exited workers included for counters
and histograms. Without that variable (tests, `create_app` in a script) the values live in this process.

Labels hold only service ids of the catalog, hooks, NCT numbers, verdicts, feedback outcomes, route templates,
HTTP statuses and reason codes: never a patient id, a name, a value or anything else a client typed.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # read when prometheus_client read it
# The text format every Prometheus version reads (the metric names need none of the newer format's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "(other)"  # the label value of anything outside a bounded set (an unknown service id...)

HOOK_CALLS = Counter(
    "cds_hook_calls", "CDS Hooks service calls by service and HTTP status", ["service", "status"]
)
HOOK_DURATION = Histogram(
    "cds_hook_duration_seconds",
    "Time to answer a CDS Hooks service call, from its first byte read to its response, by service",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CARDS = Counter(
    "cds_cards", "Trial cards answered, by service, trial and verdict", ["service", "nct_id", "verdict"]
)
FHIR_FETCH_FAILURES = Counter(
    "cds_fhir_fetch_failures",
    "FHIR reads from fhirServer that failed or stopped early, by reason (deadline, http-<status>, "
    "unreachable, not-fhir, link-outside-server, page-limit, request-failed)",
    ["reason"],
)
JWT_REJECTIONS = Counter("cds_jwt_rejections", "Client JWTs refused (401), by reason code", ["reason"])
FEEDBACK_ITEMS = Counter(
    "cds_feedback_items",
    "Feedback items acknowledged (stored or already stored), by service and outcome",
    ["service", "outcome"],
)
HTTP_REQUESTS = Counter(
    "cds_http_requests", "HTTP requests by route template, method and status", ["route", "method", "status"]
)


def exposition() -> bytes:
    """Every metric in the Prometheus text format, summed over the gunicorn workers in multiprocess mode."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def forget_process(pid: int) -> None:
    """Drop the live values of an exited worker (gunicorn's child_exit; its counts stay in the sums)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)
