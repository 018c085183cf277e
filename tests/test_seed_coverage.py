"""Every eligibility criterion of the registry texts is in the catalog verbatim, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

SEEDS = Path(__file__).parents[2] / "shared" / "seeds"
TRIALS = Path(__file__).parents[1] / "mappings" / "trials"
REGISTRY_SEEDS = {
    "NCT06903312": "NCT06903312-primary-tumor-ablation.txt",
    "NCT06882486": "NCT06882486-NAMECAR-veeva.txt",
    "NCT04299646": "NCT04299646-SRT-oligoprogression.txt",
}
HEADINGS = {"inclusion criteria": "inclusion", "exclusion criteria": "exclusion"}
LIST_ITEM = re.compile(r"^\s*(?:(?P<number>\d+)\.|•)\s+(?P<text>\S.*)$")
# Words that join the criterion fragments of RESORT's eligibility sentence.
CONNECTIVES = {"eligible", "patients", "were", "those", "with", "and"}


def normalise(text: str) -> str:
    """Drop markdown escape backslashes and collapse whitespace."""
    return " ".join(re.sub(r"\\([\\`*_{}\[\]()<>#+\-.!|])", r"\1", text).split())


def seed_criteria(text: str) -> set[tuple[str, str, str | None]]:
    """Return `(type, text, heading)` for every list item under the inclusion and exclusion headings.

    An item ending with ":" followed by a list restarting at 1 is a heading: its items carry it, until the
    number that follows the heading's own number returns to the upper level.
    """
    found: set[tuple[str, str, str | None]] = set()
    section: str | None = None
    parent: tuple[int, str] | None = None  # (number, text) of the item whose sub-list we are in
    previous: tuple[int, str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower() in HEADINGS:
            section, parent, previous = HEADINGS[stripped.lower()], None, None
            continue
        if section is None or not stripped:
            continue
        match = LIST_ITEM.match(line)
        if match is None:
            section = None
            continue
        item = normalise(match["text"])
        number = int(match["number"]) if match["number"] else 0
        if parent is not None and number == parent[0] + 1:
            parent = None
        if parent is None and number == 1 and previous is not None and previous[1].endswith(":"):
            found.discard((section, previous[1], None))
            parent = previous
        if parent is not None:
            found.add((section, item, parent[1]))
        else:
            found.add((section, item, None))
            previous = (number, item)
    return found


def mapped_criteria(trial_id: str) -> set[tuple[str, str, str | None]]:
    doc = yaml.safe_load((TRIALS / f"{trial_id}.yaml").read_text(encoding="utf-8"))
    items = [
        (c["type"], normalise(c["text"]), normalise(c["heading"]) if c.get("heading") else None)
        for c in doc["criteria"]
    ]
    assert len(items) == len(set(items)), "a criterion is mapped twice"
    return set(items)


def test_parser_reads_numbered_sub_items() -> None:
    text = "Inclusion Criteria\n\n1. First.\n2. Labs:\n\n1. A \\<2;\n2. B.\n3. Third.\nAge\n"
    assert seed_criteria(text) == {
        ("inclusion", "First.", None),
        ("inclusion", "A <2;", "Labs:"),
        ("inclusion", "B.", "Labs:"),
        ("inclusion", "Third.", None),
    }


@pytest.mark.parametrize("trial_id", sorted(REGISTRY_SEEDS))
def test_every_registry_criterion_is_mapped_verbatim(trial_id: str) -> None:
    expected = seed_criteria((SEEDS / REGISTRY_SEEDS[trial_id]).read_text(encoding="utf-8"))
    assert len(expected) >= 10
    mapped = mapped_criteria(trial_id)
    assert sorted(expected - mapped, key=str) == [], "registry criteria missing from the mapping"
    assert sorted(mapped - expected, key=str) == [], "mapped criteria absent from the registry text"


@pytest.mark.parametrize("trial_id", sorted(REGISTRY_SEEDS))
def test_trial_names_its_seed(trial_id: str) -> None:
    doc = yaml.safe_load((TRIALS / f"{trial_id}.yaml").read_text(encoding="utf-8"))
    assert doc["source"] == f"shared/seeds/{REGISTRY_SEEDS[trial_id]}"


def test_resort_criteria_are_fragments_of_its_eligibility_sentences() -> None:
    abstract = normalise((SEEDS / "RESORT-metastasectomy-abstract.txt").read_text(encoding="utf-8"))
    sentence = re.search(r"Eligible patients were [^.]*\.", abstract)
    assert sentence is not None
    texts = [text for kind, text, _ in mapped_criteria("RESORT") if kind == "inclusion"]
    assert all(text in abstract for text in texts)
    rest = sentence.group(0)
    for text in texts:
        rest = rest.replace(text, " ")
    assert set(rest.replace(".", " ").lower().split()) <= CONNECTIVES
