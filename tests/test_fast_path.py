"""The compiled fast path answers exactly what the general GraphQL path answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features_gql.graphql.admission import Limits
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
ONE_CHECK = {"items": [{"resource": P, "feature": "speedups"}]}


def checks_of(selection: str) -> str:
    return f"query ($items: [CheckInput!]!) {{ checks(items: $items) {selection} }}"


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
    # A single value written inline for a list argument is a one-item list, not characters.
    ('{ checkMatrix(type: "pipeline", ids: "p1", features: "speedups") }', None),
    ('{ checkMatrix(type: "pipeline", ids: "abc", features: ["speedups"]) }', None),
    ('{ checkMatrix(type: "pipeline", ids: ["p1"], features: "beta") }', None),
    ('{ checkMatrix(type: "pipeline", ids: [], features: []) }', None),
    # Selections of checks the plan does not hold must still be answered in full.
    (checks_of("{ __typename }"), ONE_CHECK),
    (checks_of("{ __typename enabled }"), ONE_CHECK),
    (checks_of("{ resource { __typename id } }"), ONE_CHECK),
    (checks_of("{ ... on Check { enabled feature } }"), ONE_CHECK),
    (checks_of("{ ...C } } fragment C on Check { enabled resource { type } "), ONE_CHECK),
    (checks_of("{ enabled @include(if: false) feature }"), ONE_CHECK),
    (checks_of("{ resource { id @skip(if: true) type } }"), ONE_CHECK),
    (checks_of("{ e: enabled f: feature r: resource { i: id t: type } }"), ONE_CHECK),
    (checks_of("{ enabled resource }"), ONE_CHECK),
    (checks_of("{ enabled { x } }"), ONE_CHECK),
    (checks_of("{ resource { features } }"), ONE_CHECK),
    (checks_of('{ resource { hasFeature(feature: "speedups") } }'), ONE_CHECK),
    (
        '{ checks(items: [{resource: {type: "pipeline", id: "p1"}, feature: "speedups"}]) '
        "{ enabled } }",
        None,
    ),
    (
        '{ checks(items: {resource: {type: "pipeline", id: "p1"}, feature: "beta"}) { enabled } }',
        None,
    ),
    # Arguments and variables the plan does not hold.
    ('{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: 3) }', None),
    ('{ hasFeature(resource: {id: "p1", type: "pipeline"}, feature: "speedups") }', None),
    (
        'query ($t: String!) { hasFeature(resource: {type: $t, id: "p1"}, feature: "beta") }',
        {"t": "pipeline"},
    ),
    ('{ checkMatrix(type: "pipeline", ids: ["p1", 2], features: ["beta"]) }', None),
    (
        "query ($r: ResourceInput, $f: String) { hasFeature(resource: $r, feature: $f) }",
        {"r": P, "f": "speedups"},
    ),
    (
        "query ($r: ResourceInput!, $f: [String!]!) { hasFeature(resource: $r, feature: $f) }",
        {"r": P, "f": ["speedups"]},
    ),
    (HAS, {"r": P, "f": "speedups", "undeclared": 1}),
    ("query ($x: String!) { revision }", {"x": "y"}),
    ('{ __typename hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "beta") }', None),
    ('{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "beta") { x } }', None),
    ('{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "beta", extra: 1) }', None),
    (
        'mutation { addFeature(resource: {type: "pipeline", id: "p9"}, feature: "beta") '
        "{ __typename } }",
        None,
    ),
    ('{ on: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") }', None),
    (
        '{ m: checkMatrix(type: "pipeline", ids: ["p1"], features: ["beta"]) '
        'c: checks(items: [{resource: {type: "pipeline", id: "p1"}, feature: "beta"}]) '
        "{ enabled } }",
        None,
    ),
    (CHECKS, {"items": [{"resource": P, "feature": 3}]}),
    (CHECKS, {"items": [{"resource": P, "feature": None}]}),
    (CHECKS, {"items": [{"resource": {"type": "pipeline", "id": 1}, "feature": "beta"}]}),
    (CHECKS, {"items": [{"feature": "beta", "resources": P}]}),
    # One response key asked twice is one field to GraphQL: answered once, merged.
    (
        '{ a: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "BAD") '
        'a: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "BAD") }',
        None,
    ),
    (
        '{ checkMatrix(type: "pipeline", ids: ["p1"], features: ["BAD"]) '
        'checkMatrix(type: "pipeline", ids: ["p1"], features: ["BAD"]) }',
        None,
    ),
    (checks_of("{ resource { id } resource { type } }"), ONE_CHECK),
    (checks_of("{ resource { id id: type } }"), ONE_CHECK),
    (checks_of("{ enabled enabled feature }"), ONE_CHECK),
    (
        "query ($items: [CheckInput!]!) "
        "{ checks(items: $items) { enabled } c: checks(items: $items) { feature } }",
        ONE_CHECK,
    ),
    # Errors of several fields, in order.
    (
        '{ a: hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "BAD") '
        'b: checkMatrix(type: "X", ids: ["p1"], features: ["a"]) '
        'c: checks(items: [{resource: {type: "pipeline", id: ""}, feature: "a"}]) { enabled } }',
        None,
    ),
    (
        'query ($a: String!) { checkMatrix(type: "pipeline", ids: [$a, "p2"], '
        'features: ["speedups"]) }',
        {"a": "p1"},
    ),
    (MATRIX, {"t": "pipeline", "ids": ["p1", None], "fs": ["speedups"]}),
    (MATRIX, {"t": 5, "ids": ["p1"], "fs": ["speedups"]}),
    (CHECKS, {"items": [None]}),
    (HAS, {"r": {"type": "pipeline", "id": 1}, "f": "speedups"}),
    ('{ hasFeature(resource: {type: """pipeline""", id: "p\\u0031"}, feature: "speedups") }', None),
    (
        "fragment F on Query { revision } "
        '{ hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "beta") ...F }',
        None,
    ),
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


async def same_answer_to(fast: Server, general: Server, payload: dict[str, Any]) -> Any:
    """Post ``payload`` as it is (operationName and all) to both paths; same answer."""
    answers = []
    for server in (fast, general):
        async with server.session.post(f"{server.url}/graphql", json=payload) as response:
            body = await response.json(content_type=None)
            answers.append((response.status, response.content_type, normalised(body)))
    assert answers[0] == answers[1], payload
    return answers[0]


NAMED = 'query Has { hasFeature(resource: {type: "pipeline", id: "p1"}, feature: "speedups") }'


@pytest.mark.parametrize(
    "payload",
    [
        {"query": NAMED, "operationName": "Has"},
        {"query": NAMED, "operationName": None},
        {"query": NAMED, "operationName": "Other"},
        {"query": NAMED, "operationName": "has"},
        {"query": NAMED, "operationName": ""},
        {"query": NAMED.replace("query Has ", ""), "operationName": "Has"},
        {"query": HAS, "variables": {"r": P, "f": "beta"}, "operationName": "Has"},
        {"query": HAS, "variables": {"r": P, "f": "beta"}, "operationName": "Nope"},
        {"query": HAS, "variables": {"r": P, "f": "beta"}, "operationName": 7},
        {"query": NAMED, "variables": None},
        {"query": NAMED, "variables": []},
        {"query": NAMED, "variables": ""},
        {"query": NAMED, "variables": 0},
        {"query": NAMED, "variables": False},
        {"query": NAMED, "variables": {}},
        {"query": NAMED.replace("query Has ", ""), "operationName": ""},
        {"query": NAMED, "extensions": {"x": 1}},
    ],
)
async def test_operation_names_are_honoured_as_on_the_general_path(
    start_server: StartServer, payload: dict[str, Any]
) -> None:
    fast, general = await pair(start_server)
    await same_answer_to(fast, general, payload)


async def test_a_wrong_operation_name_is_an_unknown_operation_not_an_answer(
    start_server: StartServer,
) -> None:
    fast, general = await pair(start_server)
    _, _, body = await same_answer_to(fast, general, {"query": NAMED, "operationName": "X"})
    assert "Unknown operation named" in body
    assert "hasFeature" not in body


async def test_the_token_limit_holds_on_the_fast_path(start_server: StartServer) -> None:
    fast, general = await pair(start_server)
    limit = Limits().max_tokens
    ids = ", ".join(['"p1"'] * limit)
    query = f'{{ checkMatrix(type: "pipeline", ids: [{ids}], features: ["speedups"]) }}'
    _, _, body = await same_answer_to(fast, general, {"query": query})
    assert f"more than {limit} tokens" in body  # refused before anything was answered
    assert "'data'" not in body


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
