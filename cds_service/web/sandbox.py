"""The sandbox page (GET /sandbox), its example-patient gallery (examples/patients/manifest.yaml) and its
draft orders for order-select and order-sign (examples/orders/manifest.yaml).

The page itself is static (web/static/sandbox.html and its JS modules); it calls discovery, the service and
feedback like any CDS client. Only files named in a manifest are served, so no path reaches outside it.
GET /sandbox/settings tells the page the service's "today" (the page moves a chart's dates to evaluate it as
of another day: the service's date is never taken from a request) and the wording of outcomes and verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, jsonify, send_from_directory

from cds_service.cards import load_card_texts
from cds_service.errors import GalleryError
from cds_service.web.hooks import STATE_KEY

bp = Blueprint("sandbox", __name__)

MANIFEST = "manifest.yaml"
PATIENTS, ORDERS = "patients", "orders"  # the folders of examples/ the page serves, each with its manifest
# Scripts and styles from this service only; card Markdown is sanitized in the page, this is a second fence.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _examples_dir(folder: str) -> Path:
    return Path(current_app.extensions[STATE_KEY].settings.examples_dir) / folder


def _manifest(folder: str = PATIENTS) -> list[dict[str, Any]]:
    """Return the entries of an examples folder's manifest that name a file: {file, title, description,
    expected}."""
    path = _examples_dir(folder) / MANIFEST
    if not path.is_file():
        return []
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise GalleryError(f"{MANIFEST}: invalid YAML: {exc}") from None
    if not isinstance(entries, list):
        raise GalleryError(f"{MANIFEST}: expected a list of entries")
    return [
        {
            key: entry.get(key)
            for key in ("file", "title", "description", "expected")
            if entry.get(key) is not None
        }
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("file"), str)
    ]


@bp.get("/sandbox")
def page() -> Response:
    response = send_from_directory(current_app.static_folder, "sandbox.html", max_age=0)
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response


@bp.get("/sandbox/settings")
def settings() -> Response:
    service_settings = current_app.extensions[STATE_KEY].settings
    texts = load_card_texts(service_settings.cards_dir)
    return jsonify(
        today=service_settings.current_date().isoformat(),
        outcomeLabels=texts["outcome_labels"],
        verdictLabels=texts["verdict_labels"],
    )


@bp.get("/sandbox/patients")
def patients() -> Response:
    return jsonify(_manifest())


@bp.get("/sandbox/patients/<path:file>")
def patient(file: str) -> Response:
    return _listed_file(PATIENTS, file, "unknown-patient", "example patient")


@bp.get("/sandbox/orders")
def orders() -> Response:
    return jsonify(_manifest(ORDERS))


@bp.get("/sandbox/orders/<path:file>")
def order(file: str) -> Response:
    return _listed_file(ORDERS, file, "unknown-order", "draft order")


def _listed_file(folder: str, file: str, error: str, what: str) -> Response:
    """A file the folder's manifest names, as FHIR JSON; 404 for any other."""
    if file not in {entry["file"] for entry in _manifest(folder)}:
        return jsonify(
            error=error, message=f"no {what} with this file name; GET /sandbox/{folder} lists them"
        ), 404
    # send_from_directory also refuses any path that leaves the folder
    return send_from_directory(_examples_dir(folder), file, mimetype="application/fhir+json", max_age=0)
