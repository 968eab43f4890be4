"""Pages of resources and of the change log at their edges, over real HTTP requests.

Every limit gets its boundary cases (0, 1, limit, limit + 1); pages that end exactly on a
page boundary and pages with nothing on them are where paging code goes wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from features_gql.api import MAX_PAGE_SIZE
from tests.conftest import Server, StartServer

RESOURCES = """query ($first: Int, $after: String, $feature: String!) {
  feature(name: $feature) { resources(first: $first, after: $after) {
    edges { cursor node { type id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""

CHANGES = (
    "query ($after: Revision, $first: Int) { changes(after: $after, first: $first) { revision } }"
)


@pytest.fixture(params=["memory", "sqlite"])
async def server(
    request: pytest.FixtureRequest, start_server: StartServer, tmp_path: Path
) -> Server:
    """Each test on the reference store and on a real file."""
    store = "memory" if request.param == "memory" else f"sqlite://{tmp_path}/flags.db"
    return await start_server(store)


async def give(server: Server, feature: str, ids: list[str], type_: str = "pipeline") -> None:
    for id_ in ids:
        await server.service.api.add((type_, id_), feature)


async def page(
    server: Server, first: int | None, after: str | None = None, feature: str = "speedups"
) -> dict[str, Any]:
    variables: dict[str, Any] = {"feature": feature, "after": after}
    if first is not None:
        variables["first"] = first
    response = await server.gql(RESOURCES, variables)
    assert response.errors == [], response.errors
    connection: dict[str, Any] = response.data["feature"]["resources"]
    return connection


def ids_of(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


async def all_pages(server: Server, first: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = None
    for _ in range(100):  # bounded: a cursor that does not advance must fail, not hang
        connection = await page(server, first, after)
        pages.append(ids_of(connection))
        info = connection["pageInfo"]
        if not info["hasNextPage"]:
            return pages
        assert info["endCursor"] == connection["edges"][-1]["cursor"]
        after = info["endCursor"]
    raise AssertionError(f"paging never ended: {pages[:5]}...")


async def test_a_last_page_that_is_exactly_full_says_there_is_no_next_page(
    server: Server,
) -> None:
    ids = [f"p{i}" for i in range(6)]
    await give(server, "speedups", ids)
    assert await all_pages(server, 3) == [ids[:3], ids[3:]]


async def test_first_1_pages_one_resource_at_a_time(server: Server) -> None:
    await give(server, "speedups", ["a", "b", "c"])
    assert await all_pages(server, 1) == [["a"], ["b"], ["c"]]
    first = await page(server, 1)
    assert first["pageInfo"]["startCursor"] == first["pageInfo"]["endCursor"]
    assert first["pageInfo"]["hasPreviousPage"] is False


async def test_first_0_answers_no_resources_and_whether_there_are_any(server: Server) -> None:
    empty = await page(server, 0)
    assert empty["edges"] == []
    assert empty["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": False,
        "startCursor": None,
        "endCursor": None,
    }
    await give(server, "speedups", ["a"])
    some = await page(server, 0)
    assert some["edges"] == []
    # Relay's connection spec: more edges than `first` means there is a next page.
    assert some["pageInfo"]["hasNextPage"] is True
    assert some["pageInfo"]["endCursor"] is None


async def test_a_feature_no_resource_has_is_an_empty_page_not_an_error(server: Server) -> None:
    await give(server, "speedups", ["a"])
    for first in (None, 0, 1, MAX_PAGE_SIZE):
        connection = await page(server, first, feature="nobody-has-this")
        assert connection["edges"] == []
        assert connection["pageInfo"]["hasNextPage"] is False
        assert connection["pageInfo"]["endCursor"] is None


async def test_a_page_after_the_last_resource_is_empty(server: Server) -> None:
    await give(server, "speedups", ["a", "b"])
    last = await page(server, 2)
    assert last["pageInfo"]["hasNextPage"] is False
    after_last = await page(server, 2, last["pageInfo"]["endCursor"])
    assert after_last["edges"] == []
    assert after_last["pageInfo"]["hasNextPage"] is False
    assert after_last["pageInfo"]["hasPreviousPage"] is True
    assert after_last["pageInfo"]["endCursor"] is None


async def test_a_page_holds_100_resources_unless_told_otherwise(server: Server) -> None:
    ids = [f"p{i:03}" for i in range(101)]
    await give(server, "speedups", ids)
    connection = await page(server, None)
    assert ids_of(connection) == ids[:100]
    assert connection["pageInfo"]["hasNextPage"] is True
    rest = await page(server, None, connection["pageInfo"]["endCursor"])
    assert ids_of(rest) == ids[100:]


async def test_first_1000_is_the_largest_page(server: Server) -> None:
    ids = [f"p{i:04}" for i in range(MAX_PAGE_SIZE + 1)]
    await give(server, "speedups", ids)
    connection = await page(server, MAX_PAGE_SIZE)
    assert ids_of(connection) == ids[:MAX_PAGE_SIZE]
    assert connection["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize(
    ("first", "accepted"), [(-1, False), (0, True), (1000, True), (1001, False)]
)
async def test_first_must_be_between_0_and_1000(server: Server, first: int, accepted: bool) -> None:
    response = await server.gql(RESOURCES, {"feature": "speedups", "first": first})
    if accepted:
        assert response.errors == []
        return
    assert response.data == {"feature": {"resources": None}}
    assert response.codes == ["BAD_USER_INPUT"]
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == ("first", "range")
    assert response.errors[0]["message"] == f"first must be between 0 and 1000 (got {first})"


@pytest.mark.parametrize("cursor", ["!!!", "WzFd", "W10", "eyJhIjogMX0"])
async def test_a_cursor_this_api_did_not_make_is_bad_user_input(
    server: Server, cursor: str
) -> None:
    response = await server.gql(RESOURCES, {"feature": "speedups", "after": cursor})
    assert response.data == {"feature": {"resources": None}}
    assert response.codes == ["BAD_USER_INPUT"]
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == ("after", "cursor")
    assert response.errors[0]["message"] == (
        f"after must be a cursor returned by this API (got {cursor!r})"
    )


async def test_resources_of_a_bad_type_or_feature_are_bad_user_input(server: Server) -> None:
    response = await server.gql(
        '{ feature(name: "speedups") { resources(type: "Not A Type") { edges { cursor } } } }'
    )
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["field"] == "type"
    response = await server.gql('{ feature(name: "Not A Feature") { name } }')
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["extensions"]["field"] == "name"


# -- the change log -----------------------------------------------------------------------


async def revisions(server: Server, **variables: int) -> list[int]:
    response = await server.gql(CHANGES, variables)
    assert response.errors == [], response.errors
    return [change["revision"] for change in response.data["changes"]]


async def write_changes(server: Server, count: int) -> None:
    for i in range(count):
        await server.service.api.add(("app", f"a{i}"), "beta")


async def test_changes_page_through_the_log_oldest_first(server: Server) -> None:
    await write_changes(server, 5)
    assert await revisions(server) == [1, 2, 3, 4, 5]
    assert await revisions(server, after=0, first=1) == [1]
    assert await revisions(server, after=1, first=1) == [2]
    assert await revisions(server, after=3, first=10) == [4, 5]
    assert await revisions(server, after=5) == []
    assert await revisions(server, after=99) == []


async def test_changes_answer_100_unless_told_otherwise_and_at_most_1000(server: Server) -> None:
    await write_changes(server, MAX_PAGE_SIZE + 1)
    assert await revisions(server) == list(range(1, 101))
    assert await revisions(server, first=MAX_PAGE_SIZE) == list(range(1, MAX_PAGE_SIZE + 1))
    assert await revisions(server, after=MAX_PAGE_SIZE, first=MAX_PAGE_SIZE) == [1001]


@pytest.mark.parametrize(
    ("variables", "field", "message"),
    [
        ({"first": 0}, "first", "first must be between 1 and 1000 (got 0)"),
        ({"first": -5}, "first", "first must be between 1 and 1000 (got -5)"),
        ({"first": 1001}, "first", "first must be between 1 and 1000 (got 1001)"),
    ],
)
async def test_changes_out_of_range_are_bad_user_input(
    server: Server, variables: dict[str, int], field: str, message: str
) -> None:
    await write_changes(server, 1)
    response = await server.gql(CHANGES, variables)
    assert response.data == {"changes": None}
    assert response.codes == ["BAD_USER_INPUT"]
    assert response.errors[0]["message"] == message
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == (field, "range")
