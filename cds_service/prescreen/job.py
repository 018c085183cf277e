"""One screening, whatever the engine: open the export, screen every patient, write the outputs."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from cds_service.catalog import Catalog
from cds_service.config import Settings
from cds_service.errors import ExportError
from cds_service.prescreen.export import open_export
from cds_service.prescreen.local import run_local
from cds_service.prescreen.outputs import RunInfo, write_outputs
from cds_service.prescreen.progress import progress_bar
from cds_service.prescreen.results import Screening
from cds_service.prescreen.screen import ScreenSpec

ENGINES = ("local", "spark")
# Without these no trial can be considered: a patient-view call without them is refused (412).
REQUIRED_TYPES = ("Patient", "Condition")


def prescreen(
    export_dir: Path,
    out_dir: Path,
    engine: str,
    catalog: Catalog,
    settings: Settings,
    today: date,
    console: Console,
) -> dict[str, Any]:
    """Screen every patient of the export in `export_dir`; write worklist.csv, summary.json and report.html.

    Returns the summary. Raises ExportError when the folder is not an export that can be screened.
    """
    export = open_export(export_dir)
    missing = [t for t in REQUIRED_TYPES if t not in export.types]
    if missing:
        raise ExportError(
            f"{export_dir}: no {' or '.join(missing)} file: no trial can be considered without it"
        )
    spec = ScreenSpec.of(catalog, settings, today, export.types)
    screening = Screening(export, export.chunks(spec.types))
    out_dir.mkdir(parents=True, exist_ok=True)
    started, clock = datetime.now(UTC), time.perf_counter()
    with progress_bar(console, sum(c.end - c.start for c in screening.chunks)) as progress:
        if engine == "spark":
            from cds_service.prescreen.spark import run_spark  # pyspark is an optional extra

            run_spark(screening, spec, progress)
        else:
            with tempfile.TemporaryDirectory(prefix=".spill-", dir=out_dir) as spill:
                run_local(screening, spec, Path(spill), progress)
    run = RunInfo(export_dir, engine, started, time.perf_counter() - clock)
    return write_outputs(out_dir, screening, spec, catalog, run)
