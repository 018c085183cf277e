"""The catalog loader: the bundled catalog loads; each kind of defect is reported with its file and path."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.catalog import SCHEMA_DIR, Catalog, load_catalog, load_terminology
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.engine.evaluate import Engine
from cds_service.errors import CatalogError
from cds_service.hooks import check_services
from cds_service.terminology import ICD10CM, INGREDIENT, RXNORM, SNOMED

TRIAL = "trials/NCT06903312.yaml"
CONDITIONS = "valuesets/conditions.yaml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DEFAULT_MAPPINGS_DIR)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, target)
    return target


def read(directory: Path, file: str) -> Any:
    return yaml.safe_load((directory / file).read_text(encoding="utf-8"))


def write(directory: Path, file: str, data: Any) -> None:
    (directory / file).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def edit(file: str, change: Callable[[Any], None]) -> Callable[[Path], None]:
    """A defect: load `file`, change the data in place, write it back."""

    def apply(directory: Path) -> None:
        data = read(directory, file)
        change(data)
        write(directory, file, data)

    return apply


def criterion(doc: dict[str, Any], criterion_id: str) -> dict[str, Any]:
    return next(c for c in doc["criteria"] if c["id"] == criterion_id)


def index_of(directory: Path, criterion_id: str) -> int:
    return [c["id"] for c in read(directory, TRIAL)["criteria"]].index(criterion_id)


def set_rule(criterion_id: str, rule: Any) -> Callable[[Path], None]:
    return edit(TRIAL, lambda doc: criterion(doc, criterion_id).update(rule=rule))


def drop_valueset(valueset_id: str) -> Callable[[Path], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["valuesets"] = [v for v in doc["valuesets"] if v["id"] != valueset_id]

    return edit(CONDITIONS, change)


def add_valueset(entry: dict[str, Any]) -> Callable[[Path], None]:
    return edit(CONDITIONS, lambda doc: doc["valuesets"].append(entry))


def write_text(file: str, text: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / file).write_text(text, encoding="utf-8")

    return apply


UNUSED = {
    "id": "not-used",
    "title": "Unused",
    "source": "test",
    "include": [{"system": SNOMED, "codes": ["1"]}],
}

# (name, defect, file, path (criterion ids in {} are replaced by their index), words of the message)
DEFECTS: list[tuple[str, Callable[[Path], None], str, str, str]] = [
    (
        "recruiting trial without NCT number",
        edit(TRIAL, lambda doc: doc.pop("nct_id")),
        TRIAL,
        "nct_id",
        "a RECRUITING trial needs its NCT number",
    ),
    (
        "misspelt parameter",
        set_rule("bilirubin", {"lab": {"analyte": "bilirubin", "le_ulnn": 1.5}}),
        TRIAL,
        "criteria/{bilirubin}/rule/lab/le_ulnn",
        "unknown key 'le_ulnn'",
    ),
    (
        "parameter of the wrong type",
        set_rule("bilirubin", {"lab": {"analyte": "bilirubin", "le_uln": "1.5"}}),
        TRIAL,
        "criteria/{bilirubin}/rule/lab/le_uln",
        "is not of type 'number'",
    ),
    (
        "misspelt operator",
        set_rule("age", {"all": [{"agee": {"min": 18}}]}),
        TRIAL,
        "criteria/{age}/rule/all/0/agee",
        "unknown key 'agee'",
    ),
    (
        "leaf without a bound",
        set_rule("age", {"age": {}}),
        TRIAL,
        "criteria/{age}/rule/age",
        "needs at least one of: min or max",
    ),
    (
        "two operators in one rule",
        set_rule("age", {"age": {"min": 18}, "sex": "female"}),
        TRIAL,
        "criteria/{age}/rule",
        "exactly one key",
    ),
    (
        "rule and clinician",
        edit(TRIAL, lambda doc: criterion(doc, "age").update(clinician="check")),
        TRIAL,
        "criteria/{age}",
        "needs exactly one of: rule or clinician",
    ),
    (
        "unknown value set",
        set_rule("solitary-kidney", {"condition": {"valueset": "no-such-set"}}),
        TRIAL,
        "criteria/{solitary-kidney}/rule/condition/valueset",
        "unknown value set 'no-such-set'",
    ),
    (
        "unknown analyte",
        set_rule("bilirubin", {"lab": {"analyte": "bilirubine", "le_uln": 1.5}}),
        TRIAL,
        "criteria/{bilirubin}/rule/lab/analyte",
        "unknown analyte 'bilirubine'",
    ),
    (
        "unknown ingredient",
        set_rule("anti-pd1-regimen", {"current_regimen": {"one_of": [["nivolumab", "ipi"]]}}),
        TRIAL,
        "criteria/{anti-pd1-regimen}/rule/current_regimen/one_of/0/1",
        "unknown ingredient 'ipi'",
    ),
    (
        "duplicate criterion id",
        edit(TRIAL, lambda doc: criterion(doc, "ecog").update(id="age")),
        TRIAL,
        "criteria/{ecog}/id",
        "duplicate criterion id 'age'",
    ),
    (
        "anchor naming a criterion (former format)",
        edit(TRIAL, lambda doc: doc.update(anchors=["metastatic"])),
        TRIAL,
        "anchors/0",
        "is not of type 'object'",
    ),
    (
        "anchor without a label",
        edit(TRIAL, lambda doc: doc["anchors"][1].pop("label")),
        TRIAL,
        "anchors/1",
        "'label' is a required property",
    ),
    (
        "anchor with an empty label",
        edit(TRIAL, lambda doc: doc["anchors"][1].update(label="")),
        TRIAL,
        "anchors/1/label",
        "should be non-empty",
    ),
    (
        "misspelt anchor key",
        edit(TRIAL, lambda doc: doc["anchors"][1].update(rules={"metastatic": {}})),
        TRIAL,
        "anchors/1/rules",
        "unknown key 'rules'",
    ),
    (
        "misspelt operator in an anchor",
        edit(TRIAL, lambda doc: doc["anchors"][1].update(rule={"metastasis": {}})),
        TRIAL,
        "anchors/1/rule/metastasis",
        "unknown key 'metastasis'",
    ),
    (
        "unknown value set in an anchor",
        edit(TRIAL, lambda doc: doc["anchors"][0].update(rule={"condition": {"valueset": "kidney-cancr"}})),
        TRIAL,
        "anchors/0/rule/condition/valueset",
        "unknown value set 'kidney-cancr'",
    ),
    (
        "unknown analyte in an anchor",
        edit(TRIAL, lambda doc: doc["anchors"][1].update(rule={"lab": {"analyte": "ldh", "gt_uln": 1}})),
        TRIAL,
        "anchors/1/rule/lab/analyte",
        "unknown analyte 'ldh'",
    ),
    (
        "duplicate anchor label",
        edit(TRIAL, lambda doc: doc["anchors"][1].update(label=doc["anchors"][0]["label"])),
        TRIAL,
        "anchors/1/label",
        "duplicate anchor label 'kidney cancer documented'",
    ),
    (
        "duplicate value set id",
        add_valueset({**UNUSED, "id": "kidney-cancer"}),
        CONDITIONS,
        "valuesets/{last}/id",
        "duplicate value set id 'kidney-cancer'",
    ),
    (
        "empty value set",
        add_valueset({**UNUSED, "include": [{"system": SNOMED, "codes": []}]}),
        CONDITIONS,
        "valuesets/{last}",
        "'not-used' is empty",
    ),
    (
        "unquoted SNOMED code",
        add_valueset({**UNUSED, "include": [{"system": SNOMED, "codes": [254915003]}]}),
        CONDITIONS,
        "valuesets/{last}/include/0/codes/0",
        "is not of type 'string'",
    ),
    (
        "prefix outside ICD-10-CM",
        add_valueset({**UNUSED, "include": [{"system": SNOMED, "prefixes": ["25"]}]}),
        CONDITIONS,
        "valuesets/{last}/include/0/prefixes",
        "ICD-10-CM only",
    ),
    (
        "OID instead of the canonical URI",
        add_valueset(
            {**UNUSED, "include": [{"system": "urn:oid:2.16.840.1.113883.6.90", "codes": ["C64.1"]}]}
        ),
        CONDITIONS,
        "valuesets/{last}/include/0/system",
        ICD10CM,
    ),
    (
        "unknown ingredient in a drug class",
        add_valueset({**UNUSED, "include": [{"system": INGREDIENT, "codes": ["aspirine"]}]}),
        CONDITIONS,
        "valuesets/{last}/include/0/codes/0",
        "unknown ingredient 'aspirine'",
    ),
    (
        "bad YAML",
        write_text("trials/RESORT.yaml", "id: RESORT\ncriteria: [\n  - id: x\n"),
        "trials/RESORT.yaml",
        "line 3, column 3",
        "invalid YAML",
    ),
    (
        "key given twice",
        write_text("trials/RESORT.yaml", "id: RESORT\nstatus: COMPLETED\nstatus: RECRUITING\n"),
        "trials/RESORT.yaml",
        "line 3, column 1",
        "duplicate key 'status'",
    ),
    (
        "file name differs from the id",
        edit(TRIAL, lambda doc: doc.update(id="NCT06903313")),
        TRIAL,
        "id",
        "differs from the file name",
    ),
]


@pytest.mark.parametrize(
    ("defect", "file", "path", "words"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS]
)
def test_each_defect_is_reported_with_file_and_path(
    copy: Path, defect: Callable[[Path], None], file: str, path: str, words: str
) -> None:
    ids = {c["id"]: i for i, c in enumerate(read(copy, TRIAL)["criteria"])}
    defect(copy)
    if "{last}" in path:
        path = path.replace("{last}", str(len(read(copy, file)["valuesets"]) - 1))
    path = path.format(**ids)
    with pytest.raises(CatalogError) as caught:
        load_catalog(copy)
    error = caught.value
    matching = [p for p in error.problems if p.file == file and p.path == path and words in p.message]
    assert matching, str(error)
    assert f"{file}: {path or '(top)'}: " in str(error)


def test_a_service_for_a_hook_no_handler_answers_is_refused_with_file_and_path(copy: Path) -> None:
    edit("services.yaml", lambda doc: doc["services"][0].update(hook="order-sing"))(copy)
    catalog = load_catalog(copy)  # the catalog alone does not know which hooks the code answers
    with pytest.raises(CatalogError) as caught:
        check_services(catalog.services)
    (problem,) = caught.value.problems
    assert (problem.file, problem.path) == ("services.yaml", "services/0/hook")
    assert "unknown hook 'order-sing' (supported: order-select, order-sign, patient-view)" in problem.message


def test_error_lists_every_problem_first_one_first(copy: Path) -> None:
    set_rule("age", {"agee": {"min": 18}})(copy)
    add_valueset({**UNUSED, "id": "kidney-cancer"})(copy)
    with pytest.raises(CatalogError) as caught:
        load_catalog(copy)
    error = caught.value
    assert isinstance(error, ValueError)
    assert len(error.problems) >= 2
    assert str(error).splitlines()[0] == str(error.problems[0])
    assert (error.file, error.path) == (error.problems[0].file, error.problems[0].path)
    assert {p.file for p in error.problems} == {TRIAL, CONDITIONS}


def test_duplicate_trial_id_across_files(copy: Path) -> None:
    shutil.copy(copy / "trials" / "RESORT.yaml", copy / "trials" / "RESORT-copy.yaml")
    with pytest.raises(CatalogError) as caught:
        load_catalog(copy)
    assert any(
        p.file == "trials/RESORT.yaml" and p.path == "id" and "duplicate trial id 'RESORT'" in p.message
        for p in caught.value.problems
    )


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nowhere")


def test_bundled_catalog_loads(catalog: Catalog) -> None:
    assert [t.info.key for t in catalog.trials] == ["NCT04299646", "NCT06882486", "NCT06903312", "RESORT"]
    assert catalog.directory == DEFAULT_MAPPINGS_DIR
    assert [s.hook for s in catalog.services] == ["patient-view", "order-select", "order-sign"]
    assert all(s.usage_requirements for s in catalog.services)
    assert "patient" in catalog.services[0].prefetch
    # the order hooks read the same chart as patient-view (and evaluate it with the draft orders carried out)
    patient_view = catalog.services[0]
    for service in catalog.services[1:]:
        assert service.prefetch == patient_view.prefetch
        assert service.required_prefetch == patient_view.required_prefetch


def test_trial_metadata_and_criteria(catalog: Catalog) -> None:
    trials = {t.info.key: t for t in catalog.trials}
    namecar = trials["NCT06882486"]
    assert (namecar.info.acronym, namecar.info.status, namecar.info.sponsor) == (
        "NAMECAR",
        "NOT_YET_RECRUITING",
        "Institut Paoli-Calmettes",
    )
    resort = trials["RESORT"]
    assert (resort.info.nct_id, resort.info.url, resort.info.status) == (None, None, "COMPLETED")
    for trial in catalog.trials:
        assert len(f"{trial.info.short_title} ({trial.info.nct_id})") < 140
        assert all((c.rule is None) != (c.clinician is None) for c in trial.criteria)
        assert [(a.label, a.rule) for a in trial.anchors] == [
            ("kidney cancer documented", {"condition": {"valueset": "kidney-cancer"}}),
            ("metastatic disease documented", {"metastatic": {}}),
        ]
    primary = trials["NCT06903312"]
    bilirubin = next(c for c in primary.criteria if c.id == "bilirubin")
    assert bilirubin.heading is not None and bilirubin.heading.startswith("Adequate bone-marrow")
    assert bilirubin.rule == {"lab": {"analyte": "bilirubin", "le_uln": 1.5}}
    assert [c.rule for c in primary.cohorts] == [
        {"primary_tumour_size": {"le_cm": 4}},
        {"primary_tumour_size": {"gt_cm": 4}},
    ]


def test_a_value_set_named_only_by_an_anchor_is_used(copy: Path) -> None:
    add_valueset(UNUSED)(copy)
    anchor = {"label": "a test anchor", "rule": {"condition": {"valueset": UNUSED["id"]}}}
    edit(TRIAL, lambda doc: doc["anchors"].append(anchor))(copy)
    trial = next(t for t in load_catalog(copy).trials if t.info.key == "NCT06903312")
    assert trial.anchors[-1].rule == anchor["rule"]


def test_an_anchor_left_to_the_clinician_is_allowed(copy: Path) -> None:
    """`import-ctgov` drafts rely on it: a `clinician` anchor is never true (the trial is not considered)."""
    anchor = {"label": "not yet encoded: disease and stage", "rule": {"clinician": "encode the disease"}}
    edit(TRIAL, lambda doc: doc.update(anchors=[anchor]))(copy)
    trial = next(t for t in load_catalog(copy).trials if t.info.key == "NCT06903312")
    assert [(a.label, a.rule) for a in trial.anchors] == [(anchor["label"], anchor["rule"])]


def test_terminology_is_built_from_the_catalog(catalog: Catalog) -> None:
    terminology = catalog.terminology
    kidney = terminology.valuesets["kidney-cancer"]
    assert kidney.contains((ICD10CM, "C641")) and kidney.contains((ICD10CM, "C6411"))
    assert not kidney.contains((ICD10CM, "C651")), "renal pelvis (C65) is not renal cell carcinoma"
    assert "rcc-clear-cell" in terminology.memberships([(SNOMED, "254915003")])
    assert terminology.valuesets["immune-checkpoint-inhibitor"].contains((INGREDIENT, "nivolumab"))
    assert {"creatinine", "bilirubin"} <= set(terminology.analytes)
    assert terminology.ingredients_for([(RXNORM, "1597876")], None) == {"nivolumab"}
    assert all(vs.source for vs in terminology.valuesets.values())


def test_version_is_a_hash_of_every_data_file(copy: Path, catalog: Catalog) -> None:
    assert len(catalog.version) == 16 and int(catalog.version, 16) >= 0
    assert load_catalog(copy).version == catalog.version, "the folder's location is not part of the version"
    with (copy / "README.md").open("a", encoding="utf-8") as handle:
        handle.write("\nDocumentation is not data.\n")
    assert load_catalog(copy).version == catalog.version, "the documentation is not part of the version"
    with (copy / "trials" / "RESORT.yaml").open("a", encoding="utf-8") as handle:
        handle.write("# a comment changes the version\n")
    assert load_catalog(copy).version != catalog.version


def readme_leaf_table() -> dict[str, set[str]]:
    """Leaf operators of mappings/README.md and the backticked words of their parameter column."""
    text = (DEFAULT_MAPPINGS_DIR / "README.md").read_text(encoding="utf-8")
    table = text.split("### Leaf operators", 1)[1]
    leaves: dict[str, set[str]] = {}
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split(" | ")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        words = {w for token in re.findall(r"`([^`]+)`", cells[1]) for w in token.split()}
        for name in re.findall(r"`([^`]+)`", cells[0]):
            leaves[name] = words
    return leaves


def test_schema_defines_exactly_the_leaf_operators_of_the_readme() -> None:
    schema = json.loads((SCHEMA_DIR / "trial.schema.json").read_text(encoding="utf-8"))
    rule = schema["$defs"]["rule"]["properties"]
    readme = readme_leaf_table()
    assert set(rule) - {"all", "any", "not"} == set(readme)
    for name, words in readme.items():
        leaf = rule[name]
        if leaf.get("type") != "object":
            continue
        params = set(leaf["properties"]) - {"if_true", "if_false", "note"}
        assert params <= words, f"{name}: parameters missing from the README"
        values = json.dumps(leaf)
        assert all(w in params or f'"{w}"' in values or w == "false" for w in words), name


def test_load_terminology_reads_the_vocabulary_alone(catalog: Catalog) -> None:
    terminology = load_terminology(DEFAULT_MAPPINGS_DIR)
    assert terminology.valuesets.keys() == catalog.terminology.valuesets.keys()
    assert terminology.analytes["creatinine"].unit == "mg/dL"


def test_load_terminology_names_the_file_of_a_broken_vocabulary(copy: Path) -> None:
    def drop_unit(doc: Any) -> None:
        del doc["analytes"][0]["unit"]

    edit("analytes.yaml", drop_unit)(copy)
    with pytest.raises(CatalogError) as error:
        load_terminology(copy)
    assert str(error.value).startswith("analytes.yaml: analytes/0")


def test_an_unused_value_set_is_a_warning_not_an_error(copy: Path) -> None:
    add_valueset(UNUSED)(copy)
    warnings = Engine(load_catalog(copy)).warnings
    last = len(read(copy, CONDITIONS)["valuesets"]) - 1
    assert [(w.file, w.path) for w in warnings] == [(CONDITIONS, f"valuesets/{last}")]
    assert "'not-used' is used by no rule" in warnings[0].message


def test_a_value_set_an_operator_reads_by_name_counts_as_used(catalog: Catalog) -> None:
    assert (
        "pregnancy" in catalog.unnamed_valuesets
    )  # no rule parameter names it: the `pregnant` leaf reads it
    assert Engine(catalog).warnings == ()


def test_a_value_set_an_operator_of_the_catalog_reads_by_name_must_exist(copy: Path) -> None:
    drop_valueset("pregnancy")(copy)
    catalog = load_catalog(copy)  # the files alone are fine
    with pytest.raises(CatalogError) as caught:
        Engine(catalog)
    (problem,) = caught.value.problems
    assert problem.message == "value set 'pregnancy' read by a rule is missing"
