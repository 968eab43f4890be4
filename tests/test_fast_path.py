"""The compiled fast path answers exactly what the general GraphQL path answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features_gql.graphql.fast_path import FastPath
from features_gql.http.view import FeaturesGraphQLView
from tests.broken_stores import BrokenStoresPlugin
from tests.conftest import Server, StartServer

HAS = "query Has($r: ResourceInput!, $f: String!) { hasFeature(resource: $r, feature: $f) }"
CHECKS = (
    "query ($items: [CheckInput!]!) { checks(items: $items) "
    "{ enabled feature on: enabled resource { id kind: type } } }"
)
MATRIX = (
    "query ($t: String!, $ids: [String!]!, $fs: [String!]!) "
    "{ checkMatrix(type: $t, ids: $ids, features: $fs) }"
)
P = {"type": "pipeline", "id": "p1"}

CASES: list[tuple[str, dict[str, Any] | None]] = [
    (HAS, {"r": P, "f": "speedups"}),
    (HAS, {"r": P, "f": "other"}),
    (HAS, {"r": {"type": "Pipeline", "id": "p1"}, "f": "speedups"}),
    (HAS, {"r": {"type": "pipeline", "id": ""}, "f": "speedups"}),
    (HAS, {"r": P, "f": "NOT-A-SLUG"}),
    (HAS, {"r": P}),
    (HAS, {"r": P, "f": None}),
    (HAS, {"r": P, "f": 3}),
    (HAS, {"r": {"type": "pipeline", "id": "p1", "extra": 1}, "f": "speedups"}),
    (HAS, {"r": {"type": "pipeline"}, "f": "speedups"}),
    (HAS, {"r": "pipeline/p1", "f": "speedups"}),
    (HAS, None),
    ('{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") }', None),
    (
        '{ a: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") '
        'b: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "BAD") '
        'c: hasFeature(resource: {type: "pipeline", id: "p2"}, feature: "speedups") }',
        None,
    ),
    (
        'query ($f: String!) { hasFeature(resource: {type: "pipeline", id: "p1"}, feature: $f) }',
        {"f": "speedups"},
    ),
    (
        'query ($f: String = "speedups") { hasFeature(resource: {type: "pipeline", id: "p1"}, '
        "feature: $f) }",
        {},
    ),
    (
        '{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") revision }',
        None,
    ),
    ('{ hasFeature(resource: {type: "pipeline"}, feature: "speedups") }', None),
    (
        '{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") @skip(if: '
        "true) }",
        None,
    ),
    (
        'query A { hasFeature(resource: {type: "a", id: "b"}, feature: "c") } query B { revision }',
        None,
    ),
    (CHECKS, {"items": [{"resource": P, "feature": "speedups"}, {"resource": P, "feature": "x"}]}),
    (CHECKS, {"items": []}),
    (CHECKS, {"items": [{"resource": P, "feature": "BAD"}]}),
    (CHECKS, {"items": {"resource": P, "feature": "speedups"}}),
    (CHECKS, {"items": [{"resource": P, "feature": "speedups", "x": 1}]}),
    (MATRIX, {"t": "pipeline", "ids": ["p1", "p2", "p3"], "fs": ["speedups", "beta"]}),
    (MATRIX, {"t": "pipeline", "ids": [], "fs": ["speedups"]}),
    (MATRIX, {"t": "pipeline", "ids": ["p1"], "fs": []}),
    (MATRIX, {"t": "Pipeline", "ids": ["p1"], "fs": ["speedups"]}),
    (MATRIX, {"t": "pipeline", "ids": ["p1", ""], "fs": ["speedups"]}),
    (MATRIX, {"t": "pipeline", "ids": "p1", "fs": ["speedups"]}),
    ('{ checkMatrix(type: "pipeline", ids: ["p1", "p2"], features: ["speedups"]) }', None),
    ("{ hasFeature(", None),
]

_RID = re.compile(r"[0-9a-f]{20}")  # a per-process prefix, then a counter


def normalised(body: Any) -> Any:
    return _RID.sub("<request-id>", repr(body))


async def pair(
    start_server: StartServer, store: str = "memory", **kw: Any
) -> tuple[Server, Server]:
    fast = await start_server(store, fast_path=True, **kw)
    general = await start_server(store, fast_path=False, **kw)
    for server in (fast, general):
        for feature in ("speedups", "beta"):
            await server.gql(
                'mutation ($f: String!) { addFeature(resource: {type: "pipeline", id: "p1"}, '
                "feature: $f) { __typename } }",
                {"f": feature},
            )
    return fast, general


async def same_answer(
    fast: Server, general: Server, query: str, variables: dict[str, Any] | None
) -> None:
    a = await fast.gql(query, variables)
    b = await general.gql(query, variables)
    assert (a.status, a.content_type) == (b.status, b.content_type)
    assert normalised(a.body) == normalised(b.body), query


@pytest.mark.parametrize(("query", "variables"), CASES, ids=range(len(CASES)))
async def test_same_answers_as_the_general_path(
    start_server: StartServer, query: str, variables: dict[str, Any] | None
) -> None:
    fast, general = await pair(start_server)
    await same_answer(fast, general, query, variables)


def fast_path_of(server: Server) -> FastPath:
    for route in server.app.router.routes():
        if isinstance(route.handler, FeaturesGraphQLView) and route.handler.fast_path:
            return route.handler.fast_path
    raise AssertionError("no fast path")


async def test_fast_path_is_taken_for_hot_shapes_only(start_server: StartServer) -> None:
    fast, _ = await pair(start_server)
    path = fast_path_of(fast)
    before = path.answered
    response = await fast.gql(HAS, {"r": P, "f": "speedups"})
    assert response.data == {"hasFeature": True}
    matrix = await fast.gql(MATRIX, {"t": "pipeline", "ids": ["p1", "p2"], "fs": ["beta"]})
    assert matrix.data == {"checkMatrix": [[True], [False]]}
    assert path.answered == before + 2
    await fast.gql("{ revision }")
    await fast.gql(HAS, {"r": P, "f": None})
    assert path.answered == before + 2


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (HAS, {"r": P, "f": "speedups"}),
        (CHECKS, {"items": [{"resource": P, "feature": "speedups"}]}),
        (MATRIX, {"t": "pipeline", "ids": ["p1"], "fs": ["speedups"]}),
        ('{ a: hasFeature(resource: {type: "a", id: "b"}, feature: "c") revision }', None),
    ],
)
async def test_store_errors_are_the_same_on_both_paths(
    start_server: StartServer, query: str, variables: dict[str, Any] | None
) -> None:
    fast = await start_server("down", extra_plugins=[BrokenStoresPlugin()], fast_path=True)
    general = await start_server("down", extra_plugins=[BrokenStoresPlugin()], fast_path=False)
    await same_answer(fast, general, query, variables)


ids = st.text(min_size=0, max_size=20)
names = st.one_of(st.from_regex(r"[a-z][a-z0-9_-]{0,5}", fullmatch=True), st.text(max_size=8))


async def test_random_inputs_async(start_server: StartServer) -> None:
    fast, general = await pair(start_server)
    strategy = st.tuples(names, ids, names, st.lists(st.tuples(names, ids, names), max_size=4))
    examples: list[tuple[str, str, str, list[tuple[str, str, str]]]] = []

    @settings(max_examples=80, deadline=None, database=None)
    @given(strategy)
    def collect(example: tuple[str, str, str, list[tuple[str, str, str]]]) -> None:
        examples.append(example)

    collect()
    for type_, id_, feature, items in examples:
        await same_answer(fast, general, HAS, {"r": {"type": type_, "id": id_}, "f": feature})
        await same_answer(
            fast,
            general,
            CHECKS,
            {"items": [{"resource": {"type": t, "id": i}, "feature": f} for t, i, f in items]},
        )
        await same_answer(
            fast, general, MATRIX, {"t": type_, "ids": [i for _, i, _ in items], "fs": [feature]}
        )


def test_the_fast_path_refuses_a_schema_extension_it_would_skip() -> None:
    from strawberry.extensions import SchemaExtension

    from features_gql.graphql.fast_path import FastPath, FastPathUnavailable
    from features_gql.graphql.schema import build_schema

    class Tracing(SchemaExtension):
        pass

    schema = build_schema()
    FastPath(schema.graphql_schema, schema.extensions)  # the schema as built: accepted
    with pytest.raises(FastPathUnavailable, match="Tracing"):
        FastPath(schema.graphql_schema, [*schema.extensions, Tracing])
