"""Layered configuration: defaults, then `CDS_*` environment variables, then an explicit override.

Flask-free so the command line and the web app read the same settings.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# The catalog and card texts ship inside the package (in the repository: links to mappings/ and cards/).
DEFAULT_MAPPINGS_DIR = PACKAGE_DIR / "mappings"
DEFAULT_CARDS_DIR = PACKAGE_DIR / "cards"
DEFAULT_EXAMPLES_DIR = REPO_ROOT / "examples"


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

    def current_date(self) -> date:
        """Return "today" for the clinical engine (fixed by `CDS_TODAY` when set)."""
        return self.today or date.today()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(raw)


def _date(raw: Any) -> date:
    return raw if isinstance(raw, date) else date.fromisoformat(str(raw))


# How a raw value (an environment string, or a typed override) becomes each type a setting can have.
_CONVERTERS: Mapping[type, Callable[[Any], Any]] = {
    bool: _bool,
    int: int,
    float: float,
    str: str,
    Path: Path,
    date: _date,
}


def _field_types() -> dict[str, tuple[type, bool]]:
    """Per Settings field: its type and whether it may be None (`X | None`), from the resolved annotations."""
    found: dict[str, tuple[type, bool]] = {}
    for name, hint in typing.get_type_hints(Settings).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = [arg for arg in args if arg is not type(None)]
        if len(kinds) == 1 and kinds[0] in _CONVERTERS:
            found[name] = (kinds[0], type(None) in args)
    return found


def _coerce(name: str, raw: Any, kind: type, optional: bool) -> Any:
    """Convert a raw value to the type of a Settings field; an empty string is None where None is allowed."""
    if raw is None or (optional and raw == ""):
        return None
    try:
        return _CONVERTERS[kind](raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"CDS_{name.upper()}: cannot read {raw!r}") from exc


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from defaults, `CDS_*` variables of `environ`, then `overrides` (field names)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    known = _field_types()
    for name, (kind, optional) in known.items():
        env_name = f"CDS_{name.upper()}"
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], kind, optional)
    for name, raw in (overrides or {}).items():
        key = name.lower()
        if key not in known:
            raise ConfigError(f"unknown setting {name!r}")
        values[key] = _coerce(key, raw, *known[key])
    return Settings(**values)
