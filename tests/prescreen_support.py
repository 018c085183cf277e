"""Helpers of the pre-screening tests: generated exports, their patients, the hook's answer for each."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from rich.console import Console

from bench.population import population
from cds_service.bundle_file import hook_request_for
from cds_service.catalog import load_catalog
from cds_service.config import load_settings
from cds_service.prescreen.job import prescreen

TODAY = date(2026, 11, 21)
SERVICE = "mrcc-trials"
ELIGIBILITY = "org.trialmatch.eligibility"
Row = tuple[str, str, str, str, str]  # a worklist.csv row


def run(export: Path, out: Path, engine: str = "local") -> dict[str, Any]:
    """`prescreen` as the command runs it (bundled catalog, no CDS_* variable), quietly; the summary."""
    settings = load_settings({}, environ={})
    catalog = load_catalog(settings.mappings_dir)
    return prescreen(export, out, engine, catalog, settings, TODAY, Console(file=io.StringIO()))


def worklist(out: Path) -> list[Row]:
    with (out / "worklist.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["patient_id", "nct_id", "verdict", "arm", "to_check"]
    return [tuple(row) for row in rows[1:]]  # type: ignore[misc]


def charts(n: int, **options: Any) -> list[list[dict[str, Any]]]:
    """Each patient's resources, with the Medications it references, as `write_export` has them."""
    return list(population(n, **options))


def hook_rows(
    client: FlaskClient, resources: Sequence[dict[str, Any]], missing: Iterable[str] = ()
) -> list[Row]:
    """The worklist rows of the cards patient-view gives for these resources, the prefetch keys of the types
    `missing` (those an export lacks) left out: the service cannot read them either (no fhirServer)."""
    services = json.loads(client.get("/cds-services").data)["services"]
    (service,) = [s for s in services if s["id"] == SERVICE]
    request = hook_request_for("patient-view", service["prefetch"], list(resources), str(uuid.uuid4()))
    types = {key: re.split(r"[/?]", template, maxsplit=1)[0] for key, template in service["prefetch"].items()}
    prefetch = {k: v for k, v in request.prefetch.items() if types[k] not in set(missing)}
    body = {"hook": request.hook, "hookInstance": request.hook_instance, "context": request.context}
    response = client.post(f"/cds-services/{SERVICE}", json={**body, "prefetch": prefetch})
    assert response.status_code == 200, response.data
    return [
        _row(request.context["patientId"], card["extension"][ELIGIBILITY]) for card in response.json["cards"]
    ]


def _row(patient_id: str, result: dict[str, Any]) -> Row:
    to_check = ";".join(c["id"] for c in result["criteria"] if c["outcome"] == "unknown")
    return (patient_id, result["nctId"], result["verdict"], result.get("arm", ""), to_check)


def by_patient(rows: Iterable[Row]) -> dict[str, set[Row]]:
    found: dict[str, set[Row]] = {}
    for row in rows:
        found.setdefault(row[0], set()).add(row)
    return found
