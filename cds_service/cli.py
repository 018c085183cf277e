"""`cds-trials`: evaluate a FHIR file, list and check the catalog, import a registry record, serve, feedback.

Every command reads the same `CDS_*` variables as the service (`load_settings`), so `CDS_MAPPINGS_DIR`,
`CDS_TODAY` and `CDS_DATABASE_URL` point the command line where they point the service.
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cds_service.bundle_file import read_hook_request
from cds_service.cards import load_card_texts, outcome_label
from cds_service.catalog import Catalog, Criterion, ServiceDefinition, load_catalog
from cds_service.config import REPO_ROOT, Settings, load_settings
from cds_service.ctgov_import import study_to_trial, trial_yaml
from cds_service.engine.evaluate import Engine, EvaluationPolicy
from cds_service.errors import (
    BundleFileError,
    CatalogError,
    ConfigError,
    ExportError,
    PreconditionFailed,
    RequestError,
    TooManyResources,
)
from cds_service.feedback_report import print_stats, stats_document
from cds_service.hooks import check_services
from cds_service.verdicts import RECRUITING_STATUSES, CriterionResult, TrialResult

GUNICORN_CONF = REPO_ROOT / "gunicorn.conf.py"
WIDE = 120  # columns from which `evaluate` shows the registry text and evidence in columns of their own
OUTCOME_STYLES = {"met": "green", "not-met": "bold red", "unknown": "yellow", "clinician": "cyan"}
VERDICT_STYLES = {
    "likely-eligible": "bold green",
    "possibly-eligible": "bold yellow",
    "not-eligible": "red",
    "not-considered": "dim",
    "not-recruiting": "dim",
    "patient-deceased": "dim",
}


def seeded_uuids(seed: int) -> Callable[[], str]:
    """Return a factory of reproducible version-4 UUIDs (same seed, same sequence)."""
    rng = random.Random(seed)
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    try:
        return load_settings({k: v for k, v in (overrides or {}).items() if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _catalog(directory: Path) -> Catalog:
    """The catalog folder, checked as the service checks it at start (exit 1 with every problem listed)."""
    return _compiled(directory).catalog


def _compiled(directory: Path, settings: Settings | None = None) -> Engine:
    """The catalog folder loaded and its rules compiled, as at the service's start (exit 1 on a problem)."""
    settings = settings or _settings()
    try:
        catalog = load_catalog(directory)
        check_services(catalog.services)
        return Engine(catalog, EvaluationPolicy(settings.lab_max_age_days, settings.performance_max_age_days))
    except CatalogError as exc:
        _print_problems(exc)
    except ConfigError as exc:  # a rule that cannot be compiled
        Console(stderr=True, highlight=False).print(f"problem in the catalog: {exc}")
    sys.exit(1)


def _print_problems(error: CatalogError) -> None:
    table = Table(title=f"{len(error.problems)} problem(s) in the catalog", title_justify="left")
    for column in ("file", "path", "problem"):
        table.add_column(column, overflow="fold")
    for problem in error.problems:
        table.add_row(problem.file, problem.path or "(top)", problem.message)
    Console(stderr=True, highlight=False).print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Clinical trial suggestions (CDS Hooks patient-view) from FHIR R4 data.

    Reads the same CDS_* environment variables as the service: CDS_MAPPINGS_DIR (trial catalog folder),
    CDS_TODAY (fixed date for reproducible runs), CDS_DATABASE_URL (feedback store), CDS_SANDBOX...
    """


# --- evaluate


def _patient_view_service(catalog: Catalog, service_id: str | None) -> ServiceDefinition:
    services = [s for s in catalog.services if s.hook == "patient-view" and service_id in (None, s.id)]
    if not services:
        known = ", ".join(s.id for s in catalog.services)
        raise click.UsageError(
            f"no patient-view service {service_id or ''} in the catalog (services: {known})"
        )
    return services[0]


def _criteria_table(criteria: tuple[CriterionResult, ...], texts: Mapping[str, Any], wide: bool) -> Table:
    """Every criterion with its outcome as it reads for its type ("Not excluded"), reason and evidence: in
    columns when the console is wide, else the outcome beside id, reason and evidence (no registry text)."""
    table = Table(show_lines=not wide, expand=True)
    if wide:
        table.add_column("criterion", overflow="fold", ratio=4)
        table.add_column("type", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    if wide:
        table.add_column("reason", overflow="fold", ratio=3)
        table.add_column("evidence", overflow="fold", ratio=2)
    else:
        table.add_column("criterion: reason, evidence", overflow="fold", ratio=1)
    for criterion in criteria:
        label = outcome_label(texts, criterion.type, criterion.outcome.value)
        outcome = Text(label, style=OUTCOME_STYLES[criterion.outcome.value])
        evidence = ", ".join(criterion.evidence)
        if wide:
            text = Text(criterion.id, style="bold")
            if criterion.heading:
                text.append(f"\n{criterion.heading}", style="italic")
            text.append(f"\n{criterion.text}")
            table.add_row(text, criterion.type, outcome, criterion.reason, evidence)
            continue
        text = Text(criterion.id, style="bold")
        text.append(f" ({criterion.type})", style="dim")
        text.append(f"\n{criterion.reason}")
        if evidence:
            text.append(f"\n{evidence}", style="dim")
        table.add_row(outcome, text)
    return table


def _print_results(
    console: Console, results: tuple[TrialResult, ...], notes: tuple[str, ...], texts: Mapping[str, Any]
) -> None:
    wide = console.width >= WIDE
    for note in notes:
        console.print(Text(f"note: {note}", style="yellow"))
    for result in results:
        trial = result.trial
        title = Text(f"{trial.nct_id or trial.key}", style="bold")
        title.append(f" {trial.acronym}" if trial.acronym else "")
        title.append(f" - {trial.short_title} ({trial.status})\n")
        title.append("verdict: ")
        title.append(
            texts["verdict_labels"][result.verdict.value], style=VERDICT_STYLES[result.verdict.value]
        )
        if result.arm:
            title.append(f"\narm: {result.arm}")
        console.print()
        console.print(title)
        console.print(_criteria_table(result.criteria, texts, wide))
    cards = [r.trial.nct_id or r.trial.key for r in results if r.gets_card]
    console.print()
    console.print(f"cards: {', '.join(cards)}" if cards else "no card")


@main.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print exactly the hook\'s response: {"cards": [...]}.')
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Evaluate as of this date (else CDS_TODAY, else today).",
)
@click.option("--uuid-seed", type=int, help="Make card and suggestion uuids reproducible from this seed.")
@click.option(
    "--service",
    "service_id",
    help="Service id of the catalog to run (default: the first patient-view service).",
)
def evaluate(bundle: Path, as_json: bool, today: Any, uuid_seed: int | None, service_id: str | None) -> None:
    """Run the patient-view hook on FHIR data or a CDS Hooks request; show each trial's verdict and criteria.

    BUNDLE is a JSON file: a Bundle (collection, searchset, transaction...), a single resource, or a list of
    resources, holding exactly one Patient; its resources fill the service's prefetch by type, as an EHR
    would. Or a CDS Hooks patient-view request (e.g. examples/requests/*.json), read as the service reads it:
    its prefetch, and what it lacks fetched from its fhirServer. Both go through the same pipeline as the
    hook: same data, date and uuids give the same cards. Below 120 columns the criteria are shown without
    their registry text.
    """
    from cds_service.patient_data import gather_patient_data
    from cds_service.pipeline import Matcher

    settings = _settings({"today": today.date() if today else None})
    catalog = _catalog(settings.mappings_dir)
    service = _patient_view_service(catalog, service_id)
    uuid_factory = seeded_uuids(uuid_seed) if uuid_seed is not None else None
    try:
        request = read_hook_request(
            bundle, service.hook, service.prefetch, str(uuid.uuid4()), settings.max_json_depth
        )
        data = gather_patient_data(request, service, settings)
    except RequestError as exc:
        raise click.ClickException(f"{bundle}: not a request this service answers: {exc}") from None
    except (BundleFileError, PreconditionFailed, TooManyResources) as exc:
        raise click.ClickException(str(exc)) from None
    output = Matcher(catalog, settings, uuid_factory).match(
        data.resources, request.patient_id, settings.current_date(), data.notes, data.unavailable
    )
    if as_json:
        click.echo(json.dumps({"cards": output.cards}, indent=2, ensure_ascii=False))
        return
    console = _console()
    console.print(
        f"Patient/{request.patient_id}: {len(data.resources)} resources, today {settings.current_date()}"
    )
    if output.facts.deceased:
        console.print(Text("The patient is recorded as deceased: no trial is offered.", style="bold"))
    _print_results(console, output.results, data.notes, load_card_texts(settings.cards_dir))


# --- prescreen


@main.command()
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write worklist.csv, summary.json and report.html into (created if needed).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: a process per core; spark: a Spark session (pip install 'cds-trials[spark]').",
)
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Screen as of this date (else CDS_TODAY, else today).",
)
def prescreen(export_dir: Path, out_dir: Path, engine: str, today: Any) -> None:
    """Screen every patient of a FHIR Bulk Data export for the trials of the catalog.

    EXPORT_DIR holds NDJSON files named after their resource type (Patient.ndjson, Observation.2.ndjson...)
    and optionally the export's manifest.json. Each patient gets exactly the trials and verdicts that a
    patient-view call with its resources would give; a resource type missing from the export makes the
    criteria that need it "to check". Writes OUT_DIR/worklist.csv, summary.json and report.html.
    """
    from cds_service.prescreen.job import prescreen as run_prescreen
    from cds_service.prescreen.outputs import print_summary

    settings = _settings({"today": today.date() if today else None})
    catalog = _catalog(settings.mappings_dir)
    console = _console()
    try:
        found = run_prescreen(
            export_dir, out_dir, engine, catalog, settings, settings.current_date(), console
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    print_summary(console, found, out_dir)


# --- trials / check-mappings


def _computable(criterion: Criterion) -> bool:
    """True when the criterion's rule has a leaf other than `clinician` (structured data can decide it)."""

    def leaves(rule: Mapping[str, Any]) -> list[str]:
        ((operator, value),) = rule.items()
        if operator in ("all", "any"):
            return [leaf for child in value for leaf in leaves(child)]
        return leaves(value) if operator == "not" else [operator]

    return criterion.rule is not None and any(leaf != "clinician" for leaf in leaves(criterion.rule))


def _counts(criteria: tuple[Criterion, ...], kind: str) -> str:
    of_kind = [c for c in criteria if c.type == kind]
    computable = sum(_computable(c) for c in of_kind)
    return f"{len(of_kind)} ({computable}+{len(of_kind) - computable})"


@main.command()
def trials() -> None:
    """List the trial catalog: NCT number, acronym, status and criteria by kind.

    Criteria counts read "all (computable+clinician)": computable criteria have a rule that structured data
    can decide; the others are left to the clinician.
    """
    settings = _settings()
    catalog = _catalog(settings.mappings_dir)
    table = Table(
        title=f"Trial catalog {catalog.directory} (version {catalog.version})",
        title_justify="left",
        caption="criteria: all (computable+clinician)",
        caption_justify="left",
    )
    table.add_column("NCT", no_wrap=True)
    table.add_column("acronym: short title", ratio=1)
    table.add_column("status", overflow="fold")
    table.add_column("inclusion", no_wrap=True)
    table.add_column("exclusion", no_wrap=True)
    for trial in catalog.trials:
        info = trial.info
        title = Text(f"{info.acronym}: ", style="bold") if info.acronym else Text()
        title.append(info.short_title)
        table.add_row(
            info.nct_id or f"({info.key})",
            title,
            Text(info.status, style="green" if info.status in RECRUITING_STATUSES else "dim"),
            _counts(trial.criteria, "inclusion"),
            _counts(trial.criteria, "exclusion"),
        )
    _console().print(table)


@main.command("check-mappings")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def check_mappings(directory: Path | None) -> None:
    """Validate a catalog folder (default: CDS_MAPPINGS_DIR, else the bundled mappings/).

    Prints the file and the path inside it of every problem, and exits with status 1 when there is any;
    warnings (a value set no rule uses) are printed and leave the status 0.
    """
    directory = directory or _settings().mappings_dir
    engine = _compiled(directory)
    catalog = engine.catalog
    valuesets = len(catalog.terminology.valuesets)
    _console().print(
        Text(
            f"OK: {directory}: {len(catalog.trials)} trials, {len(catalog.services)} services, "
            f"{valuesets} value sets (version {catalog.version})",
            style="green",
        )
    )
    for warning in engine.warnings:
        _console().print(Text(f"warning: {warning}", style="yellow"))


# --- import-ctgov


@main.command("import-ctgov")
@click.argument("study", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write <NCT number>.yaml into (e.g. mappings/trials).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing mapping file.")
def import_ctgov(study: Path, out_dir: Path, force: bool) -> None:
    """Turn a ClinicalTrials.gov API v2 study record (JSON) into a draft trial mapping.

    Metadata and every eligibility criterion are copied verbatim; every rule is left to the clinician for a
    person to encode (mappings/README.md). The draft's anchor is not encoded either, so the trial gets no card
    until someone encodes its disease and stage.
    """
    try:
        record = json.loads(study.read_text(encoding="utf-8"))
        trial = study_to_trial(record, source=f"ClinicalTrials.gov API v2 record {study.name}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # CtgovImportError is a ValueError
        raise click.ClickException(f"{study}: {exc}") from None
    target = out_dir / f"{trial['id']}.yaml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists (use --force to overwrite)")
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(trial_yaml(trial), encoding="utf-8")
    kinds = [c["type"] for c in trial["criteria"]]
    click.echo(
        f"wrote {target}: {kinds.count('inclusion')} inclusion and {kinds.count('exclusion')} exclusion "
        "criteria, all left to the clinician until encoded"
    )


# --- serve / feedback


def _database_url(settings: Settings) -> str:
    """The service's database (see `web.service_database_url`)."""
    from cds_service.web import service_database_url

    return service_database_url(settings)


@main.command()
@click.option("--host", default=None, help="Address to listen on [default: CDS_HOST, else 127.0.0.1].")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Port to listen on [default: CDS_PORT, else 8080].",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 64),
    help="Gunicorn worker processes [default: one per core, from gunicorn.conf.py].",
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the CDS Hooks service with gunicorn (settings from the CDS_* variables).

    The app is first built once here: a setting that cannot work (a CDS_* value, the trusted issuers, the base
    URL, the catalog, the card texts, the database, a port in use) stops the start with one line naming it and
    exit status 1. Then this process becomes gunicorn (gunicorn.conf.py); each worker builds its own app.
    """
    from cds_service.web.serving import listen_addresses, preflight

    overrides = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
    try:
        settings = preflight(overrides)
    except ConfigError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    os.environ.update(CDS_HOST=settings.host, CDS_PORT=str(settings.port))  # for gunicorn.conf.py and workers
    command = [sys.executable, "-m", "gunicorn"]
    if GUNICORN_CONF.is_file():
        command += ["--config", str(GUNICORN_CONF)]
    command += [arg for address in listen_addresses(settings) for arg in ("--bind", address)]
    command += ["--workers", str(workers)] if workers is not None else []
    os.execv(sys.executable, [*command, "cds_service.web:create_worker_app()"])


@main.group()
def feedback() -> None:
    """Clinicians' feedback on cards, as stored by the service."""


@feedback.command("export")
def feedback_export() -> None:
    """Print stored feedback as JSON lines, oldest first: card uuid, outcome, reason, timestamp, trial."""
    from cds_service.storage import Storage

    storage = Storage(_database_url(_settings()))
    try:
        for item in storage.iter_feedback():
            click.echo(json.dumps(item, ensure_ascii=False, sort_keys=True))
    finally:
        storage.close()


@feedback.command("unquiet")
@click.option(
    "--patient", "patient_id", required=True, help="The patient's id (the hook's context.patientId)."
)
@click.option("--trial", "nct_id", help="Only the card of this trial (NCT number) [default: every trial's].")
def feedback_unquiet(patient_id: str, nct_id: str | None) -> None:
    """Let a patient's quiet trial cards show again at the next patient-view.

    A card answered with feedback (accepted or overridden) stays away for CDS_QUIET_DAYS days; this lifts
    that now. The lift is recorded, the feedback stays stored, and feedback given later quiets the card again.
    """
    from cds_service.storage import Storage

    settings = _settings()
    storage = Storage(_database_url(settings))
    now = datetime.now(UTC)
    try:
        quiet = storage.quieted(patient_id, now, settings.quiet_days)
        storage.lift_quiet(patient_id, nct_id, now)
    finally:
        storage.close()
    lifted = sorted(trial for trial in quiet if nct_id in (None, trial))
    click.echo(
        f"Patient/{patient_id}: "
        + (f"quiet lifted for {', '.join(lifted)}" if lifted else "no card was quiet")
    )


@feedback.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
def feedback_stats(as_json: bool) -> None:
    """Per trial: cards shown, accepted, overridden by reason, patients for whom the card is quiet now.

    Then, per trial, the criteria that were still to check on the cards dismissed because the chart data was
    out of date, and on how many of those cards (criteria ids only; cards shown before the service recorded
    them count as dismissed without criteria); and the order warnings (order-select, order-sign) shown,
    accepted and overridden by reason.
    """
    from cds_service.storage import Storage

    settings = _settings()
    storage = Storage(_database_url(settings))
    try:
        trials = storage.feedback_stats(datetime.now(UTC), settings.quiet_days)
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps(stats_document(trials, settings.quiet_days), indent=2))
    else:
        print_stats(_console(), trials, settings.quiet_days)


# --- db


@main.group()
def db() -> None:
    """The service's database: CDS_DATABASE_URL, else the SQLite file in the instance folder."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest revision (`serve` also does it, before any worker starts).

    Schema changes are serialised (a PostgreSQL advisory lock, SQLite's write lock), so this may run while
    the service starts. A database made before migrations keeps its rows: it is taken as the first revision.
    """
    from cds_service.storage import Storage

    storage = Storage(_database_url(_settings()), upgrade=False)
    try:
        before, after = storage.upgrade()
    finally:
        storage.close()
    click.echo(
        f"database schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})")
    )
