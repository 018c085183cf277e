"""Structured logs: one JSON object per line, with an allowlist of fields that never carry patient data.

A log line holds `time`, `level`, `logger`, `message`, `pid`, `request_id` (the hookInstance once known) and
only the `extra` fields named in SAFE_FIELDS; any other `extra` is dropped. Exceptions are logged as their
type and stack frames, never their message (a message may quote the input). Messages themselves are ours:
never format a token, a name or a clinical value into one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

SAFE_FIELDS = (
    "service",
    "hook",
    "patient_id",
    "status",
    "duration_ms",
    "method",
    "path",
    "iss",
    "jti",
    "reason",
    "error",
    "fhir_server",
    "resources",
    "pages",
)
MAX_FIELD_CHARS = 256
# Libraries that log URLs or payloads at DEBUG; they never go below WARNING.
QUIET_LOGGERS = ("urllib3", "requests", "fhirclient", "responses", "werkzeug")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("cds_request_id", default=None)


def bind_request_id(request_id: str | None) -> None:
    """Tag the log lines of the current request (the hookInstance of a CDS Hooks call)."""
    _request_id.set(_clip(request_id) if isinstance(request_id, str) else None)


def current_request_id() -> str | None:
    """The request id bound to the current request, if any."""
    return _request_id.get()


def _clip(value: str) -> str:
    return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "..."


def _safe_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return _clip(str(value))


class JsonLineFormatter(logging.Formatter):
    """Format a record as one JSON object holding only allowlisted fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker process (gunicorn runs several)
        }
        request_id = getattr(record, "request_id", None) or _request_id.get()
        if request_id:
            line["request_id"] = _safe_value(request_id)
        for name in SAFE_FIELDS:
            if name in record.__dict__:
                line[name] = _safe_value(record.__dict__[name])
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            line["exc_type"] = exc_type.__name__
            line["stack"] = [
                f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}:{frame.name}"
                for frame in traceback.extract_tb(tb)
            ]
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """Marker class so that configuring twice replaces our handler instead of adding a second one."""


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send all logs as JSON lines to `stream` (stderr by default) at `level`."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
