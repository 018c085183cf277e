"""Load and check the trial catalog (`mappings/`): YAML files -> JSON Schema -> semantic pass -> `Catalog`.

Raises `CatalogError` (cds_service.errors), one per failed load, listing every problem found (first line =
first problem) with the file (relative to the catalog folder) and the path inside it
("criteria/3/rule/lab/le_uln").

Rules stay raw mappings here; `cds_service.rules` compiles them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cds_service.errors import CatalogError
from cds_service.terminology import (
    ICD10CM,
    INGREDIENT,
    Analyte,
    Code,
    Ingredient,
    RangeLimits,
    Terminology,
    ValueSet,
    normalize_code,
    normalize_system,
)
from cds_service.verdicts import RECRUITING_STATUSES, TrialInfo

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
# Rule parameters that name a value set.
VALUESET_PARAMETERS = ("valueset", "contrary", "except", "primary")

# The C loader is much faster; both construct only plain Python types (safe).
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str
    warning: bool = False  # reported, but the catalog still loads (e.g. a value set no rule uses yet)

    def __str__(self) -> str:
        return f"{self.file}: {self.path or '(top)'}: {self.message}"


@dataclass(frozen=True)
class Criterion:
    id: str
    type: str  # inclusion | exclusion
    text: str  # verbatim registry text
    heading: str | None
    rule: Mapping[str, Any] | None
    clinician: str | None  # what the clinician checks, when no structured data can decide


@dataclass(frozen=True)
class Anchor:
    """Part of the trial's disease and stage: the trial is considered only when every anchor rule is true."""

    label: str  # what the rule checks, e.g. "metastatic disease documented"
    rule: Mapping[str, Any]


@dataclass(frozen=True)
class Cohort:
    label: str
    rule: Mapping[str, Any]


@dataclass(frozen=True)
class Trial:
    info: TrialInfo
    anchors: tuple[Anchor, ...]
    criteria: tuple[Criterion, ...]
    cohorts: tuple[Cohort, ...]
    sites: tuple[str, ...]
    source: str | None


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str | None
    prefetch: Mapping[str, str]
    # Prefetch keys without which no trial can be considered (the data of the anchors): a call whose data for
    # them can be neither prefetched nor fetched is refused with 412.
    required_prefetch: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    trials: tuple[Trial, ...]
    terminology: Terminology
    services: tuple[ServiceDefinition, ...]
    version: str
    directory: Path
    # Value set id -> the warning it gets unless an operator reads it by name (see `Engine.warnings`).
    unnamed_valuesets: Mapping[str, Problem] = field(default_factory=dict)


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe YAML loader that rejects a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@cache
def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{schema_name}.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _pointer(parts: Iterable[Any]) -> str:
    return "/".join(str(p) for p in parts)


def _schema_problem(file: str, error: jsonschema.ValidationError) -> Problem:
    """Turn a schema error into a short message whose path points at the offending key where possible."""
    path = list(error.absolute_path)
    allowed = set(error.schema.get("properties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    extra = sorted(str(k) for k in instance if k not in allowed)
    if error.validator == "additionalProperties" and extra:
        path.append(extra[0])
        allowed_list = ", ".join(sorted(allowed))
        return Problem(file, _pointer(path), f"unknown key {extra[0]!r} (allowed: {allowed_list})")
    if error.validator in ("anyOf", "oneOf") and all(
        set(sub) == {"required"} for sub in error.validator_value
    ):
        options = " or ".join("/".join(sub["required"]) for sub in error.validator_value)
        exactly = "exactly one of" if error.validator == "oneOf" else "at least one of"
        return Problem(file, _pointer(path), f"needs {exactly}: {options}")
    if error.validator == "maxProperties" and "all" in error.schema.get("properties", {}):
        return Problem(file, _pointer(path), f"a rule has exactly one key, found {sorted(error.instance)}")
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return Problem(file, _pointer(path), message)


def _check_schema(file: str, data: Any, schema_name: str) -> list[Problem]:
    errors = _validator(schema_name).iter_errors(data)
    ordered = sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])
    return [_schema_problem(file, e) for e in ordered]


def _read_yaml(directory: Path, path: Path) -> tuple[Any, list[Problem]]:
    file = path.relative_to(directory).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=_UniqueKeyLoader), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return None, [Problem(file, where, f"invalid YAML: {exc.problem or exc}")]
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        return None, [Problem(file, "", f"cannot read: {exc}")]


def catalog_version(directory: Path) -> str:
    """Return 16 hex digits of a sha256 over every YAML file's relative path and bytes, in path order.

    Only the data counts: editing the catalog's documentation does not change the version stamped on cards.
    """
    digest = hashlib.sha256()
    files = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*.yaml") if p.is_file()}
    for name in sorted(n for n in files if not _hidden(n)):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(files[name].read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _hidden(relative_name: str) -> bool:
    """Editor and cache files are not part of the catalog."""
    return any(part.startswith(".") or part == "__pycache__" for part in relative_name.split("/"))


@dataclass
class _Loaded:
    """Raw documents that passed their schema, each with its file name."""

    trials: list[tuple[str, dict[str, Any]]]
    valuesets: list[tuple[str, int, dict[str, Any]]]  # file, index in the file, entry
    analytes: list[dict[str, Any]]
    ingredients: list[dict[str, Any]]
    services: list[tuple[str, int, dict[str, Any]]]


def _schema_reader(directory: Path, problems: list[Problem]) -> Callable[[Path, str], dict[str, Any] | None]:
    """Read one catalog file: its data if it parses and passes its schema, else None (problems noted)."""

    def read(path: Path, schema_name: str) -> dict[str, Any] | None:
        data, read_problems = _read_yaml(directory, path)
        if read_problems:
            problems.extend(read_problems)
            return None
        schema_problems = _check_schema(path.relative_to(directory).as_posix(), data, schema_name)
        problems.extend(schema_problems)
        return None if schema_problems else data

    return read


def _load_vocabulary(directory: Path, problems: list[Problem]) -> _Loaded:
    """The value sets, analytes and ingredients of the catalog folder (no trials, no services yet)."""
    loaded = _Loaded([], [], [], [], [])
    read = _schema_reader(directory, problems)
    for path in sorted((directory / "valuesets").glob("*.yaml")):
        if (doc := read(path, "valueset")) is not None:
            file = path.relative_to(directory).as_posix()
            loaded.valuesets.extend((file, i, vs) for i, vs in enumerate(doc["valuesets"]))
    # Written by another part of the team; a catalog without them simply has no analytes or ingredients.
    if (directory / "analytes.yaml").is_file() and (doc := read(directory / "analytes.yaml", "analytes")):
        loaded.analytes = doc["analytes"]
    medications_path = directory / "medications.yaml"
    if medications_path.is_file() and (doc := read(medications_path, "medications")):
        loaded.ingredients = doc["ingredients"]
    return loaded


def _check_vocabulary_ids(loaded: _Loaded) -> list[Problem]:
    return _check_ids("analytes.yaml", "analytes", loaded.analytes) + _check_ids(
        "medications.yaml", "ingredients", loaded.ingredients
    )


def _load_documents(directory: Path, problems: list[Problem]) -> _Loaded:
    loaded = _load_vocabulary(directory, problems)
    read = _schema_reader(directory, problems)
    services_path = directory / "services.yaml"
    if not services_path.is_file():
        problems.append(Problem("services.yaml", "", "missing: discovery needs at least one service"))
    elif (doc := read(services_path, "services")) is not None:
        loaded.services = [("services.yaml", i, s) for i, s in enumerate(doc["services"])]
    trial_paths = sorted((directory / "trials").glob("*.yaml"))
    if not trial_paths:
        problems.append(Problem("trials", "", "no trial files (trials/*.yaml)"))
    for path in trial_paths:
        if (doc := read(path, "trial")) is not None:
            loaded.trials.append((path.relative_to(directory).as_posix(), doc))
    return loaded


def _build_valueset(entry: Mapping[str, Any]) -> ValueSet:
    codes: set[Code] = set()
    prefixes: set[Code] = set()
    for include in entry["include"]:
        for raw, target in ((include.get("codes", ()), codes), (include.get("prefixes", ()), prefixes)):
            for value in raw:
                code = normalize_code(include["system"], value)
                if code is not None:
                    target.add(code)
    return ValueSet(entry["id"], entry["title"], frozenset(codes), frozenset(prefixes), entry["source"])


def _limits(raw: Mapping[str, Any]) -> RangeLimits:
    return RangeLimits(raw.get("low"), raw.get("high"))


def _build_analyte(entry: Mapping[str, Any]) -> Analyte:
    by_sex = {sex: _limits(r) for sex, r in entry.get("default_range_by_sex", {}).items()}
    return Analyte(
        id=entry["id"],
        title=entry["title"],
        loinc=frozenset(entry["loinc"]),
        unit=entry["unit"],
        factors={str(k): float(v) for k, v in entry["factors"].items()},
        default_range=_limits(entry["default_range"]) if "default_range" in entry else None,
        default_range_by_sex=by_sex,
        range_source=entry.get("range_source", ""),
    )


def _build_ingredient(entry: Mapping[str, Any]) -> Ingredient:
    return Ingredient(entry["id"], frozenset(entry["rxnorm"]), tuple(n.lower() for n in entry["names"]))


def _build_trial(doc: Mapping[str, Any]) -> Trial:
    info = TrialInfo(
        key=doc["id"],
        nct_id=doc.get("nct_id"),
        acronym=doc.get("acronym"),
        short_title=doc["short_title"],
        title=doc["title"],
        status=doc["status"],
        phase=doc.get("phase"),
        sponsor=doc.get("sponsor"),
        url=doc.get("url"),
    )
    criteria = tuple(
        Criterion(c["id"], c["type"], c["text"], c.get("heading"), c.get("rule"), c.get("clinician"))
        for c in doc["criteria"]
    )
    anchors = tuple(Anchor(a["label"], a["rule"]) for a in doc["anchors"])
    cohorts = tuple(Cohort(c["label"], c["rule"]) for c in doc.get("cohorts", ()))
    sites = tuple(doc.get("sites", ()))
    return Trial(info, anchors, criteria, cohorts, sites, doc.get("source"))


def _leaves(rule: Mapping[str, Any], path: str) -> Iterator[tuple[str, str, Any]]:
    """Yield `(path, operator, parameters)` for every leaf of a raw rule."""
    ((operator, value),) = rule.items()
    if operator in ("all", "any"):
        for i, child in enumerate(value):
            yield from _leaves(child, f"{path}/{operator}/{i}")
    elif operator == "not":
        yield from _leaves(value, f"{path}/not")
    else:
        yield f"{path}/{operator}", operator, value


def _rules_of(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for i, anchor in enumerate(doc["anchors"]):
        yield f"anchors/{i}/rule", anchor["rule"]
    for i, criterion in enumerate(doc["criteria"]):
        if "rule" in criterion:
            yield f"criteria/{i}/rule", criterion["rule"]
    for i, cohort in enumerate(doc.get("cohorts", ())):
        yield f"cohorts/{i}/rule", cohort["rule"]


def _check_trial(
    file: str, doc: Mapping[str, Any], terminology: Terminology, used: set[str]
) -> list[Problem]:
    """Check ids and labels of a trial and the names its rules use (value sets go into `used`).

    An anchor rule may be a bare `clinician` leaf: it is never true, so the trial is never considered (the
    drafts written by `import-ctgov` rely on it).
    """
    problems: list[Problem] = []
    if Path(file).stem != doc["id"]:
        problems.append(Problem(file, "id", f"id {doc['id']!r} differs from the file name"))
    nct_id = doc.get("nct_id")
    if nct_id and doc["id"] != nct_id:
        problems.append(Problem(file, "id", f"id must be the NCT number {nct_id}"))
    if nct_id and doc.get("url") != f"https://clinicaltrials.gov/study/{nct_id}":
        problems.append(Problem(file, "url", f"must be https://clinicaltrials.gov/study/{nct_id}"))
    if not nct_id and doc.get("status") in RECRUITING_STATUSES:
        # A trial card names its NCT number and links to its ClinicalTrials.gov page.
        message = f"a {doc['status']} trial needs its NCT number (its card names it)"
        problems.append(Problem(file, "nct_id", message))
    for kind, key, what in (
        ("criteria", "id", "criterion id"),
        ("anchors", "label", "anchor label"),
        ("cohorts", "label", "cohort label"),
    ):
        seen: set[str] = set()
        for i, entry in enumerate(doc.get(kind, ())):
            if entry[key] in seen:
                problems.append(Problem(file, f"{kind}/{i}/{key}", f"duplicate {what} {entry[key]!r}"))
            seen.add(entry[key])
    for rule_path, rule in _rules_of(doc):
        for path, operator, params in _leaves(rule, rule_path):
            problems.extend(_check_leaf(file, path, operator, params, terminology, used))
    return problems


def _check_leaf(
    file: str, path: str, operator: str, params: Any, terminology: Terminology, used: set[str]
) -> list[Problem]:
    if not isinstance(params, Mapping):
        return []
    problems: list[Problem] = []
    for key in VALUESET_PARAMETERS:
        if key in params:
            used.add(params[key])
            if params[key] not in terminology.valuesets:
                problems.append(Problem(file, f"{path}/{key}", f"unknown value set {params[key]!r}"))
    if operator == "lab" and params["analyte"] not in terminology.analytes:
        problems.append(Problem(file, f"{path}/analyte", f"unknown analyte {params['analyte']!r}"))
    if operator == "current_regimen":
        for i, regimen in enumerate(params["one_of"]):
            for j, ingredient in enumerate(regimen):
                if ingredient not in terminology.ingredients:
                    where = f"{path}/one_of/{i}/{j}"
                    problems.append(Problem(file, where, f"unknown ingredient {ingredient!r}"))
    return problems


def _check_valuesets(loaded: _Loaded, terminology: Terminology) -> list[Problem]:
    """Check the value sets: unique ids, canonical systems, ICD-10-CM prefixes only, known ingredients."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for file, i, entry in loaded.valuesets:
        path = f"valuesets/{i}"
        if entry["id"] in seen:
            problems.append(Problem(file, f"{path}/id", f"duplicate value set id {entry['id']!r}"))
        seen.add(entry["id"])
        for j, include in enumerate(entry["include"]):
            system = include["system"]
            if normalize_system(system) != system:
                problems.append(
                    Problem(
                        file,
                        f"{path}/include/{j}/system",
                        f"use the canonical URI {normalize_system(system)}",
                    )
                )
            if include.get("prefixes") and system != ICD10CM:
                where = f"{path}/include/{j}/prefixes"
                problems.append(Problem(file, where, "prefixes are for ICD-10-CM only"))
            if system == INGREDIENT:
                for k, code in enumerate(include.get("codes", ())):
                    if code not in terminology.ingredients:
                        problems.append(
                            Problem(file, f"{path}/include/{j}/codes/{k}", f"unknown ingredient {code!r}")
                        )
        if terminology.valuesets[entry["id"]].is_empty():
            problems.append(Problem(file, path, f"value set {entry['id']!r} is empty"))
    return problems


def _unnamed_valuesets(loaded: _Loaded, named: set[str]) -> dict[str, Problem]:
    """The value sets no rule parameter names, each with the warning the engine gives unless an operator
    reads it by name (see `Engine.warnings`)."""
    return {
        entry["id"]: Problem(
            file,
            f"valuesets/{i}",
            f"value set {entry['id']!r} is used by no rule and no operator",
            warning=True,
        )
        for file, i, entry in loaded.valuesets
        if entry["id"] not in named
    }


def _check_ids(file: str, kind: str, entries: list[dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry["id"] in seen:
            problems.append(Problem(file, f"{kind}/{i}/id", f"duplicate id {entry['id']!r}"))
        seen.add(entry["id"])
    return problems


def _build_terminology(loaded: _Loaded) -> Terminology:
    return Terminology.build(
        (_build_valueset(entry) for _, _, entry in loaded.valuesets),
        (_build_analyte(entry) for entry in loaded.analytes),
        (_build_ingredient(entry) for entry in loaded.ingredients),
    )


def load_terminology(directory: Path) -> Terminology:
    """The catalog folder's vocabulary alone (value sets, analytes, ingredients), read and checked as
    `load_catalog` reads it, for callers that need codes but no trials (raises `CatalogError`)."""
    directory = Path(directory)
    problems: list[Problem] = []
    loaded = _load_vocabulary(directory, problems)
    problems.extend(_check_vocabulary_ids(loaded))
    if problems:
        raise CatalogError(problems)
    return _build_terminology(loaded)


def load_catalog(directory: Path) -> Catalog:
    """Load every file of the catalog folder, check it, and return the catalog (or raise `CatalogError`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogError([Problem(str(directory), "", "catalog folder not found")])
    problems: list[Problem] = []
    loaded = _load_documents(directory, problems)
    problems.extend(_check_vocabulary_ids(loaded))
    terminology = _build_terminology(loaded)
    used: set[str] = set()
    trial_ids: dict[str, str] = {}
    for file, doc in loaded.trials:
        if doc["id"] in trial_ids:
            message = f"duplicate trial id {doc['id']!r} (also in {trial_ids[doc['id']]})"
            problems.append(Problem(file, "id", message))
        trial_ids.setdefault(doc["id"], file)
        problems.extend(_check_trial(file, doc, terminology, used))
    problems.extend(_check_valuesets(loaded, terminology))
    problems.extend(_check_ids("services.yaml", "services", [s for _, _, s in loaded.services]))
    for file, i, service in loaded.services:
        for j, key in enumerate(service.get("requiredPrefetch", ())):
            if key not in service["prefetch"]:
                where = f"services/{i}/requiredPrefetch/{j}"
                problems.append(Problem(file, where, f"no prefetch key {key!r}"))
    if problems:
        raise CatalogError(problems)
    return Catalog(
        trials=tuple(_build_trial(doc) for _, doc in loaded.trials),
        terminology=terminology,
        services=tuple(
            ServiceDefinition(
                s["id"],
                s["hook"],
                s["title"],
                s["description"],
                s.get("usageRequirements"),
                dict(s["prefetch"]),
                tuple(s.get("requiredPrefetch", ())),
            )
            for _, _, s in loaded.services
        ),
        version=catalog_version(directory),
        directory=directory,
        unnamed_valuesets=_unnamed_valuesets(loaded, used),
    )
