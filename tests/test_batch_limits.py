"""One request may ask at most 10,000 questions: checked at the limit and one past it.

Over real HTTP, on the fast path and on the general path, which must agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from features_gql.api import MAX_BATCH
from features_gql.domain import Resource
from features_gql.errors import InvalidInput
from tests.conftest import GraphQLResponse, Server, StartServer

CHECKS = (
    "query ($items: [CheckInput!]!) { checks(items: $items) { enabled feature resource { id } } }"
)
MATRIX = (
    "query ($t: String!, $ids: [String!]!, $fs: [String!]!) "
    "{ checkMatrix(type: $t, ids: $ids, features: $fs) }"
)


@pytest.fixture(params=[True, False], ids=["fast-path", "general-path"])
async def server(request: pytest.FixtureRequest, start_server: StartServer) -> Server:
    server = await start_server("memory", fast_path=request.param)
    await server.service.api.add(("app", "a1"), "on")
    return server


def items(count: int) -> list[dict[str, Any]]:
    return [{"resource": {"type": "app", "id": f"a{i}"}, "feature": "on"} for i in range(count)]


def assert_batch_refused(response: GraphQLResponse, field: str, name: str, size: int) -> None:
    assert response.status == 200
    assert response.data == {name: None}
    assert response.codes == ["BAD_USER_INPUT"]
    error = response.errors[0]
    assert (error["extensions"]["field"], error["extensions"]["rule"]) == (field, "batch-size")
    assert error["message"] == f"{field} may hold at most 10000 entries (got {size})"


async def test_checks_take_10000_items(server: Server) -> None:
    response = await server.gql(CHECKS, {"items": items(MAX_BATCH)})
    assert response.errors == []
    checks = response.data["checks"]
    assert len(checks) == MAX_BATCH
    assert [c["enabled"] for c in checks[:3]] == [False, True, False]
    assert checks[-1] == {"enabled": False, "feature": "on", "resource": {"id": "a9999"}}


async def test_checks_refuse_10001_items_before_asking_the_store(server: Server) -> None:
    before = len(server.events())
    response = await server.gql(CHECKS, {"items": items(MAX_BATCH + 1)})
    assert_batch_refused(response, "items", "checks", MAX_BATCH + 1)
    assert server.events()[before:] == []


@pytest.mark.parametrize(("rows", "columns"), [(100, 100), (MAX_BATCH, 1), (1, MAX_BATCH)])
async def test_check_matrix_takes_10000_cells(server: Server, rows: int, columns: int) -> None:
    ids = [f"a{i}" for i in range(1, rows + 1)]  # a1 has "on", the rest have nothing
    features = ["on", *(f"f{j}" for j in range(columns - 1))]
    response = await server.gql(MATRIX, {"t": "app", "ids": ids, "fs": features})
    assert response.errors == []
    matrix = response.data["checkMatrix"]
    assert (len(matrix), len(matrix[0])) == (rows, columns)
    assert matrix[0][0] is True
    assert sum(map(sum, matrix)) == 1


# 10,001 = 73 x 137: ids x features is over the limit although each list is short.
@pytest.mark.parametrize(("rows", "columns"), [(73, 137), (MAX_BATCH + 1, 1), (1, MAX_BATCH + 1)])
async def test_check_matrix_refuses_10001_cells(server: Server, rows: int, columns: int) -> None:
    ids = [f"a{i}" for i in range(rows)]
    features = [f"f{j}" for j in range(columns)]
    before = len(server.events())
    response = await server.gql(MATRIX, {"t": "app", "ids": ids, "fs": features})
    assert_batch_refused(response, "ids", "checkMatrix", rows * columns)
    assert server.events()[before:] == []


async def test_a_matrix_with_no_features_has_an_empty_row_per_id_and_asks_no_store(
    server: Server,
) -> None:
    before = len(server.events())
    response = await server.gql(MATRIX, {"t": "app", "ids": ["a0", "a1"], "fs": []})
    assert response.data == {"checkMatrix": [[], []]}
    response = await server.gql(MATRIX, {"t": "app", "ids": [], "fs": ["on"]})
    assert response.data == {"checkMatrix": []}
    assert server.events()[before:] == []


# -- the same limit on the Python API, for the calls GraphQL cannot make that large -------


async def test_features_of_many_takes_10000_resources_and_refuses_10001(server: Server) -> None:
    api = server.service.api
    resources = [Resource("app", f"a{i}") for i in range(MAX_BATCH)]
    answers = await api.features_of_many(resources)
    assert len(answers) == MAX_BATCH
    assert answers[:2] == [[], ["on"]]
    with pytest.raises(InvalidInput) as caught:
        await api.features_of_many([*resources, ("app", "one-more")])
    assert (caught.value.field, caught.value.rule) == ("resources", "batch-size")
    assert str(caught.value) == "resources may hold at most 10000 entries (got 10001)"
