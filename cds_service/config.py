"""Layered configuration: defaults, then `CDS_*` environment variables, then an explicit override.

Flask-free so the command line and the web app read the same settings.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAPPINGS_DIR = REPO_ROOT / "mappings"
DEFAULT_CARDS_DIR = REPO_ROOT / "cards"
DEFAULT_EXAMPLES_DIR = REPO_ROOT / "examples"


class ConfigError(ValueError):
    """A configuration value could not be understood."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; each field maps to one `CDS_<FIELD>` environment variable."""

    sandbox: bool = False
    trusted_issuers: Path | None = None
    public_base_url: str | None = None
    database_url: str | None = None  # None: SQLite file in the instance folder
    today: date | None = None  # None: the real date; fixed only for demos and tests
    mappings_dir: Path = DEFAULT_MAPPINGS_DIR
    cards_dir: Path = DEFAULT_CARDS_DIR
    examples_dir: Path = DEFAULT_EXAMPLES_DIR
    fetch_deadline_seconds: float = 5.0
    fhir_max_pages: int = 10
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = 64
    max_resources: int = 20_000
    lab_max_age_days: int = 30
    performance_max_age_days: int = 60
    jwt_leeway_seconds: int = 60
    jwt_max_lifetime_seconds: int = 3600
    quiet_days: int = 30
    log_level: str = "INFO"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def current_date(self) -> date:
        """Return "today" for the clinical engine (fixed by `CDS_TODAY` when set)."""
        return self.today or date.today()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Convert a raw (string or typed) value to the type of a Settings field."""
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else None
    try:
        if target in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            if str(raw).strip().lower() in _TRUE:
                return True
            if str(raw).strip().lower() in _FALSE:
                return False
            raise ValueError(raw)
        if target in (int, "int"):
            return int(raw)
        if target in (float, "float"):
            return float(raw)
        if target in ("Path", "Path | None"):
            return Path(raw) if raw != "" else None
        if target in ("date | None",):
            if isinstance(raw, date):
                return raw
            return date.fromisoformat(text or str(raw)) if raw != "" else None
        if target in ("str | None", "str", str):
            return None if raw == "" and target != "str" else str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"CDS_{name.upper()}: cannot read {raw!r}") from exc
    return raw


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from defaults, `CDS_*` variables of `environ`, then `overrides` (field names)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    known = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}
    for name, fld in known.items():
        env_name = f"CDS_{name.upper()}"
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], fld.type)
    for name, raw in (overrides or {}).items():
        key = name.lower()
        if key not in known:
            raise ConfigError(f"unknown setting {name!r}")
        values[key] = _coerce(key, raw, known[key].type)
    return Settings(**values)
