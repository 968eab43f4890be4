"""The parser of an upstream's answers (features_gql.replication.wire), and the Revision
scalar through real GraphQL requests."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features_gql.errors import InvalidInput, MalformedUpstream
from features_gql.replication import wire
from tests.conftest import Server

AT = "2026-01-01T00:00:00+00:00"


def change(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "revision": 1,
        "op": "ADD",
        "resource": {"type": "pipeline", "id": "p1"},
        "feature": "beta",
        "actor": None,
        "at": AT,
    }
    return {**base, **fields}


@pytest.mark.parametrize("value", [0, 1, 2**31 - 1, 2**31, 2**53 - 1])
def test_revisions_in_range(value: int) -> None:
    assert wire.revision(value) == value


@pytest.mark.parametrize("value", [2**53, 2**64, -1, True, False, 1.0, "1", None, [1]])
def test_revisions_out_of_range_or_of_another_type(value: Any) -> None:
    with pytest.raises(MalformedUpstream) as error:
        wire.revision(value)
    assert error.value.field == "revision"
    assert "from 0 to 9007199254740991" in error.value.reason


@pytest.mark.parametrize("value", [1, 2**31, 2**53 - 1])
def test_a_change_takes_revisions_from_1(value: int) -> None:
    assert wire.change_event(change(revision=value)).revision == value


@pytest.mark.parametrize("value", [0, 2**53, -1, True, 1.0, "1"])
def test_a_change_refuses_other_revisions(value: Any) -> None:
    with pytest.raises(MalformedUpstream, match=r"change\.revision"):
        wire.change_event(change(revision=value))


def test_the_schema_ops_and_nothing_else() -> None:
    assert wire.change_event(change(op="REMOVE")).op == "remove"
    define = wire.change_event(change(op="DEFINE", resource=None))
    assert (define.op, define.resource) == ("define", None)
    for op in ("RENAME", "add", "", None, 1):
        with pytest.raises(MalformedUpstream, match=r"change\.op"):
            wire.change_event(change(op=op))


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"resource": None}, "change.resource"),
        ({"resource": {"type": "Not A Slug", "id": "p1"}}, "change.resource.type"),
        ({"resource": {"type": "pipeline", "id": ""}}, "change.resource.id"),
        ({"op": "DEFINE"}, "change.resource"),  # a catalog change names no resource
        ({"feature": "Beta!"}, "change.feature"),
        ({"feature": None}, "change.feature"),
        ({"at": "yesterday"}, "change.at"),
        ({"at": "2026-01-01T00:00:00"}, "change.at"),  # no time zone
        ({"actor": 5}, "change.actor"),
    ],
)
def test_fields_are_checked(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(MalformedUpstream) as error:
        wire.change_event(change(**fields))
    assert error.value.field == where


def test_a_missing_field_is_named() -> None:
    data = change()
    del data["at"]
    with pytest.raises(MalformedUpstream, match=r"change\.at: is missing"):
        wire.change_event(data)


def test_messages_are_bounded() -> None:
    with pytest.raises(MalformedUpstream) as error:
        wire.change_event(change(feature="x" * 1_000_000))
    assert len(str(error.value)) < 300
    with pytest.raises(MalformedUpstream) as error:
        wire.change_event(change(op="Z" * 1_000_000))
    assert len(str(error.value)) < 300


def test_a_batch_must_increase_past_the_revision_asked() -> None:
    one, two = wire.change_event(change(revision=1)), wire.change_event(change(revision=2))
    wire.check_sequence([one, two], 0)
    for batch, after in (([two, one], 0), ([one, one], 0), ([one], 1)):
        with pytest.raises(MalformedUpstream, match="revisions must increase"):
            wire.check_sequence(batch, after)


def test_snapshot_pages() -> None:
    page = {
        "revision": 2**40,
        "assignments": [["pipeline", "p1", "beta"], ["pipeline", "p2", "beta"]],
        "endCursor": "c",
        "hasNextPage": True,
    }
    snapshot, following = wire.snapshot_page({"snapshot": page})
    assert snapshot.revision == 2**40
    assert len(snapshot.assignments) == 2
    assert (following.cursor, following.has_next) == ("c", True)
    bad_pages = [
        {**page, "assignments": [["pipeline", "p1"]]},
        {**page, "assignments": [["pipeline", "p1", 3]]},
        {**page, "assignments": [["pipeline", "p2", "beta"], ["pipeline", "p1", "beta"]]},
        {**page, "endCursor": None},
        {**page, "hasNextPage": 1},
        {**page, "revision": 2**53},
    ]
    for bad in bad_pages:
        with pytest.raises(MalformedUpstream):
            wire.snapshot_page({"snapshot": bad})
    # The next page starts after the last one's keys.
    with pytest.raises(MalformedUpstream, match="increasing order"):
        wire.snapshot_page({"snapshot": page}, snapshot.assignments[-1])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
# Mostly-right changes with any one field replaced: nearer the rules than random JSON.
near_changes = st.builds(
    lambda key, value: {**change(), key: value},
    st.sampled_from(["revision", "op", "resource", "feature", "actor", "at"]),
    json_values,
)


@given(st.one_of(json_values, near_changes))
def test_arbitrary_json_raises_only_the_typed_error(value: Any) -> None:
    parsers = (
        wire.change_event,
        wire.subscription_change,
        lambda v: wire.changes({"changes": v}, 0),
        lambda v: wire.snapshot_page({"snapshot": v}),
        lambda v: wire.catalog_page({"features": v}),
        lambda v: wire.store_revision({"revision": v}),
        lambda v: wire.write_answer({"addFeature": v}, "addFeature"),
        wire.graphql_error,
    )
    for parse in parsers:
        failure: Exception | None = None
        try:
            parse(value)
        except Exception as error:  # anything else is what the test looks for
            failure = error
        # A write's InvalidInput is the upstream's typed answer, passed on as such.
        assert failure is None or isinstance(failure, MalformedUpstream | InvalidInput), failure
        assert len(str(failure)) < 600


# -- the Revision scalar, through real requests --------------------------------------------

CHANGES = "query ($after: Revision!) { changes(after: $after) { revision } }"


async def test_revision_variables_take_json_numbers_up_to_2_53(server: Server) -> None:
    for after in (0, 2**31, 2**53 - 1):
        answer = await server.gql(CHANGES, {"after": after})
        assert answer.errors == []
        assert answer.data == {"changes": []}


@pytest.mark.parametrize("after", [2**53, -1, "1", 1.5, True])
async def test_revision_variables_out_of_range_or_not_numbers_are_refused(
    server: Server, after: Any
) -> None:
    answer = await server.gql(CHANGES, {"after": after})
    assert answer.data is None
    assert (
        "a Revision is a whole number from 0 to 9007199254740991" in (answer.errors[0]["message"])
    )


async def test_revision_literals_past_2_53_are_refused(server: Server) -> None:
    answer = await server.gql("{ changes(after: 9007199254740992) { revision } }")
    assert answer.data is None
    assert "a Revision is a whole number" in answer.errors[0]["message"]
    answer = await server.gql("{ changes(after: 2147483648) { revision } }")
    assert answer.errors == []


async def test_an_int_variable_is_no_longer_a_revision(server: Server) -> None:
    answer = await server.gql(
        "query ($after: Int!) { changes(after: $after) { revision } }", {"after": 1}
    )
    assert (
        "of type 'Int!' used in position expecting type 'Revision!'"
        in (answer.errors[0]["message"])
    )
