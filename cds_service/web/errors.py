"""Every error as HTTP, in one handler: JSON `{"error": "<short code>", "message": "<what was wrong>"}`.

The tree of `cds_service.errors` is mapped to statuses here and nowhere else. A rejected JWT is a bare `401`
(no body, `WWW-Authenticate: Bearer`), its reason logged with `iss` and `jti`; anything not in the tree is a
`500` whose message says only that the error was logged.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from cds_service import metrics
from cds_service.errors import (
    AuthError,
    CdsError,
    FhirServerError,
    FhirServerNotHttps,
    PreconditionFailed,
    RequestError,
    StorageUnavailable,
    TooManyResources,
    UnknownService,
)

log = logging.getLogger(__name__)

# Error class -> HTTP status; the first class the error is an instance of wins.
HTTP_STATUS: tuple[tuple[type[CdsError], int], ...] = (
    (RequestError, 400),  # malformed-json, invalid-request, wrong-hook, patient-mismatch
    (FhirServerNotHttps, 400),
    (FhirServerError, 403),
    (UnknownService, 404),
    (PreconditionFailed, 412),
    (TooManyResources, 413),
    (StorageUnavailable, 503),
)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error=code, message=message), status


def _unauthorized(exc: AuthError) -> Response:
    log.warning("rejected client JWT", extra={"reason": exc.code, "iss": exc.iss, "jti": exc.jti})
    metrics.JWT_REJECTIONS.labels(exc.code).inc()
    response = Response(status=401)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    """Werkzeug's own errors (404 route, 405, 413 body), with their headers (e.g. `Allow` on 405)."""
    code = (exc.name or "error").lower().replace(" ", "-")
    response, status = error_response(exc.code or 500, code, exc.description or exc.name)
    response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
    return response, status


def _handle(exc: Exception) -> Response | tuple[Response, int]:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, AuthError):
        return _unauthorized(exc)
    if isinstance(exc, CdsError):
        status = next((status for kind, status in HTTP_STATUS if isinstance(exc, kind)), None)
        if status is not None:
            log.info("request refused", extra={"status": status, "error": exc.code})
            return error_response(status, exc.code, exc.message)
    log.exception("internal error")
    return error_response(500, "internal-error", "the service failed; the error was logged")


def init_errors(app: Flask) -> None:
    """Register the single handler that turns every exception into an HTTP answer."""
    app.register_error_handler(Exception, _handle)
