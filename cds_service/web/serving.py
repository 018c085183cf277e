"""gunicorn around the app: where it listens, its log lines as JSON, the metrics folder of its workers, and a
worker's life: warm up before the first call, then a garbage-collection policy.

gunicorn.conf.py sets `bind` from `listen_addresses`, `logger_class` to `JsonLogger` (gunicorn's own lines,
the access line included, as the service's JSON lines: the access line gives the path without its query
string, the status, the duration and the hookInstance as `request_id`), and installs `on_starting` and
`on_reload` (the database schema, in the master), `child_exit` and `on_exit` (the metrics of an exited
worker, then the folder, see cds_service/metrics.py), `post_worker_init` and `post_request`.

The database schema is the master's business: brought to the newest revision before any worker starts
(`preflight` under `cds-trials serve`, `on_starting` under any gunicorn with gunicorn.conf.py), and again
when gunicorn reloads on SIGHUP (`on_reload`). A worker
builds its app without a connection (`create_worker_app`), so gunicorn can (re)start one while the database
is down. Each worker, once it has loaded the app:
1. warms up: answers one call of each service, built from the chart shipped in `cds_service/data/` and
   evaluated on the date it was written for, through every stage (request parsing and schema checks, prefetch,
   FHIR validation, facts, the trials, cards, JSON), so that the first EHR call does not pay for lazily
   imported FHIR types and first-use work (about 0.6 s on 2 cores). It neither reads nor writes the database
   (no quiet cards, no order warnings remembered) and prints no log line;
2. freezes the GC: every object alive then (catalog, compiled rules, FHIR model classes) moves to the
   permanent generation, where collections never walk it again;
3. turns automatic collection off and collects the young generations after each response instead
   (`post_request`): a call allocates hundreds of thousands of objects, nearly all freed by reference
   counting, yet they set off many collections while the call runs (measured in bench/PROFILE.md: 25-30% of a
   call's CPU before, about nothing after).
Nothing else is done after a response (the view writes the audit row before it answers): a worker busy after
its response leaves the EHR's next call to the other worker, whose caches are cold (bench/PROFILE.md).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, timedelta
from importlib import resources
from typing import Any

from gunicorn.glogging import Logger

from cds_service import hooks, metrics
from cds_service.bundle_file import hook_request_for
from cds_service.config import Settings, load_settings
from cds_service.errors import CatalogError, ConfigError, RuleError
from cds_service.fhir import bundles
from cds_service.hook_request import parse_hook_request
from cds_service.hooks.registry import forget_warnings, never_quiet, never_warned
from cds_service.logs import JsonLineFormatter
from cds_service.storage_errors import open_storage
from cds_service.web import create_app, service_database_url
from cds_service.web.hooks import STATE_KEY
from cds_service.web.request_log import REQUEST_ID_ENVIRON

FULL_COLLECTION_EVERY = 100  # requests; the young generations are collected after every request
WARM_UP_CHART = "data/warm-up-chart.json"
WARM_UP_INSTANCE = "00000000-0000-4000-8000-000000000000"


def preflight(overrides: Mapping[str, Any]) -> Settings:
    """Check, before gunicorn starts a worker, what would stop every worker: the CDS_* values, free ports,
    then the app built once (trusted issuers, base URL, catalog, card texts, database) and thrown away.
    Building it brings the database schema to the newest revision: the workers never do (`create_worker_app`).

    Returns the settings; raises ConfigError with one line that names the setting. The app is built silently
    (each worker builds and logs its own).
    """
    settings = load_settings(overrides)
    for name, port in (("CDS_PORT", settings.port), ("CDS_METRICS_PORT", settings.metrics_port)):
        if port is not None:
            _check_free(settings.host, port, name)
    logging.disable(logging.CRITICAL)
    try:
        app = create_app(overrides)
    except (CatalogError, RuleError) as exc:
        first = str(exc.problems[0]) if isinstance(exc, CatalogError) else exc.message
        more = len(exc.problems) - 1 if isinstance(exc, CatalogError) else 0
        others = f" (and {more} more: cds-trials check-mappings lists them)" if more else ""
        raise ConfigError(f"CDS_MAPPINGS_DIR: {settings.mappings_dir}: {first}{others}") from exc
    finally:
        logging.disable(logging.NOTSET)
    app.extensions[STATE_KEY].storage.close()
    return settings


def _check_free(host: str, port: int, setting: str) -> None:
    """Bind the address as gunicorn will (SO_REUSEADDR), then let it go."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"{setting}: cannot listen on {host}:{port}: {reason}") from exc


def listen_addresses(settings: Settings) -> list[str]:
    """gunicorn's `bind`: CDS_HOST:CDS_PORT, and CDS_HOST:CDS_METRICS_PORT when metrics have a port."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 address
    ports = [settings.port] if settings.metrics_port is None else [settings.port, settings.metrics_port]
    return [f"{host}:{port}" for port in ports]


class JsonLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, writing each line (master, workers, access) as a JSON object (cds_service.logs)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonLineFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """One line per response: method, path (never the query string), status, duration, hookInstance."""
        if not self.cfg.accesslog:
            return
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        status = resp.status_code
        self.access_log.info(
            "%s %s -> %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(request_time.total_seconds() * 1000),
                "request_id": environ.get(REQUEST_ID_ENVIRON),
            },
        )


def upgrade_schema(settings: Settings) -> None:
    """Bring the service's database schema to the newest revision (ConfigError when it cannot be reached)."""
    open_storage(service_database_url(settings)).close()


def on_starting(server: Any) -> None:
    """In the master, before any worker starts: bring the database schema to the newest revision, as the
    preflight of `cds-trials serve` does (after it, nothing is left to do), for gunicorn started without it.
    A database that cannot be reached now stops gunicorn, its reason in one line naming CDS_DATABASE_URL."""
    try:
        upgrade_schema(load_settings())
    except ConfigError as exc:
        server.halt(reason=" ".join(str(exc).split()), exit_status=1)


def on_reload(server: Any) -> None:
    """In the master, on SIGHUP (new code, new workers, same master): bring the schema to the newest revision
    before the new workers start, so a deployment's migrations are applied as at a start. The master keeps
    running when the database cannot be reached: that is logged, and the workers start anyway, as after an
    outage (run `cds-trials db upgrade` once it is back)."""
    try:
        upgrade_schema(load_settings())
    except ConfigError as exc:
        server.log.error("schema not upgraded on reload: %s", " ".join(str(exc).split()))


def child_exit(server: Any, worker: Any) -> None:
    """In the master, once a worker has exited (stopped, crashed or killed): drop its live metric values."""
    metrics.forget_process(worker.pid)


def on_exit(server: Any) -> None:
    """The master stops: remove the metrics folder gunicorn.conf.py made for this run."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Warm the worker up, freeze what is alive, and leave collections to `post_request`."""
    started = time.perf_counter()
    try:
        warmed = warm_up(worker.wsgi)
    except Exception:  # the worker still serves: its first call pays the cold start, and the error shows here
        worker.log.exception("warm-up call failed")
        warmed = False
    gc.collect()
    gc.freeze()
    gc.disable()
    worker.log.info(
        "worker ready in %.0f ms (warm-up %s, %d objects frozen)",
        (time.perf_counter() - started) * 1000,
        "done" if warmed else "skipped",
        gc.get_freeze_count(),
    )


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Once the response is written: collect the call's cyclic garbage (a full collection now and then)."""
    gc.collect(2 if worker.nr % FULL_COLLECTION_EVERY == 0 else 1)


def warm_up_chart() -> tuple[list[dict[str, Any]], date]:
    """The shipped warm-up chart's resources and the date it was written for (its Bundle timestamp)."""
    chart = json.loads(resources.files("cds_service").joinpath(WARM_UP_CHART).read_text(encoding="utf-8"))
    return list(bundles.resources(chart)), date.fromisoformat(chart["timestamp"][:10])


def warm_up(app: Any) -> bool:
    """Answer one call of each service of the app on the warm-up chart; False for an app that is not ours."""
    state = getattr(app, "extensions", {}).get(STATE_KEY)
    if state is None:  # not the CDS service (e.g. the benchmark's JSON-only baseline)
        return False
    chart, today = warm_up_chart()
    # The database stays out of it: a worker may boot while it is down, and the warm-up is no one's call.
    runtime = replace(
        state.runtime, quieted=never_quiet, warned=never_warned, remember_warned=forget_warnings
    )
    for service in state.catalog.services:
        request = hook_request_for(service.hook, service.prefetch, chart, WARM_UP_INSTANCE)
        body = json.dumps(
            {
                "hook": request.hook,
                "hookInstance": request.hook_instance,
                "context": dict(request.context),
                "prefetch": dict(request.prefetch),
            }
        ).encode()
        parsed = parse_hook_request(body, {service.hook}, max_depth=state.settings.max_json_depth)
        call = hooks.prepare(parsed, [service], state.settings, today, lambda _: None)
        app.json.dumps({"cards": hooks.answer(call, runtime)})
    return True
