"""The catalog's indexes answer exactly what their plain definitions say (value-set membership with ICD-10-CM
prefixes, ingredients named in a medication's text)."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.catalog import load_terminology
from cds_service.config import DEFAULT_MAPPINGS_DIR
from cds_service.terminology import (
    ICD10CM,
    ICD10PCS,
    RXNORM,
    SNOMED,
    Code,
    Terminology,
    ValueSet,
    normalize_code,
)


@cache
def catalog_terminology() -> Terminology:
    return load_terminology(DEFAULT_MAPPINGS_DIR)


def memberships_by_definition(terminology: Terminology, codes: list[Code]) -> frozenset[str]:
    return frozenset(vs.id for vs in terminology.valuesets.values() if any(vs.contains(c) for c in codes))


def catalog_codes() -> list[Code]:
    """Every code and prefix of the catalog's value sets: the values most likely to hit an edge."""
    found = set()
    for vs in catalog_terminology().valuesets.values():
        found |= vs.codes | vs.prefixes
    return sorted(found)


ICD10_CHARS = "ABCDZ0123456789"
codes_near_the_catalog = st.one_of(
    st.sampled_from(catalog_codes()),
    st.builds(
        lambda code, suffix, cut: (code[0], code[1][: max(0, len(code[1]) - cut)] + suffix),
        st.sampled_from(catalog_codes()),
        st.text(ICD10_CHARS, max_size=3),
        st.integers(0, 3),
    ),
    st.tuples(st.sampled_from([ICD10CM, SNOMED, RXNORM]), st.text(ICD10_CHARS, max_size=7)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(codes_near_the_catalog, max_size=4))
def test_memberships_are_every_value_set_containing_a_code(codes):
    terminology = catalog_terminology()
    assert terminology.memberships(codes) == memberships_by_definition(terminology, codes)


def test_an_icd10_code_is_in_the_value_sets_of_each_of_its_prefixes():
    terminology = Terminology.build(
        [
            ValueSet("kidney", "Kidney", frozenset(), frozenset({(ICD10CM, "C64")})),
            ValueSet("right-kidney", "Right kidney", frozenset({(ICD10CM, "C641")})),
            ValueSet("any-c", "Any C", frozenset(), frozenset({(ICD10CM, "C")})),
            ValueSet("snomed-c64", "Not ICD-10", frozenset(), frozenset({(SNOMED, "C64")})),
        ],
        [],
        [],
    )
    assert terminology.memberships([(ICD10CM, "C641")]) == {"kidney", "right-kidney", "any-c"}
    assert terminology.memberships([(ICD10CM, "C6")]) == {"any-c"}
    assert terminology.memberships([(ICD10CM, "D09")]) == frozenset()
    assert terminology.memberships([(SNOMED, "C641")]) == {"snomed-c64"}


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40),
    st.lists(st.sampled_from(["cabozantinib", "nivolumab", "ipilimumab", " + "]), max_size=3),
)
def test_ingredients_named_in_a_text_are_every_ingredient_with_a_name_in_it(noise, names):
    terminology = catalog_terminology()
    text = noise + "".join(names)
    expected = frozenset(
        i.id for i in terminology.ingredients.values() if any(n in text.lower() for n in i.names)
    )
    assert terminology.ingredients_for([], text) == expected


def test_an_icd10_pcs_code_sent_in_lower_case_is_the_same_code() -> None:
    terminology = catalog_terminology()
    (upper,) = sorted(c for s, c in terminology.valuesets["nephrectomy"].codes if s == ICD10PCS)[:1]
    lower = normalize_code("urn:oid:2.16.840.1.113883.6.4", upper.lower())
    assert lower == (ICD10PCS, upper)
    assert "nephrectomy" in terminology.memberships([lower])
