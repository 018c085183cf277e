"""The files a screening writes into OUT_DIR: worklist.csv, summary.json and report.html.

`worklist.csv` has one row per patient and trial that would get a card (contract: `patient_id,nct_id,verdict,
arm,to_check`, `to_check` the ids of the unknown criteria joined by `;`), likely-eligible first. The summary
holds the counts, per trial too, and what could not be read; the report shows the same for a coordinator.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from cds_service.catalog import Catalog
from cds_service.prescreen.report import render_report
from cds_service.prescreen.results import Screening
from cds_service.prescreen.screen import ScreenSpec
from cds_service.verdicts import RECRUITING_STATUSES, Verdict

WORKLIST_HEADER = ("patient_id", "nct_id", "verdict", "arm", "to_check")
LISTED = 100  # malformed lines and failed patients listed in the summary (all are counted)


@dataclass(frozen=True)
class RunInfo:
    export: Path
    engine: str
    started: datetime
    seconds: float


def summary(screening: Screening, spec: ScreenSpec, catalog: Catalog, run: RunInfo) -> dict[str, Any]:
    """Everything summary.json holds (and the report shows), as plain JSON data."""
    rows = screening.rows
    counts = screening.counts()
    trials = {}
    for trial in catalog.trials:
        nct_id = trial.info.nct_id or trial.info.key
        of_trial = [r for r in rows if r.nct_id == nct_id]
        verdicts = Counter(r.verdict for r in of_trial)
        trials[nct_id] = {
            "title": trial.info.short_title,
            "status": trial.info.status,
            "recruiting": trial.info.status in RECRUITING_STATUSES,
            Verdict.LIKELY.value: verdicts[Verdict.LIKELY.value],
            Verdict.POSSIBLY.value: verdicts[Verdict.POSSIBLY.value],
            "to_check": dict(Counter(c for r in of_trial for c in r.to_check).most_common()),
        }
    bad_lines = screening.bad_lines()
    return {
        "export": str(run.export),
        "engine": run.engine,
        "today": spec.today.isoformat(),
        "catalog_version": spec.catalog_version,
        "started": run.started.isoformat(timespec="seconds"),
        "duration_seconds": round(run.seconds, 3),
        "patients": {
            "screened": screening.screened,
            "with_a_card": len({r.patient_id for r in rows}),
            "failed": len(screening.failed),
            "without_patient_resource": screening.without_patient,
        },
        "worklist": {
            "rows": len(rows),
            **{v: sum(r.verdict == v for r in rows) for v in (Verdict.LIKELY.value, Verdict.POSSIBLY.value)},
        },
        "trials": trials,
        "resource_types": {
            "read": sorted(spec.types & screening.export.types),
            "unavailable": sorted(spec.unavailable),
            "not_read": sorted(screening.export.types - spec.types),
        },
        "resources": {
            "lines": counts["lines"],
            "grouped": counts["grouped"],
            "medications": counts["medications"],
            "not_read": counts["not_read"],
            "unattributed": counts["unattributed"],
        },
        "malformed_lines": {
            "count": counts["malformed"],
            "listed": [{"file": b.file, "line": b.line, "reason": b.reason} for b in bad_lines[:LISTED]],
        },
        "failed_patients": [{"patient_id": p, "error": e} for p, e in sorted(screening.failed)[:LISTED]],
    }


def write_outputs(
    out_dir: Path, screening: Screening, spec: ScreenSpec, catalog: Catalog, run: RunInfo
) -> dict[str, Any]:
    """Write the three files; return the summary."""
    worklist = screening.worklist()
    with (out_dir / "worklist.csv").open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(WORKLIST_HEADER)
        writer.writerows((r.patient_id, r.nct_id, r.verdict, r.arm, ";".join(r.to_check)) for r in worklist)
    found = summary(screening, spec, catalog, run)
    (out_dir / "summary.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    report = render_report(found, worklist, _criteria_texts(catalog))
    (out_dir / "report.html").write_text(report, encoding="utf-8")
    return found


def _criteria_texts(catalog: Catalog) -> dict[str, dict[str, tuple[str, str]]]:
    """NCT number -> criterion id -> (its heading or "", its verbatim text)."""
    return {
        trial.info.nct_id or trial.info.key: {c.id: (c.heading or "", c.text) for c in trial.criteria}
        for trial in catalog.trials
    }


def print_summary(console: Console, found: Mapping[str, Any], out_dir: Path) -> None:
    """What the command prints once the files are written: the counts, and what could not be used."""
    patients, worklist = found["patients"], found["worklist"]
    console.print(
        f"{patients['screened']} patients screened in {found['duration_seconds']:.1f} s: "
        f"{worklist['likely-eligible']} likely and {worklist['possibly-eligible']} possibly eligible rows "
        f"for {patients['with_a_card']} patients"
    )
    for note, count in (
        ("malformed line(s) skipped", found["malformed_lines"]["count"]),
        ("patient(s) failed", patients["failed"]),
        ("patient id(s) without a Patient resource", patients["without_patient_resource"]),
    ):
        if count:
            console.print(Text(f"{count} {note} (see summary.json)", style="yellow"))
    if found["resource_types"]["unavailable"]:
        missing = ", ".join(found["resource_types"]["unavailable"])
        console.print(Text(f"not in the export, so to check: {missing}", style="yellow"))
    console.print(f"wrote {out_dir / 'worklist.csv'}, summary.json and report.html")
