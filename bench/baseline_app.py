"""The baseline: a Flask app on the same stack whose hook endpoint only parses the JSON body.

It answers `POST /cds-services/<id>` with `{"cards": []}` after `request.get_json()`, and `GET /healthz`, so
that the benchmark can tell what the service itself costs on top of Flask, gunicorn and JSON parsing.
Run it as `gunicorn -c gunicorn.conf.py bench.baseline_app:app`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request


def create_app() -> Flask:
    """Build the JSON-only baseline app."""
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400)
        return {"cards": []}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
