"""`cds-trials prescreen --engine spark` on a real Spark (local[2], one session for the whole test run): the
same worklist as the hook and as the local engine, the same malformed lines and unavailable types.

Java comes from `tests/spark/ensure-java.sh` (make test runs it): without it, or without pyspark, these fail.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from pyspark.sql import SparkSession

from bench.population import gallery, write_export
from tests.prescreen_support import charts, hook_rows, run, worklist

# every gallery chart at least once (clones take them in turn), and noise
POPULATION = {"n": 45, "seed": 5, "mrcc_share": 0.6}
VARIABLE = ("engine", "started", "duration_seconds")  # what may differ between two runs of one export


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One Spark session for every test that needs it: the engine's `session()` finds it running."""
    assert shutil.which("java"), "java is missing: run tests/spark/ensure-java.sh"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("cds-trials tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines would outlive the test's log stream
    yield session
    session.stop()


@pytest.fixture(scope="module")
def population_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spark-population") / "export"
    write_export(folder, per_file=700, **POPULATION)
    return folder


def _same_run(spark_summary: dict[str, object], local_summary: dict[str, object]) -> None:
    assert spark_summary["engine"] == "spark"
    assert {k: v for k, v in spark_summary.items() if k not in VARIABLE} == {
        k: v for k, v in local_summary.items() if k not in VARIABLE
    }


def test_spark_gives_every_patient_the_hooks_trials_and_the_local_engines_worklist(
    spark: SparkSession, population_export: Path, tmp_path: Path, client: FlaskClient
) -> None:
    found = run(population_export, tmp_path / "spark", engine="spark")
    local = run(population_export, tmp_path / "local")

    population = charts(**POPULATION)
    assert {chart[0]["id"].rsplit("-c", 1)[0] for chart in population} >= {
        chart[0]["id"] for chart in gallery()
    }
    expected = [row for chart in population for row in hook_rows(client, chart)]
    assert sorted(worklist(tmp_path / "spark")) == sorted(expected)
    spark_csv = (tmp_path / "spark" / "worklist.csv").read_bytes()
    assert spark_csv == (tmp_path / "local" / "worklist.csv").read_bytes()
    _same_run(found, local)
    assert found["patients"]["screened"] == POPULATION["n"]


def test_spark_reports_malformed_lines_and_missing_types_as_the_local_engine_does(
    spark: SparkSession, population_export: Path, tmp_path: Path
) -> None:
    damaged = Path(shutil.copytree(population_export, tmp_path / "damaged"))
    observations = damaged / "Observation.2.ndjson"
    lines = observations.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[6:6] = ["{oops\n"]
    observations.write_text("".join(lines) + '{"resourceType": 7}\n', encoding="utf-8")
    (damaged / "Procedure.ndjson").unlink()
    manifest = json.loads((damaged / "manifest.json").read_text(encoding="utf-8"))
    manifest["output"] = [entry for entry in manifest["output"] if entry["type"] != "Procedure"]
    (damaged / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    found = run(damaged, tmp_path / "spark", engine="spark")
    local = run(damaged, tmp_path / "local")

    listed = [(bad["file"], bad["line"]) for bad in found["malformed_lines"]["listed"]]
    assert listed == [("Observation.2.ndjson", 7), ("Observation.2.ndjson", len(lines) + 1)]
    assert found["resource_types"]["unavailable"] == ["Procedure"]
    _same_run(found, local)
    assert worklist(tmp_path / "spark") == worklist(tmp_path / "local")
