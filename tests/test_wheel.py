"""The wheel carries the catalog and the card texts: installed elsewhere, it lists the trials and answers a
hook from any directory, without the repository (as on a cluster executor that only has the wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUEST = REPO / "examples" / "requests" / "patient-view-fit-sbrt.json"
ANSWER_A_HOOK = """
import json, sys, cds_service
from cds_service.web import create_app
app = create_app({"SANDBOX": True, "TODAY": "2026-11-21", "INSTANCE_PATH": sys.argv[2]})
response = app.test_client().post("/cds-services/mrcc-trials", data=open(sys.argv[1], "rb").read(),
                                  content_type="application/json")
cards = response.get_json()["cards"]
trials = [card["extension"]["org.trialmatch.eligibility"]["nctId"] for card in cards]
print(json.dumps({"module": cds_service.__file__, "status": response.status_code, "trials": trials}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel, installed in a folder without its dependencies (this venv has them)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in the repository would leave build/ and egg-info there
    for name in ("cds_service", "mappings", "cards"):
        shutil.copytree(
            REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        "dist",
        ".",
    ]
    subprocess.run(build, cwd=source, check=True, timeout=300)
    (wheel,) = (source / "dist").glob("cds_trials-*.whl")
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    return target


def run(installed: Path, cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {"PYTHONPATH": str(installed)}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_the_installed_wheel_lists_the_bundled_trials_from_another_directory(installed: Path, tmp_path: Path):
    listed = run(installed, tmp_path, "-c", "from cds_service.cli import main; main()", "trials")
    for nct in ("NCT06903312", "NCT06882486", "NCT04299646"):
        assert nct in listed


def test_the_installed_wheel_answers_a_hook_with_its_own_catalog_and_card_texts(
    installed: Path, tmp_path: Path
):
    answer = json.loads(
        run(installed, tmp_path, "-c", ANSWER_A_HOOK, str(REQUEST), str(tmp_path / "instance"))
    )
    assert Path(answer["module"]).is_relative_to(installed)  # not the repository's copy
    assert answer["status"] == 200
    assert answer["trials"] == ["NCT04299646"]
