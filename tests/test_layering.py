"""The package's layers, read from the imports of every module (AST): each imports only its layer and those
below it, FHIR and web libraries stay in the one module that needs them, and modules stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cds_service"
MAX_LINES = 600

# Lowest first: a module may import modules of its own layer and of the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("errors", "config", "terminology", "verdicts", "logs", "metrics")),
    ("catalog", ("catalog", "ctgov_import")),
    ("records", ("fhir",)),
    ("facts", ("facts",)),
    ("engine", ("engine", "operators", "domains")),
    ("pipeline", ("pipeline", "cards", "draft_orders", "warning_cards")),
    (
        "hooks",
        (
            "hooks",
            "hook_request",
            "patient_data",
            "fhir_fetch",
            "bundle_file",
            "storage",
            "storage_errors",
            "migrations",
            "trust",
        ),
    ),
    ("batch", ("prescreen",)),  # population pre-screening: the pipeline as a hook call runs it, for an export
    ("top", ("web", "cli", "feedback_report")),
)
RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}
ONLY_IN = {  # third-party library -> the only modules that may import it
    "fhir.resources": {"cds_service.fhir.validate"},
    "fhirclient": {"cds_service.fhir_fetch"},
    "flask": "cds_service.web",  # a package: any module under it
    "werkzeug": "cds_service.web",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()


def imports(path: Path) -> set[str]:
    """Every module an import statement of this file names (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return found


def top_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "cds_service" and len(parts) > 1 else None


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(name for name in MODULES if name != "cds_service" and top_of(name) not in RANK)
    assert unplaced == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "cds_service"))
def test_a_module_imports_only_its_layer_and_the_ones_below(name: str) -> None:
    own = RANK[top_of(name)]  # type: ignore[index]
    above = sorted(
        imported
        for imported in imports(MODULES[name])
        if (top := top_of(imported)) is not None and RANK.get(top, -1) > own
    )
    assert above == [], f"{name} ({LAYERS[own][0]}) imports a higher layer"


@pytest.mark.parametrize("library", ONLY_IN)
def test_each_outside_library_is_imported_where_it_belongs(library: str) -> None:
    allowed = ONLY_IN[library]
    importers = {
        name
        for name, path in MODULES.items()
        if any(i == library or i.startswith(library + ".") for i in imports(path))
    }
    if isinstance(allowed, str):
        assert all(name == allowed or name.startswith(allowed + ".") for name in importers), importers
    else:
        assert importers == allowed


def test_the_engine_and_everything_below_it_import_no_web_fhir_or_storage_library() -> None:
    forbidden = ("flask", "werkzeug", "fhir", "fhirclient", "sqlalchemy", "requests", "jinja2")
    engine_rank = RANK["engine"]
    for name, path in MODULES.items():
        top = top_of(name)
        if top is None or RANK[top] > engine_rank or top == "fhir":
            continue
        used = {i.split(".")[0] for i in imports(path)}
        assert not used & set(forbidden), name


def test_loading_the_engine_with_its_operators_loads_no_fhir_web_or_storage_library() -> None:
    """What a batch job imports to evaluate facts: checked in a fresh interpreter, as a package's
    `__init__` can pull in what its modules' own imports do not."""
    probe = (
        "import sys, cds_service.engine.evaluate, cds_service.operators, cds_service.domains.kidney;"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert not {"fhir", "flask", "werkzeug", "sqlalchemy", "requests"} & set(ast.literal_eval(loaded))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_size_limit(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"
