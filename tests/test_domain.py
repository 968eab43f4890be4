"""Validation rules and cursors, checked against open-ended input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features_gql.api import decode_cursor, encode_cursor
from features_gql.domain import Resource, validate_feature, validate_id
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


@given(slugs, st.text(min_size=1, max_size=256).filter(lambda s: "\x00" not in s))
def test_cursors_round_trip(type_: str, id_: str) -> None:
    resource = Resource(type_, id_)
    assert decode_cursor(encode_cursor(resource)) == resource


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
