"""CORS for browser-based CDS clients (the CDS Hooks sandbox): open origin, preflights answered without auth.

Register `init_cors` before authentication, so that a preflight never reaches the JWT check.
"""

from __future__ import annotations

from flask import Flask, Response, request

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    # Listed by name: a wildcard does not cover Authorization.
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def _answer_preflight() -> Response | None:
    if request.method == "OPTIONS":
        return Response(status=204)
    return None


def _add_cors_headers(response: Response) -> Response:
    response.headers.update(CORS_HEADERS)
    return response


def init_cors(app: Flask) -> None:
    """Answer every OPTIONS request with 204 and put the CORS headers on every response."""
    app.before_request(_answer_preflight)
    app.after_request(_add_cors_headers)
