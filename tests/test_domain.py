"""Validation rules and cursors, checked against open-ended input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features_gql.api import (
    decode_cursor,
    decode_snapshot_cursor,
    encode_cursor,
    encode_snapshot_cursor,
)
from features_gql.domain import (
    ID_MAX,
    Assignment,
    Resource,
    all_ids_valid,
    resource_of_pair,
    validate_feature,
    validate_id,
    validate_slug,
)
from features_gql.errors import InvalidInput

slugs = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)


@given(slugs)
def test_every_slug_is_a_valid_feature_and_type(value: str) -> None:
    assert validate_feature(value) == value
    assert Resource.of(value, "x").type == value


@given(st.text(max_size=80))
def test_any_text_is_accepted_or_refused_with_the_field_and_rule(value: str) -> None:
    valid = re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value) is not None
    if valid:
        assert validate_feature(value) == value
        return
    with pytest.raises(InvalidInput) as caught:
        validate_feature(value)
    assert (caught.value.field, caught.value.rule) == ("feature", "slug")
    assert "feature must be a lowercase slug" in caught.value.message


@given(st.text(max_size=300))
def test_ids_follow_the_documented_rule(value: str) -> None:
    forbidden = any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" or 0xD800 <= ord(c) <= 0xDFFF
        for c in value
    )
    valid = 1 <= len(value) <= 256 and not forbidden
    if valid:
        assert validate_id(value, "resource.id") == value
        return
    with pytest.raises(InvalidInput) as caught:
        validate_id(value, "resource.id")
    assert caught.value.field == "resource.id"
    assert caught.value.rule in ("length", "printable")


def _id_is_valid(value: str) -> bool:
    try:
        validate_id(value)
    except InvalidInput:
        return False
    return True


# Mostly valid ids, with the characters at the edges of the forbidden ranges mixed in.
ids = st.one_of(
    st.text(max_size=ID_MAX + 2),
    st.text(alphabet=" a\x1f\x20\x7e\x7f\x9f\xa0\u2027\u2028\u2029\u202a", max_size=4),
    st.integers(0, ID_MAX + 1).map(lambda n: "x" * n),
)


@given(st.lists(ids, max_size=20))
def test_the_batch_check_of_ids_agrees_with_checking_each(values: list[str]) -> None:
    assert all_ids_valid(values) == all(_id_is_valid(value) for value in values)


@pytest.mark.parametrize(
    ("values", "valid"),
    [
        ([], True),
        (["a"], True),
        (["a b", "c"], True),
        (["x" * ID_MAX, "y"], True),
        (["x" * (ID_MAX + 1)], False),
        (["a", ""], False),
        (["a", "b\n"], False),
        (["\ud800"], False),
    ],
)
def test_the_batch_check_of_ids_at_its_boundaries(values: list[str], valid: bool) -> None:
    assert all_ids_valid(values) is valid


def test_a_resource_is_its_type_and_id_however_it_is_built() -> None:
    built = resource_of_pair(("pipeline", "p1"))
    assert type(built) is Resource
    assert built == Resource("pipeline", "p1") == Resource.of("pipeline", "p1")
    assert (built.type, built.id, str(built)) == ("pipeline", "p1", "pipeline/p1")
    assert hash(built) == hash(Resource("pipeline", "p1"))


@given(slugs, st.text(min_size=1, max_size=256).filter(lambda s: "\x00" not in s))
def test_cursors_round_trip(type_: str, id_: str) -> None:
    resource = Resource(type_, id_)
    assert decode_cursor(encode_cursor(resource)) == resource


@given(slugs, st.text(min_size=1, max_size=256), slugs)
def test_snapshot_cursors_round_trip(type_: str, id_: str, feature: str) -> None:
    assignment = Assignment(type_, id_, feature)
    assert decode_snapshot_cursor(encode_snapshot_cursor(assignment)) == assignment


@pytest.mark.parametrize("cursor", ["", "!!!", "WzFd", "eyJhIjogMX0", "W10", "WyJhIl0"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(cursor)
    assert caught.value.field == "after"


def test_resources_order_by_type_then_code_point_of_id() -> None:
    resources = [Resource("b", "a"), Resource("a", "é"), Resource("a", "z"), Resource("a", "B")]
    assert sorted(resources) == [
        Resource("a", "B"),
        Resource("a", "z"),
        Resource("a", "é"),
        Resource("b", "a"),
    ]


# -- the exact limits: st.text rarely reaches them ----------------------------------------


@pytest.mark.parametrize(
    "value",
    ["a", "0", "a" * 64, "a-b_c", "9_", "z" + "-" * 63, "a" + "_" * 63],
)
def test_slugs_at_the_edges_of_the_rule_are_accepted(value: str) -> None:
    assert validate_slug(value, "type") == value


@pytest.mark.parametrize(
    "value",
    ["", "a" * 65, "_a", "-a", "A", "aB", "a b", "a.b", "a/b", "é", "a\n"],
)
def test_slugs_just_past_the_rule_are_refused_naming_field_and_rule(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_slug(value, "items[2].resource.type")
    assert (caught.value.field, caught.value.rule) == ("items[2].resource.type", "slug")
    assert caught.value.message.startswith("items[2].resource.type must be a lowercase slug")


def test_a_feature_is_a_slug_named_feature_unless_told_otherwise() -> None:
    assert validate_feature("a" * 64) == "a" * 64
    with pytest.raises(InvalidInput) as caught:
        validate_feature("a" * 65)
    assert (caught.value.field, caught.value.rule) == ("feature", "slug")
    with pytest.raises(InvalidInput) as named:
        validate_feature("_x", "features[3]")
    assert named.value.field == "features[3]"


@pytest.mark.parametrize("length", [1, 255, 256])
def test_ids_up_to_256_characters_are_accepted(length: int) -> None:
    assert validate_id("x" * length, "id") == "x" * length


@pytest.mark.parametrize("length", [0, 257, 1000])
def test_empty_ids_and_ids_over_256_characters_break_the_length_rule(length: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_id("x" * length, "resource.id")
    assert (caught.value.field, caught.value.rule) == ("resource.id", "length")
    assert caught.value.message.startswith("resource.id must be 1-256 characters")
    if length:
        assert f"got {length} characters" in caught.value.message


def test_a_256_character_id_of_multibyte_characters_is_measured_in_characters() -> None:
    assert validate_id("日" * 256, "id") == "日" * 256
    with pytest.raises(InvalidInput):
        validate_id("日" * 257, "id")


# Each forbidden range, with the allowed neighbour on either side.
FORBIDDEN = ["\x00", "\x1f", "\x7f", "\x80", "\x9f", "\u2028", "\u2029", "\ud800", "\udfff"]
ALLOWED = [" ", "~", "\xa0", "\u2027", "\u202a", "\ud7ff", "\ue000", "\U0001f680"]


@pytest.mark.parametrize("char", ALLOWED)
def test_printable_neighbours_of_the_forbidden_ranges_are_allowed_in_ids(char: str) -> None:
    assert validate_id(f"a{char}b", "id") == f"a{char}b"


@pytest.mark.parametrize("char", FORBIDDEN)
def test_control_separator_and_surrogate_characters_are_refused_with_their_position(
    char: str,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_id(f"ab{char}c", "resource.id")
    assert (caught.value.field, caught.value.rule) == ("resource.id", "printable")
    assert f"found U+{ord(char):04X} at 2" in caught.value.message


def test_a_resource_is_validated_type_first_under_the_given_field() -> None:
    assert Resource.of("pipeline", "x" * 256, "items[0].resource") == Resource(
        "pipeline", "x" * 256
    )
    with pytest.raises(InvalidInput) as bad_type:
        Resource.of("Pipeline", "", "items[0].resource")
    assert (bad_type.value.field, bad_type.value.rule) == ("items[0].resource.type", "slug")
    with pytest.raises(InvalidInput) as bad_id:
        Resource.of("pipeline", "x" * 257)
    assert (bad_id.value.field, bad_id.value.rule) == ("resource.id", "length")
    assert str(Resource("pipeline", "p/1")) == "pipeline/p/1"
