"""One log line per request (method, route, status, duration); a request id never outlives its request.

The request id (the hookInstance) is also left in the WSGI environ under REQUEST_ID_ENVIRON, for gunicorn's
access line, which is written after the request (web/serving.py).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from cds_service.logs import bind_request_id, current_request_id

log = logging.getLogger(__name__)

REQUEST_ID_ENVIRON = "cds.request_id"


def _start() -> None:
    bind_request_id(None)  # a worker thread serves many requests: never inherit the previous hookInstance
    g.cds_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.get("cds_started")
    duration_ms = round((time.perf_counter() - started) * 1000) if started is not None else None
    route = request.url_rule.rule if request.url_rule is not None else "(no route)"
    request.environ[REQUEST_ID_ENVIRON] = current_request_id()
    log.info(
        "%s %s -> %d",
        request.method,
        route,
        response.status_code,
        extra={
            "method": request.method,
            "path": route,
            "status": response.status_code,
            "duration_ms": duration_ms,
        },
    )
    return response


def _forget(_error: BaseException | None) -> None:
    bind_request_id(None)


def init_request_log(app: Flask) -> None:
    """Register first, so that every request (also a preflight or a 401) is timed and logged."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_forget)
