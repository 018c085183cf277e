"""The Flask application: `create_app` builds it; nothing here runs at import time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from cds_service.catalog import load_catalog
from cds_service.config import Settings, load_settings
from cds_service.errors import ConfigError
from cds_service.hooks import Runtime, check_services
from cds_service.logs import configure_logging
from cds_service.pipeline import Matcher, random_uuid
from cds_service.storage import default_database_url
from cds_service.storage_errors import open_storage
from cds_service.web import hooks, openapi, sandbox
from cds_service.web.auth import init_auth
from cds_service.web.cors import init_cors
from cds_service.web.errors import init_errors
from cds_service.web.limits import init_limits
from cds_service.web.metrics import init_metrics
from cds_service.web.request_log import init_request_log

log = logging.getLogger(__name__)


def default_instance_path() -> str:
    """The folder of the default SQLite database when `create_app` is given no INSTANCE_PATH."""
    return Flask(__name__).instance_path


def service_database_url(settings: Settings, instance_path: str | None = None) -> str:
    """The service's database: CDS_DATABASE_URL, else the SQLite file in the instance folder (by default
    `default_instance_path()`). The app, the server's master and the command line all open this one."""
    return settings.database_url or default_database_url(instance_path or default_instance_path())


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service: settings (defaults < CDS_* env < `config`), catalog, matcher, storage, routes.

    `config` may also hold "UUID_FACTORY" (callable giving card uuids, for deterministic tests),
    "INSTANCE_PATH" (the folder of the default SQLite database) and "UPGRADE_SCHEMA": True (the default)
    brings the database schema to the newest revision here, so the database must answer; False opens it
    lazily, as a server's worker does (see `create_worker_app`). Every other key is a Settings field.
    """
    overrides = dict(config or {})
    uuid_factory: Callable[[], str] = overrides.pop("UUID_FACTORY", None) or random_uuid
    instance_path = overrides.pop("INSTANCE_PATH", None)
    upgrade_schema = bool(overrides.pop("UPGRADE_SCHEMA", True))
    settings = load_settings(overrides)
    configure_logging(settings.log_level)

    app = Flask(__name__, instance_path=str(instance_path) if instance_path else None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False  # keep the order in which cards and their fields were built

    catalog = load_catalog(settings.mappings_dir)  # a bad catalog stops the start, naming file and path
    check_services(catalog.services)
    try:
        matcher = Matcher(catalog, settings, uuid_factory)  # compiles the rules: a bad rule stops the start
    except OSError as exc:  # the card texts are read here
        raise ConfigError(f"CDS_CARDS_DIR: cannot read the card texts: {exc}") from exc
    for warning in matcher.engine.warnings:
        log.warning("catalog: %s", warning)
    storage = open_storage(service_database_url(settings, app.instance_path), upgrade=upgrade_schema)
    app.extensions[hooks.STATE_KEY] = hooks.ServiceState(
        settings=settings,
        catalog=matcher.catalog,
        runtime=Runtime(
            matcher, settings, hooks.quiet_cards(storage, settings), *hooks.order_warnings(storage)
        ),
        storage=storage,
    )

    init_request_log(app)  # first: every request is logged and starts without a stale request id
    init_errors(app)
    init_metrics(app, settings, (s.id for s in catalog.services))  # before auth: /metrics is public
    init_cors(app)  # before authentication: preflights are answered without a JWT
    init_auth(app, settings, storage.remember_jti)  # the single place where authentication is installed
    init_limits(app)  # after authentication: a chunked body over the limit is a 413
    app.register_blueprint(hooks.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(sandbox.bp)
    log.info("service ready with %d trial(s) in the catalog", len(catalog.trials))
    return app


def create_worker_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app of a server's worker (gunicorn's under `cds-trials serve`, wsgi.py's): built without a database
    connection, so that a worker (re)started while the database is down boots and serves. Hook calls answer
    with cards (the audit row and quiet-card reads fail open, logged), feedback and, with security on, every
    call that needs the JWT replay check get 503 `storage-unavailable`, /healthz 503; each call tries the
    database again, so nothing needs a restart once it is back. The schema is not changed here: the master
    brings it to the newest revision before any worker starts (`serving.preflight`, `serving.on_starting`).
    """
    return create_app({**(config or {}), "UPGRADE_SCHEMA": False})
