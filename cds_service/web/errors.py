"""Errors as JSON `{"error": "<short code>", "message": "<what was wrong>"}`, mapped to HTTP in one place."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from cds_service.hook_request import RequestError
from cds_service.patient_data import PatientMismatch, PreconditionFailed, TooManyResources

log = logging.getLogger(__name__)


class UnknownService(Exception):
    """No service with this id is listed by discovery."""


# Exception class -> (HTTP status, error code); the first class matching in order wins.
_STATUS: tuple[tuple[type[Exception], int, str | None], ...] = (
    (RequestError, 400, None),  # code from the exception: malformed-json, invalid-request, wrong-hook
    (PatientMismatch, 400, "patient-mismatch"),
    (UnknownService, 404, "unknown-service"),
    (TooManyResources, 413, "too-many-resources"),
    (PreconditionFailed, 412, "precondition-failed"),
)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error=code, message=message), status


def _handle(exc: Exception) -> tuple[Response, int]:
    if isinstance(exc, HTTPException):
        code = (exc.name or "error").lower().replace(" ", "-")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # Keep the exception's own headers, e.g. `Allow` on 405 (RFC 9110).
        response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
        return response, status
    for exc_type, status, fixed_code in _STATUS:
        if isinstance(exc, exc_type):
            error_code = (
                fixed_code if fixed_code is not None else str(getattr(exc, "code", "invalid-request"))
            )
            log.info("request refused", extra={"status": status, "error": error_code})
            return error_response(status, error_code, str(exc))
    log.exception("internal error")
    return error_response(500, "internal-error", "the service failed; the error was logged")


def init_errors(app: Flask) -> None:
    """Register the single handler that turns every exception into a JSON error."""
    app.register_error_handler(Exception, _handle)
