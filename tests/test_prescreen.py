"""`cds-trials prescreen` with the local engine: every patient of an export gets the hook's trials and
verdicts, whatever is wrong with some of its lines, types or patients."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from bench.population import write_export
from cds_service.cli import main
from cds_service.config import DEFAULT_EXAMPLES_DIR
from cds_service.errors import ExportError
from cds_service.prescreen import screen
from tests.prescreen_support import TODAY, by_patient, charts, hook_rows, run, worklist

# examples/bulk, as the README says to write it: python -m bench.population --patients 32 --seed 16 ...
EXAMPLE = {"n": 32, "seed": 16, "mrcc_share": 0.6, "per_file": 500}
GALLERY_CHARTS = len(yaml.safe_load((DEFAULT_EXAMPLES_DIR / "patients" / "manifest.yaml").read_text("utf-8")))
GALLERY = {"n": GALLERY_CHARTS, "mrcc_share": 1.0, "max_shift": 0}  # each gallery chart once, as dated
GALLERY_LACKS: list[str] = []  # the gallery's export has a file of every type the rules read
POPULATION = {"n": 60, "seed": 3}


@pytest.fixture(scope="module")
def gallery_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gallery") / "export"
    write_export(folder, per_file=400, **GALLERY)
    return folder


@pytest.fixture(scope="module")
def population_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("population") / "export"
    write_export(folder, per_file=1000, **POPULATION)
    return folder


@pytest.fixture
def export_copy(tmp_path: Path) -> Callable[[Path], Path]:
    """A copy of an export to damage."""
    return lambda export: Path(shutil.copytree(export, tmp_path / "damaged"))


def test_every_gallery_patient_gets_the_hooks_trials_and_verdicts(
    gallery_export: Path, tmp_path: Path, client: FlaskClient
) -> None:
    summary = run(gallery_export, tmp_path)

    expected = [row for chart in charts(**GALLERY) for row in hook_rows(client, chart, GALLERY_LACKS)]
    assert sorted(worklist(tmp_path)) == sorted(expected)
    assert summary["resource_types"]["unavailable"] == GALLERY_LACKS
    assert {row[2] for row in expected} == {"likely-eligible", "possibly-eligible"}
    assert summary["patients"] == {
        "screened": GALLERY_CHARTS,
        "with_a_card": len(by_patient(expected)),
        "failed": 0,
        "without_patient_resource": 0,
    }


def test_a_generated_population_gets_the_hooks_trials_and_verdicts(
    population_export: Path, tmp_path: Path, client: FlaskClient
) -> None:
    summary = run(population_export, tmp_path)

    rows = worklist(tmp_path)
    expected = [row for chart in charts(**POPULATION) for row in hook_rows(client, chart)]
    assert sorted(rows) == sorted(expected)
    assert [row[2] for row in rows] == sorted(
        (row[2] for row in rows), key=["likely-eligible", "possibly-eligible"].index
    )
    assert summary["patients"]["screened"] == POPULATION["n"]
    assert summary["resource_types"]["not_read"] == [
        "AllergyIntolerance",
        "DocumentReference",
        "Encounter",
        "Immunization",
    ]
    assert summary["resources"]["not_read"] == 0  # whole files of those types are never read


def _insert_lines(path: Path, at: dict[int, str]) -> None:
    """Insert lines so that each ends up at the given line number (from 1)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for number in sorted(at):
        lines.insert(number - 1, at[number] + "\n")
    path.write_text("".join(lines), encoding="utf-8")


def test_malformed_lines_are_counted_and_located_and_the_rest_is_screened(
    population_export: Path, export_copy: Callable[[Path], Path], tmp_path: Path
) -> None:
    clean = run(population_export, tmp_path / "clean")
    damaged = export_copy(population_export)
    _insert_lines(
        damaged / "Observation.2.ndjson", {3: '{"resourceType": "Observation", "id": ', 40: "[1, 2]"}
    )
    _insert_lines(damaged / "Condition.ndjson", {1: '{"id": "no-type"}', 5: "", 9: "\x00garbage"})

    summary = run(damaged, tmp_path / "damaged-out")

    listed = [(bad["file"], bad["line"]) for bad in summary["malformed_lines"]["listed"]]
    assert listed == [
        ("Condition.ndjson", 1),
        ("Condition.ndjson", 9),
        ("Observation.2.ndjson", 3),
        ("Observation.2.ndjson", 40),
    ]
    assert summary["malformed_lines"]["count"] == 4  # the blank line is no resource, and no error
    assert "not JSON" in summary["malformed_lines"]["listed"][2]["reason"]
    assert worklist(tmp_path / "damaged-out") == worklist(tmp_path / "clean")
    assert summary["patients"] == clean["patients"]


def test_a_missing_resource_type_is_unavailable_never_absent(
    gallery_export: Path, export_copy: Callable[[Path], Path], tmp_path: Path, client: FlaskClient
) -> None:
    damaged = export_copy(gallery_export)
    (damaged / "Procedure.ndjson").unlink()
    (damaged / "manifest.json").unlink()  # the files are then found by their names

    summary = run(damaged, tmp_path)

    lacks = [*GALLERY_LACKS, "Procedure"]
    expected = [row for chart in charts(**GALLERY) for row in hook_rows(client, chart, lacks)]
    assert sorted(worklist(tmp_path)) == sorted(expected)
    assert summary["resource_types"]["unavailable"] == lacks
    complete = [row for chart in charts(**GALLERY) for row in hook_rows(client, chart, GALLERY_LACKS)]
    assert set(expected) != set(complete)  # procedures decide some criteria: without them, they are to check


def test_a_failing_patient_is_reported_and_the_others_are_screened(
    gallery_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(gallery_export, tmp_path / "clean")
    clean = worklist(tmp_path / "clean")
    victim = clean[0][0]
    real = screen.evaluate

    def evaluate(engine: Any, resources: Any, patient_id: str, *args: Any, **kwargs: Any) -> Any:
        if patient_id == victim:
            raise RuntimeError("a chart the engine cannot read")
        return real(engine, resources, patient_id, *args, **kwargs)

    monkeypatch.setattr(screen, "evaluate", evaluate)  # the forked workers inherit it
    summary = run(gallery_export, tmp_path / "out")

    assert summary["failed_patients"] == [
        {
            "patient_id": victim,
            "error": f"RuntimeError in test_prescreen.py:{_line_of('raise RuntimeError')} (evaluate)",
        }
    ]
    assert summary["patients"]["screened"] == GALLERY_CHARTS and summary["patients"]["failed"] == 1
    assert worklist(tmp_path / "out") == [row for row in clean if row[0] != victim]


def _line_of(text: str) -> int:
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line and "_line_of" not in line)


def test_resources_of_a_patient_the_export_lacks_are_not_screened(
    gallery_export: Path, export_copy: Callable[[Path], Path], tmp_path: Path
) -> None:
    damaged = export_copy(gallery_export)
    patients = (damaged / "Patient.ndjson").read_text(encoding="utf-8").splitlines(keepends=True)
    dropped = json.loads(patients[0])["id"]
    (damaged / "Patient.ndjson").write_text("".join(patients[1:]), encoding="utf-8")

    summary = run(damaged, tmp_path)

    assert summary["patients"]["screened"] == GALLERY_CHARTS - 1
    assert summary["patients"]["without_patient_resource"] == 1
    assert dropped not in {row[0] for row in worklist(tmp_path)}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "Patient.ndjson").unlink(), "no Patient file"),
        (lambda folder: (folder / "Condition.ndjson").unlink(), "no Condition file"),
        (lambda folder: (folder / "manifest.json").write_text("{}"), "not a Bulk Data manifest"),
    ],
)
def test_an_export_that_cannot_be_screened_is_refused_with_the_reason(
    gallery_export: Path,
    export_copy: Callable[[Path], Path],
    tmp_path: Path,
    damage: Callable[[Path], object],
    message: str,
) -> None:
    damaged = export_copy(gallery_export)
    damage(damaged)
    if "manifest" not in message:
        (damaged / "manifest.json").unlink()

    with pytest.raises(ExportError, match=message):
        run(damaged, tmp_path / "out")


def test_the_command_writes_the_three_files(
    population_export: Path, tmp_path: Path, clean_cds_env: None
) -> None:
    out = tmp_path / "screen"
    result = CliRunner().invoke(
        main, ["prescreen", str(population_export), "--out", str(out), "--today", TODAY.isoformat()]
    )

    assert result.exit_code == 0, result.output
    assert f"{POPULATION['n']} patients screened" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "summary.json", "worklist.csv"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["today"] == TODAY.isoformat() and summary["engine"] == "local"
    assert summary["worklist"]["rows"] == len(worklist(out)) > 0


def test_the_command_says_why_an_export_cannot_be_screened(tmp_path: Path, clean_cds_env: None) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["prescreen", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])

    assert result.exit_code == 1
    assert "no .ndjson file" in result.output


def test_the_shipped_example_export_is_what_the_generator_writes(tmp_path: Path) -> None:
    write_export(tmp_path / "bulk", **EXAMPLE)

    def files(folder: Path) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in folder.iterdir()}

    assert files(tmp_path / "bulk") == files(DEFAULT_EXAMPLES_DIR / "bulk")  # else: regenerate examples/bulk
