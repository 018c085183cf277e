"""The one function both engines run for each patient: its export lines -> the trials it would get a card for.

`screen_patient` parses the patient's lines (they come in export order, its Medications after them), keeps
each resource once by type and id as the hook's prefetch reading does, and evaluates the catalog through
`pipeline.evaluate` as patient-view does (`cards_only=True`): a patient gets the trials and verdicts of a
patient-view call with the same resources. A patient whose evaluation raises is reported by the exception's
type and place (never its message, which may quote the chart); the others go on.

A `ScreenSpec` is what a worker needs to screen exactly as the driver would: the catalog and card texts as
bytes (a Spark executor need not have the driver's folders, nor the same version of them), the settings,
today and the resource types the export lacks. Each process builds its `Screener` from it once.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import tempfile
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

from cds_service.catalog import Catalog, load_catalog
from cds_service.config import Settings
from cds_service.engine.evaluate import Engine
from cds_service.patient_data import unique_resources
from cds_service.pipeline import Matcher, evaluate
from cds_service.verdicts import Outcome


class TrialRow(NamedTuple):
    """One worklist row: a patient and a trial it would get a card for."""

    patient_id: str
    nct_id: str
    verdict: str
    arm: str  # "" when the trial assigns none
    to_check: tuple[str, ...]  # ids of the criteria still unknown


class PatientOutcome(NamedTuple):
    patient_id: str
    rows: tuple[TrialRow, ...]
    found: bool  # the export holds the Patient resource (without it the patient is not screened)
    error: str | None = None  # where its evaluation failed


@dataclass(frozen=True)
class ScreenSpec:
    """Everything a worker process needs to screen as the driver would (plain, picklable data)."""

    settings: Settings
    today: date
    # the resource types the rules read (the engine's read plan): the export's others are never read
    types: frozenset[str]
    unavailable: frozenset[str]  # types read that the export does not hold: their absence proves nothing
    catalog_version: str
    files: Mapping[str, bytes]  # "mappings/<path>" and "cards/<path>" -> bytes

    @classmethod
    def of(cls, catalog: Catalog, settings: Settings, today: date, exported: frozenset[str]) -> ScreenSpec:
        """The spec of screening an export that holds the types `exported` with this catalog and settings.

        The engine compiled here to learn what the rules read stays this process's Screener for the spec."""
        engine = Matcher(catalog, settings).engine
        types = engine.read_plan.resource_types
        folders = {"mappings": catalog.directory, "cards": settings.cards_dir}
        files = {
            f"{name}/{path.relative_to(folder).as_posix()}": path.read_bytes()
            for name, folder in folders.items()
            for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts
        }
        spec = cls(settings, today, types, types - exported, catalog.version, files)
        _SCREENERS[spec.key] = Screener(engine, today, spec.unavailable)
        return spec

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.catalog_version, self.settings, self.today, self.unavailable)


@dataclass(frozen=True)
class Screener:
    engine: Engine
    today: date
    unavailable: frozenset[str]

    @classmethod
    def of(cls, spec: ScreenSpec) -> Screener:
        """Rebuild the catalog from the spec's files (checked: the same version) and compile it."""
        with tempfile.TemporaryDirectory(prefix="cds-prescreen-") as folder:
            root = Path(folder)
            for name, content in spec.files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(content)
            catalog = load_catalog(root / "mappings")
            settings = dataclasses.replace(
                spec.settings, mappings_dir=root / "mappings", cards_dir=root / "cards"
            )
            engine = Matcher(catalog, settings).engine
        if catalog.version != spec.catalog_version:
            raise RuntimeError(f"catalog {catalog.version} rebuilt, {spec.catalog_version} expected")
        return cls(engine, spec.today, spec.unavailable)


_SCREENERS: dict[tuple[Any, ...], Screener] = {}
FULL_COLLECTION_EVERY = 100  # patients; the young generations are collected after every patient
_screened = itertools.count(1)


def worker_screener(spec: ScreenSpec) -> Screener:
    """The Screener of a worker process, which then collects garbage as gunicorn's workers do (serving.py).

    What is alive now (catalog, compiled rules, FHIR model classes) is frozen out of the collector's walks,
    automatic collection is turned off, and `screen_patient` collects the young generations after each
    patient: a patient allocates hundreds of thousands of objects that would set off many collections."""
    found = screener(spec)
    if gc.isenabled():
        gc.collect()
        gc.freeze()
        gc.disable()
    return found


def screener(spec: ScreenSpec) -> Screener:
    """This process's Screener for `spec`, built on first use (a Spark Python worker keeps it)."""
    found = _SCREENERS.get(spec.key)
    if found is None:
        found = _SCREENERS[spec.key] = Screener.of(spec)
    return found


def screen_patient(screener: Screener, patient_id: str, lines: Iterable[bytes]) -> PatientOutcome:
    """The worklist rows of one patient: every trial of the catalog a patient-view call would give a card."""
    try:
        resources = list(unique_resources([[json.loads(line) for line in lines]]))
        if not any(r["resourceType"] == "Patient" and r.get("id") == patient_id for r in resources):
            return PatientOutcome(patient_id, (), found=False)
        evaluation = evaluate(
            screener.engine, resources, patient_id, screener.today, screener.unavailable, cards_only=True
        )
    except Exception as exc:  # one patient's failure must not stop the screening
        return PatientOutcome(patient_id, (), found=True, error=_where(exc))
    finally:
        if not gc.isenabled():
            gc.collect(2 if next(_screened) % FULL_COLLECTION_EVERY == 0 else 1)
    rows = tuple(
        TrialRow(
            patient_id,
            result.trial.nct_id or result.trial.key,
            result.verdict.value,
            result.arm or "",
            tuple(c.id for c in result.criteria if c.outcome is Outcome.UNKNOWN),
        )
        for result in evaluation.results
        if result.gets_card
    )
    return PatientOutcome(patient_id, rows, found=True)


def _where(exc: BaseException) -> str:
    """The exception's type and the innermost place it was raised, e.g. "KeyError in facts.py:120 (build)"."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    frame = frames[-1]
    return f"{type(exc).__name__} in {Path(frame.filename).name}:{frame.lineno} ({frame.name})"
