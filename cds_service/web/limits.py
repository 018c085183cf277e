"""Body size limit for bodies sent without Content-Length (chunked).

Flask refuses a declared Content-Length over MAX_CONTENT_LENGTH with 413 by itself. A chunked body is
different: Werkzeug stops reading it at the limit and returns what it read, cut, without an error. Reading
one byte more tells a complete body from a cut one.
"""

from __future__ import annotations

from flask import Flask, request


def _refuse_cut_body() -> None:
    if request.content_length is None and request.method in ("POST", "PUT", "PATCH"):
        request.get_data()  # read up to the limit and cached for the view
        request.stream.read(1)  # raises RequestEntityTooLarge (413) when the limit was reached


def init_limits(app: Flask) -> None:
    """Register after authentication, so that no body is read for a caller who is not let in."""
    app.before_request(_refuse_cut_body)
