"""Every item of a batch of checks is validated, whatever came before it in the batch.

Over real HTTP, on the fast path and on the general path.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Server, StartServer

CHECKS = "query ($items: [CheckInput!]!) { checks(items: $items) { enabled } }"
MATRIX = (
    "query ($t: String!, $ids: [String!]!, $fs: [String!]!) "
    "{ checkMatrix(type: $t, ids: $ids, features: $fs) }"
)


@pytest.fixture(params=[True, False], ids=["fast-path", "general-path"])
async def server(request: pytest.FixtureRequest, start_server: StartServer) -> Server:
    server = await start_server("memory", fast_path=request.param)
    await server.service.api.add(("app", "a1"), "beta")
    return server


def item(type_: str, id_: str, feature: str) -> dict[str, Any]:
    return {"resource": {"type": type_, "id": id_}, "feature": feature}


GOOD = item("app", "a1", "beta")


@pytest.mark.parametrize(
    ("items", "field", "rule"),
    [
        ([item("Not A Slug", "a1", "beta")], "items[0].resource.type", "slug"),
        ([GOOD, item("_app", "a1", "beta")], "items[1].resource.type", "slug"),
        ([GOOD, item("app", "", "beta")], "items[1].resource.id", "length"),
        ([GOOD, item("app", "a" * 257, "beta")], "items[1].resource.id", "length"),
        ([GOOD, item("app", "a\x1f", "beta")], "items[1].resource.id", "printable"),
        ([GOOD, item("app", "a1", "Beta")], "items[1].feature", "slug"),
        ([GOOD, GOOD, item("app", "a1", "b" * 65)], "items[2].feature", "slug"),
        # A name that is valid as a feature is checked again as a type, and the other way.
        ([GOOD, item("beta", "a1", "Nope")], "items[1].feature", "slug"),
        (
            [GOOD, item("app", "a1", "app"), item("Beta", "a1", "beta")],
            "items[2].resource.type",
            "slug",
        ),
        # The first bad item is the one reported.
        ([item("app", "", "X"), item("X", "a1", "beta")], "items[0].resource.id", "length"),
    ],
)
async def test_every_item_of_checks_is_validated(
    server: Server, items: list[dict[str, Any]], field: str, rule: str
) -> None:
    before = len(server.events())
    response = await server.gql(CHECKS, {"items": items})
    assert response.status == 200
    assert response.data == {"checks": None}
    assert response.codes == ["BAD_USER_INPUT"]
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == (field, rule)
    assert response.errors[0]["message"].startswith(f"{field} must be")
    assert server.events()[before:] == [], "invalid input must never reach the store"


async def test_repeated_names_in_checks_are_answered_item_by_item(server: Server) -> None:
    items = [GOOD, item("app", "a2", "beta"), GOOD, item("beta", "app", "app"), GOOD]
    response = await server.gql(CHECKS, {"items": items})
    assert response.errors == []
    assert [c["enabled"] for c in response.data["checks"]] == [True, False, True, False, True]


@pytest.mark.parametrize(
    ("variables", "field", "rule"),
    [
        ({"t": "Not A Slug", "ids": ["a1"], "fs": ["beta"]}, "type", "slug"),
        ({"t": "app", "ids": ["a1", ""], "fs": ["beta"]}, "ids[1]", "length"),
        ({"t": "app", "ids": ["a1", "a\u2029"], "fs": ["beta"]}, "ids[1]", "printable"),
        ({"t": "app", "ids": ["a1"], "fs": ["beta", "_x"]}, "features[1]", "slug"),
        ({"t": "app", "ids": [], "fs": ["X"]}, "features[0]", "slug"),
        ({"t": "app", "ids": [""], "fs": []}, "ids[0]", "length"),
    ],
)
async def test_every_argument_of_check_matrix_is_validated(
    server: Server, variables: dict[str, Any], field: str, rule: str
) -> None:
    response = await server.gql(MATRIX, variables)
    assert response.data == {"checkMatrix": None}
    assert response.codes == ["BAD_USER_INPUT"]
    extensions = response.errors[0]["extensions"]
    assert (extensions["field"], extensions["rule"]) == (field, rule)
