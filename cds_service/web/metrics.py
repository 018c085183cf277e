"""`GET /metrics` for the hospital's Prometheus, and the counts taken around each request (definitions in
cds_service/metrics.py).

`/metrics` needs no JWT, like `/healthz`: a CDS Hooks JWT is signed by an EHR's private key for one audience
and is single-use, so no scraper can present one, and the labels carry no patient data. With
`CDS_METRICS_PORT` the metrics are served only on that port, where nothing else is (404), so the main port can
face the EHRs and the metrics port only the monitoring network.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import NotFound

from cds_service import metrics
from cds_service.cards import ELIGIBILITY_EXTENSION
from cds_service.config import Settings

bp = Blueprint("metrics", __name__)

PATH = "/metrics"
HOOK_ROUTE = "/cds-services/<service_id>"
EXTENSION_KEY = "cds_metrics"


@bp.get(PATH)
def exposition() -> Response:
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


def count_cards(service_id: str, cards: Iterable[Mapping[str, Any]]) -> None:
    """Count a call's trial cards by the NCT number and verdict of their eligibility extension."""
    for card in cards:
        eligibility = (card.get("extension") or {}).get(ELIGIBILITY_EXTENSION) or {}
        verdict = eligibility.get("verdict") or metrics.OTHER
        metrics.CARDS.labels(service_id, eligibility.get("nctId") or metrics.OTHER, verdict).inc()


def count_feedback(service_id: str, items: Iterable[Mapping[str, Any]]) -> None:
    """Count acknowledged feedback items by outcome (the schema allows only accepted and overridden)."""
    for item in items:
        metrics.FEEDBACK_ITEMS.labels(service_id, item["outcome"]).inc()


def _gate() -> None:
    """With a metrics port: /metrics only there, and nothing else there."""
    port = current_app.extensions[EXTENSION_KEY]["port"]
    if port is not None and (request.environ.get("SERVER_PORT") == str(port)) != (request.path == PATH):
        raise NotFound()


def _start() -> None:
    g.cds_metrics_started = time.perf_counter()


def _count(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "(no route)"
    status = str(response.status_code)
    metrics.HTTP_REQUESTS.labels(route, request.method, status).inc()
    if route == HOOK_ROUTE and request.method == "POST":
        service_id = (request.view_args or {}).get("service_id")
        if service_id not in current_app.extensions[EXTENSION_KEY]["services"]:
            service_id = metrics.OTHER  # an id a client made up must not become a label
        metrics.HOOK_CALLS.labels(service_id, status).inc()
        started = g.get("cds_metrics_started")
        if started is not None:
            metrics.HOOK_DURATION.labels(service_id).observe(time.perf_counter() - started)
    return response


def init_metrics(app: Flask, settings: Settings, service_ids: Iterable[str]) -> None:
    """Serve /metrics and count every request; register before authentication (a 401 is counted too)."""
    app.extensions[EXTENSION_KEY] = {"port": settings.metrics_port, "services": frozenset(service_ids)}
    app.before_request(_gate)
    app.before_request(_start)
    app.after_request(_count)
    app.register_blueprint(bp)
