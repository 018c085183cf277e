"""The request's JSON depth limit told from the body's bytes agrees with a walk of the parsed document."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.errors import MalformedJson
from cds_service.hook_request import _bytes_deeper_than, _deeper_than, load_json_object

# Strings full of what could fool a byte scan: quotes, brackets, backslashes, escapes, non-ASCII.
tricky_text = st.text(alphabet=st.sampled_from(list('"[]{}\\/ab é\n\t\u2028\U0001f600')), max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=40,
)
documents = st.dictionaries(tricky_text, json_values, max_size=4)


def _height(value: object) -> int:
    """Nesting depth as the service counts it: the top-level object is level 1, scalars add nothing."""
    if isinstance(value, dict):
        return 1 + max((_height(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_height(v) for v in value), default=0)
    return 0


def _encodings(document: object) -> list[bytes]:
    return [
        json.dumps(document).encode(),  # escapes every non-ASCII character
        json.dumps(document, ensure_ascii=False).encode(),
        json.dumps(document, ensure_ascii=False, indent=2).encode(),
        json.dumps(document, separators=(",", ":")).encode("utf-8-sig"),  # with a byte order mark
    ]


@settings(max_examples=300, deadline=None)
@given(documents)
def test_the_byte_scan_agrees_with_the_walk_at_every_limit_around_the_depth(document):
    height = _height(document)
    for body in _encodings(document):
        assert json.loads(body) == document
        for limit in {max(height - 1, 0), height, height + 1}:
            assert _bytes_deeper_than(body, limit) is (height > limit)
            assert _deeper_than(document, limit) is (height > limit)


@pytest.mark.parametrize(
    ("body", "height"),
    [
        (b'{"a": "mm[Hg]", "b": [[{"c": "]]]}}"}]]}', 4),  # brackets inside strings count for nothing
        (b'{"a": "\\"[[[", "b": "]]]\\\\", "c": {}}', 2),  # escaped quote, then escaped backslash
        (b'{"a": "x\\\\\\"[", "b": ["\\u005c"]}', 2),  # \\ then \" inside one string; an escaped backslash
        (b'{"": "", "[": "]", "{}": [[]]}', 3),  # empty strings next to each other and to brackets
        (b'{"a": [{}, [], [[{}]]]}', 5),
    ],
)
def test_strings_that_look_like_structure_do_not_change_the_depth(body, height):
    document = json.loads(body)
    assert _height(document) == height
    assert _bytes_deeper_than(body, height) is False
    assert _bytes_deeper_than(body, height - 1) is True


def _nested(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


def test_a_body_in_utf16_is_walked_instead_and_still_refused_when_too_deep():
    body = json.dumps(_nested(65)).encode("utf-16")
    assert _bytes_deeper_than(body, 64) is None
    with pytest.raises(MalformedJson):
        load_json_object(body, 64)
    assert load_json_object(json.dumps(_nested(64)).encode("utf-16"), 64) == _nested(64)


@pytest.mark.parametrize("depth", [63, 64, 65, 500])
def test_the_limit_holds_for_bodies_hiding_depth_behind_closing_brackets_in_strings(depth):
    # the strings close as many brackets as the document opens: only a scan that skips strings sees the depth
    value: object = "]" * depth
    for _ in range(depth - 1):
        value = ["]" * depth, value]
    body = json.dumps({"deep": value}).encode()
    assert _bytes_deeper_than(body, 64) is (depth > 64)
    if depth > 64:
        with pytest.raises(MalformedJson):
            load_json_object(body, 64)
    else:
        assert load_json_object(body, 64) == {"deep": value}


def test_brackets_that_do_not_pair_are_left_to_the_parser_which_says_the_json_is_invalid():
    truncated = b'{"hook": "patient-view", "context": {"patientId": ["' + b"[" * 100
    assert _bytes_deeper_than(truncated, 64) is None
    with pytest.raises(MalformedJson, match="not valid JSON"):
        load_json_object(truncated, 64)
    deep_but_invalid = b"[" * 65 + b"nope" + b"]" * 65  # pairs, nests too deep: refused before parsing
    with pytest.raises(MalformedJson, match="nested deeper than 64"):
        load_json_object(deep_but_invalid, 64)
