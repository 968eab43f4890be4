"""The one cursor codec (features_gql.cursors): every position round-trips, the wire
format of the cursors clients may hold is unchanged, and any string a client sends
decodes to a position or to InvalidInput naming the argument, never another error."""

from __future__ import annotations

import base64
import string
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from features_gql import api, cursors
from features_gql.cursors import (
    ASSIGNMENT,
    FEATURE,
    MAX_CURSOR,
    RESOURCE,
    REVISION,
    CursorKind,
    decode_key,
    decode_node_id,
    encode_key,
    encode_node_id,
    pack,
    unpack,
)
from features_gql.domain import Assignment, Resource
from features_gql.errors import InvalidInput

slugs = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)
ids = st.text(min_size=1, max_size=256)
KINDS: list[CursorKind[object]] = [RESOURCE, ASSIGNMENT, FEATURE, REVISION]  # type: ignore[list-item]
NODE_TYPES = {"Resource": 2, "Feature": 1}


def raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@given(slugs, ids)
def test_resource_cursors_round_trip(type_: str, id_: str) -> None:
    assert RESOURCE.decode(RESOURCE.encode(Resource(type_, id_))) == Resource(type_, id_)


@given(slugs, ids, slugs)
def test_assignment_cursors_round_trip(type_: str, id_: str, feature: str) -> None:
    assignment = Assignment(type_, id_, feature)
    assert ASSIGNMENT.decode(ASSIGNMENT.encode(assignment)) == assignment


@given(slugs, st.integers(min_value=0, max_value=2**63 - 1))
def test_key_cursors_round_trip(name: str, revision: int) -> None:
    assert FEATURE.decode(FEATURE.encode(name)) == name
    assert REVISION.decode(REVISION.encode(revision)) == revision
    assert decode_key(encode_key("feature", name), "feature") == name


@given(slugs, ids)
def test_node_ids_round_trip(type_: str, id_: str) -> None:
    id_ = id_.replace("\x1f", "")  # ids hold no control characters (domain rule)
    if not id_:
        return
    assert decode_node_id(encode_node_id("Resource", type_, id_), NODE_TYPES) == (
        "Resource",
        [type_, id_],
    )


@given(st.text(min_size=1, max_size=300))
def test_packing_round_trips(text: str) -> None:
    assert unpack(pack(text)) == text


def outcome(call: Callable[[], object]) -> object:
    """What ``call`` returns, or the InvalidInput it raises (any other error fails)."""
    try:
        return call()
    except InvalidInput as exc:
        return exc


HOSTILE_ALPHABET = string.ascii_letters + string.digits + "_-=+/"


@given(st.one_of(st.text(max_size=200), st.text(alphabet=HOSTILE_ALPHABET, max_size=200)))
@example("")
@example("=")
@example("W10")
@example("x" * (MAX_CURSOR + 4))
def test_any_string_decodes_to_a_position_or_invalid_input(value: str) -> None:
    for kind in KINDS:
        found = outcome(lambda kind=kind: kind.decode(value, "after"))
        if isinstance(found, InvalidInput):
            assert (found.field, found.rule) == ("after", "cursor")
        else:
            assert kind.encode(found) == value  # one position, one cursor
    found = outcome(lambda: decode_node_id(value, NODE_TYPES))
    if isinstance(found, InvalidInput):
        assert (found.field, found.rule) == ("nodeId", "node-id")


@given(st.binary(max_size=300))
def test_any_packed_bytes_decode_to_a_position_or_invalid_input(data: bytes) -> None:
    value = base64.urlsafe_b64encode(data).decode().rstrip("=")
    for kind in KINDS:
        found = outcome(lambda kind=kind: kind.decode(value))
        assert not isinstance(found, InvalidInput) or found.field == "after"


def test_the_wire_format_of_existing_cursors_is_unchanged() -> None:
    # The cursors the README shows, and the forms clients and replicas may have stored.
    assert RESOURCE.encode(Resource("shop", "s-1")) == "WyJzaG9wIiwicy0xIl0"
    assert FEATURE.encode("new-checkout") == "eyJmZWF0dXJlIjoibmV3LWNoZWNrb3V0In0"
    assert REVISION.encode(5) == raw('{"revision":5}')
    assert ASSIGNMENT.encode(Assignment("a", "é", "f")) == raw('["a","é","f"]')
    assert encode_node_id("Resource", "shop", "s-1") == raw("Resource\x1fshop\x1fs-1")
    # The names api.py always exported are the same functions.
    assert api.encode_cursor is cursors.encode_cursor
    assert api.decode_snapshot_cursor is cursors.decode_snapshot_cursor
    assert api.encode_key("revision", 5) == REVISION.encode(5)


HOSTILE = [
    "",  # empty
    "!!!",  # not the alphabet
    "WyJzaG9w Iiwicy0xIl0",  # a space inside
    "WyJzaG9wIiwicy0xIl0=",  # padding: never made by the encoder
    "WyJzaG9wIiwicy0xIl0\n",  # a trailing newline
    "WyJzaG9wIiwicy0xIl1",  # unused trailing bits set
    "A",  # a length base64 cannot have
    raw("[1]"),  # wrong shapes
    raw("[]"),
    raw('["a"]'),
    raw('["a","b","c"]'),
    raw('["a",1]'),
    raw('{"resource":["a","b"]}'),  # a tag on the untagged kind
    raw('[ "a", "b"]'),  # not the canonical text
    raw("\xff"),  # not JSON
    raw("[" * 3000),  # nesting deep enough to overflow a recursive parser
    raw('["\\ud800","b"]'),  # a lone surrogate
    base64.urlsafe_b64encode(b'["\xff","b"]').decode(),  # not UTF-8
    base64.urlsafe_b64encode('["a","b"]'.encode("utf-16")).decode(),  # not UTF-8
    "WyJzaG9wIiwicy0xIl0" * 300,  # too long
    "\ud800",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_resource_cursors_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RESOURCE.decode(value)
    assert (caught.value.field, caught.value.rule) == ("after", "cursor")


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (FEATURE, raw('{"revision":5}')),  # another kind's cursor
        (REVISION, raw('{"feature":"a"}')),
        (REVISION, raw('{"revision":"5"}')),
        (REVISION, raw('{"revision":true}')),
        (REVISION, raw('{"revision":5.0}')),
        (REVISION, raw('{"revision":NaN}')),
        (REVISION, raw('{"revision":' + "9" * 5000 + "}")),
        (REVISION, raw('{"revision":5,"feature":"a"}')),
        (FEATURE, raw('{"feature":5}')),
        (FEATURE, raw('["a","b"]')),
        (ASSIGNMENT, RESOURCE.encode(Resource("a", "b"))),
        (RESOURCE, ASSIGNMENT.encode(Assignment("a", "b", "c"))),
    ],
)
def test_cursors_of_another_kind_or_shape_are_invalid_input(
    kind: CursorKind[object], value: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        kind.decode(value, "after")
    assert caught.value.field == "after"


def test_the_error_names_the_argument() -> None:
    with pytest.raises(InvalidInput) as caught:
        FEATURE.decode("nope", "input.after")
    assert caught.value.field == "input.after"
    assert "input.after must be a cursor returned by this field" in caught.value.message


def test_the_longest_cursor_this_service_makes_decodes() -> None:
    longest = Assignment("a" * 64, "\U0010ffff" * 128 + '"' * 128, "f" * 64)
    cursor = ASSIGNMENT.encode(longest)
    assert len(cursor) <= MAX_CURSOR
    assert ASSIGNMENT.decode(cursor) == longest


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        raw("Resource\x1fa"),  # too few parts
        raw("Feature\x1fa\x1fb"),  # too many
        raw("Other\x1fa"),  # an unknown type
        raw("Feature\x1fa") + "=",
    ],
)
def test_foreign_node_ids_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_node_id(value, NODE_TYPES)
    assert (caught.value.field, caught.value.rule) == ("nodeId", "node-id")
