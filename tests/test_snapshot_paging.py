"""Snapshot pages and change-log trimming at their edges (what replicas load and retention cuts)."""

from __future__ import annotations

from typing import Any

import pytest

from features_gql import FeaturesAPI, InvalidInput
from features_gql.api import MAX_SNAPSHOT_PAGE
from features_gql.errors import ChangesTrimmed
from features_gql.events import OperationEvent
from features_gql_plugins.memory_store import MemoryStore
from tests.conftest import Server

SNAPSHOT = """query ($after: String, $first: Int!) {
  snapshot(after: $after, first: $first) { revision assignments endCursor hasNextPage } }"""


async def snapshot(server: Server, first: int, after: str | None = None) -> dict[str, Any]:
    response = await server.gql(SNAPSHOT, {"first": first, "after": after})
    assert response.errors == [], response.errors
    page: dict[str, Any] = response.data["snapshot"]
    return page


async def test_snapshot_pages_walk_every_assignment_once_in_order(server: Server) -> None:
    for id_ in ("b", "a"):
        for feature in ("y", "x"):
            await server.service.api.add(("app", id_), feature)
    seen: list[list[str]] = []
    after = None
    for _ in range(10):  # bounded: a cursor that does not advance must fail, not hang
        page = await snapshot(server, 1, after)
        assert page["revision"] == 4
        seen += page["assignments"]
        if not page["hasNextPage"]:
            break
        after = page["endCursor"]
    expected = [["app", "a", "x"], ["app", "a", "y"], ["app", "b", "x"], ["app", "b", "y"]]
    assert seen == expected
    whole = await snapshot(server, MAX_SNAPSHOT_PAGE)
    assert whole["assignments"] == expected
    assert whole["hasNextPage"] is False


@pytest.mark.parametrize("first", [0, -1, MAX_SNAPSHOT_PAGE + 1])
async def test_snapshot_pages_hold_1_to_10000(server: Server, first: int) -> None:
    response = await server.gql(SNAPSHOT, {"first": first})
    assert response.data == {"snapshot": None}
    assert response.codes == ["BAD_USER_INPUT"]
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == ("first", "range")
    assert response.errors[0]["message"] == (
        f"first must be between 1 and {MAX_SNAPSHOT_PAGE} (got {first})"
    )


@pytest.mark.parametrize("cursor", ["!!!", "WzFd", "WyJhIiwiYiJd", "eyJhIjogMX0"])
async def test_a_snapshot_cursor_this_api_did_not_make_is_bad_user_input(
    server: Server, cursor: str
) -> None:
    response = await server.gql(SNAPSHOT, {"first": 1, "after": cursor})
    assert response.codes == ["BAD_USER_INPUT"]
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == ("after", "cursor")
    assert response.errors[0]["message"] == (
        f"after must be a cursor returned by this API (got {cursor!r})"
    )


async def test_snapshot_cursors_survive_odd_ids(server: Server) -> None:
    ids = ['a "quoted" / 日本語 🚀', "x" * 256, "=="]
    for id_ in ids:
        await server.service.api.add(("app", id_), "on")
    seen = []
    after = None
    for _ in range(10):
        page = await snapshot(server, 1, after)
        seen += [row[1] for row in page["assignments"]]
        if not page["hasNextPage"]:
            break
        after = page["endCursor"]
    assert seen == sorted(ids)


async def test_a_snapshot_page_is_one_store_call_asking_for_the_page_size() -> None:
    events: list[OperationEvent] = []
    api = FeaturesAPI(MemoryStore(), on_event=events.append)
    page = await api.snapshot_page()
    assert (page.revision, page.assignments) == (0, [])
    assert [(e.op, e.items) for e in events] == [("snapshot_page", 1000)]


async def test_trimming_keeps_the_latest_changes_and_refuses_to_keep_none() -> None:
    events: list[OperationEvent] = []
    api = FeaturesAPI(MemoryStore(), on_event=events.append)
    for i in range(3):
        await api.add(("app", f"a{i}"), "on")
    with pytest.raises(InvalidInput) as caught:
        await api.trim_changes(0)
    assert (caught.value.field, caught.value.rule) == ("keep", "range")
    assert str(caught.value) == "keep must be at least 1 (got 0)"
    assert await api.trim_changes(3) == 0
    assert await api.trim_changes(4) == 0
    assert "trim_changes" not in [e.op for e in events], "nothing to trim: no store call"
    assert [c.revision for c in await api.changes_since()] == [1, 2, 3]
    assert await api.trim_changes(1) == 2
    assert [(e.op, e.outcome) for e in events[-2:]] == [("revision", "ok"), ("trim_changes", "ok")]
    assert [c.revision for c in await api.changes_since(2)] == [3]
    with pytest.raises(ChangesTrimmed):
        await api.changes_since()  # a reader behind the trim is told to resync
    assert await api.revision() == 3
